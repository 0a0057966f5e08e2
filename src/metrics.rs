//! Prometheus metrics (prometheus-client), registered once and shared by every reconcile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::incident::ResourceKind;
use crate::api::plan::{RequestAction, StepAction};

/// Labels: controller and result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `policy`, `incident` or `plan`.
    pub controller: &'static str,
    /// `ok` or an error category.
    pub result: &'static str,
}

/// Labels: controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// `policy`, `incident` or `plan`.
    pub controller: &'static str,
}

/// Labels: AWS service, operation and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsLabels {
    /// `ecs`, `rds`, `route53`.
    pub service: &'static str,
    /// e.g. `DescribeServices`.
    pub operation: &'static str,
    /// `ok`, `throttled`, `error`.
    pub outcome: &'static str,
}

/// Labels: incident type and severity.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IncidentLabels {
    /// `service`, `database`, `network`.
    pub r#type: &'static str,
    /// `low` … `critical`.
    pub severity: &'static str,
}

/// Labels: outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `completed` / `failed` / `not_needed` (plans), `sent` / `failed` (alerts).
    pub outcome: &'static str,
}

/// Labels: a kind, as the API names it: of a target (`EcsService`, `RdsCluster`, …) or of
/// an object (`RecoveryPolicy`, `Incident`, `RecoveryPlan`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: String,
}

/// Labels: step action.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    /// e.g. `RestartService`.
    pub action: String,
}

/// Labels: on-demand request and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `retry`, `reverify` or `cancel`.
    pub action: &'static str,
    /// `accepted` or `refused`.
    pub outcome: &'static str,
}

/// Labels: alert channel and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    /// `slack`, `email` or `pagerduty`.
    pub channel: &'static str,
    /// `sent`, `failed`.
    pub outcome: &'static str,
}

/// Labels: an AWS event's source and type (`other` for any this controller does not hear)
/// and what came of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `aws.ecs`, `aws.rds`, `aws.cloudwatch`, `other`; `unreadable` for a message that is
    /// not an event.
    pub source: &'static str,
    /// e.g. `ECS Service Action`.
    pub detail_type: &'static str,
    /// `matched` (it woke a probe), `unwatched` (it names nothing a policy watches),
    /// `duplicate` (its id was seen), `unreadable`.
    pub outcome: &'static str,
}

/// Labels: an event queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    /// The queue's URL.
    pub queue: String,
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    /// Reconciles by controller and result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconcile duration by controller.
    pub reconcile_seconds: Family<ControllerLabel, Histogram>,
    /// AWS calls by service, operation and outcome.
    pub aws_calls: Family<AwsLabels, Counter>,
    /// Open incidents by type and severity.
    pub open_incidents: Family<IncidentLabels, Gauge>,
    /// Plans that ended, by outcome.
    pub plans: Family<OutcomeLabel, Counter>,
    /// Plans that ended without acting because the target had recovered, by kind: next to
    /// `plans{outcome="completed"}`, this tells remediation that fixed something from
    /// targets that recovered by themselves.
    pub plans_not_needed: Family<KindLabel, Counter>,
    /// Objects seen by a watch that this controller cannot decode, by kind.
    pub undecodable: Family<KindLabel, Counter>,
    /// Objects deleted by history retention, by kind (`Incident`, `RecoveryPlan`).
    pub pruned: Family<KindLabel, Counter>,
    /// On-demand requests (the retry, re-verify and cancel annotations) by action and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Policies whose pause is in force now.
    pub pauses_active: Gauge,
    /// Targets whose remediation is paused now.
    pub paused_targets: Gauge,
    /// Step duration by action.
    pub step_seconds: Family<ActionLabel, Histogram>,
    /// One policy's probe cycle: all of its AWS calls (the count is the number of cycles).
    pub probe_cycle_seconds: Histogram,
    /// How late a policy's probe started after it was due: grows when the process cannot
    /// keep up with its policies (too few `--probe-concurrency`, AWS slow or throttling).
    pub probe_lag_seconds: Histogram,
    /// First unhealthy probe → incident opened.
    pub detection_seconds: Histogram,
    /// Incident detected → first mutating AWS call.
    pub action_seconds: Histogram,
    /// Alert deliveries by channel and outcome.
    pub alerts: Family<AlertLabels, Counter>,
    /// Whether this replica holds the leader lease (1) or not (0).
    pub leader: Gauge,
    /// 1 while the AWS circuit breaker pauses new remediation.
    pub aws_circuit_open: Gauge,
    /// AWS events read from the queues, by source, type and outcome (their sum: received).
    pub events: Family<EventLabels, Counter>,
    /// Age of the oldest message of a queue's last answer (0 when it had none), by queue.
    pub event_queue_lag_seconds: Family<QueueLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 while a queue answers, 0 while reading it fails, by queue.
    pub event_queue_up: Family<QueueLabel, Gauge>,
    /// Probes started because events woke them (each asks about the targets woken).
    pub probes_woken: Counter,
    /// Targets those probes asked about.
    pub targets_woken: Counter,
    open_by_policy: Mutex<HashMap<String, HashMap<IncidentLabels, i64>>>,
    paused_by_policy: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.01, 2.0, 16)
}

