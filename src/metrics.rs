//! Prometheus metrics of the daemon, served at `/metrics` (reference: docs/metrics.md).
//!
//! Names are a contract with `examples/monitoring/` (dashboard and alert rules): change them
//! only together. Labels stay low-cardinality: the revision appears only in the two `_info`
//! gauges, and no label carries error text or the release name (one daemon, one release).

use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::apply::{ApplyError, StepReport};

/// How a cycle ended (`reconciler_reconcile_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CycleResult {
    Applied,
    /// The host already matched git (or the revision is a known failure waiting for a fix).
    Noop,
    /// The cycle errored without a complete rollback: git, spec, engine, or an undo failed.
    Failed,
    /// The apply failed and the host was put back as it was.
    RolledBack,
}

impl CycleResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CycleResult::Applied => "applied",
            CycleResult::Noop => "noop",
            CycleResult::Failed => "failed",
            CycleResult::RolledBack => "rolled_back",
        }
    }
}

/// Why a rollback happened: a small fixed set, so the label stays bounded. `None`: nothing
/// had started, so nothing was rolled back.
pub fn rollback_reason(err: &ApplyError) -> Option<&'static str> {
    match err {
        ApplyError::Cancelled { .. } => Some("cancelled"),
        ApplyError::Failed { action, .. } => Some(match *action {
            "gate" => "gate",
            "switch" => "switch",
            "verify" => "verify",
            // A service's configs: the reload failed, or the service was not ready after it.
            "reload" => "reload",
            "ready" => "ready",
            _ => "other",
        }),
        ApplyError::Journal { .. } => None,
    }
}

