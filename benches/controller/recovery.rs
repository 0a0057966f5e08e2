//! Detection and action latency and plan throughput: N ECS services, one policy each,
//! degraded one after another over ten probe intervals (each incident's own latency; with
//! N = 100, ten faults per interval, which the probes, aligned for batching, find together)
//! or all at the same moment (plan throughput, and latency in such a storm). AWS heals a
//! service by itself once it is restarted (the fault layer completes an unpinned rollout at
//! the next ECS call), so the plans' verify steps finish as soon as the controller looks.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::SdkConfig;

use crate::audit::{self, Writes};
use crate::cycle::Cpu;
use crate::faults::Faults;
use crate::fixture::{self, Layout, PolicyTargets};
use crate::process::Controller;
use crate::track::{self, now, until};
use crate::{Parts, Report};

/// Probe interval and flap guard of the recovery policies.
pub const INTERVAL_SECS: u64 = 5;
/// Unhealthy probes in a row before an incident opens.
pub const THRESHOLD: u32 = 2;

/// How the faults arrive.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub enum Arrival {
    /// One after another, evenly over this window.
    Spread(Duration),
    /// All at the same moment.
    #[default]
    AtOnce,
}

impl Arrival {
    /// Faults spread over ten probe intervals: with 100 services, one every 500 ms.
    pub const SPREAD: Self = Self::Spread(Duration::from_secs(10 * INTERVAL_SECS));
}

/// What the recovery scenario measured.
#[derive(Debug, Default)]
pub struct Recovery {
    /// How the faults arrived.
    pub arrival: Arrival,
    /// Services degraded (= policies).
    pub services: usize,
    /// Fault injected → incident seen by a watch, seconds, sorted.
    pub detection: Vec<f64>,
    /// Incident seen → the fault layer received its UpdateService, seconds, sorted.
    pub action: Vec<f64>,
    /// Plans Completed / Failed.
    pub completed: usize,
    /// Plans that failed.
    pub failed: usize,
    /// First fault injected → last plan Completed, seconds.
    pub all_completed: f64,
    /// Last incident seen → last plan Completed, seconds.
    pub after_last_incident: f64,
    /// Seconds to inject all faults.
    pub inject_spread: f64,
    /// API server requests in the namespace, from the audit log.
    pub writes: Writes,
    /// CPU seconds from the first fault to the last plan finished.
    pub cpu: Cpu,
}

/// Runs the scenario with `n` services, in a namespace (and clusters) of its own per arrival.
pub async fn run(
    parts: &Parts,
    cfg: &SdkConfig,
    faults: &Faults,
    n: usize,
    arrival: Arrival,
    report: &mut Report,
) -> Recovery {
    let (ns, prefix) = match arrival {
        Arrival::Spread(window) => {
            report.say(&format!("recovery: {n} ECS services, one policy each, degraded over {window:?}"));
            ("bench-recovery-spread", "spr")
        }
        Arrival::AtOnce => {
            report.say(&format!("recovery: {n} ECS services, one policy each, all degraded at once"));
            ("bench-recovery", "rec")
        }
    };
    faults.reset_all().await;
    let services: Vec<(String, String)> =
        (0..n).map(|i| (format!("{prefix}-c{:03}", i / 100), format!("svc-{i:05}"))).collect();
    let policies = services
        .iter()
        .enumerate()
        .map(|(i, (c, s))| PolicyTargets {
            name: format!("p-{i:04}"),
            ecs: BTreeMap::from([(c.clone(), vec![s.clone()])]),
            ..PolicyTargets::default()
        })
        .collect();
    let layout = Layout { services: services.clone(), rds: vec![], route53: 0, policies };
    fixture::populate(cfg, &layout).await;
    fixture::apply(&parts.client, ns, &layout, &[], &format!("{INTERVAL_SECS}s"), THRESHOLD).await;
    let incidents = track::incidents(&parts.client, ns);
    let plans = track::finished_plans(&parts.client, ns);
    let controller =
        Controller::start(ns, &parts.work.join(format!("controller-{ns}.log")), &parts.controller_args, None);
    let (_, done) = controller.probe_cycles_reached(2 * n, Duration::from_secs(120)).await;
    assert!(done >= 2 * n, "two healthy probe cycles: {done} of {} policy probes within 120 s", 2 * n);

    faults.clear_log().await;
    let mut injected = BTreeMap::new();
    let cpu0 = Cpu::sample(parts, controller.pid());
    let first = now();
    for (i, (cluster, service)) in services.iter().enumerate() {
        if let Arrival::Spread(window) = arrival {
            let at = first + window.as_secs_f64() * i as f64 / n as f64;
            tokio::time::sleep(Duration::from_secs_f64((at - now()).max(0.0))).await;
        }
        faults.degrade_ecs(cluster, service, 0).await;
        injected.insert(service.clone(), now());
    }
    let inject_spread = now() - first;
    let timeout = Duration::from_secs(600);
    let last = until("every plan finished", timeout, || plans.all_reached(n, 1)).await;
    let cpu = Cpu::sample(parts, controller.pid()).since(cpu0);
    // Let the incidents resolve (one healthy probe) before the writes are counted.
    tokio::time::sleep(Duration::from_secs(INTERVAL_SECS + 2)).await;
    drop(controller);

    let seen = incidents.firsts();
    let mut restarts: BTreeMap<String, f64> = BTreeMap::new();
    for c in faults.log().await.iter().filter(|c| c.operation == "UpdateService") {
        let service = c.params["service"].as_str().unwrap_or_default().to_owned();
        restarts.entry(service).or_insert(c.time);
    }
    let mut detection = vec![];
    let mut action = vec![];
    for (at, service) in seen.values() {
        if let Some(inj) = injected.get(service) {
            detection.push(at - inj);
        }
        if let Some(r) = restarts.get(service) {
            action.push(r - at);
        }
    }
    detection.sort_by(f64::total_cmp);
    action.sort_by(f64::total_cmp);
    let finished = plans.firsts();
    let failed = finished.values().filter(|(_, v)| v == "Failed").count();
    let last_incident = seen.values().map(|(t, _)| *t).fold(0.0, f64::max);
    // The audit log is written in batches; give it a moment.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Recovery {
        arrival,
        services: n,
        detection,
        action,
        completed: finished.len() - failed,
        failed,
        all_completed: last - first,
        after_last_incident: last - last_incident,
        inject_spread,
        writes: audit::count(&parts.audit_log, ns),
        cpu,
    }
}
