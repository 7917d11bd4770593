//! Networks: list by label, inspect, create with ownership labels, remove.

use std::collections::{BTreeMap, HashMap};

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{InspectNetworkOptions, ListNetworksOptions};

use super::ObjectKind::Network;
use super::{label_filters, op_error, to_btree, Engine, EngineError};
use crate::labels;
use crate::spec::model::NetworkSpec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    pub internal: bool,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
}

impl Engine {
    /// Every network whose labels include all of `label_filter`.
    pub async fn list_networks(
        &self,
        label_filter: &[String],
    ) -> Result<Vec<NetworkInfo>, EngineError> {
        let options = ListNetworksOptions {
            filters: Some(label_filters(label_filter)),
        };
        let what = label_filter.join(",");
        let rows = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(op_error("list", Network, &what))?;
        Ok(rows
            .into_iter()
            .map(|n| NetworkInfo {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                internal: n.internal.unwrap_or(false),
                driver: n.driver.unwrap_or_default(),
                labels: to_btree(n.labels),
            })
            .collect())
    }

    /// Inspects a network by name or id; `None` when there is none.
    pub async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>, EngineError> {
        match self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
            .map_err(op_error("inspect", Network, name))
        {
            Ok(n) => Ok(Some(NetworkInfo {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                internal: n.internal.unwrap_or(false),
                driver: n.driver.unwrap_or_default(),
                labels: to_btree(n.labels),
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates network `name` owned by `release`. Returns its id.
    pub async fn create_network(
        &self,
        name: &str,
        spec: &NetworkSpec,
        release: &str,
    ) -> Result<String, EngineError> {
        let mut net_labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        net_labels.extend([
            (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
            (labels::RELEASE.to_string(), release.to_string()),
            (labels::KIND.to_string(), "network".to_string()),
        ]);
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some(spec.driver.clone()),
            internal: Some(spec.internal),
            labels: Some(net_labels),
            ..Default::default()
        };
        let created = self
            .docker
            .create_network(request)
            .await
            .map_err(op_error("create", Network, name))?;
        tracing::debug!(network = name, id = %created.id, "created network");
        Ok(created.id)
    }

    pub async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        self.docker
            .remove_network(name)
            .await
            .map_err(op_error("remove", Network, name))
    }
}
