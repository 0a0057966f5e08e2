//! Types shared by the three kinds: severities, secret references, durations and conditions.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How bad an incident is. Ordered: `low < medium < high < critical`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational; never paged.
    Low,
    /// Degraded but serving.
    Medium,
    /// A user-facing service is impaired.
    High,
    /// Data or a whole system is at risk.
    Critical,
}

impl Severity {
    /// One level up, saturating at critical: a failed plan escalates its incident.
    pub fn raised(self) -> Self {
        match self {
            Self::Low => Self::Medium,
            Self::Medium => Self::High,
            Self::High | Self::Critical => Self::Critical,
        }
    }

    /// The lowercase name used in the API and in alert titles.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// A key inside a Secret in the policy's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the policy.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// Key inside the Secret whose value is used.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A whole Secret in the policy's namespace (several keys are read from it).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as the policy.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
}

/// RFC 1123 subdomain, the shape of every Kubernetes object name.
pub const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Go-style durations as the API server's CEL `duration()` understands them (`90s`, `1h30m`).
pub const DURATION_PATTERN: &str = r"^([0-9]{1,6}(ms|s|m|h))+$";

/// Parses a duration string already admitted by [`DURATION_PATTERN`].
///
/// The schema rejects malformed values at `kubectl apply`, so an error here means the
/// object bypassed validation (e.g. an older CRD); callers surface it as a condition.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("invalid duration {value:?}: {e}"))
}

/// Condition status strings.
pub const TRUE: &str = "True";
/// Condition status strings.
pub const FALSE: &str = "False";

/// Sets a condition, keeping `lastTransitionTime` unless the status flips.
///
/// Returns whether anything visible changed, so callers can skip a status write.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let status = if status { TRUE } else { FALSE };
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let changed = c.status != status
                || c.reason != reason
                || c.message != message
                || c.observed_generation != observed_generation;
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = observed_generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message,
                observed_generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

/// Looks a condition up by type.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Appends CEL rules to a schema's `x-kubernetes-validations`.
pub(crate) fn push_rules(schema: &mut schemars::Schema, rules: impl IntoIterator<Item = (String, String)>) {
    let list =
        schema.ensure_object().entry("x-kubernetes-validations").or_insert_with(|| serde_json::Value::Array(vec![]));
    if let Some(list) = list.as_array_mut() {
        list.extend(rules.into_iter().map(|(rule, message)| serde_json::json!({"rule": rule, "message": message})));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_go_form_parse() {
        for (text, secs) in [("30s", 30), ("15m", 900), ("1h30m", 5400), ("2h", 7200)] {
            assert_eq!(parse_duration(text).unwrap(), Duration::from_secs(secs), "{text}");
        }
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn severity_raises_and_saturates() {
        assert_eq!(Severity::Low.raised(), Severity::Medium);
        assert_eq!(Severity::High.raised(), Severity::Critical);
        assert_eq!(Severity::Critical.raised(), Severity::Critical);
        assert!(Severity::Medium < Severity::High);
    }

    #[test]
    fn condition_transition_time_moves_only_on_flip() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let mut cs = Vec::new();
        assert!(set_condition(&mut cs, "Ready", true, "Ok", "fine", Some(1), t0));
        assert!(!set_condition(&mut cs, "Ready", true, "Ok", "fine", Some(1), t1));
        assert_eq!(cs[0].last_transition_time, Time(t0));
        assert!(set_condition(&mut cs, "Ready", true, "Ok", "still fine", Some(1), t1));
        assert_eq!(cs[0].last_transition_time, Time(t0));
        assert!(set_condition(&mut cs, "Ready", false, "Broken", "no", Some(1), t1));
        assert_eq!(cs[0].last_transition_time, Time(t1));
    }
}
