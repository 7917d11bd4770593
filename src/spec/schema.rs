//! JSON Schema validation of the raw document, with errors worded for an operator.
//!
//! The schema (`schemas/release.schema.json`) is the single source of structural rules. Its nodes
//! carry a few annotation keywords the validator ignores and this module reads to word errors:
//! `x-expected` (what a value should look like), `x-fix` (how to fix it), `x-unsupported`
//! (compose keys we recognise but do not support yet, with what to do instead) and `x-oneof`
//! (what an exactly-one-of rule means).

use std::sync::LazyLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Draft, ValidationError, Validator};
use serde_json::Value;

/// The schema, embedded so the binary cannot be run against a different one.
pub const SCHEMA_TEXT: &str = include_str!("../../schemas/release.schema.json");

struct Compiled {
    schema: Value,
    validator: Validator,
}

static COMPILED: LazyLock<Result<Compiled, String>> = LazyLock::new(compile);

fn compile() -> Result<Compiled, String> {
    let schema: Value = serde_json::from_str(SCHEMA_TEXT)
        .map_err(|e| format!("the embedded schema is not JSON: {e}"))?;
    let validator = jsonschema::options()
        .with_draft(Draft::Draft202012)
        .build(&schema)
        .map_err(|e| format!("the embedded schema does not compile: {e}"))?;
    Ok(Compiled { schema, validator })
}

/// The parsed schema document, for tests and docs.
pub fn schema() -> Result<&'static Value, String> {
    COMPILED.as_ref().map(|c| &c.schema).map_err(Clone::clone)
}

/// One structural problem, before it is given a place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: String,
    pub message: String,
    pub fix: Option<String>,
}

impl Issue {
    pub fn new(path: impl Into<String>, message: impl Into<String>, fix: Option<String>) -> Self {
        Issue {
            path: path.into(),
            message: message.into(),
            fix,
        }
    }
}

/// Every structural problem in `doc`. `Err` only if the embedded schema is broken (a bug).
pub fn validate(doc: &Value) -> Result<Vec<Issue>, String> {
    let compiled = COMPILED.as_ref().map_err(Clone::clone)?;
    let mut out: Vec<Issue> = Vec::new();
    // A value of the wrong type also fails every rule about its content (`oneOf`, `required`);
    // the type error alone says what is wrong.
    let mut wrong_type: Vec<String> = Vec::new();
    for err in compiled.validator.iter_errors(doc) {
        if matches!(err.kind(), ValidationErrorKind::Type { .. }) {
            wrong_type.push(pointer_to_path(err.instance_path().as_str()));
        }
        for issue in translate(&compiled.schema, &err) {
            if !out.contains(&issue) {
                out.push(issue);
            }
        }
    }
    out.retain(|i| !wrong_type.contains(&i.path) || i.message.starts_with("expected "));
    Ok(out)
}

/// JSON pointer (`/services/api/ports/0`) to dotted path (`services.api.ports.0`).
pub fn pointer_to_path(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

/// The schema node that holds the failing keyword: the keyword location minus its last segment.
fn keyword_parent<'s>(schema: &'s Value, keyword_location: &str) -> Option<&'s Value> {
    let parent = keyword_location
        .rfind('/')
        .map(|i| &keyword_location[..i])
        .unwrap_or("");
    schema.pointer(parent)
}

fn text<'s>(node: Option<&'s Value>, key: &str) -> Option<&'s str> {
    node.and_then(|n| n.get(key)).and_then(Value::as_str)
}

/// A short description of a found value: `"eighty"`, `80`, `a list`.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (an empty value)".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // A URL in the wrong place is often a webhook or git URL with its token: never echo it.
        Value::String(s) if s.contains("://") => {
            "a URL (not shown: it may carry a token)".to_string()
        }
        Value::String(s) => {
            let shown: String = s.chars().take(60).collect();
            let ellipsis = if s.chars().count() > 60 { "..." } else { "" };
            format!("{:?}", format!("{shown}{ellipsis}"))
        }
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a map".to_string(),
    }
}

