//! Slack: the incoming-webhook payload (a `text` fallback plus Block Kit blocks) and its delivery.

use std::fmt;

use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

use super::render::{Facts, clip, clip_mapped, facts};
use super::{Alert, AlertError, DELIVERY_TIMEOUT, DeliveryError};
use crate::api::incident::AlertKind;

// Slack's documented limits in characters; [`clip`] counts UTF-16 units, never fewer.
const HEADER_MAX: usize = 150;
const TEXT_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;
const FIELDS_PER_SECTION: usize = 10;
/// More than this many fields is noise (only `metrics.extra` can get there).
const FIELDS_MAX: usize = 30;
/// Labels are short table strings or `metrics.extra` keys; the rest of a field is its value.
const LABEL_MAX: usize = 100;

/// The webhook body for an alert.
///
/// Incoming webhooks return no message `ts`, so follow-ups cannot be posted as thread replies.
/// Instead every message of one incident opens with the same tag (`[1a2b3c4d · ns/name]`) in
/// both `text` and the first block, and follow-ups add "Update to this incident".
pub fn slack_payload(alert: &Alert) -> Value {
    let f = facts(alert);
    let mut blocks = vec![
        json!({"type": "context", "elements": [mrkdwn(&esc(&f.lead, TEXT_MAX))]}),
        json!({"type": "header", "text": {"type": "plain_text", "text": clip(&f.title, HEADER_MAX), "emoji": true}}),
    ];
    if !f.description.trim().is_empty() {
        blocks.push(section(esc(&f.description, TEXT_MAX)));
    }
    let fields: Vec<Value> = f.fields.iter().take(FIELDS_MAX).map(|(label, value)| field(label, value)).collect();
    for chunk in fields.chunks(FIELDS_PER_SECTION) {
        blocks.push(json!({"type": "section", "fields": chunk}));
    }
    if let Some(summary) = &f.plan_summary {
        blocks.push(section(labelled(f.texts.plan_status, summary, TEXT_MAX)));
    }
    if !f.events.is_empty() {
        let events: Vec<String> = f.events.iter().map(|e| format!("• {e}")).collect();
        blocks.push(section(labelled(f.texts.recent_events, &events.join("\n"), TEXT_MAX)));
    }
    blocks.push(section(commands(&f)));
    blocks.push(json!({
        "type": "context",
        "elements": [mrkdwn(&format!("{}: `{}`", f.texts.incident_id, esc(&f.incident_id, 100)))],
    }));

    // The notification preview: tag, title and the sentence of what was seen.
    let sep = if alert.kind == AlertKind::Detected { " " } else { ": " };
    let text = format!("{}{sep}{}\n{}", f.lead, f.title, f.description);
    let mut payload = json!({"text": esc(&text, TEXT_MAX), "blocks": blocks});
    if let Some(channel) = &alert.slack_channel {
        payload["channel"] = json!(channel);
    }
    payload
}

fn mrkdwn(text: &str) -> Value {
    json!({"type": "mrkdwn", "text": text})
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": mrkdwn(&text)})
}

fn field(label: &str, value: &str) -> Value {
    let label = esc(label, LABEL_MAX);
    let budget = FIELD_MAX - units(&label) - 3;
    mrkdwn(&format!("*{label}*\n{}", esc(value, budget)))
}

/// Length as Slack counts it (see [`clip`]).
fn units(text: &str) -> usize {
    text.encode_utf16().count()
}

/// `*Label*` on one line, the escaped text below it, the whole within `max`.
fn labelled(label: &str, text: &str, max: usize) -> String {
    let label = esc(label, LABEL_MAX);
    let budget = max - units(&label) - 3;
    format!("*{label}*\n{}", esc(text, budget))
}

/// The kubectl commands as code blocks; the approval command only when a plan waits for it.
fn commands(f: &Facts) -> String {
    // Names are Kubernetes object names, so these never come near the section limit.
    let mut out = format!("*{}*\n```{}```", f.texts.inspect, esc(&f.inspect.join("\n"), 1000));
    if let Some(approve) = &f.approve {
        out.push_str(&format!("\n*{}*\n```{}```", f.texts.approve, esc(approve, 1000)));
    }
    out
}

/// Escapes the three characters Slack's mrkdwn reserves, then clips to `max` without cutting
/// an entity in half.
fn esc(text: &str, max: usize) -> String {
    clip_mapped(text, max, |c, out| match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        c => out.push(c),
    })
}

/// A Slack incoming-webhook URL. The URL is a credential: `Debug` and `Display` show only its
/// scheme and host, and no error of this module contains it.
#[derive(Clone)]
pub struct SlackWebhook {
    url: Url,
}

