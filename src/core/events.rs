//! Push detection's pure half: an SQS message's body (an EventBridge event) → what it says
//! about which resources, and which policies' targets that wakes.
//!
//! Events are hints, probes decide: an event never opens an incident or acts. It wakes a
//! probe of the targets it names; with `detection.events: Corroborate`, a fresh *trouble*
//! event (see each kind's `hear`) and an unhealthy answer from the probe it woke together
//! reach the failure threshold. Each kind says which events it hears and how they name its
//! resources (`kinds::TargetKind::hear`); this module is the same for every kind.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

use crate::api::policy::{EventsMode, RecoveryPolicySpec};

use super::kinds;

/// An EventBridge event as its rule's SQS target delivers it (the message body).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Envelope {
    /// EventBridge's id of the event: the same for every delivery of one event.
    pub id: String,
    /// `aws.ecs`, `aws.rds`, `aws.cloudwatch`, ….
    pub source: String,
    /// `ECS Service Action`, `RDS DB Instance Event`, ….
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    /// The account the event happened in.
    #[serde(default)]
    pub account: String,
    /// The region the event happened in.
    #[serde(default)]
    pub region: String,
    /// When it happened, as AWS says.
    #[serde(default)]
    pub time: Option<Timestamp>,
    /// ARNs of the resources involved.
    #[serde(default)]
    pub resources: Vec<String>,
    /// The service's own fields.
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// What an event says about one resource, as the resource's kind reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heard {
    /// The target key the resource would have in a policy (made by the kind).
    pub key: String,
    /// Whether the event reports trouble (it may corroborate an unhealthy answer) rather than
    /// a change worth a look (a deployment finished, an alarm back to OK).
    pub trouble: bool,
    /// The resource is global (a Route 53 health check): any policy's region matches.
    pub global: bool,
}

/// Why a message wakes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// Not an EventBridge event.
    #[error("not an EventBridge event: {0}")]
    NotAnEvent(String),
}

/// A message's event, read.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The envelope.
    pub envelope: Envelope,
    /// What it says, resource by resource (empty: a source or type no kind hears).
    pub heard: Vec<Heard>,
}

impl Event {
    /// The metric labels of the event: its source and type when a kind hears them, `other`
    /// otherwise (a rule sending more than this controller hears must not grow the metrics).
    pub fn labels(&self) -> (&'static str, &'static str) {
        labels(&self.envelope.source, &self.envelope.detail_type)
    }
}

/// Reads a message body.
pub fn parse(body: &str) -> Result<Event, Unreadable> {
    let envelope: Envelope = serde_json::from_str(body).map_err(|e| Unreadable::NotAnEvent(e.to_string()))?;
    if envelope.id.is_empty() {
        return Err(Unreadable::NotAnEvent("the event has no id".into()));
    }
    let heard = kinds::ALL.iter().flat_map(|k| kinds::of(*k).hear(&envelope)).collect();
    Ok(Event { envelope, heard })
}

/// The (source, detail-type) pairs some kind hears, in kind order: the EventBridge rule's
/// pattern (`examples/events/`) names exactly these.
pub fn heard_types() -> Vec<(&'static str, &'static str)> {
    let mut all: Vec<(&'static str, &'static str)> = Vec::new();
    for pair in kinds::ALL.iter().flat_map(|k| kinds::of(*k).hears().iter().copied()) {
        if !all.contains(&pair) {
            all.push(pair);
        }
    }
    all
}

/// Metric labels for a source and type: themselves when a kind hears them, else `other`.
pub fn labels(source: &str, detail_type: &str) -> (&'static str, &'static str) {
    heard_types().into_iter().find(|(s, d)| *s == source && *d == detail_type).unwrap_or(("other", "other"))
}

/// A trouble event corroborates a probe only this long after it happened: one that waited
/// in the queue longer (a controller that was down, a backlog) still wakes a probe, but is
/// no longer evidence of the target's state now.
pub const FRESH: Duration = Duration::from_secs(300);

