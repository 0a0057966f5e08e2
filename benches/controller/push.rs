//! Push detection against polling: the same ECS services, policies, `probeInterval` (30 s)
//! and flap guard, once polled only and once with AWS events (an ECS Service Action WARN
//! put on EventBridge right after each fault, through the shipped rules to an SQS queue the
//! controller reads, `detection.events: Corroborate`). And what push costs in AWS calls at
//! 1,000 targets, with no events and with a few.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::SdkConfig;
use serde_json::{Value, json};

use crate::faults::Faults;
use crate::fixture::{self, Layout, PolicyTargets};
use crate::process::Controller;
use crate::track::{self, now, within};
use crate::{Parts, Report};

/// Probe interval of every policy here.
pub const INTERVAL_SECS: u64 = 30;
/// Unhealthy answers before an incident opens.
pub const THRESHOLD: u32 = 2;
/// Services per policy.
const PER_POLICY: usize = 10;
/// The faults arrive evenly over this window: two intervals, so they fall at every phase
/// of the probe cycle.
const SPREAD: Duration = Duration::from_secs(2 * INTERVAL_SECS);
/// How long the calls are counted, each way.
pub const WINDOW: Duration = Duration::from_secs(2 * INTERVAL_SECS);
/// Events put during the counted window with push on (each names one healthy service).
pub const EVENTS: usize = 20;

/// The shipped rules' patterns.
const PATTERNS: [&str; 3] = [
    include_str!("../../examples/events/pattern-ecs-rds.json"),
    include_str!("../../examples/events/pattern-ecs-tasks.json"),
    include_str!("../../examples/events/pattern-route53-alarms.json"),
];

/// One way of detecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Polling only (no queue).
    Polling,
    /// Polling and events (`--event-queue`, `detection.events: Corroborate`).
    Push,
}

/// Detection latency of one mode.
#[derive(Debug)]
pub struct Latency {
    /// The mode.
    pub mode: Mode,
    /// Faults injected.
    pub faults: usize,
    /// Fault injected → Incident seen by a watch, seconds, sorted.
    pub detection: Vec<f64>,
}

/// AWS calls over [`WINDOW`] at one scale, push off and on, by `service.Operation`.
#[derive(Debug, Default)]
pub struct Calls {
    /// Targets.
    pub targets: usize,
    /// Policies.
    pub policies: usize,
    /// Push off.
    pub off: BTreeMap<String, usize>,
    /// Push on, with [`EVENTS`] events put during the window.
    pub on: BTreeMap<String, usize>,
    /// Probes the events woke, and the targets they asked about.
    pub woken: (f64, f64),
}

/// Everything this module measured.
#[derive(Debug, Default)]
pub struct Push {
    /// Polling, then push.
    pub latency: Vec<Latency>,
    /// Calls push on and off.
    pub calls: Option<Calls>,
}

/// Runs both latency runs with `faults_n` faults, then the calls at `targets` targets (0
/// skips either).
pub async fn run(
    parts: &Parts,
    cfg: &SdkConfig,
    faults: &Faults,
    faults_n: usize,
    targets: usize,
    report: &mut Report,
) -> Push {
    let mut push = Push::default();
    if faults_n > 0 {
        for mode in [Mode::Polling, Mode::Push] {
            push.latency.push(latency(parts, cfg, faults, faults_n, mode, report).await);
        }
    }
    if targets > 0 {
        push.calls = Some(calls(parts, cfg, faults, targets, report).await);
    }
    push
}

/// The policy spec of this module: detection only (remediation Disabled), events as `mode`.
fn spec(t: &PolicyTargets, health_checks: &[String], events: &str) -> Value {
    let mut s = fixture::spec(t, health_checks, &format!("{INTERVAL_SECS}s"), THRESHOLD);
    s["detection"]["events"] = json!(events);
    s["remediation"] = json!({"mode": "Disabled"});
    s
}

/// An SQS queue the shipped rules (on the default bus) send to; its URL.
async fn event_queue(cfg: &SdkConfig, name: &str) -> String {
    let sqs = aws_sdk_sqs::Client::new(cfg);
    let eventbridge = aws_sdk_eventbridge::Client::new(cfg);
    let url = sqs.create_queue().queue_name(name).send().await.expect("create the queue").queue_url.expect("a URL");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("the queue's ARN")
        .attributes
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
        .expect("an ARN");
    for (i, pattern) in PATTERNS.iter().enumerate() {
        let rule = format!("{name}-{i}");
        eventbridge.put_rule().name(&rule).event_pattern(*pattern).send().await.expect("put the rule");
        let target = aws_sdk_eventbridge::types::Target::builder().id("queue").arn(&arn).build().expect("a target");
        eventbridge.put_targets().rule(&rule).targets(target).send().await.expect("put the target");
    }
    url
}

/// What ECS says when a service cannot start its tasks.
async fn put_ecs_event(eventbridge: &aws_sdk_eventbridge::Client, cluster: &str, service: &str, event_type: &str) {
    let arn = format!("arn:aws:ecs:us-east-1:123456789012:service/{cluster}/{service}");
    let detail = json!({"eventType": event_type, "eventName": "SERVICE_TASK_START_IMPAIRED",
                        "clusterArn": format!("arn:aws:ecs:us-east-1:123456789012:cluster/{cluster}")});
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .source("aws.ecs")
        .detail_type("ECS Service Action")
        .resources(arn)
        .detail(detail.to_string())
        .build();
    let out = eventbridge.put_events().entries(entry).send().await.expect("put the event");
    assert_eq!(out.failed_entry_count, 0, "{out:?}");
}

