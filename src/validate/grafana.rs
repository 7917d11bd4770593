//! Grafana dashboards provisioned from files: valid JSON, a title, panels, and a uid unique
//! across the whole set (Grafana keeps one of two dashboards with the same uid, silently).

use std::collections::HashMap;

use serde_json::Value;

use super::parse::{self, Doc};
use super::{extension, ConfigFile, ConfigProblem};

/// Grafana's limit on a dashboard uid.
const UID_MAX: usize = 40;

pub fn check_dashboards(files: &[ConfigFile]) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    // uid → the file that has it first.
    let mut uids: HashMap<String, String> = HashMap::new();
    // Grafana's file provider reads only `*.json`; anything else beside them is not a dashboard.
    for file in files.iter().filter(|f| extension(&f.source) == "json") {
        let doc = match parse::parse(&file.source, &file.content, true) {
            Ok(doc) => doc,
            Err(problem) => {
                out.push(*problem);
                continue;
            }
        };
        if let Some(uid) = check_one(&file.source, &doc, &mut out) {
            match uids.get(&uid) {
                Some(first) => out.push(doc.problem(
                    &file.source,
                    "uid",
                    format!("uid `{uid}` is also the uid of {first}"),
                    "give each dashboard its own uid; Grafana would load only one of them",
                )),
                None => {
                    uids.insert(uid, file.source.clone());
                }
            }
        }
    }
    out
}

/// Checks one dashboard; returns its uid when it has a valid one.
fn check_one(file: &str, doc: &Doc, out: &mut Vec<ConfigProblem>) -> Option<String> {
    let Some(dash) = doc.value.as_object() else {
        out.push(doc.problem(
            file,
            "",
            "a dashboard is a JSON object",
            "export the dashboard from Grafana (Share > Export > Save to file)",
        ));
        return None;
    };
    if dash.get("dashboard").is_some_and(Value::is_object) && !dash.contains_key("panels") {
        out.push(doc.problem(
            file,
            "dashboard",
            "this is an API export: the dashboard is wrapped in `dashboard`",
            "save the inner `dashboard` object as the file",
        ));
        return None;
    }
    match dash.get("title") {
        Some(Value::String(t)) if !t.trim().is_empty() => {}
        _ => out.push(doc.problem(
            file,
            "title",
            "the dashboard has no title",
            "set `\"title\"` to a non-empty string",
        )),
    }
    let panels = dash.get("panels").and_then(Value::as_array);
    let row_panels = dash
        .get("rows")
        .and_then(Value::as_array)
        .is_some_and(|rows| rows.iter().any(|r| r.get("panels").is_some()));
    match panels {
        Some(list) if !list.is_empty() => {
            for (i, panel) in list.iter().enumerate() {
                if !panel.is_object() {
                    out.push(doc.problem(
                        file,
                        &format!("panels.{i}"),
                        "a panel is a JSON object",
                        "remove it or replace it with a panel exported from Grafana",
                    ));
                }
            }
        }
        _ if row_panels => {}
        _ => out.push(doc.problem(
            file,
            "panels",
            "the dashboard has no panels",
            "add at least one panel to `\"panels\"`",
        )),
    }
    let uid = match dash.get("uid") {
        Some(Value::String(uid)) => uid,
        _ => {
            out.push(doc.problem(
                file,
                "uid",
                "the dashboard has no uid",
                "set `\"uid\"` to a fixed string (letters, digits, `-`, `_`), so links and reloads keep the same dashboard",
            ));
            return None;
        }
    };
    let valid_chars = uid
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if uid.is_empty() || uid.len() > UID_MAX || !valid_chars {
        out.push(doc.problem(
            file,
            "uid",
            format!("uid {uid:?} is not 1 to {UID_MAX} letters, digits, `-` or `_`"),
            "use a short uid such as `node-overview`",
        ));
        return None;
    }
    Some(uid.clone())
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::file;
    use crate::validate::{check_structure, ConfigCheck};

    fn dash(uid: &str, title: &str) -> String {
        format!(
            r#"{{"uid": "{uid}", "title": "{title}", "panels": [{{"type": "graph", "id": 1}}]}}"#
        )
    }

    #[test]
    fn good_dashboards_pass() {
        let files = [
            file("d/a.json", &dash("a", "A")),
            file("d/b.json", &dash("b", "B")),
            file("d/README.md", "not json"),
        ];
        assert_eq!(
            check_structure(ConfigCheck::GrafanaDashboards, &files),
            vec![]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let files = [
            file("d/a.json", &dash("same", "A")),
            file("d/b.json", &dash("same", "B")),
            file(
                "d/c.json",
                r#"{"uid": "has space", "title": "", "panels": []}"#,
            ),
            file("d/d.json", r#"{"title": "D", "panels": [1]}"#),
            file("d/e.json", "{\"title\": "),
            file("d/f.json", r#"{"dashboard": {"uid": "x"}}"#),
        ];
        let p: Vec<String> = check_structure(ConfigCheck::GrafanaDashboards, &files)
            .iter()
            .map(|p| p.to_string())
            .collect();
        let expect = [
            "d/b.json:1:2: uid: uid `same` is also the uid of d/a.json",
            "d/c.json:1:22: title: the dashboard has no title",
            "d/c.json:1:35: panels: the dashboard has no panels",
            "d/c.json:1:2: uid: uid \"has space\" is not 1 to 40",
            "d/d.json:1:27: panels.0: a panel is a JSON object",
            "d/d.json:1:1: uid: the dashboard has no uid",
            "d/e.json:1:10: not valid JSON",
            "d/f.json:1:2: dashboard: this is an API export",
        ];
        assert_eq!(p.len(), expect.len(), "{p:#?}");
        for (got, want) in p.iter().zip(expect) {
            assert!(
                got.starts_with(want),
                "{got}\n  does not start with\n{want}\nall: {p:#?}"
            );
        }
    }
}
