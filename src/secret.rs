//! A value that must never appear in logs, output, state files or notifications.
//!
//! Redaction is done by the type: `Debug`, `Display` and `Serialize` print a fixed marker, so a
//! secret cannot leak through `{:?}`, `tracing` fields or `serde_json::to_string` by accident.
//! The only way to the plaintext is [`Secret::expose`], which is grep-able.

use std::fmt;

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

/// What every redacted value prints as.
pub const REDACTED: &str = "<redacted>";

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The plaintext, for the one place that hands it to the engine (a container's environment).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Feeds the value into a running hash without exposing it anywhere else; used by the
    /// config hash so that a rotated secret changes the hash (and so redeploys the service).
    pub fn feed(&self, hasher: &mut Sha256) {
        hasher.update((self.0.len() as u64).to_le_bytes());
        hasher.update(self.0.as_bytes());
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rendering_hides_the_value() {
        let s = Secret::new("hunter2-planted");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(
            format!("{:#?}", vec![s.clone()]),
            format!("[\n    {REDACTED},\n]")
        );
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert_eq!(s.expose(), "hunter2-planted");
    }

    #[test]
    fn hashing_depends_on_the_value() {
        let digest = |v: &str| {
            let mut h = Sha256::new();
            Secret::new(v).feed(&mut h);
            hex::encode(h.finalize())
        };
        assert_ne!(digest("a"), digest("b"));
        assert_eq!(digest("a"), digest("a"));
    }
}
