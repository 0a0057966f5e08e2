//! Probe cycles at one scale: the controller's calls, wall time, CPU and memory, then the
//! seed-style baseline probing the same targets one call at a time, sequentially.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;

use crate::faults::{Call, Faults};
use crate::fixture::{self, Layout};
use crate::limit::MemoryLimit;
use crate::process::{self, Controller};
use crate::{Parts, Report};

/// Probe interval of the scale runs.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// One probe cycle of the controller.
#[derive(Debug, Default)]
pub struct Cycle {
    /// Calls by `service.Operation`.
    pub calls: BTreeMap<String, usize>,
    /// First probe call → the last policy's status written.
    pub wall: f64,
    /// CPU seconds over the cycle's window, by process.
    pub cpu: Cpu,
    /// Highest number of Route 53 calls in any one-second window.
    pub route53_peak: usize,
    /// Policies that finished this cycle; fewer than all when the cycle was cut off at
    /// [`CYCLE_LIMIT`] (the figures then cover that window).
    pub probed: usize,
    /// First ECS or RDS call's arrival → the last one's answer: the cycle without Route 53,
    /// whose account limit (5 calls a second) bounds its share in any controller.
    pub ecs_rds_span: f64,
    /// First Route 53 call's arrival → the last one's answer.
    pub route53_span: f64,
}

/// Steady cycles measured after the cold one; the report gives their mean (one cycle's
/// CPU varied by a tenth from run to run).
pub const STEADY_CYCLES: usize = 3;

impl Cycle {
    /// The mean of `cycles` (calls rounded; the Route 53 peak and policies probed are the
    /// worst of them).
    fn mean(cycles: &[Cycle]) -> Cycle {
        let n = cycles.len().max(1) as f64;
        let mut calls = BTreeMap::new();
        for (op, c) in cycles.iter().flat_map(|c| &c.calls) {
            *calls.entry(op.clone()).or_insert(0.0) += *c as f64 / n;
        }
        let sum = |f: fn(&Cpu) -> f64| cycles.iter().map(|c| f(&c.cpu)).sum::<f64>() / n;
        Cycle {
            calls: calls.into_iter().map(|(op, c)| (op, c.round() as usize)).collect(),
            wall: cycles.iter().map(|c| c.wall).sum::<f64>() / n,
            cpu: Cpu {
                controller: sum(|c| c.controller),
                moto: sum(|c| c.moto),
                apiserver: sum(|c| c.apiserver),
                etcd: sum(|c| c.etcd),
                controller_major_faults: sum(|c| c.controller_major_faults),
            },
            route53_peak: cycles.iter().map(|c| c.route53_peak).max().unwrap_or(0),
            probed: cycles.iter().map(|c| c.probed).min().unwrap_or(0),
            ecs_rds_span: cycles.iter().map(|c| c.ecs_rds_span).sum::<f64>() / n,
            route53_span: cycles.iter().map(|c| c.route53_span).sum::<f64>() / n,
        }
    }
}

/// How long one cycle may take before the driver stops waiting for the policies left.
pub const CYCLE_LIMIT: Duration = Duration::from_secs(150);

/// CPU seconds of the processes that do the work.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// The controller.
    pub controller: f64,
    /// moto + fault layer.
    pub moto: f64,
    /// kube-apiserver.
    pub apiserver: f64,
    /// etcd.
    pub etcd: f64,
    /// The controller's major page faults (see [`process::major_faults`]).
    pub controller_major_faults: f64,
}

impl Cpu {
    pub fn sample(parts: &Parts, controller: u32) -> Self {
        Self {
            controller: process::cpu_seconds(controller),
            moto: process::cpu_seconds(parts.moto),
            apiserver: process::cpu_seconds(parts.apiserver),
            etcd: process::cpu_seconds(parts.etcd),
            controller_major_faults: process::major_faults(controller),
        }
    }

    pub fn since(self, before: Self) -> Self {
        Self {
            controller: self.controller - before.controller,
            moto: self.moto - before.moto,
            apiserver: self.apiserver - before.apiserver,
            etcd: self.etcd - before.etcd,
            controller_major_faults: self.controller_major_faults - before.controller_major_faults,
        }
    }
}

