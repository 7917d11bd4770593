//! `examples/monitoring/`: promtool accepts the Prometheus config and the alert rules and their
//! unit tests pass (in the locally built Prometheus image); every alert has a firing and a quiet
//! unit test; the Grafana dashboard is well formed, its PromQL parses, and the rules and the
//! dashboard name only reconciler's own metrics.

mod common;

use common::images::{self, PROMETHEUS, TEST_LABEL};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Counters, gauges and info metrics reconciler exports (besides `process_*`).
const METRICS: &[&str] = &[
    "reconciler_reconcile_total",
    "reconciler_rollbacks_total",
    "reconciler_health_gate_failures_total",
    "reconciler_drift_detected",
    "reconciler_services",
    "reconciler_git_fetch_errors_total",
    "reconciler_desired_revision_info",
    "reconciler_applied_revision_info",
    "reconciler_last_apply_timestamp_seconds",
    "reconciler_suspended",
];

/// Histograms: their `_bucket`, `_sum` and `_count` series.
const HISTOGRAMS: &[&str] = &[
    "reconciler_reconcile_duration_seconds",
    "reconciler_step_duration_seconds",
    "reconciler_git_fetch_duration_seconds",
];

/// The alerts the examples promise, by name.
const ALERTS: &[&str] = &[
    "ReconcilerReconcileFailing",
    "ReconcilerRolledBack",
    "ReconcilerDriftPersisting",
    "ReconcilerAppliedRevisionBehind",
    "ReconcilerDown",
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/monitoring")
}

fn read(name: &str) -> String {
    let path = dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(name: &str) -> Value {
    serde_saphyr::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn is_known_metric(name: &str, extra: &[&str]) -> bool {
    if name.starts_with("process_") || METRICS.contains(&name) || extra.contains(&name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|base| HISTOGRAMS.contains(&base))
    })
}

/// Words that are PromQL syntax, not metric names, when not followed by `(`.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "inf",
    "nan",
];
/// Words whose following parenthesised list holds label names.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Index just past the closing `close` that matches the opener at `i`, skipping quoted text.
fn skip_past(chars: &[char], mut i: usize, close: char) -> usize {
    i += 1;
    while i < chars.len() && chars[i] != close {
        if matches!(chars[i], '"' | '\'' | '`') {
            i = skip_string(chars, i);
        } else {
            i += 1;
        }
    }
    i + 1
}

fn skip_string(chars: &[char], mut i: usize) -> usize {
    let quote = chars[i];
    i += 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The metric names a PromQL expression selects: identifiers that are not functions,
/// keywords, label names of a grouping clause, or inside label matchers, strings, ranges or
/// Grafana variables (`$x`, `${x}`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut labels_next = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_past(&chars, i, '}'),
            '[' => i = skip_past(&chars, i, ']'),
            '(' if labels_next => {
                i = skip_past(&chars, i, ')');
                labels_next = false;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_past(&chars, i, '}');
                }
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // Numbers and durations (`0.95`, `5m`, `1e3`).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if GROUPING.contains(&word.as_str()) {
                    labels_next = true;
                } else if next != Some(&'(') && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Names in `exprs` (labelled by where they come from) that are not reconciler's metrics.
fn unknown_metrics(exprs: &[(String, String)], extra: &[&str]) -> Vec<String> {
    exprs
        .iter()
        .flat_map(|(place, expr)| {
            metric_names(expr)
                .into_iter()
                .filter(|n| !is_known_metric(n, extra))
                .map(move |n| format!("{place}: {n} in {expr:?}"))
        })
        .collect()
}

/// (alert name, expr) of every rule in alerts.yml.
fn alert_rules() -> Vec<(String, String)> {
    let rules = yaml("alerts.yml");
    let groups = rules["groups"].as_array().expect("alerts.yml: groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            let name = r["alert"]
                .as_str()
                .expect("every rule is an alert")
                .to_string();
            let expr = r["expr"].as_str().expect("rule expr").to_string();
            (name, expr)
        })
        .collect()
}

/// Every panel, including those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().cloned().unwrap_or_default() {
        out.extend(p["panels"].as_array().cloned().unwrap_or_default());
        out.push(p);
    }
    out
}

