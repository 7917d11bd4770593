//! Config validation with the images' own tools (promtool, amtool) in one-off containers of the
//! real test images: the tool's message names the repo file and the problem, and no container
//! is left behind.

mod common;

use std::collections::BTreeMap;

use common::docker::{self as d, TestRelease, BUSYBOX};
use common::images::{ensure_images, ALERTMANAGER, PROMETHEUS};
use reconciler::engine::{OneOff, OneOffOutcome};
use reconciler::validate::{
    check_structure, check_with_tool, remove_leftover_checks, validate_service, ConfigCheck,
    ConfigFile, ConfigProblem, ToolVerdict, CHECK_KIND, CHECK_RELEASE,
};

const GOOD_RULES: &str = "groups:\n  - name: node\n    rules:\n      - alert: Down\n        expr: up == 0\n        for: 1m\n";
/// Structurally fine (the schema cannot read PromQL): only promtool can refuse it.
const BROKEN_RULES: &str =
    "groups:\n  - name: node\n    rules:\n      - alert: Down\n        expr: up == = 0\n";
const CONFIG: &str = "global:\n  scrape_interval: 15s\nrule_files:\n  - rules/*.yml\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['localhost:9090']\n";

fn file(source: &str, target: &str, content: &str) -> ConfigFile {
    ConfigFile {
        source: source.to_string(),
        target: target.to_string(),
        content: content.as_bytes().to_vec(),
    }
}

/// Labels for the check container. The release label is only for the test's cleanup (a
/// deploy must not put it on a check container, which has no service).
fn test_labels(t: &TestRelease) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("io.reconciler.test".to_string(), "1".to_string()),
        ("io.reconciler.release".to_string(), t.name.clone()),
    ])
}

fn assert_nothing_left(t: &TestRelease) {
    let left = d::docker(&["ps", "-aq", "--filter", &t.label_filter()]).unwrap_or_default();
    assert_eq!(left.trim(), "", "a check container was left behind");
}

async fn run(
    t: &TestRelease,
    image: &str,
    check: ConfigCheck,
    files: &[ConfigFile],
    alongside: &[ConfigFile],
) -> ToolVerdict {
    let engine = d::engine().await;
    let verdict = check_with_tool(
        &engine,
        &t.name,
        image,
        check,
        files,
        alongside,
        &test_labels(t),
    )
    .await
    .expect("the check ran");
    assert_nothing_left(t);
    verdict
}

fn refused(verdict: ToolVerdict) -> Vec<ConfigProblem> {
    match verdict {
        ToolVerdict::Refused { problems, .. } => problems,
        other => panic!("expected the tool to refuse, got {other:?}"),
    }
}

#[tokio::test]
async fn a_broken_rule_is_refused_by_promtool_before_anything_changes() {
    ensure_images(&["prometheus"]);
    let t = TestRelease::new("validate-rules");
    let good = file(
        "mon/rules/node.yml",
        "/etc/prometheus/rules/node.yml",
        GOOD_RULES,
    );
    let bad = file(
        "mon/rules/bad.yml",
        "/etc/prometheus/rules/bad.yml",
        BROKEN_RULES,
    );
    assert_eq!(
        check_structure(ConfigCheck::PrometheusRules, &[good.clone(), bad.clone()]),
        vec![]
    );

    let verdict = run(
        &t,
        PROMETHEUS,
        ConfigCheck::PrometheusRules,
        std::slice::from_ref(&good),
        &[],
    )
    .await;
    assert_eq!(
        verdict,
        ToolVerdict::Passed {
            tool: "promtool check rules".to_string()
        }
    );

    let verdict = run(
        &t,
        PROMETHEUS,
        ConfigCheck::PrometheusRules,
        &[good, bad],
        &[],
    )
    .await;
    let problems = refused(verdict);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let shown = problems[0].to_string();
    assert_eq!(problems[0].file, "mon/rules/bad.yml", "{shown}");
    // promtool's own words, with the container path mapped back to the repo path.
    assert!(shown.contains("mon/rules/bad.yml: 5:15:"), "{shown}");
    assert!(shown.contains("parse error"), "{shown}");
    assert!(!shown.contains("/etc/prometheus/rules"), "{shown}");
}

