//! Config text to a JSON value plus where each value is written.

use serde_json::Value;

use super::ConfigProblem;
use crate::spec::locate::{self, Locations};

/// A parsed config file: its (first) document, and the line:column of every dotted path.
pub struct Doc {
    pub value: Value,
    pub locations: Locations,
}

impl Doc {
    /// A problem at `path` in this document (or at its nearest written ancestor).
    pub fn problem(
        &self,
        file: &str,
        path: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigProblem {
        ConfigProblem::new(file, message, fix).at_path(self.locations.of(path), path)
    }
}

/// How the YAML is read: Go's yaml (what Prometheus, Alertmanager and most exporters use)
/// refuses duplicate keys and accepts YAML 1.1 booleans, so we do the same.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        with_snippet: false,
    }
}

/// serde-saphyr appends ` at line X, column Y`; the position is printed separately.
fn first_line(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

/// Parses `content` as JSON (`json`) or as a YAML stream (any number of documents; the first
/// is returned, `Null` for none). A file that does not parse is one problem with its position.
pub fn parse(file: &str, content: &[u8], json: bool) -> Result<Doc, Box<ConfigProblem>> {
    let text = std::str::from_utf8(content).map_err(|e| {
        ConfigProblem::new(
            file,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            ),
            "save the file as UTF-8",
        )
    })?;
    let value = if json {
        serde_json::from_str::<Value>(text).map_err(|e| {
            ConfigProblem::new(
                file,
                format!("not valid JSON: {}", first_line(&e.to_string())),
                "correct the JSON syntax at that position",
            )
            .at_path((e.line(), e.column()), "")
        })?
    } else {
        let docs = serde_saphyr::from_multiple_with_options::<Value>(text, yaml_options())
            .map_err(|e| {
                let at = e
                    .location()
                    .map(|l| (l.line() as usize, l.column() as usize))
                    .unwrap_or((1, 1));
                ConfigProblem::new(
                    file,
                    format!("not valid YAML: {}", first_line(&e.to_string())),
                    "correct the YAML at that position",
                )
                .at_path(at, "")
            })?;
        docs.into_iter().next().unwrap_or(Value::Null)
    };
    Ok(Doc {
        value,
        locations: locate::scan(text).locations,
    })
}
