//! Prometheus configs, rule files and Alertmanager configs: the schema, plus the cross-references
//! a schema cannot express (names that must be unique, receivers that must exist). promtool
//! and amtool check the rest (PromQL, matchers, templates) where the image has them.

use std::collections::HashMap;

use serde_json::Value;

use super::parse::Doc;
use super::schema::{self, Schema};
use super::ConfigProblem;

/// Reports every `key` value in `items` that repeats an earlier one.
fn duplicates(
    file: &str,
    doc: &Doc,
    list_path: &str,
    key: &str,
    what: &str,
    out: &mut Vec<ConfigProblem>,
) {
    let Some(items) = doc.value.pointer(list_path).and_then(Value::as_array) else {
        return;
    };
    let dotted = list_path.trim_start_matches('/').replace('/', ".");
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let Some(name) = item.get(key).and_then(Value::as_str) else {
            continue;
        };
        if let Some(first) = seen.insert(name, i) {
            seen.insert(name, first);
            out.push(doc.problem(
                file,
                &format!("{dotted}.{i}.{key}"),
                format!("{what} `{name}` is defined twice (first at {dotted}.{first})"),
                "rename one of them or merge them",
            ));
        }
    }
}

pub fn check_config(file: &str, doc: &Doc) -> Vec<ConfigProblem> {
    let mut out = schema::validate(Schema::PrometheusConfig, file, doc);
    duplicates(
        file,
        doc,
        "/scrape_configs",
        "job_name",
        "scrape job",
        &mut out,
    );
    out
}

pub fn check_rules(file: &str, doc: &Doc) -> Vec<ConfigProblem> {
    let mut out = schema::validate(Schema::PrometheusRules, file, doc);
    duplicates(file, doc, "/groups", "name", "rule group", &mut out);
    out
}

pub fn check_alertmanager(file: &str, doc: &Doc) -> Vec<ConfigProblem> {
    let mut out = schema::validate(Schema::Alertmanager, file, doc);
    duplicates(file, doc, "/receivers", "name", "receiver", &mut out);
    let receivers: Vec<&str> = doc
        .value
        .get("receivers")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(|r| r.get("name")?.as_str()).collect())
        .unwrap_or_default();
    if let Some(route) = doc.value.get("route").filter(|r| r.is_object()) {
        if route.get("receiver").is_none() {
            out.push(doc.problem(
                file,
                "route.receiver",
                "the root route has no `receiver`",
                "name the default receiver: `receiver: NAME`, one of `receivers:`",
            ));
        }
        undefined_receivers(file, doc, route, "route", &receivers, &mut out);
    }
    out
}

