//! Alerts: what an incident alert says, rendered in English or Korean, and its delivery to a
//! Slack incoming webhook or Slack's Web API (one thread an incident), over SMTP, or to
//! PagerDuty's Events API v2.
//!
//! Rendering ([`title`], [`slack_payload`], [`email_message`]) is pure: the caller (the incident
//! reconciler) builds an [`Alert`] from the Incident and its plan, and gets back a value to send.
//! Sending ([`send_slack`], [`send_email`]) makes exactly one attempt and classifies a failure as
//! retryable or not; retries with backoff belong to the controller's alert ledger
//! (`Incident.status.alerts`), which survives restarts where an in-call retry loop would not.
//!
//! Webhook URLs and SMTP passwords are credentials. They never appear in an error, a log line
//! or a `Debug` output of this module's types.

mod email;
mod pagerduty;
mod render;
mod slack;
mod slack_api;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::incident::{AlertKind, IncidentMetrics, IncidentSpec};
use crate::api::policy::Locale;

pub use email::{SmtpSettings, SmtpTls, email_message, message_id, plain_text, send_email};
pub use pagerduty::{EVENTS_URL, events_url, pagerduty_event, routing_key, send_pagerduty};
pub use render::{incident_tag, title};
pub use slack::{SlackWebhook, send_slack, slack_payload};
pub use slack_api::{SLACK_API_URL, SlackApi, post_message, post_message_body};

/// Everything one alert says. Built by the caller from the Incident, its status and its plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Which alert this is.
    pub kind: AlertKind,
    /// Namespace of the Incident (and of its plan).
    pub namespace: String,
    /// Name of the Incident object.
    pub incident_name: String,
    /// The incident as recorded: id, type, severity (already raised on a failed plan), target,
    /// resource, description and affected components.
    pub incident: IncidentSpec,
    /// The latest figures AWS reported, if any.
    pub metrics: Option<IncidentMetrics>,
    /// Name of the RecoveryPlan, once one exists.
    pub plan_name: Option<String>,
    /// One line about the plan: its status message, or the failed step's message.
    pub plan_summary: Option<String>,
    /// When the incident was confirmed.
    pub detected_at: Option<Timestamp>,
    /// When the target was confirmed healthy again.
    pub resolved_at: Option<Timestamp>,
    /// Language of the text.
    pub locale: Locale,
    /// Slack channel named in the payload (`#incidents`); the webhook decides where it lands.
    pub slack_channel: Option<String>,
    /// The pause holding the target's remediation when the alert was built, in a sentence
    /// (`until … (by …): reason`): people are told nothing will act before then.
    pub paused: Option<String>,
}

/// A configuration or content problem: retrying cannot help until someone changes something.
///
/// Messages name the setting or key that is wrong, never a secret value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AlertError {
    /// The webhook secret does not hold a usable URL. The URL itself is never shown.
    #[error("slack webhook url is invalid: {0}")]
    InvalidWebhook(&'static str),
    /// A required key of the SMTP secret is absent or empty.
    #[error("smtp secret has no key {0:?}")]
    MissingKey(&'static str),
    /// A key of the SMTP secret holds something unusable.
    #[error("smtp secret key {key:?} {problem}")]
    InvalidKey {
        /// The key, e.g. `port`.
        key: &'static str,
        /// What is wrong with its value (without the value).
        problem: &'static str,
    },
    /// An e-mail address (from the policy, not a secret) does not parse.
    #[error("email {field} address {address:?} is invalid")]
    InvalidAddress {
        /// `from` or `to`.
        field: &'static str,
        /// The address as configured.
        address: String,
    },
    /// The Slack bot token is not a Slack token. The token itself is never shown.
    #[error("slack bot token is invalid: it must be a Slack token (xoxb-…) without spaces")]
    InvalidBotToken,
    /// The Slack Web API URL is unusable.
    #[error("slack apiUrl is invalid: {0}")]
    InvalidApiUrl(&'static str),
    /// The PagerDuty routing key is not 32 letters and digits. The key itself is never shown.
    #[error("pagerduty routing key is invalid: it must be the 32-character integration key")]
    InvalidRoutingKey,
    /// The PagerDuty events URL is unusable.
    #[error("pagerduty eventsUrl is invalid: {0}")]
    InvalidEventsUrl(&'static str),
    /// The policy names no recipient.
    #[error("email has no recipients")]
    NoRecipients,
    /// lettre refused to assemble the message.
    #[error("email message could not be built: {0}")]
    Message(String),
}

/// One failed delivery attempt.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct DeliveryError {
    /// Whether a later attempt may succeed (HTTP 429/5xx, SMTP 4xx, timeouts, lost
    /// connections). When unsure this is `true`: a few wasted attempts, bounded by the ledger,
    /// cost less than an alert dropped after one network hiccup.
    pub retryable: bool,
    /// What failed, e.g. `slack webhook answered 500`. Never a URL, password or message body.
    pub message: String,
    /// How long the receiver asked us to wait (Slack's `Retry-After` on 429).
    pub retry_after: Option<Duration>,
}

impl DeliveryError {
    fn retryable(message: impl Into<String>) -> Self {
        Self { retryable: true, message: message.into(), retry_after: None }
    }

    fn permanent(message: impl Into<String>) -> Self {
        Self { retryable: false, message: message.into(), retry_after: None }
    }
}

/// A failure before any answer from `who` (`pagerduty`, `slack api`): retryable, and named
/// without the URL (reqwest's own message quotes it).
fn transport_failure(who: &str, e: &reqwest::Error) -> DeliveryError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "unreachable"
    } else {
        "request failed"
    };
    DeliveryError::retryable(format!("{who} {what}"))
}

/// The `Retry-After` a receiver sent with a refusal (seconds), if any.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A receiver's URL (not a secret one): `https`, or `http` only when insecure endpoints are
/// allowed (tests against loopback receivers). The error says what is wrong.
fn endpoint(raw: &str, allow_insecure: bool) -> Result<reqwest::Url, &'static str> {
    let url = reqwest::Url::parse(raw.trim()).map_err(|_| "not a URL")?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_insecure => Ok(url),
        _ => Err("must be https"),
    }
}

/// How long one delivery attempt may take, per channel.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod fixtures;
