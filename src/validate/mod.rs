//! Validation of the config files a service is given (`configs:` in the spec), before anything
//! on the host changes.
//!
//! Two stages: [`check_structure`] is pure (parse, the JSON Schemas in `schemas/`, and the
//! semantic checks a schema cannot say, such as dashboard uids unique across the set);
//! [`check_with_tool`] then runs the image's own checker (`promtool`, `amtool`) in a one-off
//! container over the new files, when the image has it. Both return every problem found, each
//! naming the file in the repo.

mod grafana;
mod parse;
mod prometheus;
mod schema;
mod service;
mod tool;

use std::fmt;

pub use service::{validate_service, ConfigErrors, ServiceCheck};
pub use tool::{
    check_with_tool, remove_leftover_checks, ToolVerdict, CHECK_KIND, CHECK_RELEASE, TOOL_TIMEOUT,
};

/// Which validator a config file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigCheck {
    PrometheusConfig,
    PrometheusRules,
    Alertmanager,
    GrafanaDashboards,
    Yaml,
    Json,
    /// Delivered as it is (`kind: file`, or an extension we cannot parse).
    None,
}

impl ConfigCheck {
    /// The check for a config's `kind` as written in the spec; an empty or unknown kind is
    /// inferred from the file's extension.
    pub fn from_kind(kind: &str, path: &str) -> ConfigCheck {
        match kind {
            "prometheus" => ConfigCheck::PrometheusConfig,
            "prometheus-rules" => ConfigCheck::PrometheusRules,
            "alertmanager" => ConfigCheck::Alertmanager,
            "grafana-dashboards" => ConfigCheck::GrafanaDashboards,
            "yaml" => ConfigCheck::Yaml,
            "json" => ConfigCheck::Json,
            "file" => ConfigCheck::None,
            _ => match extension(path).as_str() {
                "yml" | "yaml" => ConfigCheck::Yaml,
                "json" => ConfigCheck::Json,
                _ => ConfigCheck::None,
            },
        }
    }

    /// The spec's name for this check, for messages.
    pub fn kind(self) -> &'static str {
        match self {
            ConfigCheck::PrometheusConfig => "prometheus",
            ConfigCheck::PrometheusRules => "prometheus-rules",
            ConfigCheck::Alertmanager => "alertmanager",
            ConfigCheck::GrafanaDashboards => "grafana-dashboards",
            ConfigCheck::Yaml => "yaml",
            ConfigCheck::Json => "json",
            ConfigCheck::None => "file",
        }
    }
}

fn extension(path: &str) -> String {
    path.rsplit_once('.')
        .filter(|(stem, ext)| !stem.ends_with('/') && !ext.contains('/'))
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default()
}

/// One config file as it will be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// Path in the repo, for messages.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    pub content: Vec<u8>,
}

/// One reason a config file is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The repo path of the file.
    pub file: String,
    /// Line and column (1-based) in the file, when known.
    pub at: Option<(usize, usize)>,
    /// Dotted path of the value in the document (`groups.0.rules.1.expr`), when known.
    pub path: Option<String>,
    pub message: String,
    pub fix: String,
    /// The tool that said so (`promtool check rules`), when it was not our own check.
    pub tool: Option<String>,
}

impl ConfigProblem {
    fn new(file: &str, message: impl Into<String>, fix: impl Into<String>) -> ConfigProblem {
        ConfigProblem {
            file: file.to_string(),
            at: None,
            path: None,
            message: message.into(),
            fix: fix.into(),
            tool: None,
        }
    }

    fn at_path(mut self, at: (usize, usize), path: &str) -> ConfigProblem {
        self.at = Some(at);
        self.path = (!path.is_empty()).then(|| path.to_string());
        self
    }
}

impl ConfigProblem {
    /// `file:line:col: path: [tool says: ]message`, without the fix.
    pub fn located_message(&self) -> String {
        let mut out = self.file.clone();
        if let Some((line, column)) = self.at {
            out.push_str(&format!(":{line}:{column}"));
        }
        out.push_str(": ");
        if let Some(path) = &self.path {
            out.push_str(&format!("{path}: "));
        }
        if let Some(tool) = &self.tool {
            out.push_str(&format!("{tool} says: "));
        }
        out.push_str(&self.message);
        out
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (fix: {})", self.located_message(), self.fix)
    }
}

