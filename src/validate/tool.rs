//! The image's own checker (`promtool`, `amtool`) run over the new files in a one-off container
//! of the service's image: the same build of the tool that will load them.
//!
//! The container is created, the files are written into it at their target paths with the
//! archive API, then it is started with the tool as its entrypoint (so the image needs no
//! shell), with no network, and removed whatever happens. If the image has no such tool the
//! engine refuses to start it, and the check is skipped with a verdict that says so.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{ConfigCheck, ConfigFile, ConfigProblem};
use crate::engine::{Engine, EngineError, OneOff, OneOffOutcome};
use crate::labels;

/// `io.reconciler.kind` of a check container. It has no `io.reconciler.release` label, so
/// `live::observe` never sees it (it has no service); [`CHECK_RELEASE`] says whose it is.
pub const CHECK_KIND: &str = "config-check";

/// The release a check container checks for: [`remove_leftover_checks`] removes only that
/// release's, since deploys of other releases may be checking at the same time.
pub const CHECK_RELEASE: &str = "io.reconciler.check-release";

/// How long one tool run may take, container create and removal excluded.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// What the image's tool said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolVerdict {
    /// The tool accepted every file.
    Passed { tool: String },
    /// The tool refused: a problem per file it named, in the tool's words.
    Refused {
        tool: String,
        problems: Vec<ConfigProblem>,
    },
    /// The image has no such tool; only the structural checks ran.
    Absent { tool: String },
    /// This kind of config has no tool (dashboards, plain YAML/JSON, files).
    NoTool,
}

/// The command line for `check` over `targets`.
fn tool_argv(check: ConfigCheck, targets: Vec<String>) -> Option<Vec<String>> {
    let head: &[&str] = match check {
        ConfigCheck::PrometheusConfig => &["promtool", "check", "config"],
        ConfigCheck::PrometheusRules => &["promtool", "check", "rules"],
        ConfigCheck::Alertmanager => &["amtool", "check-config"],
        _ => return None,
    };
    Some(head.iter().map(|s| s.to_string()).chain(targets).collect())
}

/// Runs the tool for `check` from `image` over `files`, for `release`. `alongside` are written
/// too, at their targets, but not named to the tool: the rule files a Prometheus config refers
/// to by `rule_files:` (promtool checks them through the config). `extra_labels` go on the
/// container besides the reconciler's own.
pub async fn check_with_tool(
    engine: &Engine,
    release: &str,
    image: &str,
    check: ConfigCheck,
    files: &[ConfigFile],
    alongside: &[ConfigFile],
    extra_labels: &BTreeMap<String, String>,
) -> Result<ToolVerdict, EngineError> {
    let targets = files.iter().map(|f| f.target.clone()).collect();
    let Some(argv) = tool_argv(check, targets).filter(|_| !files.is_empty()) else {
        return Ok(ToolVerdict::NoTool);
    };
    let tool = argv[..argv.len() - files.len()].join(" ");
    let mut container_labels = extra_labels.clone();
    container_labels.insert(labels::MANAGED_BY.to_string(), labels::MANAGER.to_string());
    container_labels.insert(labels::KIND.to_string(), CHECK_KIND.to_string());
    container_labels.insert(CHECK_RELEASE.to_string(), release.to_string());
    let uploads: Vec<(String, Vec<u8>)> = alongside
        .iter()
        .chain(files)
        .map(|f| (f.target.clone(), f.content.clone()))
        .collect();
    let run = OneOff {
        image,
        argv: &argv,
        files: &uploads,
        labels: &container_labels,
        timeout: TOOL_TIMEOUT,
    };
    match engine.run_one_off(&run).await? {
        OneOffOutcome::NoExecutable { reason } => {
            tracing::info!(image, %tool, %reason, "image has no config checker; structural checks only");
            Ok(ToolVerdict::Absent { tool })
        }
        OneOffOutcome::Exited { exit_code: 0, .. } => Ok(ToolVerdict::Passed { tool }),
        OneOffOutcome::Exited { exit_code, output } => {
            let all: Vec<&ConfigFile> = files.iter().chain(alongside).collect();
            let problems = problems_from_output(&tool, exit_code, &output, &all);
            Ok(ToolVerdict::Refused { tool, problems })
        }
    }
}

/// Removes the check containers a crash left behind for `release` (they are removed on every
/// other path). Call it holding the release's deploy lock.
pub async fn remove_leftover_checks(engine: &Engine, release: &str) -> Result<usize, EngineError> {
    let filter = [
        format!("{}={}", labels::MANAGED_BY, labels::MANAGER),
        format!("{}={CHECK_KIND}", labels::KIND),
        format!("{CHECK_RELEASE}={release}"),
    ];
    let leftovers = engine.list_containers(&filter).await?;
    for c in &leftovers {
        match engine.remove_container(&c.id, true).await {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
    }
    Ok(leftovers.len())
}

/// `text` with every target path replaced by its repo path (longest first, so `/a/b.yml`
/// is not half-replaced by `/a/b`).
fn to_repo_paths(text: &str, files: &[&ConfigFile]) -> String {
    let mut by_length: Vec<&&ConfigFile> = files.iter().collect();
    by_length.sort_by_key(|f| std::cmp::Reverse(f.target.len()));
    by_length
        .iter()
        .fold(text.to_string(), |acc, f| acc.replace(&f.target, &f.source))
}

/// The file whose target `line` mentions (the longest match, so `/a/b.yml` wins over `/a/b`).
fn mentioned<'f>(line: &str, files: &[&'f ConfigFile]) -> Option<&'f ConfigFile> {
    files
        .iter()
        .filter(|f| line.contains(&f.target))
        .max_by_key(|f| f.target.len())
        .copied()
}

