//! PagerDuty Events API v2: `trigger` when an incident opens (and again, under the same
//! `dedup_key`, when its plan waits for approval or fails: PagerDuty adds those to the same
//! alert), `resolve` when it is resolved.
//!
//! The `dedup_key` is the incident's id (a UUID fixed at creation, the one Slack and e-mail
//! show). The alert ledger may send an event twice after a crash between the send and its
//! record; PagerDuty folds a second trigger with the same key into the open alert and a second
//! resolve into the resolved one, so the receiver sees each once: the first channel here with
//! exactly-once at the receiver.

use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

use super::render::{clip, facts};
use super::{Alert, AlertError, DELIVERY_TIMEOUT, DeliveryError};
use crate::api::Severity;
use crate::core::alerts::pagerduty_action as action;

/// PagerDuty's own endpoint (the EU service region's is `https://events.eu.pagerduty.com/v2/enqueue`).
pub const EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// Longest summary PagerDuty accepts.
const SUMMARY_MAX: usize = 1024;

/// PagerDuty's severity for ours.
pub fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low => "info",
    }
}

/// A routing key as PagerDuty issues it: 32 characters, letters and digits. The key is a
/// credential: an error names the problem, never the key.
pub fn routing_key(raw: &str) -> Result<String, AlertError> {
    let key = raw.trim();
    if key.len() != 32 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AlertError::InvalidRoutingKey);
    }
    Ok(key.to_owned())
}

/// The events URL; `http` only when insecure endpoints are allowed (tests).
pub fn events_url(raw: &str, allow_insecure: bool) -> Result<Url, AlertError> {
    super::endpoint(raw, allow_insecure).map_err(AlertError::InvalidEventsUrl)
}

/// The event for one alert (pure).
pub fn pagerduty_event(alert: &Alert, routing_key: &str) -> Option<Value> {
    let action = action(alert.kind)?;
    let f = facts(alert);
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": alert.incident.id,
    });
    if action == "trigger" {
        let spec = &alert.incident;
        let mut details = serde_json::Map::new();
        for (label, value) in &f.fields {
            details.insert(label.clone(), json!(value));
        }
        details.insert("description".into(), json!(f.description));
        if let Some(plan) = &f.plan_summary {
            details.insert("plan status".into(), json!(plan));
        }
        details.insert("inspect".into(), json!(f.inspect));
        if let Some(approve) = &f.approve {
            details.insert("approve".into(), json!(approve));
        }
        event["payload"] = json!({
            "summary": clip(&format!("{} {}", f.title, f.description), SUMMARY_MAX),
            "source": spec.target,
            "severity": severity(spec.severity),
            "timestamp": alert.detected_at.map(|t| t.to_string()),
            "component": spec.target,
            "group": format!("{}/{}", alert.namespace, spec.policy),
            "class": spec.type_.as_str(),
            "custom_details": details,
        });
        if event["payload"]["timestamp"].is_null() {
            event["payload"].as_object_mut().expect("an object").remove("timestamp");
        }
    }
    Some(event)
}

/// One attempt. 202 is success; 429 and 5xx are retryable (with PagerDuty's `Retry-After`,
/// if given); any other answer is permanent (400: PagerDuty refused the event as invalid).
pub async fn send_pagerduty(http: &reqwest::Client, url: &Url, event: &Value) -> Result<(), DeliveryError> {
    let response = http
        .post(url.clone())
        .json(event)
        .timeout(DELIVERY_TIMEOUT)
        .send()
        .await
        .map_err(|e| super::transport_failure("pagerduty", &e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = super::retry_after(&response);
    // PagerDuty explains a refusal in `message` and `errors`; both describe the event, not
    // the key, so they are kept (clipped).
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let mut message = format!("pagerduty answered {}", status.as_u16());
    if let Some(m) = body["message"].as_str() {
        message.push_str(&format!(": {}", clip(m, 200)));
    }
    if let Some(errors) = body["errors"].as_array().filter(|e| !e.is_empty()) {
        let errors: Vec<&str> = errors.iter().filter_map(Value::as_str).collect();
        message.push_str(&format!(" ({})", clip(&errors.join("; "), 300)));
    }
    let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
    Err(DeliveryError { retryable, message, retry_after })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::fixtures;
    use crate::api::incident::AlertKind;

    #[test]
    fn each_alert_kind_maps_to_an_action_and_the_incident_is_the_dedup_key() {
        for (kind, want) in [
            (AlertKind::Detected, Some("trigger")),
            (AlertKind::AwaitingApproval, Some("trigger")),
            (AlertKind::PlanCompleted, None),
            (AlertKind::PlanFailed, Some("trigger")),
            (AlertKind::Resolved, Some("resolve")),
        ] {
            let alert = fixtures::alert(kind);
            let event = pagerduty_event(&alert, "k".repeat(32).as_str());
            assert_eq!(event.as_ref().map(|e| e["event_action"].as_str().unwrap()), want, "{kind:?}");
            if let Some(e) = event {
                assert_eq!(e["dedup_key"], json!(alert.incident.id), "{kind:?}");
                assert_eq!(
                    e.get("payload").is_some(),
                    want == Some("trigger"),
                    "{kind:?}: a resolve carries no payload"
                );
            }
        }
    }

    #[test]
    fn a_trigger_carries_what_on_call_needs() {
        let alert = fixtures::alert(AlertKind::Detected);
        let e = pagerduty_event(&alert, &"a".repeat(32)).expect("a trigger");
        let p = &e["payload"];
        assert_eq!(p["severity"], json!(severity(alert.incident.severity)));
        assert_eq!(p["source"], json!(alert.incident.target));
        assert!(p["summary"].as_str().unwrap().chars().count() <= SUMMARY_MAX);
        assert!(p["summary"].as_str().unwrap().contains(&alert.incident.description));
        let inspect = p["custom_details"]["inspect"].as_array().expect("commands");
        assert!(inspect[0].as_str().unwrap().starts_with("kubectl describe incident"));
        assert_eq!(p["group"], json!(format!("{}/{}", alert.namespace, alert.incident.policy)));
    }

    #[test]
    fn severities_map_onto_pagerdutys() {
        let all = [Severity::Low, Severity::Medium, Severity::High, Severity::Critical];
        assert_eq!(all.map(severity), ["info", "warning", "error", "critical"]);
    }

    #[test]
    fn routing_keys_and_urls_are_checked_without_showing_them() {
        assert!(routing_key(&"R0".repeat(16)).is_ok());
        for bad in ["", "short", &"x".repeat(33), &format!("{} ", "-".repeat(32))] {
            let e = routing_key(bad).expect_err(bad);
            assert!(!e.to_string().contains(bad.trim()) || bad.trim().is_empty(), "{e}");
        }
        assert!(events_url(EVENTS_URL, false).is_ok());
        assert!(events_url("http://127.0.0.1:1/v2/enqueue", false).is_err());
        assert!(events_url("http://127.0.0.1:1/v2/enqueue", true).is_ok());
        assert!(events_url("not a url", true).is_err());
    }
}