/// Every metric the daemon exports, registered in its own registry (no global state).
pub struct Metrics {
    registry: Registry,
    reconcile_total: IntCounterVec,
    reconcile_duration: Histogram,
    step_duration: HistogramVec,
    rollbacks_total: IntCounterVec,
    gate_failures_total: IntCounterVec,
    drift_detected: IntGaugeVec,
    services: IntGaugeVec,
    git_fetch_duration: Histogram,
    git_fetch_errors_total: IntCounter,
    desired_revision: IntGaugeVec,
    applied_revision: IntGaugeVec,
    last_apply_timestamp: Gauge,
    suspended: IntGauge,
    /// The revisions currently exported by the `_info` gauges (desired, applied), so the old
    /// series can be removed when they change.
    revisions: Mutex<(Option<String>, Option<String>)>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot register metric: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// 10 ms .. 10 min, roughly ×2.5 per bucket: a no-op cycle lands in the first buckets, a
/// blue-green deploy with a long gate in the last.
const CYCLE_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// A git fetch from a local path takes milliseconds, over the network seconds.
const FETCH_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let reconcile_total = IntCounterVec::new(
            Opts::new(
                "reconciler_reconcile_total",
                "Reconcile cycles, by how they ended.",
            ),
            &["result"],
        )?;
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "reconciler_reconcile_duration_seconds",
                "Duration of a whole reconcile cycle (fetch, plan, apply).",
            )
            .buckets(CYCLE_BUCKETS.to_vec()),
        )?;
        let step_duration = HistogramVec::new(
            HistogramOpts::new(
                "reconciler_step_duration_seconds",
                "Duration of each completed apply step, by kind (pull, create, start, gate, switch, ...).",
            )
            .buckets(CYCLE_BUCKETS.to_vec()),
            &["step"],
        )?;
        let rollbacks_total = IntCounterVec::new(
            Opts::new(
                "reconciler_rollbacks_total",
                "Applies undone, by the kind of step that failed (gate, switch, verify, cancelled, other).",
            ),
            &["reason"],
        )?;
        let gate_failures_total = IntCounterVec::new(
            Opts::new(
                "reconciler_health_gate_failures_total",
                "Health gates that failed, by service.",
            ),
            &["service"],
        )?;
        let drift_detected = IntGaugeVec::new(
            Opts::new(
                "reconciler_drift_detected",
                "1 when the service still differs from git after the last cycle.",
            ),
            &["service"],
        )?;
        let services = IntGaugeVec::new(
            Opts::new(
                "reconciler_services",
                "Services of the release by sync state after the last cycle.",
            ),
            &["state"],
        )?;
        let git_fetch_duration = Histogram::with_opts(
            HistogramOpts::new(
                "reconciler_git_fetch_duration_seconds",
                "Duration of git fetches, failed ones included.",
            )
            .buckets(FETCH_BUCKETS.to_vec()),
        )?;
        let git_fetch_errors_total = IntCounter::new(
            "reconciler_git_fetch_errors_total",
            "Git fetches that failed.",
        )?;
        let desired_revision = IntGaugeVec::new(
            Opts::new(
                "reconciler_desired_revision_info",
                "The revision git asks for (value 1).",
            ),
            &["revision"],
        )?;
        let applied_revision = IntGaugeVec::new(
            Opts::new(
                "reconciler_applied_revision_info",
                "The revision the host runs (value 1).",
            ),
            &["revision"],
        )?;
        let last_apply_timestamp = Gauge::new(
            "reconciler_last_apply_timestamp_seconds",
            "Unix time of the last successful apply.",
        )?;
        let suspended = IntGauge::new(
            "reconciler_suspended",
            "1 while automatic sync is suspended.",
        )?;
        registry.register(Box::new(reconcile_total.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(step_duration.clone()))?;
        registry.register(Box::new(rollbacks_total.clone()))?;
        registry.register(Box::new(gate_failures_total.clone()))?;
        registry.register(Box::new(drift_detected.clone()))?;
        registry.register(Box::new(services.clone()))?;
        registry.register(Box::new(git_fetch_duration.clone()))?;
        registry.register(Box::new(git_fetch_errors_total.clone()))?;
        registry.register(Box::new(desired_revision.clone()))?;
        registry.register(Box::new(applied_revision.clone()))?;
        registry.register(Box::new(last_apply_timestamp.clone()))?;
        registry.register(Box::new(suspended.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        // Every result and both states exist from the start, so rate() and absent() work
        // before the first failure.
        for result in [
            CycleResult::Applied,
            CycleResult::Noop,
            CycleResult::Failed,
            CycleResult::RolledBack,
        ] {
            reconcile_total.with_label_values(&[result.as_str()]);
        }
        for state in ["in_sync", "out_of_sync"] {
            services.with_label_values(&[state]);
        }
        Ok(Metrics {
            registry,
            reconcile_total,
            reconcile_duration,
            step_duration,
            rollbacks_total,
            gate_failures_total,
            drift_detected,
            services,
            git_fetch_duration,
            git_fetch_errors_total,
            desired_revision,
            applied_revision,
            last_apply_timestamp,
            suspended,
            revisions: Mutex::new((None, None)),
        })
    }

    pub fn cycle(&self, result: CycleResult, duration: Duration) {
        self.reconcile_total
            .with_label_values(&[result.as_str()])
            .inc();
        self.reconcile_duration.observe(duration.as_secs_f64());
    }

    pub fn steps(&self, steps: &[StepReport]) {
        for step in steps {
            self.step_duration
                .with_label_values(&[step.action])
                .observe(step.duration_ms as f64 / 1000.0);
        }
    }

    /// A failed apply: its rollback and, for a gate, the service whose gate failed.
    pub fn apply_failed(&self, err: &ApplyError) {
        if let ApplyError::Failed {
            action: "gate",
            service: Some(service),
            ..
        } = err
        {
            self.gate_failures_total
                .with_label_values(&[service.as_str()])
                .inc();
        }
        if let Some(reason) = rollback_reason(err).filter(|_| err.rolled_back()) {
            self.rollbacks_total.with_label_values(&[reason]).inc();
        }
    }

    pub fn git_fetch(&self, duration: Duration, ok: bool) {
        self.git_fetch_duration.observe(duration.as_secs_f64());
        if !ok {
            self.git_fetch_errors_total.inc();
        }
    }

    /// Which services differ from git after the cycle; `services` is every service of the
    /// release. A service gone from the spec loses its series.
    pub fn sync_state(&self, services: &[String], out_of_sync: &[String]) {
        self.drift_detected.reset();
        let mut drifted = 0;
        for service in services {
            let out = out_of_sync.contains(service);
            drifted += i64::from(out);
            self.drift_detected
                .with_label_values(&[service.as_str()])
                .set(i64::from(out));
        }
        let total = i64::try_from(services.len()).unwrap_or(i64::MAX);
        self.services
            .with_label_values(&["in_sync"])
            .set(total - drifted);
        self.services
            .with_label_values(&["out_of_sync"])
            .set(drifted);
    }

    pub fn desired_revision(&self, revision: &str) {
        if let Ok(mut revs) = self.revisions.lock() {
            swap_info(&self.desired_revision, &mut revs.0, revision);
        }
    }

    pub fn applied_revision(&self, revision: &str) {
        if let Ok(mut revs) = self.revisions.lock() {
            swap_info(&self.applied_revision, &mut revs.1, revision);
        }
    }

    /// A successful apply, now.
    pub fn applied_now(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_apply_timestamp.set(now.as_secs_f64());
    }

    /// Set by suspend/resume.
    pub fn set_suspended(&self, suspended: bool) {
        self.suspended.set(i64::from(suspended));
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// Moves an `_info` gauge to `revision`, removing the previous revision's series.
fn swap_info(gauge: &IntGaugeVec, current: &mut Option<String>, revision: &str) {
    if current.as_deref() == Some(revision) {
        return;
    }
    if let Some(old) = current.take() {
        let _ = gauge.remove_label_values(&[old.as_str()]);
    }
    gauge.with_label_values(&[revision]).set(1);
    *current = Some(revision.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_config_reload_or_ready_is_its_own_rollback_reason() {
        let failed = |action: &'static str| ApplyError::Failed {
            index: 0,
            action,
            service: Some("prometheus".to_string()),
            target: "mon-prometheus".to_string(),
            reason: String::new(),
            rolled_back: true,
            undo_errors: Vec::new(),
            completed: Vec::new(),
        };
        assert_eq!(rollback_reason(&failed("reload")), Some("reload"));
        assert_eq!(rollback_reason(&failed("ready")), Some("ready"));
        assert_eq!(rollback_reason(&failed("push_configs")), Some("other"));
    }

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .map(|l| l[series.len()..].trim())
    }

    #[test]
    fn results_exist_from_the_start_and_count() {
        let m = Metrics::new().unwrap();
        let text = m.render().unwrap();
        assert_eq!(
            line(&text, r#"reconciler_reconcile_total{result="failed"}"#),
            Some("0")
        );
        m.cycle(CycleResult::Applied, Duration::from_millis(20));
        m.cycle(CycleResult::Noop, Duration::from_millis(5));
        m.cycle(CycleResult::Noop, Duration::from_millis(5));
        let text = m.render().unwrap();
        assert_eq!(
            line(&text, r#"reconciler_reconcile_total{result="noop"}"#),
            Some("2")
        );
        assert_eq!(
            line(&text, "reconciler_reconcile_duration_seconds_count"),
            Some("3")
        );
        assert_eq!(
            line(
                &text,
                r#"reconciler_reconcile_duration_seconds_bucket{le="0.01"}"#
            ),
            Some("2")
        );
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }

    #[test]
    fn info_gauges_keep_one_series() {
        let m = Metrics::new().unwrap();
        m.applied_revision("aaa");
        m.applied_revision("bbb");
        m.desired_revision("bbb");
        let text = m.render().unwrap();
        assert!(!text.contains(r#"revision="aaa""#), "{text}");
        assert_eq!(
            line(&text, r#"reconciler_applied_revision_info{revision="bbb"}"#),
            Some("1")
        );
        assert_eq!(
            line(&text, r#"reconciler_desired_revision_info{revision="bbb"}"#),
            Some("1")
        );
    }

    #[test]
    fn sync_state_counts_and_forgets_removed_services() {
        let m = Metrics::new().unwrap();
        m.sync_state(&["api".into(), "web".into()], &["web".into()]);
        let text = m.render().unwrap();
        assert_eq!(
            line(&text, r#"reconciler_drift_detected{service="web"}"#),
            Some("1")
        );
        assert_eq!(
            line(&text, r#"reconciler_services{state="out_of_sync"}"#),
            Some("1")
        );
        m.sync_state(&["api".into()], &[]);
        let text = m.render().unwrap();
        assert!(!text.contains(r#"service="web""#), "{text}");
        assert_eq!(
            line(&text, r#"reconciler_services{state="in_sync"}"#),
            Some("1")
        );
    }

    #[test]
    fn gate_failure_counts_a_rollback_and_the_service() {
        let m = Metrics::new().unwrap();
        let err = ApplyError::Failed {
            index: 3,
            action: "gate",
            service: Some("web".into()),
            target: "t-web".into(),
            reason: "unhealthy".into(),
            rolled_back: true,
            undo_errors: vec![],
            completed: vec![],
        };
        m.apply_failed(&err);
        let text = m.render().unwrap();
        assert_eq!(
            line(&text, r#"reconciler_rollbacks_total{reason="gate"}"#),
            Some("1")
        );
        assert_eq!(
            line(
                &text,
                r#"reconciler_health_gate_failures_total{service="web"}"#
            ),
            Some("1")
        );
    }
}
