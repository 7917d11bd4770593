//! Rendering the plan for people (text) and for scripts (JSON, `schemas/plan.schema.json`).
//! Both are pure string/value functions of the plan; neither can see a secret value, because
//! the plan holds none in its changes and `Secret` serialises as a marker.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::{ChangeAction, Plan};

/// Counts of `+`, `~` and `-` changes.
pub fn summary(plan: &Plan) -> (usize, usize, usize) {
    let count = |a: ChangeAction| plan.changes.iter().filter(|c| c.action == a).count();
    (
        count(ChangeAction::Add),
        count(ChangeAction::Change),
        count(ChangeAction::Destroy),
    )
}

pub fn render_text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Release {} at revision {}",
        plan.release,
        short_revision(&plan.revision)
    );
    if plan.in_sync() {
        let _ = writeln!(out, "\nNo changes: the host is in sync.");
    } else {
        out.push('\n');
        for change in &plan.changes {
            let kind = match change.kind {
                super::ObjectKind::Network => "network",
                super::ObjectKind::Volume => "volume",
                super::ObjectKind::Service => "service",
                super::ObjectKind::Proxy => "proxy",
                super::ObjectKind::Job => "job",
            };
            let _ = writeln!(
                out,
                "{} {kind} {} ({})",
                change.action.symbol(),
                change.name,
                change.reason
            );
            for f in &change.fields {
                if f.sensitive {
                    let _ = writeln!(out, "    {}: (sensitive value changed)", f.path);
                } else {
                    let _ = writeln!(
                        out,
                        "    {}: {} -> {}",
                        f.path,
                        f.old.as_deref().unwrap_or("(none)"),
                        f.new.as_deref().unwrap_or("(none)")
                    );
                }
            }
        }
        let (add, change, destroy) = summary(plan);
        let _ = writeln!(
            out,
            "\nPlan: {add} to add, {change} to change, {destroy} to destroy."
        );
    }
    for note in &plan.notes {
        let _ = writeln!(out, "Note: {note}");
    }
    out
}

/// The steps as apply will run them, one per line (`diff --steps`).
pub fn render_steps(plan: &Plan) -> String {
    let mut out = String::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>3}. {:<14} {:<32} {}",
            i + 1,
            step.action.kind(),
            step.action.target(),
            step.reason
        );
    }
    out
}

pub fn render_json(plan: &Plan) -> Value {
    let (add, change, destroy) = summary(plan);
    let steps: Vec<Value> = plan
        .steps
        .iter()
        .map(|s| {
            json!({
                "action": s.action.kind(),
                "service": s.action.service(),
                "target": s.action.target(),
                "reason": s.reason,
            })
        })
        .collect();
    json!({
        "release": plan.release,
        "revision": plan.revision,
        "in_sync": plan.in_sync(),
        "summary": { "add": add, "change": change, "destroy": destroy },
        "changes": plan.changes,
        "steps": steps,
        "notes": plan.notes,
    })
}

fn short_revision(revision: &str) -> &str {
    if revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()) {
        &revision[..12]
    } else {
        revision
    }
}
