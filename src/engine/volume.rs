//! Volumes: list by label, create with ownership labels, remove.

use std::collections::{BTreeMap, HashMap};

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{ListVolumesOptions, RemoveVolumeOptions};

use super::ObjectKind::Volume;
use super::{label_filters, op_error, Engine, EngineError};
use crate::labels;
use crate::spec::model::VolumeSpec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
}

impl Engine {
    /// Every volume whose labels include all of `label_filter`.
    pub async fn list_volumes(
        &self,
        label_filter: &[String],
    ) -> Result<Vec<VolumeInfo>, EngineError> {
        let options = ListVolumesOptions {
            filters: Some(label_filters(label_filter)),
        };
        let what = label_filter.join(",");
        let listed = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(op_error("list", Volume, &what))?;
        Ok(listed
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| VolumeInfo {
                name: v.name,
                driver: v.driver,
                labels: v.labels.into_iter().collect(),
            })
            .collect())
    }

    /// Creates volume `name` owned by `release`. Returns `false` when it already existed: the
    /// engine answers a create for an existing name with the existing volume, and an undo must
    /// not delete data it did not create.
    pub async fn create_volume(
        &self,
        name: &str,
        spec: &VolumeSpec,
        release: &str,
    ) -> Result<bool, EngineError> {
        match self.docker.inspect_volume(name).await {
            Ok(_) => return Ok(false),
            Err(e) if super::status_of(&e) == Some(404) => {}
            Err(e) => return Err(op_error("inspect", Volume, name)(e)),
        }
        let mut vol_labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vol_labels.extend([
            (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
            (labels::RELEASE.to_string(), release.to_string()),
            (labels::KIND.to_string(), "volume".to_string()),
        ]);
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            driver: Some(spec.driver.clone()),
            labels: Some(vol_labels),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map_err(op_error("create", Volume, name))?;
        tracing::debug!(volume = name, "created volume");
        Ok(true)
    }

    pub async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        self.docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
            .map_err(op_error("remove", Volume, name))
    }
}
