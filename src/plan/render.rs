//! Rendering the plan for people (text) and scripts (JSON).

use super::Plan;

pub fn render_text(plan: &Plan) -> String {
    format!("{} {}\n", plan.release, plan.revision)
}

pub fn render_json(plan: &Plan) -> serde_json::Value {
    serde_json::json!({ "revision": plan.revision, "in_sync": plan.in_sync() })
}
