//! Slack's Web API: `chat.postMessage` with a bot token. Unlike an incoming webhook it answers
//! with the message's `ts`, so an incident's first alert becomes a thread and every follow-up
//! replies in it (`thread_ts`); the alert ledger keeps the `ts`, so the thread outlives the
//! process that started it.

use std::fmt;

use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

use super::slack::slack_payload;
use super::{Alert, AlertError, DELIVERY_TIMEOUT, DeliveryError};
use crate::api::incident::SlackMessage;
use crate::core::alerts::broadcast_in_channel;

/// Slack's own API base (Enterprise Grid and GovSlack have their own).
pub const SLACK_API_URL: &str = "https://slack.com/api/";

/// Slack's answers that a later attempt may not get: rate limits and its own failures.
const RETRYABLE: &[&str] =
    &["ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"];

/// Where to post and as whom. The token is a credential: `Debug` and `Display` never show it
/// and no error of this module contains it.
#[derive(Clone)]
pub struct SlackApi {
    base: Url,
    token: String,
}

impl SlackApi {
    /// The token read from its Secret (surrounding whitespace ignored) and the API base
    /// (`https`, or `http` only when insecure endpoints are allowed: tests).
    pub fn parse(token: &str, api_url: Option<&str>, allow_insecure: bool) -> Result<Self, AlertError> {
        let token = token.trim();
        let printable = token.bytes().all(|b| b.is_ascii_graphic());
        if !token.starts_with("xox") || token.len() < 10 || token.len() > 255 || !printable {
            return Err(AlertError::InvalidBotToken);
        }
        let mut base =
            super::endpoint(api_url.unwrap_or(SLACK_API_URL), allow_insecure).map_err(AlertError::InvalidApiUrl)?;
        // `join` replaces the last segment unless the base ends in a slash.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Self { base, token: token.to_owned() })
    }

    fn method(&self, name: &str) -> Url {
        self.base.join(name).expect("a method name is a relative path")
    }
}

impl fmt::Display for SlackApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (bot token <redacted>)", self.base)
    }
}

impl fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlackApi({self})")
    }
}

/// The `chat.postMessage` body (pure): the same text and blocks as the webhook's, posted to
/// `channel`, or, with a thread, to the thread's channel as a reply in it (a failed plan and
/// the resolution also shown in the channel).
pub fn post_message_body(alert: &Alert, channel: &str, thread: Option<&SlackMessage>) -> Value {
    let mut body = slack_payload(alert);
    body["channel"] = json!(thread.map_or(channel, |t| t.channel.as_str()));
    // Links in alerts are kubectl commands and AWS names: previews would be noise.
    body["unfurl_links"] = json!(false);
    if let Some(thread) = thread {
        body["thread_ts"] = json!(thread.ts);
        if broadcast_in_channel(alert.kind) {
            body["reply_broadcast"] = json!(true);
        }
    }
    body
}

/// Posts one message, within [`DELIVERY_TIMEOUT`]: the message it became, or why not.
///
/// The Web API answers 200 with `ok: false` and an error code for refusals; the codes of rate
/// limits and Slack's own failures (and HTTP 429 / 5xx) are retryable, the rest
/// (`channel_not_found`, `not_in_channel`, `invalid_auth`, `is_archived`, …) wait for a person.
pub async fn post_message(http: &reqwest::Client, api: &SlackApi, body: &Value) -> Result<SlackMessage, DeliveryError> {
    let response = http
        .post(api.method("chat.postMessage"))
        .bearer_auth(&api.token)
        .json(body)
        .timeout(DELIVERY_TIMEOUT)
        .send()
        .await
        .map_err(|e| super::transport_failure("slack api", &e))?;
    let status = response.status();
    let retry_after = super::retry_after(&response);
    if !status.is_success() {
        let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        let message = format!("slack api chat.postMessage answered {}", status.as_u16());
        return Err(DeliveryError { retryable, message, retry_after });
    }
    let answer: Value = response.json().await.map_err(|_| DeliveryError::retryable("slack api answered no JSON"))?;
    answer_to_message(&answer).map_err(|mut e| {
        e.retry_after = retry_after;
        e
    })
}