/// The seed-style baseline's cycle.
#[derive(Debug, Default)]
pub struct Baseline {
    /// Calls by `service.Operation`.
    pub calls: BTreeMap<String, usize>,
    /// Wall time of the sequential cycle.
    pub wall: f64,
    /// The driver's CPU seconds for it (the baseline runs in the driver process).
    pub cpu: f64,
    /// moto's CPU seconds meanwhile.
    pub moto_cpu: f64,
    /// Highest number of Route 53 calls in any one-second window.
    pub route53_peak: usize,
    /// When it probed a sample, not every target: the targets it probed (its calls and wall
    /// time are then scaled up to all of them; a sequential prober's time is linear in its
    /// calls).
    pub sampled: Option<usize>,
}

/// Everything measured at one scale.
#[derive(Debug, Default)]
pub struct Scale {
    /// Targets.
    pub targets: usize,
    /// Policies.
    pub policies: usize,
    /// ECS services.
    pub ecs: usize,
    /// ECS clusters.
    pub clusters: usize,
    /// RDS instances.
    pub rds: usize,
    /// Route 53 health checks.
    pub route53: usize,
    /// Seconds to create the resources in moto.
    pub populate: f64,
    /// The fewest calls a cycle can make, by operation (batches across policies).
    pub minimum: BTreeMap<String, usize>,
    /// The fewest calls with batches confined to a policy, as the CRD groups targets.
    pub per_policy_minimum: BTreeMap<String, usize>,
    /// The first cycle after start (every policy due at once; includes the initial lists).
    pub cold: Cycle,
    /// The mean of the [`STEADY_CYCLES`] after it, each measured from the end of the one
    /// before to its own end (one interval).
    pub steady: Cycle,
    /// Whether the first cycle ran past the probe interval (its calls then include some of
    /// the second's).
    pub overran: bool,
    /// Probe cycles run, per policy (the controller's count at the end ÷ policies).
    pub probe_cycles: f64,
    /// Peak resident set of the controller (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// Peaks of its anonymous and file-backed parts, sampled, KiB.
    pub peak_anon_file_kib: (u64, u64),
    /// Mean policy reconcile duration (from /metrics), seconds.
    pub mean_policy_reconcile: f64,
    /// The baseline.
    pub baseline: Baseline,
    /// API server requests in the scale's namespace over the run (audit log).
    pub api: crate::audit::Writes,
    /// Latency added to every AWS call (zero: moto on loopback, about a millisecond).
    pub latency: Duration,
    /// The controller's memory limit and what the kernel recorded under it.
    pub limited: Option<Limited>,
}

/// A controller run under a memory limit (`--memory-limit`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Limited {
    /// The limit, bytes.
    pub limit: u64,
    /// The cgroup's peak usage (anonymous memory and the page cache charged to it), bytes.
    pub peak: u64,
    /// Times the kernel killed the controller for want of memory.
    pub oom_kills: u64,
}

/// How a scale is run.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// Targets.
    pub targets: usize,
    /// Policies.
    pub policies: usize,
    /// Latency added to every AWS call once the resources exist.
    pub latency: Duration,
    /// Probe only this many targets in the baseline (scaled up in the report).
    pub baseline_sample: Option<usize>,
}

impl Setup {
    /// The namespace of the scale's policies (and the audit log's filter).
    pub fn namespace(&self) -> String {
        match self.latency.as_millis() {
            0 => format!("bench-{}", self.targets),
            ms => format!("bench-{}-{ms}ms", self.targets),
        }
    }
}