impl Default for Metrics {
    fn default() -> Self {
        let reconcile_seconds =
            Family::<ControllerLabel, Histogram>::new_with_constructor(|| Histogram::new(seconds_buckets()));
        let step_seconds = Family::<ActionLabel, Histogram>::new_with_constructor(|| Histogram::new(seconds_buckets()));
        let mut m = Self {
            registry: Registry::with_prefix("recovery"),
            reconciles: Family::default(),
            reconcile_seconds,
            aws_calls: Family::default(),
            open_incidents: Family::default(),
            plans: Family::default(),
            plans_not_needed: Family::default(),
            undecodable: Family::default(),
            pruned: Family::default(),
            requests: Family::default(),
            pauses_active: Gauge::default(),
            paused_targets: Gauge::default(),
            step_seconds,
            probe_cycle_seconds: Histogram::new(seconds_buckets()),
            probe_lag_seconds: Histogram::new(seconds_buckets()),
            detection_seconds: Histogram::new(seconds_buckets()),
            action_seconds: Histogram::new(seconds_buckets()),
            alerts: Family::default(),
            leader: Gauge::default(),
            aws_circuit_open: Gauge::default(),
            events: Family::default(),
            event_queue_lag_seconds: Family::default(),
            event_queue_up: Family::default(),
            probes_woken: Counter::default(),
            targets_woken: Counter::default(),
            open_by_policy: Mutex::default(),
            paused_by_policy: Mutex::default(),
        };
        let r = &mut m.registry;
        r.register("reconciles", "Reconciles by controller and result", m.reconciles.clone());
        r.register("reconcile_duration_seconds", "Reconcile duration", m.reconcile_seconds.clone());
        r.register("aws_calls", "AWS calls by service, operation and outcome", m.aws_calls.clone());
        r.register("open_incidents", "Open incidents by type and severity", m.open_incidents.clone());
        r.register("plans", "Plans that ended, by outcome", m.plans.clone());
        r.register(
            "plans_not_needed",
            "Plans that ended without acting because the target had recovered, by kind",
            m.plans_not_needed.clone(),
        );
        r.register(
            "undecodable_objects",
            "Objects a watch saw that this controller cannot decode (left alone), by kind",
            m.undecodable.clone(),
        );
        r.register("pruned_objects", "Objects deleted by history retention, by kind", m.pruned.clone());
        r.register(
            "requests",
            "On-demand requests (retry, re-verify, cancel annotations) by action and outcome",
            m.requests.clone(),
        );
        r.register("pauses_active", "Policies whose remediation pause is in force", m.pauses_active.clone());
        r.register("paused_targets", "Targets whose remediation is paused", m.paused_targets.clone());
        r.register("step_duration_seconds", "Plan step duration by action", m.step_seconds.clone());
        r.register("probe_cycle_seconds", "One policy's probe cycle, all its AWS calls", m.probe_cycle_seconds.clone());
        r.register(
            "probe_lag_seconds",
            "How late a policy's probe started after it was due",
            m.probe_lag_seconds.clone(),
        );
        r.register(
            "detection_latency_seconds",
            "First unhealthy probe to incident opened",
            m.detection_seconds.clone(),
        );
        r.register("action_latency_seconds", "Incident detected to first mutating AWS call", m.action_seconds.clone());
        r.register("alert_deliveries", "Alert deliveries by channel and outcome", m.alerts.clone());
        r.register("leader", "1 when this replica holds the leader lease", m.leader.clone());
        r.register("aws_circuit_open", "1 while too many AWS errors pause new remediation", m.aws_circuit_open.clone());
        r.register("events", "AWS events read from the event queues, by source, type and outcome", m.events.clone());
        r.register(
            "event_queue_lag_seconds",
            "Age of the oldest message in an event queue's last answer",
            m.event_queue_lag_seconds.clone(),
        );
        r.register(
            "event_queue_up",
            "1 while an event queue answers, 0 while reading it fails",
            m.event_queue_up.clone(),
        );
        r.register("probes_woken", "Probes started because AWS events woke them", m.probes_woken.clone());
        r.register("targets_woken", "Targets asked about by probes that events woke", m.targets_woken.clone());
        m.zero_series();
        m
    }
}

