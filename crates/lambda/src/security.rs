//! Configuration of who may call: auth mode and keys, rate limits, CORS,
//! header bounds. Flattened into `lambda serve`'s arguments.

use std::path::PathBuf;

use clap::Args;
use lambda_api::auth::{AuthConfig, AuthMode, JwtKey};
use lambda_api::ratelimit::RateLimits;

use crate::config::secret;

#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// `off`, `optional` or `required`. Default: `required` when a JWT key is configured, else `off`.
    #[arg(long = "auth", env = "LAMBDA_AUTH", value_parser = ["off", "optional", "required"])]
    pub auth: Option<String>,
    /// HS256 shared secret for JWT bearer tokens (at least 32 bytes).
    #[arg(long = "jwt-secret", env = "LAMBDA_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// File holding LAMBDA_JWT_SECRET.
    #[arg(long = "jwt-secret-file", env = "LAMBDA_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM file with the RSA public key verifying RS256 tokens (instead of a shared secret).
    #[arg(long = "jwt-public-key-file", env = "LAMBDA_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Scopes of callers without a token when LAMBDA_AUTH=optional (space-separated).
    #[arg(
        long = "anonymous-scopes",
        env = "LAMBDA_ANONYMOUS_SCOPES",
        default_value = "execute:all read:functions"
    )]
    pub anonymous_scopes: String,
    /// Executes per minute per authenticated user (0 = unlimited). Limits apply unless auth is off.
    #[arg(long = "rate-limit-execute", env = "RATE_LIMIT_EXECUTE", default_value_t = 100)]
    pub rate_limit_execute: u32,
    /// Executes per minute per client address without a token (0 = unlimited).
    #[arg(long = "rate-limit-execute-anonymous", env = "RATE_LIMIT_EXECUTE_ANONYMOUS", default_value_t = 10)]
    pub rate_limit_execute_anonymous: u32,
    /// Function-endpoint requests per minute per user, or per address without a token (0 = unlimited).
    #[arg(long = "rate-limit-functions", env = "RATE_LIMIT_FUNCTIONS", default_value_t = 60)]
    pub rate_limit_functions: u32,
    /// Allowed CORS origins, comma-separated (`*` = any).
    #[arg(long = "cors-allowed-origins", env = "CORS_ALLOWED_ORIGINS", default_value = "*")]
    pub cors_allowed_origins: String,
    /// Total bytes of request headers accepted (400 above).
    #[arg(long = "max-header-size", env = "MAX_HEADER_SIZE", default_value_t = 16 * 1024)]
    pub max_header_size: usize,
}

/// Minimum HS256 secret length: shorter secrets can be brute-forced offline.
const MIN_SECRET_BYTES: usize = 32;

impl SecurityArgs {
    /// Only the secret set: what `lambda token` needs.
    pub fn for_secret(jwt_secret: Option<String>, jwt_secret_file: Option<PathBuf>) -> Self {
        Self {
            auth: None,
            jwt_secret,
            jwt_secret_file,
            jwt_public_key_file: None,
            anonymous_scopes: String::new(),
            rate_limit_execute: 0,
            rate_limit_execute_anonymous: 0,
            rate_limit_functions: 0,
            cors_allowed_origins: String::new(),
            max_header_size: 0,
        }
    }

    /// The HS256 secret, if configured (`lambda token` signs with it too).
    pub fn hs256_secret(&self) -> Result<Option<String>, String> {
        let secret =
            secret(self.jwt_secret.as_deref(), self.jwt_secret_file.as_deref(), "LAMBDA_JWT_SECRET")?;
        match secret {
            Some(s) if s.len() < MIN_SECRET_BYTES => {
                Err(format!("LAMBDA_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes"))
            }
            s => Ok(s),
        }
    }

    pub fn auth_config(&self) -> Result<AuthConfig, String> {
        let hs256 = self.hs256_secret()?;
        let key = match (hs256, &self.jwt_public_key_file) {
            (Some(_), Some(_)) => {
                return Err("set LAMBDA_JWT_SECRET or LAMBDA_JWT_PUBLIC_KEY_FILE, not both".into());
            }
            (Some(secret), None) => Some(JwtKey::Hs256(secret.into_bytes())),
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    format!("LAMBDA_JWT_PUBLIC_KEY_FILE: cannot read {}: {e}", path.display())
                })?;
                Some(JwtKey::Rs256Public(pem))
            }
            (None, None) => None,
        };
        let mode = match (&self.auth, &key) {
            (Some(mode), _) => {
                AuthMode::parse(mode).ok_or_else(|| format!("LAMBDA_AUTH: unknown mode `{mode}`"))?
            }
            (None, Some(_)) => AuthMode::Required,
            (None, None) => AuthMode::Off,
        };
        let scopes = self.anonymous_scopes.split_whitespace().map(str::to_owned).collect();
        AuthConfig::new(mode, key.as_ref(), scopes).map_err(|e| format!("LAMBDA_AUTH: {e}"))
    }

    pub fn rate_limits(&self) -> RateLimits {
        RateLimits {
            execute_authenticated: self.rate_limit_execute,
            execute_anonymous: self.rate_limit_execute_anonymous,
            functions_authenticated: self.rate_limit_functions,
            functions_anonymous: self.rate_limit_functions,
        }
    }

    pub fn cors_origins(&self) -> Result<Vec<String>, String> {
        let origins: Vec<String> = self
            .cors_allowed_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect();
        for origin in &origins {
            let valid = origin == "*" || origin.starts_with("http://") || origin.starts_with("https://");
            if !valid || axum_header_value_invalid(origin) {
                return Err(format!("CORS_ALLOWED_ORIGINS: `{origin}` is not `*` or an http(s) origin"));
            }
        }
        Ok(origins)
    }
}

fn axum_header_value_invalid(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == 0x7f)
}
