//! Images: look up by reference, pull (with registry auth from the Docker config file).

use std::path::PathBuf;

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;

use super::ObjectKind::Image;
use super::{op_error, reason_of, Engine, EngineError};

/// Docker Hub's key in `config.json`'s `auths`.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// Credentials for one registry. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub server: String,
    pub username: String,
    password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &crate::secret::REDACTED)
            .finish()
    }
}

/// The registry host of an image reference, as the Docker CLI decides it: the first path
/// component when it looks like a host (has `.` or `:`, or is `localhost`), else Docker Hub.
fn registry_of(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// `name:tag` / `name@digest` / `name` → (name, tag-or-digest). A missing tag means `latest`:
/// an empty tag would ask the engine for every tag of the repository.
fn split_reference(reference: &str) -> (&str, &str) {
    if let Some((name, digest)) = reference.split_once('@') {
        return (name, digest);
    }
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(i) => (
            &reference[..last_slash + i],
            &reference[last_slash + i + 1..],
        ),
        None => (reference, "latest"),
    }
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// The `auths` entry for `reference`'s registry in the Docker config file (`$DOCKER_CONFIG` or
/// `~/.docker/config.json`), if any. Credential helpers are not consulted.
pub fn registry_credentials_for(reference: &str) -> Result<Option<RegistryAuth>, EngineError> {
    match docker_config_path() {
        Some(path) => credentials_from_file(&path, reference),
        None => Ok(None),
    }
}

fn credentials_from_file(
    path: &std::path::Path,
    reference: &str,
) -> Result<Option<RegistryAuth>, EngineError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(EngineError::Credentials {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    let bad = |reason: String| EngineError::Credentials {
        path: path.display().to_string(),
        reason,
    };
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let registry = registry_of(reference);
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    // Keys may be bare hosts or URLs (`https://ghcr.io`, `https://index.docker.io/v1/`).
    let entry = auths.iter().find(|(key, _)| {
        if registry == "docker.io" {
            key.as_str() == DOCKER_HUB_AUTH_KEY || key.as_str() == "docker.io"
        } else {
            let host = key
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            host.split('/').next() == Some(registry)
        }
    });
    let Some((key, entry)) = entry else {
        return Ok(None);
    };
    let Some(encoded) = entry.get("auth").and_then(|a| a.as_str()) else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad(format!("`auths.{key}.auth` is not base64")))?;
    let decoded =
        String::from_utf8(decoded).map_err(|_| bad(format!("`auths.{key}.auth` is not UTF-8")))?;
    let Some((username, password)) = decoded.split_once(':') else {
        return Err(bad(format!("`auths.{key}.auth` is not `user:password`")));
    };
    Ok(Some(RegistryAuth {
        server: key.clone(),
        username: username.to_string(),
        password: password.to_string(),
    }))
}

impl Engine {
    /// The id of the local image `reference` names, or `None` when it is not on this host.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>, EngineError> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(image.id),
            Err(e) => match op_error("inspect", Image, reference)(e) {
                EngineError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// `name@sha256:...` of the local image `reference` names, when it came from a registry
    /// (a locally built image has none).
    pub async fn repo_digest(&self, reference: &str) -> Result<Option<String>, EngineError> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(image.repo_digests.and_then(|d| d.into_iter().next())),
            Err(e) => match op_error("inspect", Image, reference)(e) {
                EngineError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Pulls `reference` (streaming the engine's progress to `debug` logs) and returns the id
    /// of the image it now names.
    pub async fn pull_image(&self, reference: &str) -> Result<String, EngineError> {
        let pull_failed = |reason: String| EngineError::Pull {
            image: reference.to_string(),
            reason,
        };
        let credentials = registry_credentials_for(reference)?.map(|auth| DockerCredentials {
            username: Some(auth.username),
            password: Some(auth.password),
            serveraddress: Some(auth.server),
            ..Default::default()
        });
        let (name, tag) = split_reference(reference);
        let options = CreateImageOptions {
            from_image: Some(name.to_string()),
            tag: Some(tag.to_string()),
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        while let Some(event) = progress.next().await {
            match event {
                Ok(info) => {
                    if let Some(status) = info.status {
                        tracing::debug!(image = reference, %status, "pull");
                    }
                }
                Err(e) => return Err(pull_failed(reason_of(&e))),
            }
        }
        self.image_id(reference)
            .await?
            .ok_or_else(|| pull_failed("the engine reported success but has no such image".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_found_like_the_cli() {
        assert_eq!(registry_of("nginx:1"), "docker.io");
        assert_eq!(registry_of("library/nginx"), "docker.io");
        assert_eq!(registry_of("ghcr.io/acme/api:v1"), "ghcr.io");
        assert_eq!(registry_of("127.0.0.1:1/nope:1"), "127.0.0.1:1");
        assert_eq!(registry_of("localhost/x"), "localhost");
    }

    #[test]
    fn references_split_into_name_and_tag() {
        assert_eq!(split_reference("nginx"), ("nginx", "latest"));
        assert_eq!(split_reference("nginx:1.27"), ("nginx", "1.27"));
        assert_eq!(
            split_reference("127.0.0.1:5000/app"),
            ("127.0.0.1:5000/app", "latest")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/app:v2"),
            ("127.0.0.1:5000/app", "v2")
        );
        assert_eq!(split_reference("app@sha256:abc"), ("app", "sha256:abc"));
    }

    #[test]
    fn credentials_come_from_the_auths_entry_of_the_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        let encoded = base64::engine::general_purpose::STANDARD.encode("bob:s3cret");
        let config = serde_json::json!({
            "auths": {
                "ghcr.io": { "auth": encoded },
                "https://index.docker.io/v1/": { "auth": base64::engine::general_purpose::STANDARD.encode("hub:pw") },
                "https://registry.example.com:5000/v2/": { "auth": base64::engine::general_purpose::STANDARD.encode("ex:pw2") },
            }
        });
        std::fs::write(&path, config.to_string()).expect("write");
        let auth = credentials_from_file(&path, "ghcr.io/acme/api:v1")
            .expect("read")
            .expect("found");
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("bob", "s3cret")
        );
        let hub = credentials_from_file(&path, "nginx:1")
            .expect("read")
            .expect("found");
        assert_eq!(hub.username, "hub");
        let ex = credentials_from_file(&path, "registry.example.com:5000/x")
            .expect("read")
            .expect("found");
        assert_eq!(ex.username, "ex");
        assert!(credentials_from_file(&path, "quay.io/x/y")
            .expect("read")
            .is_none());
        assert!(
            credentials_from_file(&dir.path().join("absent.json"), "nginx")
                .expect("absent file is no credentials")
                .is_none()
        );
        std::fs::write(&path, "{not json").expect("write");
        let err = credentials_from_file(&path, "nginx").expect_err("bad json");
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn auth_debug_hides_password() {
        let auth = RegistryAuth {
            server: "ghcr.io".into(),
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