/// Every problem in `files` for `check`: parse errors, schema violations and semantic ones
/// (for dashboards, uids are compared across the whole set). Pure; never stops at the first.
pub fn check_structure(check: ConfigCheck, files: &[ConfigFile]) -> Vec<ConfigProblem> {
    match check {
        ConfigCheck::GrafanaDashboards => grafana::check_dashboards(files),
        ConfigCheck::None => Vec::new(),
        _ => files
            .iter()
            .flat_map(|file| check_one(check, file))
            .collect(),
    }
}

fn check_one(check: ConfigCheck, file: &ConfigFile) -> Vec<ConfigProblem> {
    let json = check == ConfigCheck::Json;
    let doc = match parse::parse(&file.source, &file.content, json) {
        Ok(doc) => doc,
        Err(problem) => return vec![*problem],
    };
    match check {
        ConfigCheck::PrometheusConfig => prometheus::check_config(&file.source, &doc),
        ConfigCheck::PrometheusRules => prometheus::check_rules(&file.source, &doc),
        ConfigCheck::Alertmanager => prometheus::check_alertmanager(&file.source, &doc),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn file(source: &str, content: &str) -> ConfigFile {
        ConfigFile {
            source: source.to_string(),
            target: format!("/etc/test/{source}"),
            content: content.as_bytes().to_vec(),
        }
    }

    #[test]
    fn kinds_and_extensions() {
        assert_eq!(
            ConfigCheck::from_kind("prometheus-rules", "r/a.yml"),
            ConfigCheck::PrometheusRules
        );
        assert_eq!(ConfigCheck::from_kind("file", "a.yml"), ConfigCheck::None);
        assert_eq!(ConfigCheck::from_kind("", "conf/A.YAML"), ConfigCheck::Yaml);
        assert_eq!(ConfigCheck::from_kind("", "d/x.json"), ConfigCheck::Json);
        assert_eq!(ConfigCheck::from_kind("", "nginx.conf"), ConfigCheck::None);
        assert_eq!(ConfigCheck::from_kind("", "a.d/README"), ConfigCheck::None);
        for check in [
            ConfigCheck::PrometheusConfig,
            ConfigCheck::PrometheusRules,
            ConfigCheck::Alertmanager,
            ConfigCheck::GrafanaDashboards,
            ConfigCheck::Yaml,
            ConfigCheck::Json,
            ConfigCheck::None,
        ] {
            assert_eq!(ConfigCheck::from_kind(check.kind(), "x"), check);
        }
    }

    #[test]
    fn any_yaml_or_json_must_parse() {
        let good = [file("a.yml", "a: 1\n---\nb: [1, 2]\n"), file("b.yml", "")];
        assert_eq!(check_structure(ConfigCheck::Yaml, &good), vec![]);
        let bad = [
            file("a.yml", "a: 1\na: 2\n"),
            file("b.yml", "a: [1, 2\n"),
            file("c.json", "{\"a\": 1,}"),
        ];
        let problems = check_structure(ConfigCheck::Yaml, &bad[..2]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].file, "a.yml");
        assert_eq!(problems[0].at, Some((2, 1)), "{}", problems[0]);
        assert!(problems[0].message.contains("duplicate"), "{}", problems[0]);
        assert_eq!(problems[1].file, "b.yml");
        let problems = check_structure(ConfigCheck::Json, &bad[2..]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].at.map(|a| a.0), Some(1), "{}", problems[0]);
        assert_eq!(
            check_structure(ConfigCheck::Json, &[file("x.json", "{\"a\": [1]}")]),
            vec![]
        );
        assert_eq!(check_structure(ConfigCheck::None, &bad), vec![]);
    }

    #[test]
    fn problems_display_like_spec_errors() {
        let p = ConfigProblem::new("mon/rules.yml", "bad", "do better")
            .at_path((3, 5), "groups.0.name");
        assert_eq!(
            p.to_string(),
            "mon/rules.yml:3:5: groups.0.name: bad (fix: do better)"
        );
        let p = ConfigProblem {
            tool: Some("promtool check rules".to_string()),
            ..ConfigProblem::new("r.yml", "FAILED", "fix it")
        };
        assert_eq!(
            p.to_string(),
            "r.yml: promtool check rules says: FAILED (fix: fix it)"
        );
    }
}
