//! Recovery against the real parts: each template end to end, the kill test at every
//! boundary of every mutating step, and the rails.

mod support;

use std::time::Duration;

use aws_recovery_controller::api::Severity;
use aws_recovery_controller::api::incident::IncidentPhase;
use aws_recovery_controller::api::plan::{PlanPhase, StepPhase};
use serde_json::{Value, json};

use support::broken::{Broken, Kind};
use support::controller::ControllerProcess;
use support::ecs::Services;
use support::{Faults, aws, eventually, kubectl, namespace, plans, policy, unique};

const WAIT: Duration = Duration::from_secs(60);

fn remediation(extra: Value) -> Value {
    let mut r = json!({"mode": "Automatic", "stepTimeout": "30s", "cooldown": "0s", "maxUnhealthyPercent": 100, "maxConcurrentPlans": 5});
    r.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    r
}

fn policy_spec(targets: Value, remediation_extra: Value) -> Value {
    json!({
        "aws": {"region": "us-east-1"},
        "probeInterval": "2s",
        "targets": targets,
        "detection": {"failureThreshold": 1, "successThreshold": 1},
        "remediation": remediation(remediation_extra),
    })
}

/// The recovery tests' ECS scene: the flap guard opens and resolves on one probe.
struct Ecs;

impl Ecs {
    /// Service `web` running 1 of 2 tasks.
    async fn degraded(prefix: &str, remediation_extra: Value) -> Services {
        Self::services_down(prefix, &["web"], 1, remediation_extra).await
    }

    async fn services_down(prefix: &str, services: &[&str], running: i32, remediation_extra: Value) -> Services {
        let detection = json!({"failureThreshold": 1, "successThreshold": 1});
        Services::down(prefix, services, running, detection, remediation(remediation_extra)).await
    }
}

/// Lets `web`'s new deployment finish.
async fn heal(e: &Services) {
    e.heal_service("web").await;
}

#[tokio::test]
async fn ecs_restart_then_verify_only_after_healing() {
    let e = Ecs::degraded("rec-ecs", json!({})).await;
    let _ctl = ControllerProcess::start(&e.ns);
    let plan = plans::wait_phase(&e.client, &e.ns, PlanPhase::Executing, WAIT).await;
    let restarts =
        eventually("UpdateService", WAIT, || async { Some(e.restarts().await).filter(|r| !r.is_empty()) }).await;
    assert_eq!(restarts[0]["params"]["forceNewDeployment"], true);
    // The verify step waits: the new deployment runs 1 of 2 tasks.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let now = plans::all(&e.client, &e.ns).await.pop().unwrap();
    let st = now.status.clone().unwrap();
    assert_eq!(plans::phase(&now), Some(PlanPhase::Executing));
    assert_eq!(st.steps[0].phase, StepPhase::Completed);
    // Read the log again: an entry is logged when the call starts and its result when it ends.
    let restarts = e.restarts().await;
    assert_eq!(
        st.steps[0].evidence.get("deploymentId").map(String::as_str),
        restarts[0]["result"]["deploymentId"].as_str()
    );
    assert_eq!(st.steps[1].phase, StepPhase::InProgress);
    assert!(
        st.steps[1].message.as_deref().unwrap_or_default().contains("runningCount 1 < desiredCount 2"),
        "{:?}",
        st.steps[1].message
    );
    let inc = policy::incidents(&e.client, &e.ns).await.pop().unwrap();
    assert_eq!(inc.status.as_ref().unwrap().phase, Some(IncidentPhase::Mitigating));
    assert_eq!(inc.status.as_ref().unwrap().plan.as_deref(), plan.metadata.name.as_deref());

    heal(&e).await;
    let done = plans::wait_phase(&e.client, &e.ns, PlanPhase::Completed, WAIT).await;
    assert_eq!(done.status.unwrap().progress.as_deref(), Some("2/2"));
    eventually("incident resolved", WAIT, || async {
        let inc = policy::incidents(&e.client, &e.ns).await.pop()?;
        (inc.status?.phase == Some(IncidentPhase::Resolved)).then_some(())
    })
    .await;
    assert_eq!(e.restarts().await.len(), 1, "exactly one restart");

    let out = kubectl(&["get", "recoveryplans", "-n", &e.ns], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().next().unwrap().split_whitespace().eq(["NAME", "INCIDENT", "PHASE", "STEP", "AGE"]), "{text}");
    assert!(text.contains("Completed") && text.contains("2/2"), "{text}");
    let out = kubectl(&["describe", "recoveryplan", "-n", &e.ns], None);
    let text = String::from_utf8_lossy(&out.stdout);
    for reason in ["PlanExecuting", "StepStarted", "StepCompleted", "PlanCompleted"] {
        assert!(text.contains(reason), "describe shows {reason}: {text}");
    }
}