#[tokio::test]
async fn promtool_checks_the_config_with_its_rule_files_in_place() {
    ensure_images(&["prometheus"]);
    let t = TestRelease::new("validate-config");
    let config = file(
        "mon/prometheus.yml",
        "/etc/prometheus/prometheus.yml",
        CONFIG,
    );
    let rules = file(
        "mon/rules/node.yml",
        "/etc/prometheus/rules/node.yml",
        GOOD_RULES,
    );
    let bad_rules = file(
        "mon/rules/node.yml",
        "/etc/prometheus/rules/node.yml",
        BROKEN_RULES,
    );
    let check = ConfigCheck::PrometheusConfig;

    let verdict = run(
        &t,
        PROMETHEUS,
        check,
        std::slice::from_ref(&config),
        &[rules],
    )
    .await;
    assert!(matches!(verdict, ToolVerdict::Passed { .. }), "{verdict:?}");

    // The rule file the config loads through `rule_files:` is checked too.
    let problems = refused(
        run(
            &t,
            PROMETHEUS,
            check,
            std::slice::from_ref(&config),
            &[bad_rules],
        )
        .await,
    );
    let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("mon/rules/node.yml: ") && s.contains("parse error")),
        "{shown:#?}"
    );

    // Semantics the schema does not know: promtool's message names the file and the problem.
    let slow = CONFIG.replace(
        "- job_name: prometheus\n",
        "- job_name: prometheus\n    scrape_timeout: 1m\n",
    );
    let config = file(
        "mon/prometheus.yml",
        "/etc/prometheus/prometheus.yml",
        &slow,
    );
    assert_eq!(
        check_structure(check, std::slice::from_ref(&config)),
        vec![]
    );
    let problems = refused(run(&t, PROMETHEUS, check, &[config], &[]).await);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].file, "mon/prometheus.yml");
    assert!(
        problems[0].message.starts_with(
            "parsing YAML file mon/prometheus.yml: scrape timeout greater than scrape interval"
        ),
        "{}",
        problems[0]
    );
}

#[tokio::test]
async fn amtool_refuses_a_broken_alertmanager_config() {
    ensure_images(&["alertmanager"]);
    let t = TestRelease::new("validate-am");
    let good = "route:\n  receiver: ops\nreceivers:\n  - name: ops\n";
    let target = "/etc/prometheus/alertmanager.yml";
    let am = file("mon/alertmanager.yml", target, good);
    let check = ConfigCheck::Alertmanager;
    let verdict = run(&t, ALERTMANAGER, check, &[am], &[]).await;
    assert!(matches!(verdict, ToolVerdict::Passed { .. }), "{verdict:?}");

    // A matcher the schema takes as a string; amtool parses it.
    let bad = "route:\n  receiver: ops\n  routes:\n    - receiver: ops\n      matchers: ['severity=~(']\nreceivers:\n  - name: ops\n";
    let am = file("mon/alertmanager.yml", target, bad);
    assert_eq!(check_structure(check, std::slice::from_ref(&am)), vec![]);
    let problems = refused(run(&t, ALERTMANAGER, check, &[am], &[]).await);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].file, "mon/alertmanager.yml");
    assert_eq!(problems[0].tool.as_deref(), Some("amtool check-config"));
    assert!(
        problems[0].message.starts_with("error parsing regexp"),
        "{}",
        problems[0]
    );
}

#[tokio::test]
async fn an_image_without_the_tool_is_skipped_and_says_so() {
    ensure_images(&["busybox"]);
    let t = TestRelease::new("validate-absent");
    let rules = file(
        "mon/rules/bad.yml",
        "/etc/prometheus/rules/bad.yml",
        BROKEN_RULES,
    );
    let verdict = run(
        &t,
        BUSYBOX,
        ConfigCheck::PrometheusRules,
        std::slice::from_ref(&rules),
        &[],
    )
    .await;
    assert_eq!(
        verdict,
        ToolVerdict::Absent {
            tool: "promtool check rules".to_string()
        }
    );

    // An image that is not on the host is an error, not a skipped check.
    let engine = d::engine().await;
    let missing = "reconciler-test/not-built-anywhere:0";
    let err = check_with_tool(
        &engine,
        &t.name,
        missing,
        ConfigCheck::PrometheusRules,
        &[rules],
        &[],
        &test_labels(&t),
    )
    .await
    .expect_err("no such image");
    assert!(err.to_string().contains("not on this host"), "{err}");
    assert_nothing_left(&t);
}

#[tokio::test]
async fn a_one_off_past_its_timeout_is_an_error_and_is_removed() {
    ensure_images(&["busybox"]);
    let t = TestRelease::new("validate-timeout");
    let engine = d::engine().await;
    let argv = ["sleep", "60"].map(String::from);
    let files = [("/tmp/x.yml".to_string(), b"a: 1\n".to_vec())];
    let labels = test_labels(&t);
    let run = OneOff {
        image: BUSYBOX,
        argv: &argv,
        files: &files,
        labels: &labels,
        timeout: std::time::Duration::from_secs(2),
    };
    let err = engine
        .run_one_off(&run)
        .await
        .expect_err("sleep 60 outlives 2 s");
    assert!(
        err.to_string().contains("did not finish within 2000 ms"),
        "{err}"
    );
    assert_nothing_left(&t);

    // And a quick one returns its output, the uploaded file in place.
    let argv = ["cat", "/tmp/x.yml"].map(String::from);
    let run = OneOff { argv: &argv, ..run };
    let outcome = engine.run_one_off(&run).await.expect("cat runs");
    assert_eq!(
        outcome,
        OneOffOutcome::Exited {
            exit_code: 0,
            output: "a: 1\n".to_string()
        }
    );
    assert_nothing_left(&t);
}