/// One target an event wakes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wake {
    /// The target's key.
    pub target: String,
    /// Whether an unhealthy answer of the probe it wakes reaches the failure threshold.
    pub corroborates: bool,
}

/// The targets of one policy that an event wakes, at `now`: those it names, in the policy's
/// region (or global) and account (the policy's role's, or any when it has no role: the
/// controller cannot know its own account without a call, and a spare probe costs one read),
/// unless the policy ignores events.
pub fn wakes(event: &Event, spec: &RecoveryPolicySpec, now: Timestamp) -> Vec<Wake> {
    let mode = spec.detection.events;
    if mode == EventsMode::Ignore || event.heard.is_empty() {
        return Vec::new();
    }
    let e = &event.envelope;
    let account = spec.aws.role_arn.as_deref().and_then(|arn| arn.split(':').nth(4));
    if account.is_some_and(|a| !e.account.is_empty() && a != e.account) {
        return Vec::new();
    }
    let fresh = e.time.is_some_and(|t| super::time::since(now, t) <= FRESH && t <= now + FRESH);
    let in_place: Vec<&Heard> =
        event.heard.iter().filter(|h| h.global || e.region.is_empty() || e.region == spec.aws.region).collect();
    if in_place.is_empty() {
        return Vec::new();
    }
    // Every event is matched against every policy: the targets are listed only for a policy
    // that passed the cheap checks above.
    let target_keys: HashSet<String> = super::targets::targets(spec).into_iter().map(|t| t.key).collect();
    in_place
        .into_iter()
        .filter(|h| target_keys.contains(&h.key))
        .map(|h| Wake { target: h.key.clone(), corroborates: mode == EventsMode::Corroborate && h.trouble && fresh })
        .collect()
}

/// Event ids seen lately, so a duplicate delivery (EventBridge delivers at least once, and
/// two overlapping rules deliver one event twice) wakes nothing twice. Bounded: the oldest
/// ids are forgotten first; a duplicate that arrives after [`Recent::CAPACITY`] newer events
/// wakes a second probe, which reads AWS once more and decides nothing new.
#[derive(Debug, Default)]
pub struct Recent {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Recent {
    /// Ids remembered.
    pub const CAPACITY: usize = 10_000;