#[tokio::test]
async fn ecs_verify_fails_at_step_timeout_and_escalates() {
    let e = Ecs::degraded("rec-timeout", json!({})).await;
    let _ctl = ControllerProcess::start(&e.ns);
    let failed = plans::wait_phase(&e.client, &e.ns, PlanPhase::Failed, Duration::from_secs(90)).await;
    let st = failed.status.unwrap();
    assert_eq!(st.steps[1].phase, StepPhase::Failed);
    assert!(st.message.unwrap().contains("stepTimeout 30s"));
    let inc = eventually("escalation", WAIT, || async {
        let inc = policy::incidents(&e.client, &e.ns).await.pop()?;
        let failed =
            inc.status.as_ref()?.conditions.iter().any(|c| c.type_ == "RemediationFailed" && c.status == "True");
        (failed && inc.spec.severity == Severity::Critical).then_some(inc)
    })
    .await;
    assert_ne!(inc.status.unwrap().phase, Some(IncidentPhase::Resolved), "a failed plan leaves the incident open");
    assert_eq!(e.restarts().await.len(), 1);
}

async fn rds_failover(multi_az: bool) {
    let client = support::client().await;
    let ns = namespace(&client, if multi_az { "rec-rds-maz" } else { "rec-rds-saz" }).await;
    let cfg = aws::config().await;
    let faults = Faults::from_env();
    let db = unique("db");
    aws::rds_instance(&cfg, &db, multi_az).await;
    faults.rds_instance(json!({"dbInstanceIdentifier": db, "status": "failed", "availabilityZone": "us-east-1a", "secondaryAvailabilityZone": if multi_az { "us-east-1b" } else { "" }})).await;
    policy::create(&client, &ns, "data", policy_spec(json!({"rdsInstances": [{"identifier": db}]}), json!({}))).await;
    let _ctl = ControllerProcess::start(&ns);
    let done = plans::wait_phase(&client, &ns, PlanPhase::Completed, WAIT).await;
    let reboots = faults.calls_for("rds", "RebootDBInstance", "DBInstanceIdentifier", &db).await;
    assert_eq!(reboots.len(), 1, "one reboot: {reboots:?}");
    assert_eq!(reboots[0]["result"]["forceFailover"], multi_az);
    let st = done.status.unwrap();
    assert_eq!(
        st.steps[0].evidence.get("forceFailover").map(String::as_str),
        Some(if multi_az { "true" } else { "false" })
    );
    assert_eq!(done.spec.steps[0].parameters.force_failover, Some(multi_az));
    assert!(done.spec.steps[0].parameters.reason.as_deref().unwrap().contains(if multi_az {
        "Multi-AZ"
    } else {
        "single-AZ"
    }));
}

#[tokio::test]
async fn rds_multi_az_fails_over() {
    rds_failover(true).await;
}

#[tokio::test]
async fn rds_single_az_reboots_without_failover() {
    rds_failover(false).await;
}

#[tokio::test]
async fn dns_failover_aliases_the_target_zone() {
    let d = Broken::new(Kind::Dns, "rec-dns", json!({})).await;
    d.faults.settings(json!({"route53": {"changePendingCalls": 0}})).await;
    let _ctl = ControllerProcess::start(&d.ns);
    let done = plans::wait_phase(&d.client, &d.ns, PlanPhase::Completed, WAIT).await;
    let changes = d.mutations().await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    let st = done.status.unwrap();
    assert!(st.steps[0].evidence.contains_key("changeId"));
    assert_eq!(st.steps[1].evidence.get("changeStatus").map(String::as_str), Some("INSYNC"));
    let cfg = aws::config().await;
    let sets =
        aws_sdk_route53::Client::new(&cfg).list_resource_record_sets().hosted_zone_id(&d.id).send().await.unwrap();
    let rec = sets
        .resource_record_sets()
        .iter()
        .find(|r| Some(r.name().trim_end_matches('.')) == d.record.as_deref())
        .expect("the record");
    let alias = rec.alias_target().expect("an alias");
    assert_eq!(alias.dns_name().trim_end_matches('.'), "backup-lb.elb.amazonaws.com");
    assert_eq!(alias.hosted_zone_id(), "Z35SXDOTRQ7X7K", "the alias target's own zone, not the record's");
    d.heal().await;
}

