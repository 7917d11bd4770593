//! `current.json`: the release last applied on this host, written atomically after every
//! successful deploy (and rollback). It is a convenience, not the truth: the truth is the
//! labels on the live containers, which `status` falls back to when this file is missing or
//! torn.

use serde::{Deserialize, Serialize};

use super::{read_json, write_json, ReleaseDir, StateError};

pub const FILE: &str = "current.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub release: String,
    /// The git commit applied.
    pub revision: String,
    /// sha256 (hex) of the release.yaml bytes at that commit.
    pub spec_hash: String,
    /// When the deploy that made this current finished.
    pub applied_at: String,
    /// Where the revision came from; lets `rollback` and `status` work without `--repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRecord>,
    pub services: Vec<ServiceImage>,
}

/// The git source of a release, as far as it may be stored: a credential-free URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// Credential-free URL (printable).
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Directory inside the repo holding release.yaml (`""` = the root).
    #[serde(default)]
    pub path: String,
    /// The bare cache under `<state-dir>/git/` that holds every fetched commit, so a recorded
    /// revision can be read back with the remote unreachable.
    pub cache_dir: String,
}

/// One service of an applied release (the proxy is listed as `proxy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceImage {
    pub service: String,
    /// The reference as written in the spec.
    pub image: String,
    /// The local image id (`sha256:...`) the container runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// `name@sha256:...` when the image came from a registry; locally built images have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `blue` / `green` for a blue-green service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

pub fn load(dir: &ReleaseDir) -> Result<Option<Current>, StateError> {
    read_json(&dir.file(FILE))
}

pub fn save(dir: &ReleaseDir, current: &Current) -> Result<(), StateError> {
    dir.ensure()?;
    write_json(&dir.file(FILE), current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ReleaseDir::new(tmp.path(), "shop");
        assert_eq!(load(&dir).unwrap(), None);
        let c = Current {
            release: "shop".into(),
            revision: "a".repeat(40),
            spec_hash: "0".repeat(64),
            applied_at: super::super::now(),
            source: None,
            services: vec![ServiceImage {
                service: "web".into(),
                image: "app:v1".into(),
                image_id: Some("sha256:1".into()),
                digest: None,
                color: Some("blue".into()),
            }],
        };
        save(&dir, &c).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(c));
    }
}