    /// Remembers `id`; whether it is new.
    pub fn first(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.order.push_back(id.to_owned());
        self.ids.insert(id.to_owned());
        true
    }
}

/// The region of an SQS queue URL (`https://sqs.eu-west-1.amazonaws.com/…`, the legacy
/// `https://eu-west-1.queue.amazonaws.com/…`); `None` for one that does not say (a custom
/// endpoint: the SDK's region is used).
pub fn queue_region(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.split(['/', ':']).next()?;
    let mut labels = host.split('.');
    let (first, second) = (labels.next()?, labels.next()?);
    let region = match (first, second) {
        ("sqs", region) => region,
        (region, "queue") => region,
        _ => return None,
    };
    (!region.is_empty() && region.contains('-')).then_some(region)
}

/// The last path segment of an ARN's resource (`…:service/prod/checkout` → `checkout`).
pub fn arn_tail(arn: &str) -> &str {
    arn.rsplit([':', '/']).next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::{at, policy};

    fn event(source: &str, detail_type: &str, resources: &[&str], detail: serde_json::Value) -> String {
        serde_json::json!({
            "version": "0", "id": "e-1", "source": source, "detail-type": detail_type,
            "account": "123456789012", "region": "us-east-1", "time": "2026-01-01T00:00:00Z",
            "resources": resources, "detail": detail,
        })
        .to_string()
    }

    /// What each kind hears, table by table: the key it names and whether it is trouble.
    #[test]
    fn each_kind_hears_its_events() {
        use serde_json::json;
        let svc = "arn:aws:ecs:us-east-1:123456789012:service/prod/checkout";
        // (what, message body, the keys heard and whether each is trouble)
        type Case = (&'static str, String, Vec<(&'static str, bool)>);
        let cases: Vec<Case> = vec![
            (
                "ECS service action, WARN",
                event(
                    "aws.ecs",
                    "ECS Service Action",
                    &[svc],
                    json!({"eventType": "WARN", "eventName": "SERVICE_TASK_START_IMPAIRED"}),
                ),
                vec![("ecs/prod/checkout", true)],
            ),
            (
                "ECS service action, INFO",
                event(
                    "aws.ecs",
                    "ECS Service Action",
                    &[svc],
                    json!({"eventType": "INFO", "eventName": "SERVICE_STEADY_STATE"}),
                ),
                vec![("ecs/prod/checkout", false)],
            ),
            (
                "ECS deployment failed",
                event(
                    "aws.ecs",
                    "ECS Deployment State Change",
                    &[svc],
                    json!({"eventType": "ERROR", "eventName": "SERVICE_DEPLOYMENT_FAILED"}),
                ),
                vec![("ecs/prod/checkout", true)],
            ),
            (
                "ECS service ARN without its cluster (the old format)",
                event(
                    "aws.ecs",
                    "ECS Service Action",
                    &["arn:aws:ecs:us-east-1:123456789012:service/checkout"],
                    json!({"eventType": "ERROR", "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/prod"}),
                ),
                vec![("ecs/prod/checkout", true)],
            ),
            (
                "ECS task failed to start",
                event(
                    "aws.ecs",
                    "ECS Task State Change",
                    &["arn:aws:ecs:us-east-1:123456789012:task/prod/abc"],
                    json!({"group": "service:checkout", "lastStatus": "STOPPED", "stopCode": "TaskFailedToStart",
                           "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/prod"}),
                ),
                vec![("ecs/prod/checkout", true)],
            ),
            (
                "ECS task stopped by a deployment",
                event(
                    "aws.ecs",
                    "ECS Task State Change",
                    &[],
                    json!({"group": "service:checkout", "lastStatus": "STOPPED", "stopCode": "ServiceSchedulerInitiated",
                           "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/prod"}),
                ),
                vec![("ecs/prod/checkout", false)],
            ),
            (
                "ECS standalone task: no service",
                event(
                    "aws.ecs",
                    "ECS Task State Change",
                    &[],
                    json!({"group": "family:batch", "clusterArn": "arn:aws:ecs:us-east-1:1:cluster/prod"}),
                ),
                vec![],
            ),
            (
                "RDS instance failure",
                event(
                    "aws.rds",
                    "RDS DB Instance Event",
                    &["arn:aws:rds:us-east-1:123456789012:db:prod-db"],
                    json!({"EventCategories": ["failure"], "SourceType": "DB_INSTANCE", "SourceIdentifier": "prod-db", "EventID": "RDS-EVENT-0031"}),
                ),
                vec![("rds/prod-db", true)],
            ),
            (
                "RDS instance backup: a change, not trouble",
                event(
                    "aws.rds",
                    "RDS DB Instance Event",
                    &[],
                    json!({"EventCategories": ["backup"], "SourceArn": "arn:aws:rds:us-east-1:123456789012:db:prod-db"}),
                ),
                vec![("rds/prod-db", false)],
            ),
            (
                "RDS cluster failover",
                event(
                    "aws.rds",
                    "RDS DB Cluster Event",
                    &["arn:aws:rds:us-east-1:123456789012:cluster:orders"],
                    json!({"EventCategories": ["failover"], "SourceType": "CLUSTER", "SourceIdentifier": "orders"}),
                ),
                vec![("rdscluster/orders", true)],
            ),
            (
                "Route 53 health check alarm",
                event(
                    "aws.cloudwatch",
                    "CloudWatch Alarm State Change",
                    &["arn:aws:cloudwatch:us-east-1:123456789012:alarm:hc"],
                    json!({"alarmName": "hc", "state": {"value": "ALARM"}, "configuration": {"metrics": [{"id": "m1",
                        "metricStat": {"metric": {"namespace": "AWS/Route53", "name": "HealthCheckStatus",
                        "dimensions": {"HealthCheckId": "0b7e2c5e"}}}}]}}),
                ),
                vec![("route53/0b7e2c5e", true)],
            ),
            (
                "Route 53 alarm back to OK",
                event(
                    "aws.cloudwatch",
                    "CloudWatch Alarm State Change",
                    &[],
                    json!({"state": {"value": "OK"}, "configuration": {"metrics": [{"metricStat": {"metric":
                        {"namespace": "AWS/Route53", "dimensions": {"HealthCheckId": "0b7e2c5e"}}}}]}}),
                ),
                vec![("route53/0b7e2c5e", false)],
            ),
            (
                "an alarm on something else",
                event(
                    "aws.cloudwatch",
                    "CloudWatch Alarm State Change",
                    &[],
                    json!({"state": {"value": "ALARM"}, "configuration": {"metrics": [{"metricStat": {"metric":
                        {"namespace": "AWS/EC2", "dimensions": {"InstanceId": "i-1"}}}}]}}),
                ),
                vec![],
            ),
            ("a source nobody hears", event("acme.orders", "Order Placed", &[], json!({})), vec![]),
        ];
        for (what, body, want) in cases {
            let e = parse(&body).unwrap_or_else(|err| panic!("{what}: {err}"));
            let got: Vec<(&str, bool)> = e.heard.iter().map(|h| (h.key.as_str(), h.trouble)).collect();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn garbage_is_unreadable() {
        for body in ["", "not json", "{}", r#"{"id": "", "source": "aws.ecs", "detail-type": "x"}"#, "[1,2]"] {
            assert!(parse(body).is_err(), "{body:?}");
        }
    }

    /// Which targets of which policy an event wakes, and when it corroborates.
    #[test]
    fn wakes_by_region_account_mode_and_freshness() {
        use serde_json::json;
        let body = |region: &str, account: &str, time: &str| {
            json!({"id": "e", "source": "aws.ecs", "detail-type": "ECS Service Action", "account": account,
                   "region": region, "time": time,
                   "resources": ["arn:aws:ecs:us-east-1:123456789012:service/prod/checkout"],
                   "detail": {"eventType": "ERROR"}})
            .to_string()
        };
        let now = at(1_000);
        let t = |s: i64| (now - k8s_openapi::jiff::SignedDuration::from_secs(s)).to_string();
        let mut corroborating = policy();
        corroborating.detection.events = EventsMode::Corroborate;
        let mut ignoring = policy();
        ignoring.detection.events = EventsMode::Ignore;
        let mut other_account = corroborating.clone();
        other_account.aws.role_arn = Some("arn:aws:iam::999999999999:role/r".into());
        let mut same_account = corroborating.clone();
        same_account.aws.role_arn = Some("arn:aws:iam::123456789012:role/r".into());
        let cases = [
            // (what, policy, event region, account, age s, woken, corroborates)
            ("wake by default", policy(), "us-east-1", "123456789012", 1, true, false),
            ("corroborate when fresh", corroborating.clone(), "us-east-1", "123456789012", 1, true, true),
            ("too old to corroborate", corroborating.clone(), "us-east-1", "123456789012", 301, true, false),
            ("from the future", corroborating.clone(), "us-east-1", "123456789012", -400, true, false),
            ("another region", corroborating.clone(), "eu-west-1", "123456789012", 1, false, false),
            ("ignored", ignoring, "us-east-1", "123456789012", 1, false, false),
            ("another account than the role's", other_account, "us-east-1", "123456789012", 1, false, false),
            ("the role's account", same_account, "us-east-1", "123456789012", 1, true, true),
        ];
        for (what, spec, region, account, age, woken, corroborates) in cases {
            let e = parse(&body(region, account, &t(age))).unwrap();
            let got = wakes(&e, &spec, now);
            assert_eq!(!got.is_empty(), woken, "{what}");
            if woken {
                assert_eq!(got, vec![Wake { target: "ecs/prod/checkout".into(), corroborates }], "{what}");
            }
        }
        // A service the policy does not watch wakes nothing.
        let other = body("us-east-1", "123456789012", &t(1)).replace("checkout", "billing");
        assert!(wakes(&parse(&other).unwrap(), &policy(), now).is_empty());
    }

    #[test]
    fn recent_ids_are_bounded_and_forget_the_oldest() {
        let mut r = Recent::default();
        assert!(r.first("a") && !r.first("a"));
        for i in 0..Recent::CAPACITY {
            assert!(r.first(&format!("id-{i}")));
        }
        assert!(r.first("a"), "forgotten after CAPACITY newer ids");
        assert!(!r.first(&format!("id-{}", Recent::CAPACITY - 1)));
        assert!(r.order.len() <= Recent::CAPACITY && r.ids.len() == r.order.len());
    }

    /// The EventBridge patterns shipped in `examples/events/` send exactly what the kinds
    /// hear, and the CloudFormation template's rules are those patterns.
    #[test]
    fn the_shipped_event_patterns_are_what_the_kinds_hear() {
        let patterns: Vec<serde_json::Value> = [
            include_str!("../../examples/events/pattern-ecs-rds.json"),
            include_str!("../../examples/events/pattern-ecs-tasks.json"),
            include_str!("../../examples/events/pattern-route53-alarms.json"),
        ]
        .iter()
        .map(|p| serde_json::from_str(p).expect("a JSON pattern"))
        .collect();
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array().expect("a list").iter().map(|s| s.as_str().expect("a string").to_owned()).collect()
        };
        let mut sent: Vec<(String, String)> = Vec::new();
        for p in &patterns {
            for source in strings(&p["source"]) {
                for detail_type in strings(&p["detail-type"]) {
                    // A source with a type it never sends (aws.rds with "ECS Service Action")
                    // matches nothing: only the pairs a kind hears are counted.
                    if labels(&source, &detail_type) != ("other", "other") {
                        sent.push((source.clone(), detail_type));
                    }
                }
            }
        }
        let mut heard: Vec<(String, String)> =
            heard_types().into_iter().map(|(s, d)| (s.to_owned(), d.to_owned())).collect();
        sent.sort();
        heard.sort();
        assert_eq!(sent, heard);
        // CloudFormation's short tags (`!Ref`) are YAML tags: read the template as YAML, and
        // only the patterns (which have none) as JSON.
        let template: serde_norway::Value =
            serde_norway::from_str(include_str!("../../examples/events/cloudformation.yaml")).expect("YAML");
        let resources = template["Resources"].as_mapping().expect("resources");
        let mut rules: Vec<serde_json::Value> = resources
            .values()
            .filter(|r| r["Type"].as_str() == Some("AWS::Events::Rule"))
            .map(|r| serde_norway::from_value(r["Properties"]["EventPattern"].clone()).expect("a pattern"))
            .collect();
        assert_eq!(rules.len(), patterns.len());
        for p in &patterns {
            let at = rules.iter().position(|r| r == p).unwrap_or_else(|| panic!("no rule has the pattern {p}"));
            rules.remove(at);
        }
    }

    #[test]
    fn a_queue_url_names_its_region() {
        for (url, want) in [
            ("https://sqs.eu-west-1.amazonaws.com/123456789012/recovery", Some("eu-west-1")),
            ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/recovery", Some("cn-north-1")),
            ("https://us-west-2.queue.amazonaws.com/123456789012/recovery", Some("us-west-2")),
            ("https://sqs.us-east-1.api.aws/123456789012/recovery", Some("us-east-1")),
            ("http://127.0.0.1:5000/123456789012/recovery", None),
            ("http://localhost:4566/000000000000/recovery", None),
            ("recovery", None),
        ] {
            assert_eq!(queue_region(url), want, "{url}");
        }
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(labels("aws.ecs", "ECS Service Action"), ("aws.ecs", "ECS Service Action"));
        assert_eq!(labels("aws.ecs", "Made Up"), ("other", "other"));
        assert_eq!(labels("acme", "x"), ("other", "other"));
    }
}
