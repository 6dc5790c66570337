//! Content address of a prepared script: `sha256(language, script, compile options)`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::Language;

/// Scripts are content-addressed so that any runtime host can serve any session.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScriptHash([u8; 32]);

impl ScriptHash {
    /// `compile_options` is hashed in its canonical JSON form (sorted keys).
    pub fn compute(language: Language, script: &str, compile_options: Option<&serde_json::Value>) -> Self {
        let mut h = Sha256::new();
        h.update(language.as_str().as_bytes());
        h.update([0]);
        h.update((script.len() as u64).to_le_bytes());
        h.update(script.as_bytes());
        if let Some(opts) = compile_options {
            h.update([1]);
            h.update(opts.to_string().as_bytes());
        }
        Self(h.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Display for ScriptHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ScriptHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScriptHash({})", &self.to_hex()[..12])
    }
}

impl Serialize for ScriptHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ScriptHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s).ok_or_else(|| serde::de::Error::custom("invalid script hash"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinguishes_language_script_and_options() {
        let a = ScriptHash::compute(Language::Nodejs, "return 1", None);
        assert_eq!(a, ScriptHash::compute(Language::Nodejs, "return 1", None));
        assert_ne!(a, ScriptHash::compute(Language::Python, "return 1", None));
        assert_ne!(a, ScriptHash::compute(Language::Nodejs, "return 2", None));
        let opts = serde_json::json!({"optimization_level": "release"});
        assert_ne!(a, ScriptHash::compute(Language::Nodejs, "return 1", Some(&opts)));
    }

    #[test]
    fn hex_round_trip() {
        let a = ScriptHash::compute(Language::Wasm, "x", None);
        assert_eq!(ScriptHash::from_hex(&a.to_hex()), Some(a));
        assert_eq!(ScriptHash::from_hex("zz"), None);
        let json = serde_json::to_string(&a).unwrap_or_default();
        assert_eq!(serde_json::from_str::<ScriptHash>(&json).ok(), Some(a));
    }
}
