//! All the configs of one service, both stages: what the deploy path calls.

use std::collections::BTreeMap;
use std::fmt;

use super::tool::{check_with_tool, ToolVerdict};
use super::{check_structure, ConfigCheck, ConfigFile, ConfigProblem};
use crate::engine::{Engine, EngineError};

/// What checking one service's configs found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceCheck {
    /// Empty when every file passed.
    pub problems: Vec<ConfigProblem>,
    /// Tools that ran (`promtool check rules`).
    pub tools_run: Vec<String>,
    /// Tools the image does not have: only the structural checks applied.
    pub tools_absent: Vec<String>,
}

impl ServiceCheck {
    /// `Err` with every problem when a file was refused.
    pub fn into_result(self) -> Result<ServiceCheck, ConfigErrors> {
        if self.problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigErrors(self.problems))
        }
    }
}

/// Every problem in a service's configs, for the deploy to refuse with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in config files (nothing was changed):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// The order tools run in; the first kind a service has of each.
const TOOL_CHECKS: [ConfigCheck; 3] = [
    ConfigCheck::PrometheusConfig,
    ConfigCheck::PrometheusRules,
    ConfigCheck::Alertmanager,
];

/// Checks every config of one service: the structure of each kind (dashboards as one set),
/// then, only if that passed, the image's tools, each run with all the service's files in
/// place (a Prometheus config loads its rule files and may name others). `image` must be on
/// the host.
pub async fn validate_service(
    engine: &Engine,
    release: &str,
    image: &str,
    configs: &[(ConfigCheck, ConfigFile)],
    extra_labels: &BTreeMap<String, String>,
) -> Result<ServiceCheck, EngineError> {
    let of_kind = |check: ConfigCheck| -> Vec<ConfigFile> {
        configs
            .iter()
            .filter(|(c, _)| *c == check)
            .map(|(_, f)| f.clone())
            .collect()
    };
    let mut kinds: Vec<ConfigCheck> = Vec::new();
    for (check, _) in configs {
        if !kinds.contains(check) {
            kinds.push(*check);
        }
    }
    let mut out = ServiceCheck::default();
    for check in &kinds {
        out.problems
            .extend(check_structure(*check, &of_kind(*check)));
    }
    // A file that does not parse would only make the tool say it again, less precisely.
    if !out.problems.is_empty() {
        return Ok(out);
    }
    for check in TOOL_CHECKS.into_iter().filter(|c| kinds.contains(c)) {
        let files = of_kind(check);
        let alongside: Vec<ConfigFile> = configs
            .iter()
            .filter(|(c, _)| *c != check)
            .map(|(_, f)| f.clone())
            .collect();
        match check_with_tool(
            engine,
            release,
            image,
            check,
            &files,
            &alongside,
            extra_labels,
        )
        .await?
        {
            ToolVerdict::Passed { tool } => out.tools_run.push(tool),
            ToolVerdict::Refused { tool, problems } => {
                out.tools_run.push(tool);
                // A rule file is checked both through the config and on its own: say it once.
                for p in problems {
                    if !out
                        .problems
                        .iter()
                        .any(|q| q.file == p.file && q.message == p.message)
                    {
                        out.problems.push(p);
                    }
                }
            }
            ToolVerdict::Absent { tool } => out.tools_absent.push(tool),
            ToolVerdict::NoTool => {}
        }
    }
    Ok(out)
}