fn type_names(kind: &TypeKind) -> String {
    let names: Vec<String> = match kind {
        TypeKind::Single(t) => vec![t.to_string()],
        TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect(),
    };
    names
        .iter()
        .map(|n| match n.as_str() {
            "object" => "a map",
            "array" => "a list",
            "string" => "a string",
            "integer" => "a whole number",
            "number" => "a number",
            "boolean" => "true or false",
            "null" => "nothing",
            _ => "a value",
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A hint for common YAML slips, given what the schema wanted and what it found.
fn scalar_hint(expected_types: &str, found: &Value) -> Option<String> {
    match found {
        Value::String(s) => {
            let lower = s.to_ascii_lowercase();
            if expected_types.contains("true or false")
                && matches!(lower.as_str(), "yes" | "no" | "on" | "off" | "y" | "n")
            {
                return Some(
                    "write `true` or `false`; YAML 1.2 reads `yes`/`no`/`on`/`off` as strings"
                        .to_string(),
                );
            }
            if expected_types.contains("number")
                && s.len() > 1
                && s.starts_with('0')
                && s.chars().all(|c| c.is_ascii_digit())
            {
                return Some(format!(
                    "write the number without the leading zero; `{s}` is neither octal nor decimal here"
                ));
            }
            None
        }
        Value::Number(_) | Value::Bool(_) if expected_types.contains("a string") => {
            Some(format!("quote it: \"{found}\""))
        }
        _ => None,
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let w = norm(word);
    candidates
        .into_iter()
        .map(|c| (c, strsim::jaro_winkler(&w, &norm(c))))
        .filter(|(_, score)| *score >= 0.85)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

fn valid_keys(node: Option<&Value>) -> Vec<&str> {
    node.and_then(|n| n.get("properties"))
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

fn unexpected_key(node: Option<&Value>, parent: &str, key: &str) -> Issue {
    let path = join(parent, key);
    if let Some(entry) = node
        .and_then(|n| n.get("x-unsupported"))
        .and_then(|u| u.get(key))
    {
        let (message, fix) = match entry {
            Value::Object(o) => (
                o.get("message").and_then(Value::as_str).map(str::to_string),
                o.get("fix").and_then(Value::as_str).map(str::to_string),
            ),
            Value::String(s) => (None, Some(s.clone())),
            _ => (None, None),
        };
        let message =
            message.unwrap_or_else(|| format!("compose key `{key}` is not supported yet"));
        return Issue::new(path, message, fix);
    }
    let keys = valid_keys(node);
    if keys.is_empty() {
        return Issue::new(path, "unknown key", Some("remove it".to_string()));
    }
    let fix = match suggest(key, keys.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("valid keys here: {}", keys.join(", ")),
    };
    Issue::new(path, "unknown key", Some(fix))
}

fn expected_or(node: Option<&Value>, fallback: impl FnOnce() -> String) -> String {
    text(node, "x-expected")
        .map(str::to_string)
        .unwrap_or_else(fallback)
}

/// Probes named by an exactly-one-of rule that are present in `instance`.
fn oneof_present(node: Option<&Value>, instance: &Value) -> Vec<String> {
    let Some(branches) = node.and_then(|n| n.get("oneOf")).and_then(Value::as_array) else {
        return Vec::new();
    };
    branches
        .iter()
        .filter_map(|b| b.get("required")?.get(0)?.as_str())
        .filter(|k| instance.get(*k).is_some())
        .map(|k| format!("`{k}`"))
        .collect()
}

fn translate(schema: &Value, err: &ValidationError<'_>) -> Vec<Issue> {
    let path = pointer_to_path(err.instance_path().as_str());
    let node = keyword_parent(schema, err.schema_path().as_str());
    let instance: &Value = err.instance();
    let found = describe(instance);
    let fix_of = |n: Option<&Value>| text(n, "x-fix").map(str::to_string);
    match err.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|k| unexpected_key(node, &path, k))
            .collect(),
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let fix = match (path.as_str(), name) {
                ("", "services") => "add a `services:` map with at least one service".to_string(),
                ("", "version") => "add `version: 1` at the top".to_string(),
                ("", "release") => {
                    "add `release: NAME`; it prefixes every container, network and volume"
                        .to_string()
                }
                ("proxy", "image") => {
                    "add `image:` with a pinned nginx image, e.g. `nginx:1.27-alpine`".to_string()
                }
                ("proxy", "config") => {
                    "add `config:` naming the nginx.conf in the repo, relative to release.yaml (e.g. `nginx/nginx.conf`)"
                        .to_string()
                }
                ("proxy", "routes") => {
                    "add `routes: { UPSTREAM: { service: NAME, port: PORT } }`; nginx.conf sends traffic with `proxy_pass http://UPSTREAM;`"
                        .to_string()
                }
                _ => format!("add `{name}:`"),
            };
            vec![Issue::new(
                join(&path, name),
                format!("required key `{name}` is missing"),
                Some(fix),
            )]
        }
        ValidationErrorKind::Type { kind } => {
            let types = type_names(kind);
            let expected = expected_or(node, || types.clone());
            // The schema's own advice knows the context better than the generic YAML hints.
            let fix = fix_of(node).or_else(|| scalar_hint(&types, instance));
            vec![Issue::new(
                path,
                format!("expected {expected}, found {found}"),
                fix,
            )]
        }
        ValidationErrorKind::Enum { options } => {
            let names: Vec<&str> = options
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let expected = expected_or(node, || format!("one of {}", names.join(", ")));
            let fix = instance
                .as_str()
                .and_then(|s| suggest(s, names.iter().copied()))
                .map(|s| format!("did you mean `{s}`?"))
                .or_else(|| fix_of(node));
            vec![Issue::new(
                path,
                format!("expected {expected}, found {found}"),
                fix,
            )]
        }
        ValidationErrorKind::OneOfNotValid { .. }
        | ValidationErrorKind::OneOfMultipleValid { .. }
        | ValidationErrorKind::AnyOf { .. } => {
            let message = match text(node, "x-oneof") {
                Some(rule) => {
                    let present = oneof_present(node, instance);
                    if present.is_empty() {
                        format!("{rule}, found none")
                    } else {
                        format!("{rule}, found {}", present.join(" and "))
                    }
                }
                None => format!(
                    "expected {}, found {found}",
                    expected_or(node, || "a different form".to_string())
                ),
            };
            vec![Issue::new(path, message, fix_of(node))]
        }
        ValidationErrorKind::PropertyNames { error } => {
            let name = error.instance().as_str().unwrap_or_default().to_string();
            let inner = keyword_parent(schema, error.schema_path().as_str())
                .filter(|n| n.get("x-expected").is_some())
                .or_else(|| node.and_then(|n| n.get("propertyNames")));
            let expected = expected_or(inner, || "a valid name".to_string());
            vec![Issue::new(
                join(&path, &name),
                format!("invalid name {:?}: expected {expected}", name),
                fix_of(inner),
            )]
        }
        ValidationErrorKind::MinProperties { limit } => vec![Issue::new(
            path,
            format!(
                "expected at least {limit} entr{}, found none",
                if *limit == 1 { "y" } else { "ies" }
            ),
            fix_of(node),
        )],
        ValidationErrorKind::MinItems { limit } => vec![Issue::new(
            path,
            format!(
                "expected at least {limit} item{}, found {}",
                if *limit == 1 { "" } else { "s" },
                instance.as_array().map_or(0, Vec::len)
            ),
            fix_of(node),
        )],
        ValidationErrorKind::Pattern { .. }
        | ValidationErrorKind::Constant { .. }
        | ValidationErrorKind::Minimum { .. }
        | ValidationErrorKind::Maximum { .. }
        | ValidationErrorKind::ExclusiveMinimum { .. }
        | ValidationErrorKind::ExclusiveMaximum { .. }
        | ValidationErrorKind::MinLength { .. }
        | ValidationErrorKind::MaxLength { .. } => {
            let expected = expected_or(node, || err.to_string());
            vec![Issue::new(
                path,
                format!("expected {expected}, found {found}"),
                fix_of(node),
            )]
        }
        _ => vec![Issue::new(path, err.to_string(), fix_of(node))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn embedded_schema_compiles() {
        // A broken schema would otherwise surface only as a runtime error on every load.
        compile().map(|_| ()).unwrap();
        assert!(schema().is_ok());
    }

    #[test]
    fn pointers_become_dotted_paths() {
        assert_eq!(pointer_to_path(""), "");
        assert_eq!(
            pointer_to_path("/services/api/ports/0"),
            "services.api.ports.0"
        );
        assert_eq!(pointer_to_path("/labels/a~1b"), "labels.a/b");
    }

    #[test]
    fn suggestions_pick_the_closest_key() {
        let keys = ["health", "healthcheck", "hostname", "image"];
        assert_eq!(suggest("helth", keys), Some("health"));
        assert_eq!(suggest("imgae", keys), Some("image"));
        assert_eq!(suggest("zzz", keys), None);
        assert_eq!(
            suggest("depends-on", ["depends_on", "deploy"]),
            Some("depends_on")
        );
    }

    #[test]
    fn unknown_key_gets_a_suggestion() {
        let doc = json!({"version": 1, "release": "shop",
            "services": {"api": {"image": "a:1", "helth": {}}}});
        let issues = validate(&doc).unwrap();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "services.api.helth");
        assert_eq!(issues[0].fix.as_deref(), Some("did you mean `health`?"));
    }

    #[test]
    fn describe_quotes_strings() {
        assert_eq!(describe(&json!("eighty")), "\"eighty\"");
        assert_eq!(describe(&json!(80)), "80");
    }

    fn duration_doc(d: &str) -> Value {
        json!({"version": 1, "release": "shop", "services": {"api": {
            "image": "a:1", "stop_grace_period": d}}})
    }

    #[test]
    fn durations_the_schema_rejects() {
        for bad in ["2", "2 s", "1.5s", "s", "-1s", "2sec", ""] {
            assert!(!validate(&duration_doc(bad)).unwrap().is_empty(), "{bad}");
        }
    }

    fn proxy_doc(config: &str, upstreams_file: &str) -> Value {
        json!({"version": 1, "release": "shop",
            "services": {"api": {"image": "a:1", "strategy": "blue-green"}},
            "proxy": {"image": "nginx:1.27", "config": config, "upstreams_file": upstreams_file,
                "ports": ["80:80"], "routes": {"api": {"service": "api", "port": 8000}}}})
    }

    #[test]
    fn proxy_config_is_a_relative_path_inside_the_repo() {
        let ok = "/etc/nginx/reconciler/upstreams.conf";
        for good in [
            "nginx.conf",
            "nginx/nginx.conf",
            "./deploy/nginx.conf",
            ".nginx/site.conf",
            "deploy/..hidden/nginx.conf",
        ] {
            assert_eq!(validate(&proxy_doc(good, ok)).unwrap(), vec![], "{good}");
        }
        // Absolute paths would read the host, and `..` could leave the checkout.
        for bad in [
            "/etc/nginx/nginx.conf",
            "../nginx.conf",
            "deploy/../../nginx.conf",
            "deploy/..",
            "deploy/",
            "deploy//nginx.conf",
            ".",
            "",
            "my nginx.conf",
        ] {
            let issues = validate(&proxy_doc(bad, ok)).unwrap();
            assert_eq!(issues.len(), 1, "{bad}: {issues:?}");
            assert_eq!(issues[0].path, "proxy.config");
        }
    }

    #[test]
    fn upstreams_file_is_an_absolute_file_path() {
        for good in ["/etc/nginx/reconciler/upstreams.conf", "/u.conf"] {
            assert_eq!(validate(&proxy_doc("n.conf", good)).unwrap(), vec![]);
        }
        for bad in [
            "upstreams.conf",
            "/etc/nginx/",
            "/",
            "/etc/my file.conf",
            "",
        ] {
            let issues = validate(&proxy_doc("n.conf", bad)).unwrap();
            assert_eq!(issues.len(), 1, "{bad}: {issues:?}");
            assert_eq!(issues[0].path, "proxy.upstreams_file");
        }
    }

    proptest::proptest! {
        // Everything the duration pattern accepts must parse with humantime, which is what the
        // program uses on these values later.
        #[test]
        fn accepted_durations_parse(d in "([0-9]{1,6}(h|m|s|ms|us|ns)){1,4}") {
            proptest::prop_assert!(validate(&duration_doc(&d)).unwrap().is_empty());
            proptest::prop_assert!(humantime::parse_duration(&d).is_ok(), "{}", d);
        }
    }
}
