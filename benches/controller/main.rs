//! The benchmark driver behind `cargo xtask bench` (see BENCHMARKS.md).
//!
//! Against the real parts that xtask started (kube-apiserver + etcd, moto + fault layer) it
//! runs the release controller at each scale and measures AWS calls, cycle time, CPU and
//! memory per probe cycle, side by side with a seed-style sequential prober; then a recovery
//! scenario for detection and action latency, plan throughput and API writes per plan.
//! Prints a Markdown report and writes it to `--out`.
#![forbid(unsafe_code)]

mod audit;
mod cycle;
mod faults;
mod fixture;
mod limit;
mod process;
mod push;
mod recovery;
mod report;
mod track;

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};

/// The running parts and where their files are.
pub struct Parts {
    /// Kubernetes client (KUBECONFIG).
    pub client: kube::Client,
    /// Scratch directory of this run (controller logs).
    pub work: PathBuf,
    /// kube-apiserver's audit log.
    pub audit_log: PathBuf,
    /// moto's process id.
    pub moto: u32,
    /// kube-apiserver's process id.
    pub apiserver: u32,
    /// etcd's process id.
    pub etcd: u32,
    /// Extra flags for `recovery-controller run` (`--controller-arg`, repeatable).
    pub controller_args: Vec<String>,
    /// The memory limit of the cycle scales' controller, bytes (`--memory-limit`).
    pub memory_limit: Option<u64>,
}

/// Progress lines go to stderr as they happen.
#[derive(Default)]
pub struct Report;

impl Report {
    /// Prints one progress line.
    pub fn say(&mut self, line: &str) {
        eprintln!("bench: {line}");
    }
}

/// A required environment variable (set by `cargo xtask bench`).
pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run this through `cargo xtask bench`"))
}

/// Command line: `--scale T[:P],…`, `--recovery N` (0 skips), `--push N` (faults of the push
/// vs polling latency runs; 0 skips), `--push-targets T` (targets of the push calls run; 0
/// skips), `--aws-latency D` (added to every AWS call in the latency scales; 0 skips them),
/// `--latency-scale T[:P],…`, `--out FILE`, `--controller-arg FLAG` (repeatable; e.g.
/// `--controller-arg=--concurrency=64`), `--memory-limit SIZE` (the cycle scales' controller
/// runs in a memory cgroup of that limit, e.g. `32Mi`, as a pod's limit would hold it).
struct Args {
    scales: Vec<(usize, usize)>,
    aws_latency: std::time::Duration,
    latency_scales: Vec<(usize, usize)>,
    recovery: usize,
    push: usize,
    push_targets: usize,
    out: Option<PathBuf>,
    controller_args: Vec<String>,
    memory_limit: Option<u64>,
}

fn args() -> Args {
    let mut a = Args {
        scales: vec![(100, 1), (1000, 100), (10000, 1000)],
        aws_latency: std::time::Duration::from_millis(40),
        latency_scales: vec![(1000, 100), (10000, 1000)],
        recovery: 100,
        push: 100,
        push_targets: 1000,
        out: None,
        controller_args: vec![],
        memory_limit: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        // `--flag=value` and `--flag value` both work.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = || inline.clone().or_else(|| it.next()).unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--scale" => a.scales = value().split(',').filter(|s| !s.is_empty()).map(parse_scale).collect(),
            "--recovery" => a.recovery = value().parse().expect("--recovery takes a number"),
            "--aws-latency" => {
                let v = value();
                a.aws_latency = if v == "0" {
                    std::time::Duration::ZERO
                } else {
                    humantime::parse_duration(&v).expect("--aws-latency takes a duration like 40ms")
                }
            }
            "--latency-scale" => {
                a.latency_scales = value().split(',').filter(|s| !s.is_empty()).map(parse_scale).collect()
            }
            "--push" => a.push = value().parse().expect("--push takes a number"),
            "--push-targets" => a.push_targets = value().parse().expect("--push-targets takes a number"),
            "--out" => a.out = Some(value().into()),
            "--controller-arg" => a.controller_args.push(value()),
            "--memory-limit" => a.memory_limit = Some(limit::parse_bytes(&value())),
            // cargo passes `--bench` to bench targets; nothing else is expected.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// `T` or `T:P`; without P, 100 targets go in one policy and larger scales ten per policy.
fn parse_scale(s: &str) -> (usize, usize) {
    let (t, p) = s.split_once(':').unwrap_or((s, ""));
    let t: usize = t.trim().parse().expect("--scale takes numbers like 100,1000 or 1000:100");
    let p = if p.is_empty() { if t <= 100 { 1 } else { t / 10 } } else { p.trim().parse().expect("policies") };
    (t, p.clamp(1, t))
}

fn pid(file: &Path, pointer: &str) -> u32 {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("a ready file");
    v.pointer(pointer).and_then(|p| p.as_u64()).unwrap_or_else(|| panic!("{} lacks {pointer}", file.display())) as u32
}

#[tokio::main]
async fn main() {
    let args = args();
    let testenv = PathBuf::from(var("RECOVERY_TESTENV_DIR"));
    let cp = testenv.join("controlplane.json");
    let parts = Parts {
        client: kube::Client::try_default().await.expect("a kube client from KUBECONFIG"),
        work: testenv.clone(),
        audit_log: testenv.join("controlplane/audit.log"),
        moto: pid(&testenv.join("aws.json"), "/pid"),
        apiserver: pid(&cp, "/pids/kube-apiserver"),
        etcd: pid(&cp, "/pids/etcd"),
        controller_args: args.controller_args.clone(),
        memory_limit: args.memory_limit,
    };
    let cfg = aws_config::defaults(BehaviorVersion::latest()).region(Region::new("us-east-1")).load().await;
    let faults = faults::Faults::from_env();
    let mut progress = Report;

    let mut scales = vec![];
    let mut setups: Vec<cycle::Setup> = args
        .scales
        .iter()
        .map(|&(targets, policies)| cycle::Setup { targets, policies, latency: Duration::ZERO, baseline_sample: None })
        .collect();
    if !args.aws_latency.is_zero() {
        // At 40 ms a call the sequential baseline takes ~40 s a thousand targets: above 1,000
        // it probes a 1,000-target sample, scaled up (it is linear by construction).
        setups.extend(args.latency_scales.iter().map(|&(targets, policies)| cycle::Setup {
            targets,
            policies,
            latency: args.aws_latency,
            baseline_sample: (targets > 1000).then_some(1000),
        }));
    }
    for setup in setups {
        let mut scale = cycle::run(&parts, &cfg, &faults, setup, &mut progress).await;
        scale.api = audit::count(&parts.audit_log, &setup.namespace());
        scales.push(scale);
    }
    let mut recovery = vec![];
    if args.recovery > 0 {
        for arrival in [recovery::Arrival::SPREAD, recovery::Arrival::AtOnce] {
            recovery.push(recovery::run(&parts, &cfg, &faults, args.recovery, arrival, &mut progress).await);
        }
    }
    let pushed = push::run(&parts, &cfg, &faults, args.push, args.push_targets, &mut progress).await;
    let text = report::render(&scales, &recovery, &pushed, &parts.controller_args);
    println!("{text}");
    if let Some(out) = args.out {
        std::fs::write(&out, &text).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        eprintln!("bench: written to {}", out.display());
    }
}