/// Runs one scale: populate, controller for two cycles, baseline.
pub async fn run(parts: &Parts, cfg: &SdkConfig, faults: &Faults, setup: Setup, report: &mut Report) -> Scale {
    let Setup { targets, policies, latency, baseline_sample } = setup;
    let ns = setup.namespace();
    let layout = Layout::new(&format!("s{targets}"), targets, policies);
    report.say(&format!("scale {targets} targets / {policies} policies: creating resources in moto"));
    faults.reset_all().await;
    let started = Instant::now();
    let health_checks = fixture::populate(cfg, &layout).await;
    let populate = started.elapsed().as_secs_f64();
    let interval = format!("{}s", INTERVAL.as_secs());
    fixture::apply(&parts.client, &ns, &layout, &health_checks, &interval, 2).await;
    let mut scale = Scale {
        targets: layout.targets(),
        policies: layout.policies.len(),
        ecs: layout.services.len(),
        clusters: layout.clusters().len(),
        rds: layout.rds.len(),
        route53: layout.route53,
        populate,
        minimum: minimum(&layout),
        per_policy_minimum: per_policy_minimum(&layout),
        ..Scale::default()
    };
    scale.latency = latency;
    report.say(&format!("  populated in {populate:.0}s; starting the controller"));
    if !latency.is_zero() {
        faults.add_latency(latency).await;
        report.say(&format!("  every AWS call now answers {} ms later", latency.as_millis()));
    }

    faults.clear_log().await;
    let log = parts.work.join(format!("controller-{ns}.log"));
    let limit = parts.memory_limit.map(|bytes| MemoryLimit::create(&format!("recovery-{ns}"), bytes));
    let controller = Controller::start(&ns, &log, &parts.controller_args, limit.as_ref());
    let p = scale.policies;
    // Cycle k ends when the count of finished probes reaches k × policies; samples[k] is
    // the CPU at that moment (samples[0] at start).
    let rss = process::RssSampler::start(controller.pid());
    let mut samples = vec![Cpu::sample(parts, controller.pid())];
    let mut ends = vec![];
    let mut probed = vec![];
    for k in 1..=1 + STEADY_CYCLES {
        let (end, done) = controller.probe_cycles_reached(k * p, CYCLE_LIMIT).await;
        samples.push(Cpu::sample(parts, controller.pid()));
        ends.push(end);
        probed.push(done.saturating_sub((k - 1) * p).min(p));
    }
    scale.peak_rss_kib = process::status_kib(controller.pid(), "VmHWM");
    scale.peak_anon_file_kib = rss.peaks();
    let probes = controller.metric("recovery_probe_cycle_seconds_count").await.unwrap_or_default();
    scale.probe_cycles = probes / p.max(1) as f64;
    let sum = controller.metric("recovery_reconcile_duration_seconds_sum{controller=\"policy\"}").await;
    let count = controller.metric("recovery_reconcile_duration_seconds_count{controller=\"policy\"}").await;
    scale.mean_policy_reconcile = sum.zip(count).map(|(s, c)| s / c.max(1.0)).unwrap_or_default();
    drop(controller);
    scale.limited = limit.map(|l| Limited { limit: l.bytes, peak: l.peak(), oom_kills: l.oom_kills() });
    let calls = faults.log().await;
    let mut cycles = vec![];
    let mut from = f64::NEG_INFINITY;
    for (k, &end) in ends.iter().enumerate() {
        let window: Vec<&Call> = calls.iter().filter(|c| c.time > from && c.time <= end).collect();
        let start = window.first().map_or(end, |c| c.time);
        cycles.push(Cycle {
            calls: count_calls(&window),
            wall: end - start,
            cpu: samples[k + 1].since(samples[k]),
            route53_peak: peak(&window),
            probed: probed[k],
            ecs_rds_span: span(&window, |c| c.service == "ecs" || c.service == "rds"),
            route53_span: span(&window, |c| c.service == "route53"),
        });
        from = end;
    }
    scale.overran = cycles[0].wall > INTERVAL.as_secs_f64();
    scale.steady = Cycle::mean(&cycles[1..]);
    scale.cold = cycles.swap_remove(0);
    report.say(&format!(
        "  controller: cold cycle {:.1}s, steady {:.1}s; running the seed-style baseline",
        scale.cold.wall, scale.steady.wall
    ));

    scale.baseline = baseline(parts, cfg, faults, &layout, &health_checks, baseline_sample).await;
    report.say(&format!("  baseline: {:.1}s", scale.baseline.wall));
    faults.clear_rules().await;
    scale
}

/// First arrival → last answer of the calls `which` picks (0 when none).
fn span(calls: &[&Call], which: impl Fn(&Call) -> bool) -> f64 {
    let picked: Vec<&&Call> = calls.iter().filter(|c| which(c)).collect();
    let first = picked.iter().map(|c| c.time).fold(f64::INFINITY, f64::min);
    let last = picked.iter().map(|c| c.time + c.duration).fold(f64::NEG_INFINITY, f64::max);
    if picked.is_empty() { 0.0 } else { last - first }
}

