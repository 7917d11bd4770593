//! The structural JSON Schemas for monitoring configs (`schemas/*.schema.json`), with errors
//! worded as the release spec's are (the same `x-expected` / `x-fix` / `x-oneof` annotations).

use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, ValidationError, Validator};
use serde_json::Value;

use super::parse::Doc;
use super::ConfigProblem;
use crate::spec::schema::{describe, pointer_to_path, suggest};

/// Which embedded schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    PrometheusConfig,
    PrometheusRules,
    Alertmanager,
}

const PROMETHEUS_CONFIG: &str = include_str!("../../schemas/prometheus-config.schema.json");
const PROMETHEUS_RULES: &str = include_str!("../../schemas/prometheus-rules.schema.json");
const ALERTMANAGER: &str = include_str!("../../schemas/alertmanager-config.schema.json");

struct Compiled {
    schema: Value,
    validator: Validator,
}

fn compile(text: &str) -> Result<Compiled, String> {
    let schema: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let validator = jsonschema::options()
        .with_draft(Draft::Draft202012)
        .build(&schema)
        .map_err(|e| format!("does not compile: {e}"))?;
    Ok(Compiled { schema, validator })
}

type Slot = LazyLock<Result<Compiled, String>>;
static CONFIG: Slot = LazyLock::new(|| compile(PROMETHEUS_CONFIG));
static RULES: Slot = LazyLock::new(|| compile(PROMETHEUS_RULES));
static AM: Slot = LazyLock::new(|| compile(ALERTMANAGER));

fn compiled(which: Schema) -> &'static Result<Compiled, String> {
    match which {
        Schema::PrometheusConfig => &CONFIG,
        Schema::PrometheusRules => &RULES,
        Schema::Alertmanager => &AM,
    }
}

/// Every structural problem of `doc` against `which`.
pub fn validate(which: Schema, file: &str, doc: &Doc) -> Vec<ConfigProblem> {
    let compiled = match compiled(which) {
        Ok(c) => c,
        // Only a broken build gets here; the unit tests compile every schema.
        Err(e) => {
            return vec![ConfigProblem::new(
                file,
                format!("the embedded {which:?} schema {e}"),
                "report this bug; the file was not checked",
            )]
        }
    };
    let mut out: Vec<ConfigProblem> = Vec::new();
    let mut wrong_type: Vec<String> = Vec::new();
    for err in compiled.validator.iter_errors(&doc.value) {
        let (path, message, fix) = translate(&compiled.schema, &err);
        if matches!(err.kind(), ValidationErrorKind::Type { .. }) {
            wrong_type.push(path.clone());
        }
        let problem = doc.problem(file, &path, message, fix);
        if !out.contains(&problem) {
            out.push(problem);
        }
    }
    // A value of the wrong type fails every rule about its content too; the type error alone
    // says what is wrong.
    out.retain(|p| {
        let path = p.path.clone().unwrap_or_default();
        !wrong_type.contains(&path) || p.message.starts_with("expected ")
    });
    out
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

fn annotation<'s>(schema: &'s Value, keyword_location: &str, key: &str) -> Option<&'s str> {
    let parent = keyword_location
        .rfind('/')
        .map_or("", |i| &keyword_location[..i]);
    schema.pointer(parent)?.get(key)?.as_str()
}

/// (dotted path, message, fix) for one schema error.
fn translate(schema: &Value, err: &ValidationError<'_>) -> (String, String, String) {
    let path = pointer_to_path(err.instance_path().as_str());
    let location = err.schema_path().as_str().to_string();
    let note = |key: &str| annotation(schema, &location, key).map(str::to_string);
    let found = describe(err.instance());
    let fix = note("x-fix");
    match err.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let key = unexpected.first().cloned().unwrap_or_default();
            let known: Vec<String> = schema
                .pointer(location.rsplit_once('/').map_or("", |(p, _)| p))
                .and_then(|n| n.get("properties"))
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            let fix = match suggest(&key, known.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("valid keys here: {}", known.join(", ")),
            };
            let keys = unexpected.join("`, `");
            (join(&path, &key), format!("unknown key `{keys}`"), fix)
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            (
                join(&path, name),
                format!("required key `{name}` is missing"),
                fix.unwrap_or_else(|| format!("add `{name}:`")),
            )
        }
        ValidationErrorKind::OneOfNotValid { .. }
        | ValidationErrorKind::OneOfMultipleValid { .. } => {
            let rule = note("x-oneof").unwrap_or_else(|| "expected exactly one form".to_string());
            (
                path,
                rule,
                fix.unwrap_or_else(|| "keep exactly one".to_string()),
            )
        }
        _ => {
            let expected = note("x-expected").unwrap_or_else(|| {
                let text = err.to_string();
                text.strip_prefix(&format!("{} ", err.instance()))
                    .unwrap_or(&text)
                    .to_string()
            });
            (
                path,
                format!("expected {expected}, found {found}"),
                fix.unwrap_or_else(|| "correct the value".to_string()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schemas_compile() {
        for which in [
            Schema::PrometheusConfig,
            Schema::PrometheusRules,
            Schema::Alertmanager,
        ] {
            assert!(compiled(which).is_ok(), "{which:?}");
        }
    }
}
