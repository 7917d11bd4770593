//! The release spec as written in `release.yaml` (format version 1).
//!
//! Key names follow docker compose wherever compose has the concept, so a service can be pasted
//! from a `docker-compose.prod.yml`. Compose's alternative spellings (list or map for
//! `environment`, string or list for `command`, ...) are accepted and normalised by the accessor
//! methods, so the rest of the program sees one form.
//!
//! These types are deserialised from a document that already passed the JSON Schema
//! (`schemas/release.schema.json`), so `deny_unknown_fields` is a backstop, not the user-facing
//! error: the schema check reports unknown keys with their location and the closest valid key.

use std::collections::BTreeMap;
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// The whole document.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSpec {
    pub version: u32,
    /// Prefixes every container, network and volume the release owns.
    pub release: String,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub networks: IndexMap<String, NetworkSpec>,
    #[serde(default)]
    pub volumes: IndexMap<String, VolumeSpec>,
    pub services: IndexMap<String, ServiceSpec>,
    /// The nginx reverse proxy whose upstreams point at the live color of each routed service.
    #[serde(default)]
    pub proxy: Option<ProxySpec>,
    /// Webhooks told about deploys (see `notify`).
    #[serde(default)]
    pub notifications: Vec<NotificationSpec>,
    /// Release-level one-off jobs: `before` runs before any service changes, `after` after all.
    #[serde(default)]
    pub jobs: Option<JobsSpec>,
}

/// `jobs:` of a service or of the release (see docs/jobs.md).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobsSpec {
    #[serde(default)]
    pub before: Vec<JobSpec>,
    #[serde(default)]
    pub after: Vec<JobSpec>,
}

/// One one-off job: a container run to completion; exit code 0 is success.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    pub command: StringOrList,
    /// Default: the attached service's new image (required for release-level jobs).
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub entrypoint: Option<StringOrList>,
    #[serde(default)]
    pub environment: Option<Environment>,
    #[serde(default)]
    pub env_file: Option<StringOrList>,
    #[serde(default)]
    pub secrets: IndexMap<String, SecretSource>,
    #[serde(default)]
    pub networks: Option<ServiceNetworks>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Killed after this long (default `defaults::JOB_TIMEOUT`).
    #[serde(default)]
    pub timeout: Option<DurationStr>,
    #[serde(default)]
    pub when: JobWhen,
}

/// When a job runs (always at most once per revision).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum JobWhen {
    /// Only when the release changes what the job is attached to.
    #[default]
    Changed,
    /// On every revision, changed or not.
    Always,
}

impl JobSpec {
    /// The job as a service-shaped spec, so its container config is resolved by the same code
    /// as a service's (env files, environment, secrets, mounts, networks).
    pub fn as_service(&self, default_image: &str) -> ServiceSpec {
        ServiceSpec {
            image: self
                .image
                .clone()
                .unwrap_or_else(|| default_image.to_string()),
            command: Some(self.command.clone()),
            entrypoint: self.entrypoint.clone(),
            environment: self.environment.clone(),
            env_file: self.env_file.clone(),
            secrets: self.secrets.clone(),
            networks: self.networks.clone(),
            volumes: self.volumes.clone(),
            user: self.user.clone(),
            working_dir: self.working_dir.clone(),
            ..ServiceSpec::default()
        }
    }
}

/// One webhook target under `notifications:`. The URL is never in the spec: a webhook URL
/// carries its token, so it is read on the host from an env var or a file, as a `Secret`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NotificationSpec {
    pub name: String,
    pub format: NotificationFormat,
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default)]
    pub url_file: Option<String>,
    /// Which events go to this target; `None` = all of them.
    #[serde(default)]
    pub events: Option<Vec<EventKind>>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum NotificationFormat {
    /// A Slack incoming webhook: `text` plus blocks.
    Slack,
    /// The event itself as a JSON object.
    Json,
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An apply began (the plan is not empty).
    Started,
    Succeeded,
    /// The release could not be loaded, planned or applied, and the host may not be back where
    /// it was (the undo failed, or nothing was changed because the input was bad).
    Failed,
    /// A step failed and every completed step was undone: the host runs the previous release.
    RolledBack,
    /// The host no longer matches the revision it last applied.
    DriftDetected,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Started,
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::RolledBack,
        EventKind::DriftDetected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::RolledBack => "rolled_back",
            EventKind::DriftDetected => "drift_detected",
        }
    }
}

