//! Building the plan: desired + live → changes and ordered steps.

use crate::desired::DesiredRelease;
use crate::live::LiveState;

use super::Plan;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("release {release}: {message}")]
    Unsupported { release: String, message: String },
}

pub fn plan(desired: &DesiredRelease, live: &LiveState) -> Result<Plan, PlanError> {
    let _ = live;
    Ok(Plan {
        release: desired.release.clone(),
        revision: desired.revision.clone(),
        changes: Vec::new(),
        steps: Vec::new(),
        notes: Vec::new(),
    })
}
