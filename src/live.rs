//! What the engine runs now, for one release, in the few fields `plan` compares.
//!
//! `observe` lists the release's objects by their ownership labels and converts bollard's types
//! into these at the boundary. A container whose labels cannot be read is an error, never
//! skipped: skipping it would make the planner create a duplicate.

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
    /// Jobs that already succeeded for the revision being planned (`<job key>@<config hash>`),
    /// from the state dir (`state::jobs`); they do not run again for that revision.
    pub jobs_done: std::collections::BTreeSet<String>,
    /// The `configs:` files in each service container that declares them (container name →
    /// path → sha256 of the content), read back from the container (`crate::configs::observe`).
    /// A missing file is absent.
    pub config_files: BTreeMap<String, BTreeMap<String, String>>,
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

    // Every request below is independent of the others: they go to the engine together, so
    // observing costs about the slowest of them (a proxy file read, an archive download of
    // tens of milliseconds), not their sum.
    let summaries = engine.list_containers(&filter).await?;
    let inspected = futures_util::future::try_join_all(
        summaries
            .iter()
            // A job's container is not a service's; a leftover one is removed by `job::clean_up`.
            .filter(|summary| !summary.labels.contains_key(labels::JOB))
            // Inspect by id: a name may change under us (a concurrent rename), an id cannot.
            .map(|summary| async move {
                match engine.inspect_container(&summary.id).await {
                    Ok(info) => Ok(Some(info)),
                    // Removed between list and inspect: it is gone, which is what we would
                    // observe.
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                }
            }),
    );
    let mut unique_images: Vec<&String> = images.iter().collect();
    unique_images.sort();
    unique_images.dedup();
    let image_ids =
        futures_util::future::try_join_all(unique_images.into_iter().map(|image| async move {
            Ok::<_, EngineError>((image.clone(), engine.image_id(image).await?))
        }));
    // What nginx runs with is what is in its container: read it back, so a hand edit there is
    // drift like any other. Read only if the container exists (it is in the listing).
    let proxy = proxy.filter(|(name, _)| {
        summaries
            .iter()
            .any(|s| s.name == *name && !s.labels.contains_key(labels::JOB))
    });
    let proxy_files = async move {
        let Some((name, paths)) = proxy else {
            return Ok(Vec::new());
        };
        match engine.read_files(name, paths).await {
            Ok(contents) => Ok(paths
                .iter()
                .cloned()
                .zip(
                    contents
                        .into_iter()
                        .map(|c| c.map(|bytes| String::from_utf8_lossy(&bytes).into_owned())),
                )
                .collect()),
            // Removed since the listing: its inspect says so too, and the container is
            // observed as gone.
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    };
    let (inspected, networks, volumes, image_ids, proxy_files) = tokio::try_join!(
        inspected,
        engine.list_networks(&filter),
        engine.list_volumes(&filter),
        image_ids,
        proxy_files,
    )?;

    let mut containers = inspected
        .into_iter()
        .flatten()
        .map(live_container)
        .collect::<Result<Vec<_>, _>>()?;
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    let proxy_files = match proxy {
        Some((name, _)) if containers.iter().any(|c| c.name == name) => {
            proxy_files.into_iter().collect()
        }
        _ => BTreeMap::new(),
    };

    let mut networks: Vec<LiveNetwork> = networks
        .into_iter()
        .map(|n| LiveNetwork {
            id: n.id,
            name: n.name,
            internal: n.internal,
            driver: n.driver,
        })
        .collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));

    let mut volumes: Vec<LiveVolume> = volumes
        .into_iter()
        .map(|v| LiveVolume {
            name: v.name,
            driver: v.driver,
        })
        .collect();
    volumes.sort_by(|a, b| a.name.cmp(&b.name));

    Ok(LiveState {
        release: release.to_string(),
        containers,
        networks,
        volumes,
        images: image_ids.into_iter().collect(),
        proxy_files,
        jobs_done: Default::default(),
        config_files: BTreeMap::new(),
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