/// A DB cluster whose writer fails: one FailoverDBCluster, a new writer verified, resolved.
#[tokio::test]
async fn cluster_failover_promotes_a_reader() {
    let c = Broken::new(Kind::Cluster, "rec-cluster", json!({})).await;
    let _ctl = ControllerProcess::start(&c.ns);
    let done = plans::wait_phase(&c.client, &c.ns, PlanPhase::Completed, WAIT).await;
    let calls = c.mutations().await;
    assert_eq!(calls.len(), 1, "one FailoverDBCluster: {calls:?}");
    let st = done.status.unwrap();
    let (before, after) = (format!("{}-a", c.id), format!("{}-b", c.id));
    assert_eq!(st.steps[0].evidence.get("writerBefore"), Some(&before), "{:?}", st.steps[0]);
    assert_eq!(st.steps[1].evidence.get("writer"), Some(&after), "{:?}", st.steps[1]);
    let inc = eventually("the incident resolved", WAIT, || async {
        let inc = policy::incidents(&c.client, &c.ns).await.pop()?;
        (inc.status.as_ref()?.phase == Some(IncidentPhase::Resolved)).then_some(inc)
    })
    .await;
    assert_eq!(inc.spec.type_, aws_recovery_controller::api::incident::IncidentType::Database);
    let out = kubectl(&["get", "incidents", "-n", &c.ns], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("rdscluster/{}", c.id)));
}

/// A cluster with no available reader: the failover has nowhere to go; people take over,
/// and RDS is never asked.
#[tokio::test]
async fn cluster_without_an_available_reader_fails_for_people() {
    let c = Broken::new(Kind::Cluster, "rec-noreader", json!({})).await;
    let reader = json!({"dbInstanceIdentifier": format!("{}-b", c.id), "status": "rebooting", "pin": true});
    c.faults.rds_instance(reader).await;
    let _ctl = ControllerProcess::start(&c.ns);
    let failed = plans::wait_phase(&c.client, &c.ns, PlanPhase::Failed, WAIT).await;
    let message = failed.status.unwrap().message.unwrap_or_default();
    assert!(message.contains("no available reader"), "{message}");
    assert!(c.mutations().await.is_empty(), "no FailoverDBCluster");
}

/// Kill test: the controller aborts at `failpoint`, a new one takes over, and the mutating
/// call reaches AWS exactly once while the plan completes.
async fn killed_at(failpoint: &str, kind: Kind) {
    let b = Broken::new(kind, &format!("kill-{kind:?}").to_lowercase(), json!({})).await;
    // Counts the target's mutating calls and, once there is one, lets the target heal.
    let count = || async {
        let n = b.mutations().await.len();
        if n > 0 {
            b.heal().await;
        }
        n
    };
    let mut crashing = ControllerProcess::start_with(&b.ns, &[("RECOVERY_FAILPOINT", failpoint)]);
    let status = crashing.exited(WAIT).await;
    assert!(!status.success(), "the failpoint aborts the process");
    assert!(crashing.log_text().contains(&format!("failpoint {failpoint}")), "{}", crashing.log_text());
    let expected_before = if failpoint == "after-in-progress" { 0 } else { 1 };
    assert_eq!(count().await, expected_before, "calls before the restart");
    let _ctl = ControllerProcess::start(&b.ns);
    eventually("the plan completes after the restart", WAIT, || async {
        count().await;
        plans::all(&b.client, &b.ns).await.into_iter().find(|p| plans::phase(p) == Some(PlanPhase::Completed))
    })
    .await;
    assert_eq!(count().await, 1, "{kind:?} at {failpoint}: the mutating call reached AWS exactly once");
}

macro_rules! kill_tests {
    ($($name:ident: $fp:literal, $kind:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            killed_at($fp, $kind).await;
        }
    )*};
}