#[tokio::test]
async fn a_service_is_checked_as_a_whole_and_each_problem_said_once() {
    ensure_images(&["prometheus"]);
    let t = TestRelease::new("validate-service");
    let engine = d::engine().await;
    let dash = |uid: &str| {
        format!(r#"{{"uid": "{uid}", "title": "{uid}", "panels": [{{"type": "stat"}}]}}"#)
    };
    let mut configs = vec![
        (
            ConfigCheck::PrometheusConfig,
            file(
                "mon/prometheus.yml",
                "/etc/prometheus/prometheus.yml",
                CONFIG,
            ),
        ),
        (
            ConfigCheck::PrometheusRules,
            file(
                "mon/rules/node.yml",
                "/etc/prometheus/rules/node.yml",
                GOOD_RULES,
            ),
        ),
        (
            ConfigCheck::PrometheusRules,
            file(
                "mon/rules/bad.yml",
                "/etc/prometheus/rules/bad.yml",
                BROKEN_RULES,
            ),
        ),
        (
            ConfigCheck::GrafanaDashboards,
            file(
                "dash/a.json",
                "/var/lib/grafana/dashboards/a.json",
                &dash("a"),
            ),
        ),
    ];
    let check = validate_service(&engine, &t.name, PROMETHEUS, &configs, &test_labels(&t))
        .await
        .expect("checked");
    assert_nothing_left(&t);
    assert_eq!(
        check.tools_run,
        ["promtool check config", "promtool check rules"]
    );
    // promtool reports the broken rule through the config and on its own: once here.
    assert_eq!(check.problems.len(), 1, "{:#?}", check.problems);
    assert_eq!(check.problems[0].file, "mon/rules/bad.yml");
    let err = check.into_result().expect_err("refused");
    assert!(
        err.to_string().starts_with(
            "1 problem in config files (nothing was changed):\n  mon/rules/bad.yml: promtool check"
        ),
        "{err}"
    );

    // A structural problem is reported without running any tool.
    configs[2].1.content = GOOD_RULES.replace("name: node", "name: other").into_bytes();
    configs.push((
        ConfigCheck::GrafanaDashboards,
        file(
            "dash/b.json",
            "/var/lib/grafana/dashboards/b.json",
            &dash("a"),
        ),
    ));
    let check = validate_service(&engine, &t.name, PROMETHEUS, &configs, &test_labels(&t))
        .await
        .expect("checked");
    assert_eq!(check.tools_run, Vec::<String>::new());
    assert_eq!(check.problems.len(), 1, "{:#?}", check.problems);
    assert!(check.problems[0]
        .to_string()
        .starts_with("dash/b.json:1:2: uid: uid `a` is also the uid of dash/a.json"));

    // Fixed: both tools pass.
    configs.pop();
    let check = validate_service(&engine, &t.name, PROMETHEUS, &configs, &test_labels(&t))
        .await
        .expect("checked");
    assert_eq!(check.problems, vec![]);
    assert_eq!(check.tools_run.len(), 2);
    assert_nothing_left(&t);
}

#[tokio::test]
async fn leftover_checks_are_removed_for_their_release_only() {
    ensure_images(&["busybox"]);
    let mine = TestRelease::new("validate-left-a");
    let other = TestRelease::new("validate-left-b");
    let leftover = |t: &TestRelease| {
        let id = d::docker(&[
            "create",
            "--label",
            "io.reconciler.test=1",
            "--label",
            &format!("io.reconciler.release={}", t.name),
            "--label",
            "io.reconciler.managed-by=reconciler",
            "--label",
            &format!("io.reconciler.kind={CHECK_KIND}"),
            "--label",
            &format!("{CHECK_RELEASE}={}", t.name),
            BUSYBOX,
            "true",
        ])
        .expect("docker create");
        id.trim().to_string()
    };
    leftover(&mine);
    let theirs = leftover(&other);
    let engine = d::engine().await;
    let removed = remove_leftover_checks(&engine, &mine.name)
        .await
        .expect("removed");
    assert_eq!(removed, 1);
    assert_nothing_left(&mine);
    assert!(
        d::container_exists(&theirs),
        "another release's check was removed"
    );
}