/// `proxy:`: one nginx container owned by the release. Its `nginx.conf` comes from the repo and
/// must `include` the upstreams file the reconciler renders (one `upstream` block per route).
/// Config changes are delivered into the running container, checked with `nginx -t` and
/// applied with a graceful reload (SIGHUP), never a restart.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    pub image: String,
    /// Path of the nginx.conf in the repo, relative to the directory holding release.yaml.
    pub config: String,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub networks: Option<ServiceNetworks>,
    /// Where the rendered upstreams are written inside the container (what nginx.conf includes).
    #[serde(default = "default_upstreams_file")]
    pub upstreams_file: String,
    /// Upstream name → the service and port it sends traffic to.
    pub routes: IndexMap<String, Route>,
    #[serde(default)]
    pub stop_grace_period: Option<DurationStr>,
}

pub fn default_upstreams_file() -> String {
    "/etc/nginx/reconciler/upstreams.conf".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub service: String,
    pub port: u16,
}

/// `verify:` on a blue-green service: an HTTP request sent through the proxy after the switch
/// (to 127.0.0.1 on the proxy's published port), retried for a short window. A failure
/// switches back.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VerifyProbe {
    #[serde(default = "default_http_path")]
    pub path: String,
    #[serde(default = "default_http_expect")]
    pub expect: u16,
    /// Text the response body must contain (e.g. the new version).
    #[serde(default)]
    pub body: Option<String>,
    /// `Host` header, to reach a name-based virtual server.
    #[serde(default)]
    pub host: Option<String>,
    /// The proxy's container port to send to; default: its first published TCP port.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub interval: Option<DurationStr>,
    #[serde(default)]
    pub deadline: Option<DurationStr>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    #[serde(default)]
    pub internal: bool,
    #[serde(default = "default_network_driver")]
    pub driver: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_network_driver() -> String {
    "bridge".to_string()
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    #[serde(default = "default_volume_driver")]
    pub driver: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_volume_driver() -> String {
    "local".to_string()
}

/// How a changed service is replaced.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Stop the old container, start the new one (what `docker compose up -d` does). The old one
    /// is kept, stopped and renamed, until the new one passes its gate, so it can be put back.
    #[default]
    Recreate,
    /// Start the new color beside the live one and switch the proxy (issue: blue-green).
    BlueGreen,
    /// `deploy.replicas` containers behind the proxy, replaced one at a time, start-first, each
    /// gated and switched in on its own (`plan::rolling`).
    Rolling,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Recreate => "recreate",
            Strategy::BlueGreen => "blue-green",
            Strategy::Rolling => "rolling",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// A tag (`name:tag`) or a digest (`name@sha256:...`).
    pub image: String,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub command: Option<StringOrList>,
    #[serde(default)]
    pub entrypoint: Option<StringOrList>,
    #[serde(default)]
    pub environment: Option<Environment>,
    /// Files on the host (never in git), read at apply time.
    #[serde(default)]
    pub env_file: Option<StringOrList>,
    /// Values resolved on the host at apply time, never written in the spec.
    #[serde(default)]
    pub secrets: IndexMap<String, SecretSource>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub networks: Option<ServiceNetworks>,
    #[serde(default)]
    pub depends_on: Option<DependsOn>,
    /// Docker's own HEALTHCHECK, compose syntax.
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
    /// The reconciler's gate: a probe it runs itself.
    #[serde(default)]
    pub health: Option<HealthGate>,
    #[serde(default)]
    pub deploy: Option<Deploy>,
    #[serde(default)]
    pub restart: Option<RestartPolicy>,
    #[serde(default)]
    pub logging: Option<Logging>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub stop_grace_period: Option<DurationStr>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub init: bool,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    #[serde(default)]
    pub tmpfs: Option<StringOrList>,
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// blue-green: checked through the proxy after the switch.
    #[serde(default)]
    pub verify: Option<VerifyProbe>,
    /// blue-green: how long nginx's old workers get to finish in-flight requests before the
    /// old color is stopped (default 10s; the wait ends early once nginx has no old workers).
    #[serde(default)]
    pub drain: Option<DurationStr>,
    /// One-off jobs run when this service changes (docs/jobs.md).
    #[serde(default)]
    pub jobs: Option<JobsSpec>,
    /// A stateful service: how to take a consistent backup before a release changes it or a
    /// service depending on it (see `docs/snapshots.md`).
    #[serde(default)]
    pub snapshot: Option<SnapshotSpec>,
    /// Files or directories from the repo delivered into the running container (see
    /// `crate::configs`): a change is pushed, reloaded and gated, never a recreate.
    #[serde(default)]
    pub configs: Vec<ConfigSpec>,
    /// How the service is told its `configs:` changed.
    #[serde(default)]
    pub reload: Option<ReloadSpec>,
    /// A probe that must pass after a reload (the `health:` shape).
    #[serde(default)]
    pub ready: Option<HealthGate>,
}

