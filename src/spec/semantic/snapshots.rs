//! Checks of a service's `snapshot:` that the schema cannot express.

use super::*;

/// `snapshot:` is taken by exec in the service's one container: a service replaced beside
/// itself (blue-green, rolling) is not the stateful kind, and an argv word with spaces is a
/// shell string that exec would run as one program name.
pub(super) fn check_snapshots(spec: &ReleaseSpec) -> Vec<Issue> {
    let mut out = Vec::new();
    for (name, s) in &spec.services {
        let Some(snapshot) = &s.snapshot else {
            continue;
        };
        if s.strategy != Strategy::Recreate {
            out.push(Issue::new(
                svc_path(name, "snapshot"),
                format!(
                    "a snapshot is taken from a stateful service's single container; service `{name}` uses `strategy: {}`",
                    s.strategy.as_str()
                ),
                Some("use `strategy: recreate` for the stateful service, or remove `snapshot:`".to_string()),
            ));
        }
        if let Some(first) = snapshot.exec.first().filter(|w| w.contains(' ')) {
            out.push(Issue::new(
                svc_path(name, "snapshot.exec.0"),
                format!("`{first}` is one word with spaces; exec runs it as a program name, not through a shell"),
                Some("write the command as a list of words: [pg_dump, -Fc, -U, postgres, app]".to_string()),
            ));
        }
    }
    out
}
