//! A bounded soak: 500 degrade → incident → restart → heal → resolve cycles (50 ECS services
//! under 5 policies, 10 rounds) through one controller process, whose resident memory is
//! reported after the first round and at the end. Memory must stay flat: what the process
//! holds is its caches of live objects, and the policies' history retention (2 finished
//! incidents each) deletes the rest; the test deletes nothing itself. (kube's event
//! recorder also keeps every Event it sent for 6 minutes to merge repeats into series: a
//! soak shorter than that sees RSS climb by that cache, then level off.)

mod support;

use std::time::{Duration, Instant};

use aws_recovery_controller::api::incident::{Incident, IncidentPhase};
use aws_recovery_controller::api::plan::PlanPhase;
use kube::api::{Api, ListParams};
use serde_json::json;

use support::controller::ControllerProcess;
use support::{Faults, aws, eventually, namespace, plans, policy, unique};

const POLICIES: usize = 5;
const SERVICES: usize = 10;
/// Rounds of degrading every target; `RECOVERY_SOAK_ROUNDS` runs a longer soak by hand.
fn rounds() -> usize {
    std::env::var("RECOVERY_SOAK_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}
const ROUND_WAIT: Duration = Duration::from_secs(120);
/// Finished incidents each policy keeps.
const KEPT: usize = 2;

#[tokio::test]
async fn memory_stays_flat_over_500_degrade_heal_cycles() {
    let client = support::client().await;
    let ns = namespace(&client, "soak").await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let services: Vec<String> = (0..SERVICES).map(|i| format!("svc-{i}")).collect();
    let mut clusters = vec![];
    for p in 0..POLICIES {
        let cluster = unique("soak");
        aws::ecs_services(&cfg, &cluster, &services, 2).await;
        let spec = json!({
            "aws": {"region": "us-east-1"},
            "probeInterval": "2s",
            "targets": {"ecsServices": [{"cluster": cluster, "services": services}]},
            "detection": {"failureThreshold": 1, "successThreshold": 1},
            "remediation": {"mode": "Automatic", "stepTimeout": "120s", "cooldown": "0s",
                            "maxUnhealthyPercent": 100, "maxConcurrentPlans": SERVICES},
            "retention": {"successfulHistoryLimit": KEPT, "failedHistoryLimit": KEPT}
        });
        policy::create(&client, &ns, &format!("soak-{p}"), spec).await;
        clusters.push(cluster);
    }
    let ctl = ControllerProcess::start(&ns);
    let incidents: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let restarts = || async {
        let mut n = 0;
        for c in &clusters {
            n += faults.calls_for("ecs", "UpdateService", "cluster", c).await.len();
        }
        n
    };
    let targets = POLICIES * SERVICES;
    let (mut rss_warm, mut opened, started) = (0, 0, Instant::now());
    for round in 1..=rounds() {
        let round_start = Instant::now();
        for c in &clusters {
            for s in &services {
                faults.ecs_service(json!({"cluster": c, "service": s, "runningCount": 1})).await;
            }
        }
        eventually(&format!("round {round}: a restart per target"), ROUND_WAIT, || async {
            (restarts().await == round * targets).then_some(())
        })
        .await;
        for c in &clusters {
            for s in &services {
                faults
                    .ecs_service(json!({"cluster": c, "service": s, "runningCount": 2, "completeRollout": true}))
                    .await;
            }
        }
        eventually(&format!("round {round}: every plan completed, every incident resolved"), ROUND_WAIT, || async {
            let ps = plans::all(&client, &ns).await;
            let is = policy::incidents(&client, &ns).await;
            let done = ps.iter().all(|p| plans::phase(p) == Some(PlanPhase::Completed));
            let resolved = is.iter().all(|i| i.status.as_ref().and_then(|s| s.phase) == Some(IncidentPhase::Resolved));
            let mut opened = 0;
            for p in 0..POLICIES {
                let status = policy::get(&client, &ns, &format!("soak-{p}")).await.status.unwrap_or_default();
                opened += status.target_states.iter().map(|t| t.opened as usize).sum::<usize>();
            }
            (done && resolved && opened == round * targets).then_some(())
        })
        .await;
        opened += targets;
        // Retention, not the test, bounds what is kept.
        let (plan_count, incident_count) = eventually(&format!("round {round}: retention"), ROUND_WAIT, || async {
            let counts = (
                plans::all(&client, &ns).await.len(),
                incidents.list(&ListParams::default()).await.unwrap().items.len(),
            );
            // Each kept incident keeps its plan (a plan goes just before its incident).
            (counts.0 == counts.1 && counts.1 <= POLICIES * KEPT).then_some(counts)
        })
        .await;
        if round == 1 {
            rss_warm = ctl.memory_kib().0;
        }
        println!(
            "soak: round {round} in {:.1} s, RSS {} KiB, {incident_count} incidents and {plan_count} plans kept",
            round_start.elapsed().as_secs_f64(),
            ctl.memory_kib().0
        );
    }
    let (rss_end, peak) = ctl.memory_kib();
    println!(
        "soak: {opened} degrade/heal cycles ({targets} targets x {} rounds) in {:.0} s; \
         controller RSS after round 1 {:.1} MiB, at the end {:.1} MiB, peak {:.1} MiB",
        rounds(),
        started.elapsed().as_secs_f64(),
        rss_warm as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    assert_eq!(restarts().await, rounds() * targets, "one restart per incident, none repeated");
    assert_eq!(ctl.get("/healthz").await.0, 200);
    // Flat: the end within 25% (and 8 MiB of allocator slack) of the first round's level.
    assert!(
        rss_end as f64 <= rss_warm as f64 * 1.25 + 8.0 * 1024.0,
        "RSS grew from {rss_warm} KiB to {rss_end} KiB over {} rounds",
        rounds()
    );
}