/// The seed's way: one call per target, each awaited before the next.
async fn baseline(
    parts: &Parts,
    cfg: &SdkConfig,
    faults: &Faults,
    layout: &Layout,
    health_checks: &[String],
    sample: Option<usize>,
) -> Baseline {
    // A sample takes each kind in its share of the targets.
    let total = layout.targets().max(1);
    let take = |n: usize| sample.map_or(n, |s| (n * s).div_ceil(total).min(n));
    let (services, instances, checks) =
        (take(layout.services.len()), take(layout.rds.len()), take(health_checks.len()));
    let ecs = aws_sdk_ecs::Client::new(cfg);
    let rds = aws_sdk_rds::Client::new(cfg);
    let r53 = aws_sdk_route53::Client::new(cfg);
    faults.clear_log().await;
    let me = std::process::id();
    let (cpu0, moto0) = (process::cpu_seconds(me), process::cpu_seconds(parts.moto));
    let started = Instant::now();
    for (cluster, service) in &layout.services[..services] {
        let out = ecs.describe_services().cluster(cluster).services(service).send().await.expect("DescribeServices");
        assert_eq!(out.services().len(), 1, "{cluster}/{service} exists");
    }
    for id in &layout.rds[..instances] {
        let out = rds.describe_db_instances().db_instance_identifier(id).send().await.expect("DescribeDBInstances");
        assert_eq!(out.db_instances().len(), 1, "{id} exists");
    }
    for id in &health_checks[..checks] {
        r53.get_health_check_status().health_check_id(id).send().await.expect("GetHealthCheckStatus");
    }
    let wall = started.elapsed().as_secs_f64();
    let (cpu, moto_cpu) = (process::cpu_seconds(me) - cpu0, process::cpu_seconds(parts.moto) - moto0);
    let calls = faults.log().await;
    let calls: Vec<&Call> = calls.iter().collect();
    let probed = services + instances + checks;
    let mut b = Baseline { calls: count_calls(&calls), wall, cpu, moto_cpu, route53_peak: peak(&calls), sampled: None };
    if probed < layout.targets() {
        // Sequential: each call waits for the one before, so time and calls grow with targets.
        let factor = layout.targets() as f64 / probed.max(1) as f64;
        b.wall *= factor;
        b.cpu *= factor;
        b.moto_cpu *= factor;
        for n in b.calls.values_mut() {
            *n = (*n as f64 * factor).round() as usize;
        }
        b.sampled = Some(probed);
    }
    b
}

fn count_calls(calls: &[&Call]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in calls {
        *m.entry(c.key()).or_insert(0) += 1;
    }
    m
}

/// The most Route 53 calls that arrived within any one second.
fn peak(calls: &[&Call]) -> usize {
    let times: Vec<f64> = calls.iter().filter(|c| c.service == "route53").map(|c| c.time).collect();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= 1.0 {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// ECS ⌈services per cluster / 10⌉, RDS ⌈instances / 100⌉ (values per filter), Route 53 one
/// call per check.
fn minimum(layout: &Layout) -> BTreeMap<String, usize> {
    BTreeMap::from([
        ("ecs.DescribeServices".into(), layout.clusters().values().map(|n| n.div_ceil(10)).sum()),
        ("rds.DescribeDBInstances".into(), layout.rds.len().div_ceil(100)),
        ("route53.GetHealthCheckStatus".into(), layout.route53),
    ])
}

/// The same, but every policy batched on its own.
fn per_policy_minimum(layout: &Layout) -> BTreeMap<String, usize> {
    let ecs = layout.policies.iter().flat_map(|p| p.ecs.values()).map(|s| s.len().div_ceil(10)).sum();
    let rds = layout.policies.iter().map(|p| p.rds.len().div_ceil(100)).sum();
    BTreeMap::from([
        ("ecs.DescribeServices".into(), ecs),
        ("rds.DescribeDBInstances".into(), rds),
        ("route53.GetHealthCheckStatus".into(), layout.route53),
    ])
}
