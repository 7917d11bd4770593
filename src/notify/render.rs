//! Event → request body. Pure: the two formats are plain functions of the event.

use serde_json::{json, Value};

use super::event::{short, Event};
use crate::spec::model::{EventKind, NotificationFormat};

pub fn body(format: NotificationFormat, event: &Event) -> Value {
    match format {
        NotificationFormat::Json => json_body(event),
        NotificationFormat::Slack => slack(event),
    }
}

/// The generic body: the event itself.
pub fn json_body(event: &Event) -> Value {
    serde_json::to_value(event).unwrap_or_else(|e| {
        // Event holds only strings and numbers; this cannot fail, but a body is still sent.
        json!({ "event": event.event, "release": event.release, "render_error": e.to_string() })
    })
}

/// Slack's `&`, `<`, `>` are control characters in mrkdwn.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn seconds(event: &Event) -> Option<String> {
    event
        .duration_ms
        .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
}

/// One line saying what happened, used as the notification text (and shown by clients that
/// do not render blocks).
pub fn headline(event: &Event) -> String {
    let release = match &event.environment {
        Some(env) => format!("{} ({})", event.release, env),
        None => event.release.clone(),
    };
    let rev = event.short_revision();
    let took = seconds(event)
        .map(|s| format!(" in {s}"))
        .unwrap_or_default();
    let step = event
        .error
        .as_ref()
        .map(|e| format!(" at {}", e.step))
        .unwrap_or_default();
    match event.event {
        EventKind::Started => format!("Deploying {release} revision {rev}"),
        EventKind::Succeeded => format!("Deployed {release} revision {rev}{took}"),
        EventKind::Failed => format!("Deploy of {release} revision {rev} failed{step}"),
        EventKind::RolledBack => format!(
            "Deploy of {release} revision {rev} failed{step} and was rolled back to {}",
            short(event.previous_revision.as_deref())
        ),
        EventKind::DriftDetected => {
            format!("{release} drifted from revision {rev}; repairing")
        }
    }
}

fn emoji(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Started => ":rocket:",
        EventKind::Succeeded => ":white_check_mark:",
        EventKind::Failed => ":x:",
        EventKind::RolledBack => ":leftwards_arrow_with_hook:",
        EventKind::DriftDetected => ":warning:",
    }
}

/// A Slack incoming-webhook body: `text` (the headline) and blocks with the details.
pub fn slack(event: &Event) -> Value {
    let text = format!("{} {}", emoji(event.event), esc(&headline(event)));
    let mut fields = vec![
        field("Release", &event.release),
        field("Revision", &format!("`{}`", event.short_revision())),
    ];
    if let Some(env) = &event.environment {
        fields.push(field("Environment", env));
    }
    if let Some(prev) = &event.previous_revision {
        fields.push(field("Previous", &format!("`{}`", short(Some(prev)))));
    }
    fields.push(field(
        "Trigger",
        &format!("{} by {}", event.trigger, event.actor),
    ));
    if let Some(took) = seconds(event) {
        fields.push(field("Duration", &took));
    }
    let mut blocks = vec![
        json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } }),
        json!({ "type": "section", "fields": fields }),
    ];
    if let Some(commit) = &event.commit {
        blocks.push(json!({ "type": "context", "elements": [{
            "type": "mrkdwn",
            "text": format!("{} — {}", esc(&commit.subject), esc(&commit.author)),
        }]}));
    }
    if !event.services.is_empty() {
        let lines: Vec<String> = event
            .services
            .iter()
            .map(|s| format!("• `{}` {}: {}", esc(&s.name), s.action, esc(&s.reason)))
            .collect();
        blocks.push(
            json!({ "type": "section", "text": { "type": "mrkdwn", "text": lines.join("\n") } }),
        );
    }
    if let Some(err) = &event.error {
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn",
            "text": format!("*Failed at* {}\n```{}```", esc(&err.step), esc(&truncate(&err.message, 2500))) } }));
    }
    json!({ "text": text, "blocks": blocks })
}

fn field(name: &str, value: &str) -> Value {
    json!({ "type": "mrkdwn", "text": format!("*{name}*\n{}", esc(value)) })
}

/// Slack rejects a section text over 3000 characters.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::{Deploy, EventError, ServiceChange};
    use std::time::Duration;

    fn rolled_back() -> Event {
        let mut d = Deploy::new("shop", Some("production"), "alice", "cli")
            .with_commit("0123456789abcdef", "api: <b>2</b>", "Alice <a@x.invalid>")
            .with_previous(Some("fedcba9876543210".into()));
        d.services.push(ServiceChange {
            name: "api".into(),
            action: "change".into(),
            reason: "config changed".into(),
        });
        d.event(
            EventKind::RolledBack,
            Some(Duration::from_millis(12_345)),
            Some(EventError {
                step: "step 3 (await_healthy api) on shop-api".into(),
                message: "health gate failed".into(),
            }),
        )
    }

    #[test]
    fn slack_has_text_and_blocks_with_every_detail_escaped() {
        let body = slack(&rolled_back());
        let text = body["text"].as_str().unwrap();
        assert!(text.starts_with(":leftwards_arrow_with_hook: Deploy of shop (production) revision 0123456789ab failed at step 3"), "{text}");
        assert!(text.contains("rolled back to fedcba987654"), "{text}");
        let all = body.to_string();
        for want in [
            "12.3s",
            "cli by alice",
            "api: &lt;b&gt;2&lt;/b&gt;",
            "Alice &lt;a@x.invalid&gt;",
            "`api` change: config changed",
            "health gate failed",
        ] {
            assert!(all.contains(want), "{want} not in {all}");
        }
        assert!(!all.contains("<b>"), "{all}");
    }

    #[test]
    fn json_is_the_event() {
        let e = rolled_back();
        let body = json_body(&e);
        assert_eq!(body["event"], "rolled_back");
        assert_eq!(body["release"], "shop");
        assert_eq!(body["environment"], "production");
        assert_eq!(body["revision"], "0123456789abcdef");
        assert_eq!(body["previous_revision"], "fedcba9876543210");
        assert_eq!(body["commit"]["author"], "Alice <a@x.invalid>");
        assert_eq!(body["duration_ms"], 12_345);
        assert_eq!(body["services"][0]["name"], "api");
        assert_eq!(
            body["error"]["step"],
            "step 3 (await_healthy api) on shop-api"
        );
    }
}