/// (where, expr) of every PromQL expression in the dashboard: panel targets, annotations, and
/// the metric of `label_values(metric, label)` variable queries.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().cloned().unwrap_or_default() {
            if let Some(e) = t["expr"].as_str() {
                let place = format!("panel {} {}", p["id"], t["refId"]);
                exprs.push((place, e.to_string()));
            }
        }
    }
    for a in dashboard["annotations"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        if let Some(e) = a["expr"].as_str() {
            exprs.push((format!("annotation {}", a["name"]), e.to_string()));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let query = v["query"]["query"].as_str().or(v["definition"].as_str());
        if let Some(args) = query.and_then(|q| q.trim().strip_prefix("label_values(")) {
            let metric = args.split(',').next().unwrap_or_default().trim();
            exprs.push((format!("variable {}", v["name"]), metric.to_string()));
        }
    }
    exprs
}

/// Runs promtool in the Prometheus image with `mount` at /m (read-only) as the working
/// directory. Root in the container, so it reads files whatever their host owner.
fn promtool(mount: &Path, args: &[&str]) -> Output {
    images::ensure_images(&["prometheus"]);
    let case = format!("io.reconciler.test.case=monitoring-{}", std::process::id());
    let volume = format!("{}:/m:ro", mount.display());
    Command::new("docker")
        .args(["run", "--rm", "--label", TEST_LABEL, "--label", &case])
        .args([
            "-u",
            "0",
            "-w",
            "/m",
            "-v",
            &volume,
            "--entrypoint",
            "promtool",
        ])
        .arg(PROMETHEUS)
        .args(args)
        .output()
        .expect("run docker CLI")
}

#[test]
fn promtool_accepts_the_config_and_rules_and_the_rule_unit_tests_pass() {
    let check = promtool(&dir(), &["check", "config", "prometheus.yml"]);
    assert!(check.status.success(), "{}", common::show(&check));
    let stdout = String::from_utf8_lossy(&check.stdout);
    let found = format!("SUCCESS: {} rules found", alert_rules().len());
    assert!(stdout.contains(&found), "{}", common::show(&check));

    let rules = promtool(&dir(), &["check", "rules", "alerts.yml"]);
    assert!(rules.status.success(), "{}", common::show(&rules));

    let tests = promtool(&dir(), &["test", "rules", "alerts.test.yml"]);
    assert!(tests.status.success(), "{}", common::show(&tests));
    assert!(
        String::from_utf8_lossy(&tests.stdout).contains("SUCCESS"),
        "{}",
        common::show(&tests)
    );
}

#[test]
fn promtool_refuses_a_broken_rule_and_a_wrong_unit_test() {
    // The same commands must fail on bad input, or the check above proves nothing.
    let tmp = tempfile::tempdir().expect("temp dir");
    let alerts = read("alerts.yml");
    let broken = alerts.replacen("== 0", "== ", 1);
    assert_ne!(broken, alerts, "alerts.yml has no `== 0` to break");
    std::fs::write(tmp.path().join("alerts.yml"), broken).expect("write");
    let out = promtool(tmp.path(), &["check", "rules", "alerts.yml"]);
    assert!(!out.status.success(), "{}", common::show(&out));

    // A drift of 20 minutes does not satisfy `for: 30m`: expecting it to fire must fail.
    std::fs::write(tmp.path().join("alerts.yml"), &alerts).expect("write");
    let tests = read("alerts.test.yml");
    let wrong = tests.replacen("eval_time: 45m", "eval_time: 26m", 1);
    assert_ne!(wrong, tests, "alerts.test.yml has no `eval_time: 45m`");
    std::fs::write(tmp.path().join("alerts.test.yml"), wrong).expect("write");
    let out = promtool(tmp.path(), &["test", "rules", "alerts.test.yml"]);
    assert!(!out.status.success(), "{}", common::show(&out));
    assert!(
        common::show(&out).contains("alertname: ReconcilerDriftPersisting, time: 26m"),
        "{}",
        common::show(&out)
    );
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let names: Vec<String> = alert_rules().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ALERTS, "alerts.yml rules");
    let tests = yaml("alerts.test.yml");
    let cases: Vec<Value> = tests["tests"]
        .as_array()
        .expect("alerts.test.yml: tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().cloned().unwrap_or_default())
        .collect();
    for alert in ALERTS {
        let of_alert: Vec<&Value> = cases.iter().filter(|c| c["alertname"] == *alert).collect();
        let fires = of_alert
            .iter()
            .any(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()));
        let quiet = of_alert
            .iter()
            .any(|c| c["exp_alerts"].as_array().is_some_and(|a| a.is_empty()));
        assert!(fires, "{alert}: no unit test where it fires");
        assert!(quiet, "{alert}: no unit test where it stays quiet");
    }
}

