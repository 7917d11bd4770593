//! The loader: text to a validated [`ReleaseSpec`], or every problem at once.

use serde_json::Value;

use super::locate::{self, Locations};
use super::model::ReleaseSpec;
use super::schema::{self, Issue};
use super::{semantic, yaml, SpecError, SpecErrors};

/// A spec that passed every check, with where each of its values is written, so later stages
/// (secret resolution, env files) can point into the file.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedSpec {
    pub file: String,
    pub spec: ReleaseSpec,
    pub locations: Locations,
}

/// An error at `path` of a loaded spec (at its nearest written ancestor if `path` is absent).
pub fn error_at(
    loaded: &LoadedSpec,
    path: &str,
    message: impl Into<String>,
    fix: Option<String>,
) -> SpecError {
    located(
        &loaded.file,
        &loaded.locations,
        Issue::new(path, message, fix),
    )
}

fn located(file: &str, locations: &Locations, issue: Issue) -> SpecError {
    let (line, column) = locations.of(&issue.path);
    SpecError {
        file: file.to_string(),
        line,
        column,
        path: issue.path,
        message: issue.message,
        fix: issue.fix,
    }
}

fn fail(errors: Vec<SpecError>) -> SpecErrors {
    let mut errors = errors;
    errors.sort_by(|a, b| (a.line, a.column, &a.path).cmp(&(b.line, b.column, &b.path)));
    errors.dedup();
    SpecErrors(errors)
}

/// Parses and validates `text` (read from `file`): YAML, then the JSON Schema, then the typed
/// model, then the checks across sections. Returns every problem found, in document order.
pub fn load(file: &str, text: &str) -> Result<LoadedSpec, SpecErrors> {
    let scan = locate::scan(text);
    let locations = scan.locations;
    let at = |issue: Issue| located(file, &locations, issue);

    if let Some(s) = scan.syntax {
        return Err(fail(vec![SpecError {
            file: file.to_string(),
            line: s.line,
            column: s.column,
            path: locations.path_before(s.line, s.column),
            message: format!("YAML syntax error: {}", s.message),
            fix: None,
        }]));
    }
    if !scan.duplicates.is_empty() {
        let errors = scan
            .duplicates
            .iter()
            .map(|d| SpecError {
                file: file.to_string(),
                line: d.line,
                column: d.column,
                path: d.path.clone(),
                message: format!("duplicate key (first written at line {})", d.first.0),
                fix: Some("keep one of them; YAML does not merge repeated keys".to_string()),
            })
            .collect();
        return Err(fail(errors));
    }

    let doc = match yaml::to_value(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(fail(vec![SpecError {
                file: file.to_string(),
                line: e.line,
                column: e.column,
                path: locations.path_before(e.line, e.column),
                message: format!("YAML error: {}", e.message),
                fix: None,
            }]))
        }
    };
    if !doc.is_object() {
        let message = match doc {
            Value::Null => "the spec is empty".to_string(),
            ref other => format!(
                "expected a map at the top level, found {}",
                schema::describe(other)
            ),
        };
        return Err(fail(vec![at(Issue::new(
            "",
            message,
            Some("start with `version: 1`, `release: NAME` and `services:`".to_string()),
        ))]));
    }

    let mut errors: Vec<SpecError> = Vec::new();
    match schema::validate(&doc) {
        Ok(issues) => errors.extend(issues.into_iter().map(&at)),
        Err(bug) => errors.push(at(Issue::new("", format!("internal error: {bug}"), None))),
    }
    // Runs on the raw document so a placeholder is reported alongside structural errors.
    errors.extend(semantic::check_placeholders(&doc).into_iter().map(&at));
    if !errors.is_empty() {
        return Err(fail(errors));
    }

    let spec: ReleaseSpec = match serde_json::from_value(doc) {
        Ok(s) => s,
        // The schema should have caught this; still report it rather than panic.
        Err(e) => {
            return Err(fail(vec![at(Issue::new(
                "",
                format!("the spec does not fit the model: {e}"),
                None,
            ))]))
        }
    };
    let errors: Vec<SpecError> = semantic::check(&spec).into_iter().map(&at).collect();
    if !errors.is_empty() {
        return Err(fail(errors));
    }
    Ok(LoadedSpec {
        file: file.to_string(),
        spec,
        locations,
    })
}