/// Every incident type and severity, the label sets of `open_incidents`.
fn incident_label_sets() -> Vec<IncidentLabels> {
    use crate::api::Severity;
    let mut types: Vec<&'static str> = ResourceKind::ALL.iter().map(|k| k.incident_type().as_str()).collect();
    types.dedup();
    let severities = [Severity::Low, Severity::Medium, Severity::High, Severity::Critical];
    types.iter().flat_map(|t| severities.iter().map(|s| IncidentLabels { r#type: t, severity: s.as_str() })).collect()
}

impl Metrics {
    /// Creates, at zero, the series whose labels are a fixed set: a scrape then shows them
    /// from the start, so a dashboard reads 0 rather than "no data" and a rule over them
    /// (`increase(...) > 0`) has a baseline to compare with.
    fn zero_series(&self) {
        for controller in ["policy", "incident", "plan", "alert"] {
            let _ = self.reconciles.get_or_create(&ReconcileLabels { controller, result: "ok" });
        }
        for outcome in ["completed", "failed", "not_needed", "cancelled"] {
            let _ = self.plans.get_or_create(&OutcomeLabel { outcome });
        }
        for kind in ResourceKind::ALL {
            let _ = self.plans_not_needed.get_or_create(&KindLabel { kind: kind.as_str().to_owned() });
        }
        for kind in ["RecoveryPolicy", "Incident", "RecoveryPlan"] {
            let _ = self.undecodable.get_or_create(&KindLabel { kind: kind.to_owned() });
        }
        for kind in ["Incident", "RecoveryPlan"] {
            let _ = self.pruned.get_or_create(&KindLabel { kind: kind.to_owned() });
        }
        for action in RequestAction::ALL {
            for outcome in ["accepted", "refused"] {
                let _ = self.requests.get_or_create(&RequestLabels { action: action.as_str(), outcome });
            }
        }
        for channel in ["slack", "email", "pagerduty"] {
            for outcome in ["sent", "failed"] {
                let _ = self.alerts.get_or_create(&AlertLabels { channel, outcome });
            }
        }
        for labels in incident_label_sets() {
            let _ = self.open_incidents.get_or_create(&labels);
        }
        for action in StepAction::ALL {
            let _ = self.step_seconds.get_or_create(&ActionLabel { action: format!("{action:?}") });
        }
    }
}

impl Metrics {
    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Records an object that does not decode.
    pub fn undecodable(&self, kind: String) {
        self.undecodable.get_or_create(&KindLabel { kind }).inc();
    }

    /// Records one reconcile.
    pub fn reconciled(&self, controller: &'static str, result: &'static str, took: Duration) {
        self.reconciles.get_or_create(&ReconcileLabels { controller, result }).inc();
        self.reconcile_seconds.get_or_create(&ControllerLabel { controller }).observe(took.as_secs_f64());
    }

    /// Records one AWS call (`operation` as `service:Operation`).
    pub fn aws_call(&self, operation: &'static str, fault: Option<&crate::aws::AwsFault>) {
        let (service, op) = operation.split_once(':').unwrap_or(("aws", operation));
        let outcome = match fault {
            None => "ok",
            Some(f) if f.is_throttling() => "throttled",
            Some(_) => "error",
        };
        self.aws_calls.get_or_create(&AwsLabels { service, operation: op, outcome }).inc();
    }

    /// Replaces one policy's paused-target count (0 when no pause is in force) and
    /// recomputes both pause gauges.
    pub fn set_paused(&self, policy: &str, targets: i64) {
        let mut all = self.paused_by_policy.lock().expect("not poisoned");
        if all.get(policy).copied().unwrap_or(0) == targets {
            return;
        }
        all.insert(policy.to_owned(), targets);
        self.pauses_active.set(all.values().filter(|n| **n > 0).count() as i64);
        self.paused_targets.set(all.values().sum());
    }

    /// Replaces one policy's open-incident counts and recomputes the gauge.
    pub fn set_open_incidents(&self, policy: &str, counts: HashMap<IncidentLabels, i64>) {
        let mut all = self.open_by_policy.lock().expect("not poisoned");
        // Most probes change nothing; the sum below is over every policy.
        if all.get(policy) == Some(&counts) {
            return;
        }
        all.insert(policy.to_owned(), counts);
        let mut total: HashMap<IncidentLabels, i64> = HashMap::new();
        for (labels, n) in all.values().flatten() {
            *total.entry(labels.clone()).or_default() += n;
        }
        // Every type and severity is written, at 0 when none is open: a series that vanished
        // would read as "no data", not as "nothing open".
        for labels in incident_label_sets() {
            self.open_incidents.get_or_create(&labels).set(total.get(&labels).copied().unwrap_or(0));
        }
    }
}