/// One problem per file the tool's error lines name, in the tool's words; the whole output on
/// the first file if no line names one. Lines are read one by one, not as sections after each
/// `Checking FILE` line: the tools print those on stdout and their errors on stderr, and the
/// engine does not keep the order between the two streams.
fn problems_from_output(
    tool: &str,
    exit_code: i64,
    output: &str,
    files: &[&ConfigFile],
) -> Vec<ConfigProblem> {
    let fix = "correct the file as the tool says; nothing was changed on the host";
    let problem = |file: &str, message: String| ConfigProblem {
        tool: Some(tool.to_string()),
        ..ConfigProblem::new(file, message, fix)
    };
    // Repo path → the tool's lines about it, in the order files were first named.
    let mut said: Vec<(&ConfigFile, Vec<String>)> = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        // `Checking FILE` is a header, except that amtool writes its verdict on it:
        // `Checking 'FILE'  FAILED: message`.
        let text = match line.strip_prefix("Checking ") {
            Some(rest) => rest
                .split_once("FAILED:")
                .map(|(named, message)| (named, message.trim())),
            None => Some((line, line.trim_start_matches("FAILED:").trim())),
        };
        let Some((named, message)) = text else {
            continue;
        };
        let noise = message.is_empty()
            || message.starts_with("SUCCESS")
            || message.contains(": error: failed to validate");
        let Some(file) = mentioned(named, files).filter(|_| !noise) else {
            continue;
        };
        let message = to_repo_paths(message, files);
        match said.iter_mut().find(|(f, _)| f.target == file.target) {
            Some((_, lines)) => lines.push(message),
            None => said.push((file, vec![message])),
        }
    }
    let mut out: Vec<ConfigProblem> = said
        .into_iter()
        .map(|(file, lines)| problem(&file.source, lines.join("; ")))
        .collect();
    if out.is_empty() {
        let first = files.first().map_or("", |f| f.source.as_str());
        let text = to_repo_paths(output.trim(), files);
        let message = if text.is_empty() {
            format!("exited with {exit_code} and printed nothing")
        } else {
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            format!("exited with {exit_code}: {}", lines.join("; "))
        };
        out.push(problem(first, message));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::file;

    #[test]
    fn promtool_sections_map_to_repo_files() {
        let good = file("mon/good.yml", "");
        let bad = file("mon/bad.yml", "");
        let output = format!(
            "Checking {g}\n  SUCCESS: 1 rules found\n\nChecking {b}\n  FAILED:\n{b}: 5:15: group \"g\", rule 1, \"Up\": could not parse expression: 1:7: parse error: unexpected \"=\"\n",
            g = good.target,
            b = bad.target
        );
        let p = problems_from_output("promtool check rules", 1, &output, &[&good, &bad]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].file, "mon/bad.yml");
        assert_eq!(
            p[0].message,
            "mon/bad.yml: 5:15: group \"g\", rule 1, \"Up\": could not parse expression: 1:7: parse error: unexpected \"=\""
        );
        assert_eq!(p[0].tool.as_deref(), Some("promtool check rules"));
    }

    #[test]
    fn stderr_before_stdout_is_attributed_the_same() {
        let good = file("mon/good.yml", "");
        let bad = file("mon/bad.yml", "");
        let output = format!(
            "  FAILED:\n{b}: 5:15: parse error\n{b}: 7:15: unclosed\nChecking {g}\n  SUCCESS: 1 rules found\n\nChecking {b}\n",
            g = good.target,
            b = bad.target
        );
        let p = problems_from_output("promtool check rules", 1, &output, &[&good, &bad]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].file, "mon/bad.yml");
        assert_eq!(
            p[0].message,
            "mon/bad.yml: 5:15: parse error; mon/bad.yml: 7:15: unclosed"
        );
    }

    #[test]
    fn amtool_verdict_on_the_checking_line() {
        let am = file("am/alertmanager.yml", "");
        let output = format!(
            "Checking '{}'  FAILED: undefined receiver \"nope\" used in route\n\namtool: error: failed to validate 1 file(s)\n",
            am.target
        );
        let p = problems_from_output("amtool check-config", 1, &output, &[&am]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].message, "undefined receiver \"nope\" used in route");
    }

    #[test]
    fn promtool_config_verdict_after_the_checking_line() {
        let config = file("mon/prometheus.yml", "");
        let output = format!(
            "Checking {t}\n  FAILED: parsing YAML file {t}: scrape timeout greater than scrape interval\n",
            t = config.target
        );
        let p = problems_from_output("promtool check config", 1, &output, &[&config]);
        assert_eq!(
            p[0].message,
            "parsing YAML file mon/prometheus.yml: scrape timeout greater than scrape interval"
        );
    }

    #[test]
    fn unrecognised_output_is_kept_whole() {
        let f = file("a.yml", "");
        let output = "panic: runtime error\n  goroutine 1\n";
        let p = problems_from_output("promtool check config", 2, output, &[&f]);
        assert_eq!(p[0].file, "a.yml");
        assert_eq!(
            p[0].message,
            "exited with 2: panic: runtime error; goroutine 1"
        );
        let p = problems_from_output("promtool check config", 2, "", &[&f]);
        assert_eq!(p[0].message, "exited with 2 and printed nothing");
    }

    #[test]
    fn argv_per_check() {
        assert_eq!(
            tool_argv(ConfigCheck::Alertmanager, vec!["/a".into()]),
            Some(vec!["amtool".into(), "check-config".into(), "/a".into()])
        );
        assert_eq!(tool_argv(ConfigCheck::Yaml, vec![]), None);
    }
}