impl SlackWebhook {
    /// Parses the webhook URL read from its Secret (surrounding whitespace, such as the newline
    /// `echo` leaves in a file, is ignored). Only `https` is accepted; `allow_insecure` admits
    /// `http` and exists for tests against a local receiver.
    pub fn parse(url: &str, allow_insecure: bool) -> Result<Self, AlertError> {
        let url = Url::parse(url.trim()).map_err(|_| AlertError::InvalidWebhook("not a url"))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_insecure => {}
            "http" => return Err(AlertError::InvalidWebhook("must use https")),
            _ => return Err(AlertError::InvalidWebhook("must be an https url")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(AlertError::InvalidWebhook("has no host"));
        }
        Ok(Self { url })
    }

    /// Removes the URL (and its path, the secret part) from a text that may quote it.
    fn redact(&self, text: &str) -> String {
        let mut text = text.replace(self.url.as_str(), "<redacted>");
        if self.url.path().len() > 1 {
            text = text.replace(self.url.path(), "/<redacted>");
        }
        text
    }
}

impl fmt::Display for SlackWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}/<redacted>", self.url.scheme(), self.url.host_str().unwrap_or_default())
    }
}

impl fmt::Debug for SlackWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlackWebhook({self})")
    }
}

/// Posts the payload once, within [`DELIVERY_TIMEOUT`].
///
/// Retryable: 408, 429 (with `Retry-After` when given), 5xx, timeouts and transport failures.
/// Other answers (400 `invalid_payload`, 403, 404 `no_service`, 410 `channel_is_archived`) will
/// not change by themselves.
pub async fn send_slack(http: &reqwest::Client, hook: &SlackWebhook, payload: &Value) -> Result<(), DeliveryError> {
    let response = http
        .post(hook.url.clone())
        .json(payload)
        .timeout(DELIVERY_TIMEOUT)
        .send()
        .await
        .map_err(|e| transport_error(hook, e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = super::retry_after(&response);
    // Slack explains a refusal with a short code such as `invalid_payload`; anything else in
    // the body (an HTML error page, an echo of our request) is not repeated.
    let body = response.text().await.unwrap_or_default();
    let code = body.trim();
    let is_code = !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let mut message = format!("slack webhook answered {}", status.as_u16());
    if is_code {
        message.push_str(&format!(": {code}"));
    }
    let retryable =
        matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT) || status.is_server_error();
    Err(DeliveryError { retryable, message, retry_after })
}

/// Classifies a failure before any answer. reqwest's own message quotes the URL, so only the
/// causes below it are kept, and those are scrubbed of the URL once more.
fn transport_error(hook: &SlackWebhook, e: reqwest::Error) -> DeliveryError {
    let what = if e.is_timeout() {
        "slack webhook timed out"
    } else if e.is_connect() {
        "slack webhook unreachable"
    } else if e.is_builder() {
        // The request could not even be made (e.g. the payload does not encode): no retry helps.
        return DeliveryError::permanent("slack webhook request could not be built");
    } else {
        "slack webhook request failed"
    };
    let e = e.without_url();
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let message =
        if causes.is_empty() { what.to_string() } else { format!("{what}: {}", clip(&causes.join(": "), 200)) };
    DeliveryError::retryable(hook.redact(&message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::fixtures::{ID, alert};
    use crate::api::policy::Locale;

    fn blocks_of(payload: &Value) -> &Vec<Value> {
        payload["blocks"].as_array().unwrap()
    }

    fn all_text(payload: &Value) -> String {
        payload.to_string()
    }

    #[test]
    fn payload_has_header_section_fields_and_context() {
        let p = slack_payload(&alert(AlertKind::Detected));
        let blocks = blocks_of(&p);
        let types: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap()).collect();
        assert_eq!(types.first(), Some(&"context"), "the incident tag comes first");
        assert!(types.contains(&"header") && types.contains(&"section"));
        assert_eq!(types.last(), Some(&"context"));
        let header = blocks.iter().find(|b| b["type"] == "header").unwrap();
        assert_eq!(header["text"]["text"], "[HIGH] service Incident Detected");
        assert_eq!(p["channel"], "#incidents");
        let text = p["text"].as_str().unwrap();
        assert!(text.starts_with("[1a2b3c4d · prod/ecs-prod-checkout-1] [HIGH] service Incident Detected"), "{text}");

        let fields: Vec<&str> = blocks
            .iter()
            .filter_map(|b| b["fields"].as_array())
            .flatten()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        for want in [
            "*Target*\necs/prod/checkout",
            "*Severity*\nhigh",
            "*Type*\nservice",
            "*AWS resource*\nECS service checkout (cluster prod, us-east-1)",
            "*Tasks*\nrunning 1 / desired 3 / pending 2",
            "*Recovery plan*\necs-prod-checkout-1-plan",
        ] {
            assert!(fields.contains(&want), "missing {want:?} in {fields:#?}");
        }
        let all = all_text(&p);
        assert!(all.contains(ID), "the full incident id is shown");
        assert!(all.contains("has started 2 tasks"), "recent ECS events are shown");
    }

    #[test]
    fn follow_ups_open_with_the_same_tag_and_say_update() {
        let tag = "[1a2b3c4d · prod/ecs-prod-checkout-1]";
        for kind in [AlertKind::AwaitingApproval, AlertKind::PlanCompleted, AlertKind::PlanFailed, AlertKind::Resolved]
        {
            let p = slack_payload(&alert(kind));
            let text = p["text"].as_str().unwrap();
            assert!(text.starts_with(&format!("{tag} Update to this incident: [HIGH] service ")), "{text}");
            let first = blocks_of(&p)[0]["elements"][0]["text"].as_str().unwrap();
            assert_eq!(first, format!("{tag} Update to this incident"));
        }
        let mut a = alert(AlertKind::Resolved);
        a.locale = Locale::Ko;
        let p = slack_payload(&a);
        assert!(
            p["text"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{tag} 이 인시던트의 후속 알림: [HIGH] service 인시던트 해결"))
        );
        assert!(all_text(&p).contains("*복구 소요 시간*\\n4분 12초"));
    }

    #[test]
    fn kubectl_commands_and_approval_only_when_awaiting() {
        let approve = "kubectl annotate recoveryplan ecs-prod-checkout-1-plan -n prod recovery.dev/approved-by=$USER";
        for kind in [
            AlertKind::Detected,
            AlertKind::AwaitingApproval,
            AlertKind::PlanCompleted,
            AlertKind::PlanFailed,
            AlertKind::Resolved,
        ] {
            let all = all_text(&slack_payload(&alert(kind)));
            assert!(all.contains("```kubectl describe incident ecs-prod-checkout-1 -n prod\\n"), "{kind:?}");
            assert!(all.contains("kubectl describe recoveryplan ecs-prod-checkout-1-plan -n prod```"), "{kind:?}");
            assert_eq!(all.contains(approve), kind == AlertKind::AwaitingApproval, "{kind:?}");
        }
        let mut a = alert(AlertKind::Detected);
        a.plan_name = None;
        let all = all_text(&slack_payload(&a));
        assert!(!all.contains("recoveryplan"));
    }

    #[test]
    fn stays_within_slack_limits_for_huge_text() {
        let mut a = alert(AlertKind::PlanFailed);
        a.incident.description = "<&>세".repeat(5_000);
        a.plan_summary = Some("x".repeat(10_000));
        a.incident_name = "n".repeat(300);
        let m = a.metrics.as_mut().unwrap();
        m.recent_events = vec!["e".repeat(1024); 5];
        m.extra = (0..50).map(|i| (format!("key{i}"), "v".repeat(5_000))).collect();
        let p = slack_payload(&a);
        let units = |v: &Value| v.as_str().unwrap().encode_utf16().count();
        assert!(units(&p["text"]) <= TEXT_MAX);
        let blocks = blocks_of(&p);
        assert!(blocks.len() <= 50);
        for b in blocks {
            match b["type"].as_str().unwrap() {
                "header" => assert!(units(&b["text"]["text"]) <= HEADER_MAX),
                "section" => {
                    if let Some(fields) = b["fields"].as_array() {
                        assert!(fields.len() <= FIELDS_PER_SECTION);
                        assert!(fields.iter().all(|f| units(&f["text"]) <= FIELD_MAX));
                    } else {
                        assert!(units(&b["text"]["text"]) <= TEXT_MAX);
                    }
                }
                "context" => assert!(b["elements"].as_array().unwrap().iter().all(|e| units(&e["text"]) <= TEXT_MAX)),
                other => panic!("unexpected block {other}"),
            }
        }
        let description = blocks[2]["text"]["text"].as_str().unwrap();
        assert!(description.starts_with("&lt;&amp;&gt;세"), "mrkdwn is escaped");
        assert!(description.ends_with('…'));
    }

    #[test]
    fn webhook_requires_https_and_never_shows_its_url() {
        let secret = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX";
        let hook = SlackWebhook::parse(&format!("{secret}\n"), false).unwrap();
        for shown in [format!("{hook}"), format!("{hook:?}")] {
            assert!(!shown.contains("XXXXSECRETXXXX") && !shown.contains("/services/"), "{shown}");
        }
        assert_eq!(format!("{hook:?}"), "SlackWebhook(https://hooks.slack.com/<redacted>)");
        assert_eq!(hook.redact(&format!("failed for {secret}")), "failed for <redacted>");

        let insecure = "http://127.0.0.1:9999/slack/XXXXSECRETXXXX";
        let err = SlackWebhook::parse(insecure, false).unwrap_err();
        assert_eq!(err, AlertError::InvalidWebhook("must use https"));
        assert!(SlackWebhook::parse(insecure, true).is_ok());
        for bad in ["not a url XXXXSECRETXXXX", "ftp://h/XXXXSECRETXXXX", "XXXXSECRETXXXX"] {
            let err = SlackWebhook::parse(bad, true).unwrap_err();
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains("XXXXSECRETXXXX"), "{shown}");
            }
        }
    }
}
