//! What the engine runs now, for one release, in the few fields `plan` compares.
//!
//! `observe` lists the release's objects by their ownership labels and converts bollard's types
//! into these at the boundary. A container whose labels cannot be read is an error, never
//! skipped: skipping it would make the planner create a duplicate.

use futures_util::future::try_join_all;
use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::{ContainerInfo, Engine, EngineError};
use crate::labels;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LiveState {
    pub release: String,
    pub containers: Vec<LiveContainer>,
    pub networks: Vec<LiveNetwork>,
    pub volumes: Vec<LiveVolume>,
    /// For every image the desired release names: the id of the local image with that reference,
    /// or `None` when it is not on this host (it will be pulled).
    pub images: BTreeMap<String, Option<String>>,
    /// The files the reconciler manages inside the proxy container (`<release>-proxy`), by
    /// path: their content, or `None` when missing. Empty without a proxy.
    pub proxy_files: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LiveContainer {
    pub id: String,
    /// Engine name without the leading `/`.
    pub name: String,
    pub service: String,
    pub color: Option<String>,
    pub revision: Option<String>,
    pub config_hash: Option<String>,
    /// The canonical config label (see `labels::CONFIG`), parsed.
    pub config: Option<serde_json::Value>,
    /// The reference it was created from (`Config.Image`).
    pub image: String,
    /// The image id it runs (`Image`, `sha256:...`).
    pub image_id: String,
    pub state: ContainerState,
    pub health: Health,
    pub restart_count: i64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// The container has no HEALTHCHECK.
    None,
    Starting,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LiveNetwork {
    pub id: String,
    pub name: String,
    pub internal: bool,
    pub driver: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LiveVolume {
    pub name: String,
    pub driver: String,
}

/// Observes what the engine runs for `release`: its containers (stopped ones too), networks and
/// volumes, found by ownership label (so objects without our labels are never seen, hence never
/// touched), and the local id of each image in `images`.
pub async fn observe(
    engine: &Engine,
    release: &str,
    images: &[String],
    proxy: Option<(&str, &[String])>,
) -> Result<LiveState, EngineError> {
    let filter = labels::release_filter(release);

    // Every read below is independent of the others: issued together, the observation costs
    // about one engine round trip per kind instead of one per object.
    let containers = async {
        let summaries = engine.list_containers(&filter).await?;
        let inspected = try_join_all(summaries.iter().map(|summary| async move {
            // Inspect by id: a name may change under us (a concurrent rename), an id cannot.
            match engine.inspect_container(&summary.id).await {
                Ok(info) => Ok(Some(info)),
                // Removed between list and inspect: it is gone, which is what we would observe.
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        }))
        .await?;
        let mut containers = inspected
            .into_iter()
            .flatten()
            .map(live_container)
            .collect::<Result<Vec<_>, _>>()?;
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok::<_, EngineError>(containers)
    };
    let networks = async {
        let mut networks: Vec<LiveNetwork> = engine
            .list_networks(&filter)
            .await?
            .into_iter()
            .map(|n| LiveNetwork {
                id: n.id,
                name: n.name,
                internal: n.internal,
                driver: n.driver,
            })
            .collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(networks)
    };
    let volumes = async {
        let mut volumes: Vec<LiveVolume> = engine
            .list_volumes(&filter)
            .await?
            .into_iter()
            .map(|v| LiveVolume {
                name: v.name,
                driver: v.driver,
            })
            .collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    };
    let unique: std::collections::BTreeSet<&String> = images.iter().collect();
    let image_ids = async {
        let ids = try_join_all(unique.iter().map(|image| async move {
            Ok::<_, EngineError>((image.to_string(), engine.image_id(image).await?))
        }))
        .await?;
        Ok(ids.into_iter().collect::<BTreeMap<_, _>>())
    };
    // What nginx runs with is what is in its container: read it back, so a hand edit there is
    // drift like any other. Read whether or not the container is listed (a missing one answers
    // not found), so these reads need not wait for the listing.
    let proxy_files = async {
        let Some((name, paths)) = proxy else {
            return Ok(None);
        };
        let read = try_join_all(paths.iter().map(|path| async move {
            let content = engine
                .read_file(name, path)
                .await?
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
            Ok::<_, EngineError>((path.clone(), content))
        }))
        .await;
        match read {
            Ok(files) => Ok(Some((name, files.into_iter().collect::<BTreeMap<_, _>>()))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    };
    let (containers, networks, volumes, image_ids, proxy_files) =
        tokio::try_join!(containers, networks, volumes, image_ids, proxy_files)?;
    // Only the files of a proxy container of this release count.
    let proxy_files = match proxy_files {
        Some((name, files)) if containers.iter().any(|c| c.name == name) => files,
        _ => BTreeMap::new(),
    };

    Ok(LiveState {
        release: release.to_string(),
        containers,
        networks,
        volumes,
        images: image_ids,
        proxy_files,
    })
}

/// Reads our labels off an inspected container. Missing or unreadable labels are an error
/// naming the container: never skipped, or the planner would create a duplicate beside it.
fn live_container(info: ContainerInfo) -> Result<LiveContainer, EngineError> {
    let malformed = |reason: String| EngineError::MalformedLabels {
        name: info.name.clone(),
        reason,
    };
    let label = |key: &str| info.labels.get(key).filter(|v| !v.is_empty()).cloned();
    let service = label(labels::SERVICE)
        .ok_or_else(|| malformed(format!("`{}` is missing", labels::SERVICE)))?;
    let config = match label(labels::CONFIG) {
        Some(text) => Some(
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| malformed(format!("`{}` is not valid JSON: {e}", labels::CONFIG)))?,
        ),
        None => None,
    };
    Ok(LiveContainer {
        service,
        color: label(labels::COLOR),
        revision: label(labels::REVISION),
        config_hash: label(labels::CONFIG_HASH),
        config,
        id: info.id,
        name: info.name,
        image: info.image,
        image_id: info.image_id,
        state: info.state,
        health: info.health,
        restart_count: info.restart_count,
    })
}