#[test]
fn alert_rules_name_only_reconciler_metrics() {
    let rules = alert_rules();
    // `up` is Prometheus' own series for the scrape job.
    let unknown = unknown_metrics(&rules, &["up"]);
    assert!(unknown.is_empty(), "unknown metrics: {unknown:#?}");
    let used: BTreeSet<String> = rules.iter().flat_map(|(_, e)| metric_names(e)).collect();
    assert!(used.contains("up"), "no rule on up: {used:?}");
}

#[test]
fn dashboard_is_well_formed_and_names_only_reconciler_metrics() {
    let text = read("dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard.json is valid JSON");
    assert_eq!(dashboard["title"], "Reconciler");
    assert_eq!(dashboard["uid"], "reconciler-overview");
    let all = panels(&dashboard);
    let graphs: Vec<&Value> = all.iter().filter(|p| p["type"] != "row").collect();
    assert!(graphs.len() >= 10, "only {} panels", graphs.len());
    let mut ids = BTreeSet::new();
    for p in &all {
        assert!(
            ids.insert(p["id"].to_string()),
            "duplicate panel id {}",
            p["id"]
        );
        assert!(
            p["title"].as_str().is_some_and(|t| !t.is_empty()),
            "panel {} has no title",
            p["id"]
        );
        assert!(
            p["gridPos"]["w"].as_u64().is_some(),
            "panel {} has no gridPos",
            p["id"]
        );
    }
    for p in &graphs {
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(
            !targets.is_empty() && targets.iter().all(|t| t["expr"].is_string()),
            "panel {} ({}) has no PromQL targets",
            p["id"],
            p["title"]
        );
    }

    let exprs = dashboard_exprs(&dashboard);
    let unknown = unknown_metrics(&exprs, &[]);
    assert!(unknown.is_empty(), "unknown metrics: {unknown:#?}");
    // Every metric of the list is on the dashboard somewhere.
    let used: BTreeSet<String> = exprs.iter().flat_map(|(_, e)| metric_names(e)).collect();
    for m in METRICS {
        assert!(used.contains(*m), "{m} is on no panel");
    }
    for h in HISTOGRAMS {
        assert!(used.contains(&format!("{h}_bucket")), "{h} is on no panel");
    }
}

#[test]
fn dashboard_promql_parses() {
    // promtool has no "parse this query" command; as recording rules, each expression is parsed
    // by `promtool check rules`. Grafana's variables get values first.
    let dashboard: Value = serde_json::from_str(&read("dashboard.json")).expect("valid JSON");
    let rules: Vec<Value> = dashboard_exprs(&dashboard)
        .into_iter()
        .filter(|(place, _)| !place.starts_with("variable"))
        .enumerate()
        .map(|(n, (_, expr))| {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*");
            serde_json::json!({ "record": format!("dashboard:expr_{n}"), "expr": expr })
        })
        .collect();
    let count = rules.len();
    let file = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    let tmp = tempfile::tempdir().expect("temp dir");
    // JSON is YAML: promtool reads it as a rule file.
    std::fs::write(tmp.path().join("dashboard-rules.yml"), file.to_string()).expect("write");
    let out = promtool(tmp.path(), &["check", "rules", "dashboard-rules.yml"]);
    assert!(out.status.success(), "{}", common::show(&out));
    let found = format!("SUCCESS: {count} rules found");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&found),
        "{}",
        common::show(&out)
    );
}

#[test]
fn the_metric_name_check_catches_strangers() {
    let names = metric_names(
        "histogram_quantile(0.95, sum by (le, step) (rate(reconciler_step_duration_seconds_bucket{instance=~\"$instance\", x=\"a}b\"}[$__rate_interval]))) \
         / on (job) group_left (revision) reconciler_applied_revision_info offset 5m > bool 0",
    );
    let expected: BTreeSet<String> = [
        "reconciler_step_duration_seconds_bucket",
        "reconciler_applied_revision_info",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names, expected);
    let bad = vec![
        (
            "a".to_string(),
            "rate(reconciler_reconcile_totl[5m])".to_string(),
        ),
        (
            "b".to_string(),
            "sum(reconciler_services_bucket)".to_string(),
        ),
        ("c".to_string(), "up == 0".to_string()),
        (
            "d".to_string(),
            "process_open_fds / node_filefd_maximum".to_string(),
        ),
    ];
    let unknown = unknown_metrics(&bad, &[]);
    assert_eq!(unknown.len(), 4, "{unknown:#?}");
    assert!(unknown[3].contains("node_filefd_maximum"), "{unknown:#?}");
}