/// `n` services, ten per policy, degraded one after another over [`SPREAD`].
async fn latency(
    parts: &Parts,
    cfg: &SdkConfig,
    faults: &Faults,
    n: usize,
    mode: Mode,
    report: &mut Report,
) -> Latency {
    let (ns, prefix, events) = match mode {
        Mode::Polling => ("bench-push-off", "pof", "Wake"),
        Mode::Push => ("bench-push-on", "pon", "Corroborate"),
    };
    report.say(&format!("push: {n} ECS services, {mode:?}, degraded one after another over {SPREAD:?}"));
    faults.reset_all().await;
    let services: Vec<(String, String)> =
        (0..n).map(|i| (format!("{prefix}-c{:03}", i / 100), format!("svc-{i:05}"))).collect();
    let policies = services
        .chunks(PER_POLICY)
        .enumerate()
        .map(|(i, chunk)| {
            let mut t = PolicyTargets { name: format!("p-{i:04}"), ..Default::default() };
            for (c, s) in chunk {
                t.ecs.entry(c.clone()).or_default().push(s.clone());
            }
            t
        })
        .collect::<Vec<_>>();
    let policy_count = policies.len();
    let layout = Layout { services: services.clone(), rds: vec![], route53: 0, policies };
    fixture::populate(cfg, &layout).await;
    let mut args = parts.controller_args.clone();
    if mode == Mode::Push {
        args.extend(["--event-queue".into(), event_queue(cfg, ns).await]);
    }
    fixture::apply_with(&parts.client, ns, &layout, |t| spec(t, &[], events)).await;
    let incidents = track::incidents(&parts.client, ns);
    let controller = Controller::start(ns, &parts.work.join(format!("controller-{ns}.log")), &args, None);
    let (_, done) = controller.probe_cycles_reached(policy_count, Duration::from_secs(120)).await;
    assert!(done >= policy_count, "a healthy probe cycle: {done} of {policy_count} policies within 120 s");

    let eventbridge = aws_sdk_eventbridge::Client::new(cfg);
    let mut injected = BTreeMap::new();
    let first = now();
    for (i, (cluster, service)) in services.iter().enumerate() {
        let at = first + SPREAD.as_secs_f64() * i as f64 / n as f64;
        tokio::time::sleep(Duration::from_secs_f64((at - now()).max(0.0))).await;
        faults.degrade_ecs(cluster, service, 0).await;
        injected.insert(service.clone(), now());
        if mode == Mode::Push {
            // As ECS would say it; here at once, so the figure is the controller's part.
            put_ecs_event(&eventbridge, cluster, service, "WARN").await;
        }
    }
    let limit = Duration::from_secs(INTERVAL_SECS * u64::from(THRESHOLD + 2));
    let all = within(limit, || (incidents.firsts().len() >= n).then_some(())).await;
    if all.is_none() {
        report.say(&format!("push: {mode:?}: {} of {n} incidents within {limit:?}", incidents.firsts().len()));
    }
    drop(controller);
    let mut detection: Vec<f64> =
        incidents.firsts().values().filter_map(|(at, service)| Some(at - injected.get(service)?)).collect();
    detection.sort_by(f64::total_cmp);
    Latency { mode, faults: n, detection }
}

/// AWS calls over [`WINDOW`] at `targets` targets (the scale layout: ECS, RDS, Route 53,
/// ten a policy), push off, then on with [`EVENTS`] events.
async fn calls(parts: &Parts, cfg: &SdkConfig, faults: &Faults, targets: usize, report: &mut Report) -> Calls {
    let ns = "bench-push-calls";
    let policies = (targets / PER_POLICY).max(1);
    report.say(&format!("push: AWS calls at {targets} targets, push off and on, over {WINDOW:?} each"));
    faults.reset_all().await;
    let layout = Layout::new("pcl", targets, policies);
    let health_checks = fixture::populate(cfg, &layout).await;
    let queue = event_queue(cfg, ns).await;
    fixture::apply_with(&parts.client, ns, &layout, |t| spec(t, &health_checks, "Wake")).await;
    let eventbridge = aws_sdk_eventbridge::Client::new(cfg);
    let mut out = Calls { targets, policies, ..Default::default() };
    for push in [false, true] {
        let mut args = parts.controller_args.clone();
        if push {
            args.extend(["--event-queue".into(), queue.clone()]);
        }
        let log = parts.work.join(format!("controller-{ns}-{push}.log"));
        let controller = Controller::start(ns, &log, &args, None);
        let (_, done) = controller.probe_cycles_reached(policies, Duration::from_secs(150)).await;
        assert!(done >= policies, "a probe cycle: {done} of {policies} policies within 150 s");
        faults.clear_log().await;
        let start = now();
        if push {
            for (i, (cluster, service)) in layout.services.iter().take(EVENTS).enumerate() {
                let at = start + WINDOW.as_secs_f64() * i as f64 / EVENTS as f64;
                tokio::time::sleep(Duration::from_secs_f64((at - now()).max(0.0))).await;
                // A change worth a look, about a healthy service: it wakes a probe, which
                // finds nothing wrong.
                put_ecs_event(&eventbridge, cluster, service, "INFO").await;
            }
        }
        tokio::time::sleep(Duration::from_secs_f64((start + WINDOW.as_secs_f64() - now()).max(0.0))).await;
        let end = now();
        let mut counted = BTreeMap::new();
        for c in faults.log().await.iter().filter(|c| c.time >= start && c.time < end) {
            *counted.entry(c.key()).or_insert(0) += 1;
        }
        if push {
            let probes = controller.metric("recovery_probes_woken_total").await.unwrap_or_default();
            let woken = controller.metric("recovery_targets_woken_total").await.unwrap_or_default();
            out.woken = (probes, woken);
            out.on = counted;
        } else {
            out.off = counted;
        }
        drop(controller);
    }
    out
}
