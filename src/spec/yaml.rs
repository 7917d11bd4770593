//! YAML text to a JSON value, with YAML 1.2 scalars and no silent surprises.
//!
//! Options (see `specs/yaml.md`): duplicate keys are errors; only `true`/`false` are booleans
//! (`yes`, `no`, `on`, `off` stay strings, so `restart: no` means the string `no`); numbers with a
//! redundant leading zero (`0755`) stay strings rather than becoming octal or decimal, so a
//! schema that wants a number reports them; no snippets in messages, because our own errors
//! carry file:line:col.

use serde_json::Value;

/// The options every spec is read with.
pub fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        legacy_octal_numbers: false,
        leading_zero_numbers_as_strings: true,
        with_snippet: false,
    }
}

/// A YAML error with its position (1-based), when the parser knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses the first document of `text`.
pub fn to_value(text: &str) -> Result<Value, YamlError> {
    serde_saphyr::from_str_with_options::<Value>(text, options()).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line() as usize, l.column() as usize))
            .unwrap_or((0, 0));
        YamlError {
            line,
            column,
            message: clean_message(&e.to_string()),
        }
    })
}

/// serde-saphyr appends ` at line X, column Y` to some messages; we print the position ourselves.
fn clean_message(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_1_1_booleans_are_strings() {
        let v = to_value("a: yes\nb: no\nc: on\nd: off\ne: true\nf: false\n").unwrap();
        assert_eq!(
            v,
            json!({"a": "yes", "b": "no", "c": "on", "d": "off", "e": true, "f": false})
        );
    }

    #[test]
    fn leading_zero_numbers_stay_strings() {
        let v = to_value("mode: 0755\nn: 755\nz: 0\nf: 0.5\n").unwrap();
        assert_eq!(v, json!({"mode": "0755", "n": 755, "z": 0, "f": 0.5}));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = to_value("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.line, 3, "{e:?}");
        assert!(e.message.to_lowercase().contains("duplicate"), "{e:?}");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = to_value("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line >= 1, "{e:?}");
    }
}
