//! `context.compile_options` of a Rust script, validated.

use lambda_core::LambdaError;
use serde_json::Value;

/// The only target: what wasmtime runs.
pub const TARGET: &str = "wasm32-wasip1";
/// The free feature flags the template declares (runtimes/rust/template/Cargo.toml).
pub const FEATURES: &[&str] = &["feature1", "feature2", "feature3", "feature4"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Release => "release",
        }
    }
    pub const ALL: [Profile; 2] = [Profile::Debug, Profile::Release];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    pub profile: Profile,
    pub features: Vec<String>,
}

impl CompileOptions {
    /// `optimization_level` `debug`|`release` (default `release`), `features`
    /// from [`FEATURES`], `target` only [`TARGET`]. Anything else is a 400.
    pub fn parse(options: Option<&Value>) -> Result<Self, LambdaError> {
        let mut parsed = Self { profile: Profile::Release, features: Vec::new() };
        let Some(options) = options else { return Ok(parsed) };
        let Some(map) = options.as_object() else {
            return Err(bad("compile_options", "must be an object"));
        };
        for (key, value) in map {
            match key.as_str() {
                "optimization_level" => {
                    parsed.profile = match value.as_str() {
                        Some("debug") => Profile::Debug,
                        Some("release") => Profile::Release,
                        _ => {
                            return Err(bad(
                                "compile_options.optimization_level",
                                "must be `debug` or `release`",
                            )
                            .with("supported", vec!["debug", "release"]));
                        }
                    }
                }
                "features" => {
                    let list = value
                        .as_array()
                        .ok_or_else(|| bad("compile_options.features", "must be an array"))?;
                    for feature in list {
                        match feature.as_str().filter(|f| FEATURES.contains(f)) {
                            Some(f) if !parsed.features.iter().any(|x| x == f) => {
                                parsed.features.push(f.to_owned())
                            }
                            Some(_) => {}
                            None => {
                                return Err(bad(
                                    "compile_options.features",
                                    &format!(
                                        "has an unknown feature {feature}; known: {}",
                                        FEATURES.join(", ")
                                    ),
                                )
                                .with("supported", FEATURES.to_vec()));
                            }
                        }
                    }
                }
                "target" if value.as_str() == Some(TARGET) => {}
                "target" => {
                    return Err(bad(
                        "compile_options.target",
                        &format!("{value} is not supported; the supported target is {TARGET}"),
                    )
                    .with("supported", vec![TARGET]));
                }
                other => {
                    return Err(bad(
                        &format!("compile_options.{other}"),
                        "is not a known option (optimization_level, features, target)",
                    )
                    .with("supported", vec!["optimization_level", "features", "target"]));
                }
            }
        }
        Ok(parsed)
    }
}

fn bad(field: &str, what: &str) -> LambdaError {
    LambdaError::invalid_request(format!("context.{field} {what}")).with("field", format!("context.{field}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_core::ErrorCode;
    use serde_json::json;

    #[test]
    fn defaults_and_valid_options() {
        assert_eq!(CompileOptions::parse(None).ok().map(|o| o.profile), Some(Profile::Release));
        let o = CompileOptions::parse(Some(&json!({
            "optimization_level": "debug", "features": ["feature2", "feature2"], "target": "wasm32-wasip1"
        })));
        assert_eq!(
            o.ok(),
            Some(CompileOptions { profile: Profile::Debug, features: vec!["feature2".into()] })
        );
    }

    #[test]
    fn bad_options_are_400_naming_what_is_supported() {
        for (options, supported) in [
            (json!({"target": "x86_64-unknown-linux-gnu"}), json!(["wasm32-wasip1"])),
            (json!({"features": ["nope"]}), json!(FEATURES)),
            (json!({"optimization_level": "fast"}), json!(["debug", "release"])),
            (json!({"opt": 1}), json!(["optimization_level", "features", "target"])),
        ] {
            let e = CompileOptions::parse(Some(&options)).expect_err("rejected");
            assert_eq!(e.code, ErrorCode::InvalidRequest);
            assert_eq!(e.details.get("supported"), Some(&supported), "{options}");
        }
    }

    #[test]
    fn features_match_the_template() {
        let manifest = include_str!("../../../../runtimes/rust/template/Cargo.toml");
        for feature in FEATURES {
            assert!(manifest.contains(&format!("\n{feature} = []")), "{feature} declared in the template");
        }
    }
}
