//! Do no harm at the last moment, against the real parts: a plan acts only on a target that
//! is unhealthy when it is read just before the AWS call, whatever held the plan until then
//! (the storm guard, a person's approval, a slow read), and the flap guard counts time, not
//! answers that arrive bunched together.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_recovery_controller::api::incident::IncidentPhase;
use aws_recovery_controller::api::plan::{PlanPhase, RecoveryPlan, StepPhase};
use serde_json::{Value, json};

use support::broken::{Broken, Kind};
use support::controller::ControllerProcess;
use support::ecs::Services;
use support::{events, eventually, kubectl, plans, policy};

const WAIT: Duration = Duration::from_secs(60);

/// The plan ended NotNeeded at its read before acting: step 1 Skipped with what was read.
fn assert_not_needed_at_the_read(plan: &RecoveryPlan, evidence_key: &str) {
    let st = plan.status.as_ref().expect("a status");
    assert_eq!(st.phase, Some(PlanPhase::NotNeeded), "{st:?}");
    assert!(st.message.as_deref().is_some_and(|m| m.contains("not needed: the target recovered")), "{st:?}");
    let step = &st.steps[0];
    assert_eq!(step.phase, StepPhase::Skipped, "{step:?}");
    assert_eq!(step.attempts, 1, "the step was started (InProgress) before the read: {step:?}");
    assert!(step.evidence.contains_key(evidence_key) && step.evidence.contains_key("readAt"), "evidence: {step:?}");
    assert_eq!(st.steps[1].phase, StepPhase::Skipped, "nothing after it ran");
}