/// Reads a 200 answer (pure): the posted message, or the refusal it reports.
fn answer_to_message(answer: &Value) -> Result<SlackMessage, DeliveryError> {
    if answer["ok"] == json!(true) {
        return match (answer["channel"].as_str(), answer["ts"].as_str()) {
            (Some(channel), Some(ts)) if !channel.is_empty() && !ts.is_empty() => {
                Ok(SlackMessage { channel: channel.to_owned(), ts: ts.to_owned() })
            }
            _ => Err(DeliveryError::permanent("slack api chat.postMessage answered ok without channel and ts")),
        };
    }
    // Error codes are short snake_case words; anything else is not repeated.
    let code = answer["error"].as_str().unwrap_or_default();
    let is_code = !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let code = if is_code { code } else { "unknown_error" };
    let message = format!("slack api chat.postMessage: {code}");
    Err(if RETRYABLE.contains(&code) { DeliveryError::retryable(message) } else { DeliveryError::permanent(message) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::fixtures::alert;
    use crate::api::incident::AlertKind;

    const TOKEN: &str = "xoxb-1234-5678-SECRETSECRET";

    #[test]
    fn the_token_is_checked_and_never_shown() {
        let api = SlackApi::parse(&format!("{TOKEN}\n"), None, false).unwrap();
        for shown in [format!("{api}"), format!("{api:?}")] {
            assert!(!shown.contains("SECRET"), "{shown}");
        }
        assert_eq!(api.method("chat.postMessage").as_str(), "https://slack.com/api/chat.postMessage");
        for bad in ["", "Bearer xoxb-1", "hunter2-SECRETSECRET", "xoxb-with space-SECRET", "xoxb"] {
            let err = SlackApi::parse(bad, None, false).unwrap_err();
            assert_eq!(err, AlertError::InvalidBotToken, "{bad:?}");
            assert!(!err.to_string().contains("SECRET"));
        }
        let local = SlackApi::parse(TOKEN, Some("http://127.0.0.1:9/slack-api"), true).unwrap();
        assert_eq!(local.method("chat.postMessage").as_str(), "http://127.0.0.1:9/slack-api/chat.postMessage");
        assert_eq!(
            SlackApi::parse(TOKEN, Some("http://127.0.0.1:9/slack-api"), false).unwrap_err(),
            AlertError::InvalidApiUrl("must be https")
        );
    }

    #[test]
    fn the_first_message_goes_to_the_channel_and_follow_ups_into_its_thread() {
        let first = post_message_body(&alert(AlertKind::Detected), "#incidents", None);
        assert_eq!(first["channel"], "#incidents");
        assert!(first.get("thread_ts").is_none());
        assert!(first["blocks"].as_array().is_some_and(|b| !b.is_empty()), "the webhook's blocks");
        assert_eq!(first["unfurl_links"], false);

        let thread = SlackMessage { channel: "C0INCIDENTS".into(), ts: "1712345678.000100".into() };
        for (kind, shown) in [
            (AlertKind::AwaitingApproval, false),
            (AlertKind::PlanCompleted, false),
            (AlertKind::PlanFailed, true),
            (AlertKind::Resolved, true),
        ] {
            let reply = post_message_body(&alert(kind), "#incidents", Some(&thread));
            assert_eq!(reply["channel"], "C0INCIDENTS", "{kind:?}: the id Slack answered");
            assert_eq!(reply["thread_ts"], "1712345678.000100", "{kind:?}");
            assert_eq!(reply.get("reply_broadcast").is_some(), shown, "{kind:?}");
        }
    }

    #[test]
    fn answers_are_read_as_the_web_api_documents_them() {
        let ok = json!({"ok": true, "channel": "C0INCIDENTS", "ts": "1712345678.000100", "message": {}});
        assert_eq!(
            answer_to_message(&ok).unwrap(),
            SlackMessage { channel: "C0INCIDENTS".into(), ts: "1712345678.000100".into() }
        );
        for (answer, retryable, message) in [
            (json!({"ok": false, "error": "ratelimited"}), true, "slack api chat.postMessage: ratelimited"),
            (json!({"ok": false, "error": "internal_error"}), true, "slack api chat.postMessage: internal_error"),
            (
                json!({"ok": false, "error": "channel_not_found"}),
                false,
                "slack api chat.postMessage: channel_not_found",
            ),
            (json!({"ok": false, "error": "not_in_channel"}), false, "slack api chat.postMessage: not_in_channel"),
            (json!({"ok": false, "error": "invalid_auth"}), false, "slack api chat.postMessage: invalid_auth"),
            (json!({"ok": false, "error": "<html>SECRET"}), false, "slack api chat.postMessage: unknown_error"),
            (json!({"ok": true}), false, "slack api chat.postMessage answered ok without channel and ts"),
        ] {
            let e = answer_to_message(&answer).unwrap_err();
            assert_eq!((e.retryable, e.message.as_str()), (retryable, message), "{answer}");
        }
    }
}