/// One entry of `configs:`: a file or directory of the repo, at the release's commit, and
/// where it goes in the container.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// Relative to the directory holding release.yaml; a trailing `/` names a directory.
    pub source: String,
    /// Absolute path in the container; a directory source goes to a directory target.
    pub target: String,
    /// What the content is (validators pick their check by it); default from the extension.
    #[serde(default)]
    pub kind: Option<ConfigKind>,
}

impl ConfigSpec {
    /// The declared kind, else the one the extension implies.
    pub fn effective_kind(&self) -> ConfigKind {
        self.kind
            .unwrap_or_else(|| ConfigKind::from_path(&self.source))
    }
}

/// What a config file is, so its validator knows how to read it.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigKind {
    Prometheus,
    PrometheusRules,
    Alertmanager,
    GrafanaDashboards,
    Yaml,
    Json,
    File,
}

impl ConfigKind {
    /// `.yml`/`.yaml` → yaml, `.json` → json, anything else → file.
    pub fn from_path(path: &str) -> ConfigKind {
        let lower = path.trim_end_matches('/').to_ascii_lowercase();
        if lower.ends_with(".yml") || lower.ends_with(".yaml") {
            ConfigKind::Yaml
        } else if lower.ends_with(".json") {
            ConfigKind::Json
        } else {
            ConfigKind::File
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::Prometheus => "prometheus",
            ConfigKind::PrometheusRules => "prometheus-rules",
            ConfigKind::Alertmanager => "alertmanager",
            ConfigKind::GrafanaDashboards => "grafana-dashboards",
            ConfigKind::Yaml => "yaml",
            ConfigKind::Json => "json",
            ConfigKind::File => "file",
        }
    }
}

/// `reload:`: exactly one of a signal to the container's main process or an HTTP request to
/// the container.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReloadSpec {
    #[serde(default)]
    pub signal: Option<String>,
    #[serde(default)]
    pub http: Option<ReloadHttp>,
    /// How long the reload (and its check) may take; default 30s.
    #[serde(default)]
    pub timeout: Option<DurationStr>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReloadHttp {
    pub port: u16,
    pub path: String,
    #[serde(default = "default_reload_method")]
    pub method: String,
    #[serde(default = "default_http_expect")]
    pub expect: u16,
}

fn default_reload_method() -> String {
    "POST".to_string()
}

/// `snapshot:` on a service: a command run by exec in its running container, whose stdout is
/// the snapshot, streamed into a file under the state dir.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSpec {
    /// argv, never a shell string (`["pg_dump", "-Fc", "-U", "postgres", "app"]`).
    pub exec: Vec<String>,
    #[serde(default)]
    pub format: SnapshotFormat,
    #[serde(default)]
    pub keep: Option<SnapshotKeep>,
    #[serde(default)]
    pub timeout: Option<DurationStr>,
}

/// What the snapshot file is, so that `snapshots verify` can check more than its checksum.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotFormat {
    /// Opaque bytes: verified by sha256 only.
    #[default]
    Raw,
    /// `pg_dump -Fc`: also verified by `pg_restore --list`.
    PostgresCustom,
}

impl SnapshotFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotFormat::Raw => "raw",
            SnapshotFormat::PostgresCustom => "postgres-custom",
        }
    }
}

/// Retention: a snapshot is kept while either rule keeps it (absent: kept forever); the
/// snapshots of the current and the previous release are never pruned.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct SnapshotKeep {
    /// The newest N of the service.
    #[serde(default)]
    pub last: Option<u32>,
    /// Those younger than D days.
    #[serde(default)]
    pub days: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    /// The list form; a single string is one element (compose splits `command` strings with a
    /// shell-like parser; we keep a string command as `sh -c`-free single words, see
    /// [`ServiceSpec::command_words`]).
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s.clone()],
            StringOrList::Many(v) => v.clone(),
        }
    }
}

/// `environment:` as compose accepts it: a map or a list of `KEY=VALUE`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Environment {
    Map(IndexMap<String, Option<ScalarValue>>),
    List(Vec<String>),
}

/// YAML scalars allowed as environment values; numbers and booleans are written as strings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ScalarValue {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl ScalarValue {
    pub fn as_env_string(&self) -> String {
        match self {
            ScalarValue::String(s) => s.clone(),
            ScalarValue::Integer(i) => i.to_string(),
            ScalarValue::Float(f) => f.to_string(),
            ScalarValue::Bool(b) => b.to_string(),
        }
    }
}

/// Where a secret's value comes from on the host at apply time.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// An environment variable of the reconciler's process.
    #[serde(default)]
    pub env: Option<String>,
    /// A file on the host; its content (without a trailing newline) is the value.
    #[serde(default)]
    pub file: Option<String>,
}