/// The issue's storm: every service degrades and the storm guard holds every plan; most
/// heal; the guard lets go while their incidents are still open (successThreshold needs
/// more healthy probes): no healed service is restarted, the one still broken is, once.
#[tokio::test]
async fn a_storm_that_mostly_heals_restarts_only_what_is_still_broken() {
    let detection = json!({"failureThreshold": 1, "successThreshold": 10});
    let s = Services::down("pre-storm", &["a", "b", "c"], 0, detection, json!({"maxUnhealthyPercent": 50})).await;
    let ctl = ControllerProcess::start(&s.ns);
    eventually("three plans held by the storm guard", WAIT, || async {
        let ps = plans::all(&s.client, &s.ns).await;
        (ps.len() == 3 && ps.iter().all(|p| plans::held(p).as_deref() == Some("TooManyUnhealthy"))).then_some(())
    })
    .await;
    s.recover("a").await;
    s.recover("b").await;
    eventually("the restart of c", WAIT, || async { (s.restarts_of("c").await == 1).then_some(()) }).await;
    for service in ["a", "b"] {
        let plan = eventually(&format!("{service}'s plan ends NotNeeded"), WAIT, || async {
            s.plan_of(service).await.filter(|p| plans::phase(p) == Some(PlanPhase::NotNeeded))
        })
        .await;
        assert_not_needed_at_the_read(&plan, "runningCount");
        assert_eq!(plan.status.as_ref().unwrap().steps[0].evidence["runningCount"], "2");
        let name = plan.metadata.name.clone().unwrap();
        let note = eventually("the PlanNotNeeded Event", WAIT, || async {
            events(&s.client, &s.ns, &name).await.into_iter().find(|e| e.1 == "PlanNotNeeded").map(|e| (e.0, e.2))
        })
        .await;
        assert_eq!(note.0, "Normal", "recovering is no warning: {note:?}");
        assert!(note.1.contains("2 of 2 desired tasks running"), "the Event says what was read: {note:?}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts = (s.restarts_of("a").await, s.restarts_of("b").await, s.restarts_of("c").await);
    eprintln!("UpdateService calls per service (a, b, c): {counts:?}");
    assert_eq!(counts, (0, 0, 1), "no restart of a healed service; the broken one once");
    let (_, metrics) = ctl.get("/metrics").await;
    assert!(metrics.contains(r#"recovery_plans_not_needed_total{kind="EcsService"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"recovery_plans_total{outcome="not_needed"} 2"#), "{metrics}");
    // The incidents of a and b go on to resolve through detection.
    eventually("a's and b's incidents resolve", WAIT, || async {
        let open: Vec<_> = policy::incidents(&s.client, &s.ns)
            .await
            .into_iter()
            .filter(|i| !i.spec.target.ends_with("/c"))
            .filter(|i| i.status.as_ref().and_then(|st| st.phase) != Some(IncidentPhase::Resolved))
            .collect();
        open.is_empty().then_some(())
    })
    .await;
}

/// A Manual plan approved an hour — here, some seconds — after its target healed makes no call.
#[tokio::test]
async fn a_manual_plan_approved_after_the_target_healed_makes_no_call() {
    let detection = json!({"failureThreshold": 1, "successThreshold": 10});
    let s = Services::down("pre-manual", &["web"], 1, detection, json!({"mode": "Manual"})).await;
    let _ctl = ControllerProcess::start(&s.ns);
    let plan = plans::wait_phase(&s.client, &s.ns, PlanPhase::AwaitingApproval, WAIT).await;
    s.recover("web").await;
    eventually("a probe sees the service healthy", WAIT, || async {
        let p = policy::get(&s.client, &s.ns, "shop").await;
        (p.status?.targets?.healthy == 1).then_some(())
    })
    .await;
    let name = plan.metadata.name.unwrap();
    let out = kubectl(&["annotate", "recoveryplan", &name, "-n", &s.ns, "recovery.dev/approved-by=alice"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done = plans::wait_phase(&s.client, &s.ns, PlanPhase::NotNeeded, WAIT).await;
    assert_not_needed_at_the_read(&done, "desiredCount");
    assert_eq!(done.status.as_ref().unwrap().approved_by.as_deref(), Some("alice"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarts = s.restarts_of("web").await;
    eprintln!("UpdateService calls after the late approval: {restarts}");
    assert_eq!(restarts, 0);
    let out = kubectl(&["get", "recoveryplans", "-n", &s.ns], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("NotNeeded"), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Holds the check-first read of `b`'s mutating step until the target has healed, then
/// releases it: the read that follows finds the target healthy, and the call is not made.
async fn healed_while_the_step_reads(b: &Broken, read: Value, evidence_key: &str) {
    let rule = b.faults.rule(read.clone()).await;
    let _ctl = ControllerProcess::start(&b.ns);
    let (service, operation) = (read["service"].as_str().unwrap(), read["operation"].as_str().unwrap());
    let (key, id) = read["match"].as_object().unwrap().iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap();
    eventually("the step's check-first read, held", WAIT, || async {
        let log = b.faults.calls_for(service, operation, &key, id.as_str().unwrap()).await;
        log.iter().any(|e| e["held"] == true).then_some(())
    })
    .await;
    let plan = plans::all(&b.client, &b.ns).await.pop().expect("a plan");
    let st = &plan.status.as_ref().unwrap().steps[0];
    assert_eq!(st.phase, StepPhase::InProgress, "the read comes after InProgress is on record: {st:?}");
    b.heal().await;
    b.faults.remove_rule(&rule).await;
    let done = plans::wait_phase(&b.client, &b.ns, PlanPhase::NotNeeded, WAIT).await;
    assert_not_needed_at_the_read(&done, evidence_key);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = b.mutations().await.len();
    eprintln!("{:?}: mutating calls after the target healed under a held read: {calls}", b.kind);
    assert_eq!(calls, 0, "{:?}", b.mutations().await);
}

#[tokio::test]
async fn an_rds_instance_available_again_before_its_reboot_is_not_rebooted() {
    let b = Broken::new(Kind::Rds, "pre-rds", json!({})).await;
    let read =
        json!({"service": "rds", "operation": "DescribeEvents", "match": {"SourceIdentifier": b.id}, "hold": true});
    healed_while_the_step_reads(&b, read, "status").await;
}

#[tokio::test]
async fn a_health_check_passing_again_before_the_failover_changes_no_record() {
    let b = Broken::new(Kind::Dns, "pre-dns", json!({})).await;
    let read = json!({"service": "route53", "operation": "ListResourceRecordSets", "match": {"HostedZoneId": b.id}, "hold": true});
    healed_while_the_step_reads(&b, read, "healthCheckId").await;
}

fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A probe whose answer is held, and the next probe right behind it, answer together: they
/// are one piece of evidence, so failureThreshold 3 at 2 s still means about 4 s of observed
/// failure from the moment the answers came.
#[tokio::test]
async fn bunched_answers_do_not_open_an_incident_early() {
    let detection = json!({"failureThreshold": 3, "successThreshold": 1});
    let s = Services::down("pre-bunch", &["web"], 1, detection, json!({"mode": "Disabled"})).await;
    let hold =
        json!({"service": "ecs", "operation": "DescribeServices", "match": {"cluster": s.cluster}, "hold": true});
    let rule = s.faults.rule(hold).await;
    let _ctl = ControllerProcess::start(&s.ns);
    eventually("the first probe, held", WAIT, || async {
        let log = s.faults.calls_for("ecs", "DescribeServices", "cluster", &s.cluster).await;
        log.iter().any(|e| e["held"] == true).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await; // more than two intervals
    let released = SystemTime::now();
    s.faults.remove_rule(&rule).await;
    // Its status (detectedAt) is written just after it is created.
    let detected = eventually("the incident's detectedAt", WAIT, || async {
        policy::incidents(&s.client, &s.ns).await.pop()?.status?.detected_at
    })
    .await
    .0;
    let after = detected.as_millisecond() as f64 / 1000.0 - epoch_secs(released);
    let answers = s.faults.calls_for("ecs", "DescribeServices", "cluster", &s.cluster).await;
    let times: Vec<f64> = answers.iter().filter_map(|e| e["time"].as_f64()).map(|t| t - epoch_secs(released)).collect();
    eprintln!(
        "incident opened {after:.2}s after the answers were released; probes asked at {times:.2?} (s from release)"
    );
    // Two intervals, less the tenth the flap guard allows for answer jitter.
    assert!(after >= 3.8, "opened {after:.2}s after the held answer and the one behind it arrived");
    assert!(after < 12.0, "and still opens: {after:.2}s");
}
