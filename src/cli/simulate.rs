//! `kubectl recovery simulate -f policy.yaml`: what the policy would do now. AWS is read with
//! the controller's own probe code (`aws::probe`, Describe*/Get* calls only) and the cluster
//! with get/list (the live policy's streaks, its plans); the verdict comes from the
//! controller's own detection, planning and rails (`core::simulate`). Nothing is written to
//! either: there is no code path here that could.

use std::path::Path;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::api::RecoveryPolicy;
use crate::api::labels::POLICY_LABEL;
use crate::api::plan::RecoveryPlan;
use crate::api::policy::TargetState;
use crate::aws::probe::probe_policy;
use crate::aws::{AwsSettings, ClientCache};
use crate::core::detection::Probe;
use crate::core::simulate::{Detection, Inputs, Simulation, simulate};
use crate::metrics::Metrics;

use super::connect::{CliError, Conn, api_error};
use super::table::render;
use super::{EXIT_UNHEALTHY, Output, print_data};

/// The simulation with what it was read from.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    namespace: String,
    policy: String,
    /// Whether the policy exists in the cluster (detection continues from its streaks).
    live: bool,
    /// AWS calls that failed (their targets are Unknown).
    aws_errors: Vec<String>,
    read_at: Timestamp,
    #[serde(flatten)]
    simulation: Simulation,
}

fn read_policy(file: &Path) -> Result<RecoveryPolicy, CliError> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(|e| CliError::Io(format!("reading stdin: {e}")))?
    } else {
        std::fs::read_to_string(file).map_err(|e| CliError::Io(format!("reading {}: {e}", file.display())))?
    };
    let policy: RecoveryPolicy = serde_norway::from_str(&text)
        .map_err(|e| CliError::Io(format!("{} is not a RecoveryPolicy: {e}", file.display())))?;
    if policy.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err(CliError::Io(format!("{}: the policy has no metadata.name", file.display())));
    }
    Ok(policy)
}

/// Reads the live policy's streaks and its plans (get/list only). Without any kubeconfig the
/// simulation starts fresh, as for a new policy; any other failure is an error.
async fn cluster_state(conn: &Conn, ns_of_file: Option<&str>, name: &str) -> Result<Cluster, CliError> {
    let k = match conn.connect().await {
        Ok(k) => k,
        Err(CliError::NoKubeconfig(why)) => {
            eprintln!("note: no cluster ({why}); simulating as for a new policy (no streaks, no earlier plans)");
            return Ok(Cluster { namespace: ns_of_file.unwrap_or("default").to_owned(), ..Cluster::default() });
        }
        Err(e) => return Err(e),
    };
    let namespace = ns_of_file.map_or(k.namespace.clone(), str::to_owned);
    let live = Api::<RecoveryPolicy>::namespaced(k.client.clone(), &namespace)
        .get_opt(name)
        .await
        .map_err(|e| api_error(e, "recoverypolicies"))?;
    let lp = ListParams::default().labels(&format!("{POLICY_LABEL}={name}"));
    let plans = Api::<RecoveryPlan>::namespaced(k.client.clone(), &namespace)
        .list(&lp)
        .await
        .map_err(|e| api_error(e, "recoveryplans"))?
        .items;
    Ok(Cluster {
        namespace,
        live: live.is_some(),
        states: live.and_then(|p| p.status).map(|s| s.target_states).unwrap_or_default(),
        plans,
    })
}

#[derive(Default)]
struct Cluster {
    namespace: String,
    live: bool,
    states: Vec<TargetState>,
    plans: Vec<RecoveryPlan>,
}

/// Reads, simulates, prints; exit status 3 when a target is unhealthy.
pub async fn run(conn: &Conn, file: &Path, out: Output) -> Result<u8, CliError> {
    let policy = read_policy(file)?;
    let name = policy.name_any();
    let cluster = cluster_state(conn, policy.metadata.namespace.as_deref(), &name).await?;
    let aws = ClientCache::from_env(AwsSettings::default(), Arc::new(Metrics::default())).await;
    let clients = aws.get(&policy.spec.aws.region, policy.spec.aws.role_arn.as_deref()).await;
    let report = probe_policy(&clients, &policy.spec).await;
    let read_at = Timestamp::now();
    let probes = report.probes.iter().map(|(k, p)| (k.clone(), Probe::clone(p))).collect();
    let simulation = simulate(&Inputs {
        name: &name,
        spec: &policy.spec,
        live_states: &cluster.states,
        probes: &probes,
        missing: &report.missing,
        misplaced: &report.misplaced,
        plans: &cluster.plans,
        now: read_at,
    });
    let answer = Answer {
        namespace: cluster.namespace,
        policy: name,
        live: cluster.live,
        aws_errors: report.faults.iter().map(|f| f.to_string()).collect(),
        read_at,
        simulation,
    };
    match out {
        Output::Table => print!("{}", table(&answer)),
        _ => print_data(&answer, out)?,
    }
    Ok(if answer.simulation.any_unhealthy() { EXIT_UNHEALTHY } else { 0 })
}

fn table(a: &Answer) -> String {
    let s = &a.simulation;
    let c = &s.counts;
    let mut out = format!(
        "Policy {}/{} ({:?}{}): {} targets, {} healthy, {} unhealthy, {} unknown; AWS read at {}\n\n",
        a.namespace,
        a.policy,
        s.mode,
        if a.live { ", continuing from the live policy's streaks" } else { ", as a new policy" },
        c.total,
        c.healthy,
        c.unhealthy,
        c.unknown,
        a.read_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
    );
    let rows: Vec<Vec<String>> = s
        .targets
        .iter()
        .map(|v| {
            let detection = match &v.detection {
                Detection::Nothing => "-".to_owned(),
                Detection::Counting { failing, threshold } => format!("{failing}/{threshold} failing"),
                Detection::Open { incident } => format!("opens {incident}"),
                Detection::AlreadyOpen { incident } => format!("open: {incident}"),
                Detection::Resolve { incident } => format!("resolves {incident}"),
            };
            vec![v.target.clone(), format!("{:?}", v.health), detection, v.outcome.clone()]
        })
        .collect();
    out.push_str(&render(&["TARGET", "HEALTH", "INCIDENT", "WOULD"], &rows));
    for v in s.targets.iter().filter(|v| v.health != crate::core::simulate::Health::Healthy) {
        out.push_str(&format!("\n{}: {}\n", v.target, v.seen));
        for step in &v.plan {
            out.push_str(&format!("  {step}\n"));
        }
        if let Some(e) = &v.plan_error {
            out.push_str(&format!("  no plan: {e}\n"));
        }
    }
    for e in &a.aws_errors {
        out.push_str(&format!("\nAWS error: {e}\n"));
    }
    out.push_str("\nNothing was changed: AWS was read with Describe/Get calls only, the cluster with get/list only.\n");
    out
}