kill_tests! {
    kill_ecs_after_in_progress: "after-in-progress", Kind::Ecs;
    kill_ecs_after_aws_call: "after-aws-call", Kind::Ecs;
    kill_ecs_before_completed: "before-completed", Kind::Ecs;
    kill_rds_after_in_progress: "after-in-progress", Kind::Rds;
    kill_rds_after_aws_call: "after-aws-call", Kind::Rds;
    kill_rds_before_completed: "before-completed", Kind::Rds;
    kill_dns_after_in_progress: "after-in-progress", Kind::Dns;
    kill_dns_after_aws_call: "after-aws-call", Kind::Dns;
    kill_dns_before_completed: "before-completed", Kind::Dns;
    kill_cluster_after_in_progress: "after-in-progress", Kind::Cluster;
    kill_cluster_after_aws_call: "after-aws-call", Kind::Cluster;
    kill_cluster_before_completed: "before-completed", Kind::Cluster;
}

#[tokio::test]
async fn manual_waits_for_the_approval_command() {
    let e = Ecs::degraded("rec-manual", json!({"mode": "Manual"})).await;
    let _ctl = ControllerProcess::start(&e.ns);
    let plan = plans::wait_phase(&e.client, &e.ns, PlanPhase::AwaitingApproval, WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(e.restarts().await.is_empty(), "nothing acts before approval");
    let name = plan.metadata.name.unwrap();
    let out = kubectl(&["annotate", "recoveryplan", &name, "-n", &e.ns, "recovery.dev/approved-by=alice"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("the restart after approval", WAIT, || async { Some(e.restarts().await).filter(|r| r.len() == 1) })
        .await;
    heal(&e).await;
    let done = plans::wait_phase(&e.client, &e.ns, PlanPhase::Completed, WAIT).await;
    assert_eq!(done.status.unwrap().approved_by.as_deref(), Some("alice"));
}

#[tokio::test]
async fn dry_run_makes_no_mutating_call() {
    let e = Ecs::degraded("rec-dry", json!({"mode": "DryRun"})).await;
    let _ctl = ControllerProcess::start(&e.ns);
    let done = plans::wait_phase(&e.client, &e.ns, PlanPhase::Completed, WAIT).await;
    let st = done.status.unwrap();
    assert!(st.steps.iter().all(|s| s.phase == StepPhase::Skipped));
    assert!(st.steps[0].message.as_deref().unwrap().contains("would call ECS UpdateService"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(e.restarts().await.is_empty());
}

#[tokio::test]
async fn disabled_makes_no_plan() {
    let e = Ecs::degraded("rec-disabled", json!({"mode": "Disabled"})).await;
    let _ctl = ControllerProcess::start(&e.ns);
    let inc = eventually("RemediationAllowed=False on the incident", WAIT, || async {
        let inc = policy::incidents(&e.client, &e.ns).await.pop()?;
        inc.status
            .as_ref()?
            .conditions
            .iter()
            .any(|c| c.type_ == "RemediationAllowed" && c.reason == "RemediationDisabled")
            .then_some(inc)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(plans::all(&e.client, &e.ns).await.is_empty());
    assert!(e.restarts().await.is_empty());
    assert_eq!(inc.status.unwrap().phase, Some(IncidentPhase::Detected));
}

/// Two of two services down with maxUnhealthyPercent 50: incidents open, nothing acts.
#[tokio::test]
async fn storm_guard_holds_every_plan() {
    let e = Ecs::services_down("rec-storm", &["a", "b"], 0, json!({"maxUnhealthyPercent": 50})).await;
    let (client, ns) = (e.client.clone(), e.ns.clone());
    let _ctl = ControllerProcess::start(&ns);
    eventually("both plans held by the storm guard", WAIT, || async {
        let ps = plans::all(&client, &ns).await;
        (ps.len() == 2 && ps.iter().all(|p| plans::held(p).as_deref() == Some("TooManyUnhealthy"))).then_some(())
    })
    .await;
    let p = policy::get(&client, &ns, "shop").await;
    let (status, reason, _) = policy::condition(&p, "RemediationAllowed").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "TooManyUnhealthy"));
    let out = kubectl(&["get", "events", "-n", &ns, "--field-selector", "reason=TooManyUnhealthy"], None);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Warning"),
        "a Warning Event: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(e.restarts().await.is_empty(), "the storm guard held every restart");
}

/// Two services down, maxConcurrentPlans 1: the second restart waits for the first plan.
#[tokio::test]
async fn max_concurrent_plans_holds_the_second() {
    let e = Ecs::services_down("rec-conc", &["a", "b"], 1, json!({"maxConcurrentPlans": 1})).await;
    let (client, ns) = (e.client.clone(), e.ns.clone());
    let _ctl = ControllerProcess::start(&ns);
    eventually("one executing, one held", WAIT, || async {
        let ps = plans::all(&client, &ns).await;
        let executing = ps.iter().filter(|p| plans::phase(p) == Some(PlanPhase::Executing)).count();
        let held = ps.iter().filter(|p| plans::held(p).as_deref() == Some("MaxConcurrentPlans")).count();
        (executing == 1 && held == 1).then_some(())
    })
    .await;
    // Executing is on record just before the restart is sent.
    let restarts =
        eventually("the first restart", WAIT, || async { Some(e.restarts().await).filter(|r| !r.is_empty()) }).await;
    assert_eq!(restarts.len(), 1, "only the first plan acted");
    // Heal the first; then the second may go.
    let first = restarts[0]["params"]["service"].as_str().unwrap().to_owned();
    e.heal_service(&first).await;
    eventually("the second restart", WAIT, || async { Some(e.restarts().await).filter(|r| r.len() == 2) }).await;
}

/// A relapse right after a completed plan is held by the target's cooldown.
#[tokio::test]
async fn cooldown_holds_a_relapse() {
    let e = Ecs::degraded("rec-cool", json!({"cooldown": "10m"})).await;
    let _ctl = ControllerProcess::start(&e.ns);
    eventually("first restart", WAIT, || async { Some(e.restarts().await).filter(|r| r.len() == 1) }).await;
    heal(&e).await;
    eventually("first incident resolved", WAIT, || async {
        let inc = policy::incidents(&e.client, &e.ns).await.pop()?;
        (inc.status?.phase == Some(IncidentPhase::Resolved)).then_some(())
    })
    .await;
    // The cooldown counts from the plan's end: the relapse comes once the first plan has
    // verified. The incident resolves on the probe's view (running = desired), and the verify
    // step, which looks at once, may still see the restart's rollout unfinished and poll
    // again 5 s later; a relapse before that finds the first plan executing, not cooling down.
    plans::wait_phase(&e.client, &e.ns, PlanPhase::Completed, WAIT).await;
    e.faults.ecs_service(json!({"cluster": e.cluster, "service": "web", "runningCount": 0})).await;
    eventually("the relapse's plan held by Cooldown", WAIT, || async {
        let ps = plans::all(&e.client, &e.ns).await;
        ps.iter().any(|p| plans::held(p).as_deref() == Some("Cooldown")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(e.restarts().await.len(), 1, "no second restart within the cooldown");
}

/// A plan costs the fewest writes the protocol allows: its creation, the step InProgress
/// before the call, the call's outcome together with the verify step starting, and the
/// verification together with the plan completing. Polls that find nothing new write nothing.
#[tokio::test]
async fn a_plan_costs_the_fewest_writes() {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};

    let e = Ecs::degraded("rec-writes", json!({})).await;
    let api = kube::Api::<aws_recovery_controller::api::plan::RecoveryPlan>::namespaced(e.client.clone(), &e.ns);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let watch = {
        let seen = seen.clone();
        tokio::spawn(watcher(api, watcher::Config::default()).applied_objects().for_each(move |p| {
            if let Ok(p) = p {
                // What each version says, so a failure shows which write was extra.
                let summary = serde_json::to_string(&p.status).unwrap_or_default();
                seen.lock().unwrap().insert((p.metadata.resource_version.clone(), summary));
            }
            futures::future::ready(())
        }))
    };
    let _ctl = ControllerProcess::start(&e.ns);
    eventually("the verify step", WAIT, || async {
        plans::all(&e.client, &e.ns).await.into_iter().find(|p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.steps.iter().any(|st| st.order == 2 && st.phase == StepPhase::InProgress))
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(11)).await; // two verify polls that find the same
    heal(&e).await;
    plans::wait_phase(&e.client, &e.ns, PlanPhase::Completed, WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    watch.abort();
    let versions = seen.lock().unwrap().clone();
    assert_eq!(versions.len(), 4, "create, InProgress, restarted + verifying, verified + completed: {versions:#?}");
}