/// Every route (the tree below `route`) whose receiver is not among `receivers`.
fn undefined_receivers(
    file: &str,
    doc: &Doc,
    route: &Value,
    path: &str,
    receivers: &[&str],
    out: &mut Vec<ConfigProblem>,
) {
    if let Some(name) = route.get("receiver").and_then(Value::as_str) {
        if !receivers.contains(&name) {
            let fix = match crate::spec::schema::suggest(name, receivers.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("add a receiver named `{name}` under `receivers:`"),
            };
            out.push(doc.problem(
                file,
                &format!("{path}.receiver"),
                format!("undefined receiver `{name}`"),
                fix,
            ));
        }
    }
    for (i, child) in route
        .get("routes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        undefined_receivers(
            file,
            doc,
            child,
            &format!("{path}.routes.{i}"),
            receivers,
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::file;
    use crate::validate::{check_structure, ConfigCheck};

    fn problems(check: ConfigCheck, text: &str) -> Vec<String> {
        check_structure(check, &[file("f.yml", text)])
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    const GOOD_CONFIG: &str = "global:\n  scrape_interval: 15s\n  external_labels: {env: prod, replica: 1}\n\
rule_files: [rules/*.yml]\nalerting:\n  alertmanagers:\n    - static_configs: [{targets: ['am:9093']}]\n\
scrape_configs:\n  - job_name: p\n    static_configs: [{targets: ['localhost:9090']}]\n";

    #[test]
    fn prometheus_config() {
        assert_eq!(
            problems(ConfigCheck::PrometheusConfig, GOOD_CONFIG),
            Vec::<String>::new()
        );
        let bad = "global:\n  scrape_interval: 5x\nscrape_config: []\nscrape_configs:\n  - job_name: a\n  - job_name: a\n  - static_configs: []\n";
        let p = problems(ConfigCheck::PrometheusConfig, bad);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(
            p[0..3].iter().any(|m| m
                .starts_with("f.yml:2:3: global.scrape_interval: expected a Prometheus duration")),
            "{p:#?}"
        );
        assert!(
            p.iter().any(|m| m.contains(
                "scrape_config: unknown key `scrape_config` (fix: did you mean `scrape_configs`?)"
            )),
            "{p:#?}"
        );
        assert!(
            p.iter().any(
                |m| m.contains("scrape_configs.2.job_name: required key `job_name` is missing")
            ),
            "{p:#?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with(
                "f.yml:6:5: scrape_configs.1.job_name: scrape job `a` is defined twice"
            )),
            "{p:#?}"
        );
    }

    #[test]
    fn prometheus_rules() {
        let good = "groups:\n  - name: g\n    rules:\n      - alert: Down\n        expr: up == 0\n        for: 5m\n        labels: {severity: page}\n      - record: job:up:sum\n        expr: sum by (job) (up)\n";
        assert_eq!(
            problems(ConfigCheck::PrometheusRules, good),
            Vec::<String>::new()
        );
        let bad = "groups:\n  - name: g\n    rules:\n      - alert: A\n        record: b\n        expr: up\n      - alert: C\n        for: soon\n  - name: g\n    rules:\n      - alert: D\n        expr: up\n        summary: x\n";
        let p = problems(ConfigCheck::PrometheusRules, bad);
        assert!(
            p.iter()
                .any(|m| m
                    .contains("groups.0.rules.0: a rule has exactly one of `alert` or `record`")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|m| m.contains("groups.0.rules.1.expr: required key `expr` is missing")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|m| m.contains("groups.0.rules.1.for: expected a Prometheus duration")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|m| m.contains("groups.1.rules.0.summary: unknown key")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|m| m.contains("groups.1.name: rule group `g` is defined twice")),
            "{p:#?}"
        );
        assert_eq!(p.len(), 5, "{p:#?}");
        let p = problems(ConfigCheck::PrometheusRules, "rules: []\n");
        assert_eq!(p.len(), 2, "{p:#?}");
    }

    #[test]
    fn alertmanager_config() {
        let good = "route:\n  receiver: ops\n  group_wait: 30s\n  routes:\n    - receiver: pager\n      matchers: ['severity=\"page\"']\nreceivers:\n  - name: ops\n  - name: pager\n";
        assert_eq!(
            problems(ConfigCheck::Alertmanager, good),
            Vec::<String>::new()
        );
        let bad = "route:\n  group_wait: thirty\n  routes:\n    - receiver: pagr\nreceivers:\n  - name: ops\n  - name: pager\n  - name: ops\n";
        let p = problems(ConfigCheck::Alertmanager, bad);
        assert!(
            p.iter()
                .any(|m| m.contains("route.group_wait: expected a duration")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|m| m.contains("route.receiver: the root route has no `receiver`")),
            "{p:#?}"
        );
        assert!(
            p.iter().any(|m| m.contains(
                "route.routes.0.receiver: undefined receiver `pagr` (fix: did you mean `pager`?)"
            )),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|m| m.contains("receivers.2.name: receiver `ops` is defined twice")),
            "{p:#?}"
        );
        assert_eq!(p.len(), 4, "{p:#?}");
        let p = problems(ConfigCheck::Alertmanager, "receivers: []\n");
        assert!(
            p.iter()
                .any(|m| m.contains("required key `route` is missing")),
            "{p:#?}"
        );
    }
}