/// A published port in compose's short syntax (`"127.0.0.1:8080:80/tcp"`) or a bare number.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum PortSpec {
    Number(u16),
    Short(String),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ServiceNetworks {
    List(Vec<String>),
    Map(IndexMap<String, Option<ServiceNetwork>>),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServiceNetwork {
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DependsOn {
    List(Vec<String>),
    Map(IndexMap<String, DependsOnCondition>),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DependsOnCondition {
    #[serde(default = "default_condition")]
    pub condition: String,
}

fn default_condition() -> String {
    "service_started".to_string()
}

/// Compose's `healthcheck:`; becomes the container's Docker HEALTHCHECK.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    #[serde(default)]
    pub test: Option<StringOrList>,
    #[serde(default)]
    pub interval: Option<DurationStr>,
    #[serde(default)]
    pub timeout: Option<DurationStr>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub start_period: Option<DurationStr>,
    #[serde(default)]
    pub disable: bool,
}

/// The reconciler's own gate on a new container: one probe kind, and its timing.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HealthGate {
    #[serde(default)]
    pub http: Option<HttpProbe>,
    #[serde(default)]
    pub tcp: Option<TcpProbe>,
    #[serde(default)]
    pub exec: Option<ExecProbe>,
    #[serde(default)]
    pub interval: Option<DurationStr>,
    #[serde(default)]
    pub timeout: Option<DurationStr>,
    #[serde(default)]
    pub deadline: Option<DurationStr>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    pub port: u16,
    #[serde(default = "default_http_path")]
    pub path: String,
    #[serde(default = "default_http_expect")]
    pub expect: u16,
}

fn default_http_path() -> String {
    "/".to_string()
}

fn default_http_expect() -> u16 {
    200
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {
    pub port: u16,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExecProbe {
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    #[serde(default)]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub replicas: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub limits: Option<ResourceLimits>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// `"2.0"` or `2`.
    #[serde(default)]
    pub cpus: Option<ScalarValue>,
    /// `2g`, `512m`, `1024k`, or bytes.
    #[serde(default)]
    pub memory: Option<ScalarValue>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum RestartPolicy {
    #[serde(rename = "no")]
    No,
    #[serde(rename = "always")]
    Always,
    #[serde(rename = "on-failure")]
    OnFailure,
    #[serde(rename = "unless-stopped")]
    UnlessStopped,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    pub driver: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// A duration in compose's notation (`1m30s`, `500ms`, `2s`), kept as written for display and
/// parsed on demand. The schema's pattern guarantees it parses.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct DurationStr(pub String);

impl DurationStr {
    pub fn parse(&self) -> Result<Duration, humantime::DurationError> {
        humantime::parse_duration(self.0.trim())
    }
}

/// `networks:` of a service or of the proxy as `(name, aliases)` pairs, in the order written.
fn attachments(networks: &Option<ServiceNetworks>) -> Vec<(String, Vec<String>)> {
    match networks {
        None => Vec::new(),
        Some(ServiceNetworks::List(v)) => v.iter().map(|n| (n.clone(), Vec::new())).collect(),
        Some(ServiceNetworks::Map(m)) => m
            .iter()
            .map(|(n, cfg)| {
                (
                    n.clone(),
                    cfg.as_ref().map(|c| c.aliases.clone()).unwrap_or_default(),
                )
            })
            .collect(),
    }
}

impl ProxySpec {
    /// Network names with their aliases, in the order written (same forms as a service's).
    pub fn network_attachments(&self) -> Vec<(String, Vec<String>)> {
        attachments(&self.networks)
    }

    /// Upstream names routed to `service`, in the order written.
    pub fn routes_to<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.routes
            .iter()
            .filter(move |(_, r)| r.service == service)
            .map(|(u, _)| u.as_str())
    }
}

impl ServiceSpec {
    /// Names of the services this one waits for, in the order written.
    pub fn dependencies(&self) -> Vec<String> {
        match &self.depends_on {
            None => Vec::new(),
            Some(DependsOn::List(v)) => v.clone(),
            Some(DependsOn::Map(m)) => m.keys().cloned().collect(),
        }
    }

    /// Network names with their aliases, in the order written.
    pub fn network_attachments(&self) -> Vec<(String, Vec<String>)> {
        attachments(&self.networks)
    }

    /// `environment:` as ordered `(key, value)` pairs; a list entry without `=` and a map entry
    /// with no value take the value from the reconciler's own environment, as compose does
    /// (`None` here; resolved at apply time).
    pub fn environment_pairs(&self) -> Vec<(String, Option<String>)> {
        match &self.environment {
            None => Vec::new(),
            Some(Environment::Map(m)) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(ScalarValue::as_env_string)))
                .collect(),
            Some(Environment::List(v)) => v
                .iter()
                .map(|entry| match entry.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (entry.clone(), None),
                })
                .collect(),
        }
    }
}
