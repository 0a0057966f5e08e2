//! Living with the controller for months, against the real parts: history that stays
//! bounded without anyone deleting it, pause windows that lift by themselves, and the
//! on-demand requests people make (retry, cancel) as the documented `kubectl` commands.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_recovery_controller::api::incident::{AlertState, Incident, IncidentPhase};
use aws_recovery_controller::api::plan::{PlanPhase, RecoveryPlan, RequestAction, RequestOutcome};
use aws_recovery_controller::api::policy::IncidentOutcome;
use futures::StreamExt;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::json;

use support::controller::ControllerProcess;
use support::ecs::Services;
use support::receivers::{Receivers, slack_alerts, slack_secret};
use support::{eventually, kubectl, plans, policy};

const WAIT: Duration = Duration::from_secs(60);

/// Every object of `K` deleted in `ns` from now on: its last state, and when it was seen gone.
fn deletions<K>(client: &kube::Client, ns: &str) -> Arc<Mutex<Vec<(K, Timestamp)>>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let seen = Arc::new(Mutex::new(vec![]));
    let into = seen.clone();
    let stream = watcher(Api::<K>::namespaced(client.clone(), ns), watcher::Config::default());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Delete(obj)) = event {
                into.lock().unwrap().push((obj, Timestamp::now()));
            }
        }
    });
    seen
}

/// The policy's flap-guard state of its one target: (incidents opened so far, open incident).
async fn opened(client: &kube::Client, ns: &str) -> (u32, Option<String>) {
    let p = policy::get(client, ns, "shop").await;
    p.status.and_then(|s| s.target_states.into_iter().next()).map_or((0, None), |t| (t.opened, t.open_incident))
}

/// The issue's flapping target: 30 incidents open and resolve. Retention keeps 1 finished
/// incident (with its plan), never deletes one inside its cooldown (10 s, while a new
/// incident comes about every 5 s) or with an alert still being delivered (Slack fails for
/// a while), and the policy's status keeps the newest 5 after they are gone.
#[tokio::test]
async fn a_flapping_target_leaves_a_bounded_history_and_deletes_nothing_still_needed() {
    const FLAPS: u32 = 30;
    const COOLDOWN: Duration = Duration::from_secs(10);
    let remediation = json!({"mode": "DryRun", "cooldown": "10s"});
    let s = Services::down("history", &["web"], 2, json!({"failureThreshold": 1, "successThreshold": 1}), remediation)
        .await;
    let slack = slack_secret(&s.client, &s.ns).await;
    let patch = json!({"spec": {
        "alerts": slack_alerts(),
        "retention": {"successfulHistoryLimit": 1, "failedHistoryLimit": 1, "summaryLimit": 5},
    }});
    policy::patch(&s.client, &s.ns, "shop", patch).await;
    let gone_incidents = deletions::<Incident>(&s.client, &s.ns);
    let gone_plans = deletions::<RecoveryPlan>(&s.client, &s.ns);
    let rx = Receivers::from_env();
    let ctl = ControllerProcess::start_args(&["--namespace", &s.ns, "--allow-insecure-endpoints"], &[]);
    for n in 1..=FLAPS {
        if n == 8 {
            // The alerts of the next incidents fail for a while and are retried with backoff.
            rx.fail_slack(&slack, 500, 4).await;
        }
        s.faults.ecs_service(json!({"cluster": s.cluster, "service": "web", "runningCount": 1})).await;
        eventually(&format!("incident {n} opens"), WAIT, || async {
            let (count, open) = opened(&s.client, &s.ns).await;
            (count == n && open.is_some()).then_some(())
        })
        .await;
        s.recover("web").await;
        eventually(&format!("incident {n} resolves"), WAIT, || async {
            (opened(&s.client, &s.ns).await.1.is_none()).then_some(())
        })
        .await;
    }
    let left = eventually("retention keeps one finished incident and its plan", WAIT, || async {
        let (incidents, plans) = (policy::incidents(&s.client, &s.ns).await, plans::all(&s.client, &s.ns).await);
        (incidents.len() <= 1 && plans.len() <= 1 && gone_incidents.lock().unwrap().len() == FLAPS as usize - 1)
            .then_some((incidents, plans))
    })
    .await;
    println!("retention: {} incident(s) and {} plan(s) left of {FLAPS}", left.0.len(), left.1.len());
    let gone_incidents = gone_incidents.lock().unwrap().clone();
    let gone_plans = gone_plans.lock().unwrap().clone();
    assert_eq!(gone_plans.len(), FLAPS as usize - 1, "each plan went with its incident");
    let mut retried = 0;
    for (inc, at) in &gone_incidents {
        let status = inc.status.as_ref().expect("a status");
        assert_eq!(status.phase, Some(IncidentPhase::Resolved), "{} deleted while open", inc.name_any());
        // Deleted with every alert delivered: Detected and Resolved, each Sent.
        let sent: Vec<_> = status.alerts.iter().filter(|a| a.state == AlertState::Sent).collect();
        assert_eq!(
            (status.alerts.len(), sent.len()),
            (2, 2),
            "{} deleted with alerts {:?}",
            inc.name_any(),
            status.alerts
        );
        retried += usize::from(status.alerts.iter().any(|a| a.attempts > 1));
        // Deleted only once the target's cooldown after its plan was over.
        let plan = gone_plans
            .iter()
            .find(|(p, _)| p.spec.incident == inc.name_any())
            .unwrap_or_else(|| panic!("the plan of {}", inc.name_any()));
        let ended = plan.0.status.as_ref().and_then(|st| st.completed_at.as_ref()).expect("the plan ended").0;
        let cooled = ended + SignedDuration::try_from(COOLDOWN).unwrap();
        assert!(
            plan.1 >= cooled && *at >= cooled,
            "{} deleted at {at}, inside its cooldown until {cooled}",
            inc.name_any()
        );
    }
    assert!(retried >= 1, "some deleted incidents had alerts that needed retries: the test exercised that rail");
    // The newest five, newest first, survive in the policy's status.
    let history = policy::get(&s.client, &s.ns, "shop").await.status.expect("a status").history;
    let numbers: Vec<String> = history.iter().map(|h| h.incident.rsplit('-').next().unwrap().to_owned()).collect();
    assert_eq!(numbers, ["29", "28", "27", "26", "25"], "{history:?}");
    assert!(history.iter().all(|h| h.outcome == IncidentOutcome::RecoveredOnItsOwn && h.resolved_at.is_some()));
    let (_, metrics) = ctl.get("/metrics").await;
    for kind in ["Incident", "RecoveryPlan"] {
        let line = format!(r#"recovery_pruned_objects_total{{kind="{kind}"}} {}"#, FLAPS - 1);
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    let pruned = support::events(&s.client, &s.ns, "shop").await.into_iter().filter(|e| e.1 == "HistoryPruned").count();
    assert!(pruned >= 1, "HistoryPruned Events on the policy");
}

/// A whole-policy pause: two services break; incidents open and alert once each, saying the
/// pause; nothing mutates until `until`; then the plans act, one at a time
/// (maxConcurrentPlans 1): the rails still hold after the pause.
#[tokio::test]
async fn a_paused_policy_alerts_saying_so_and_acts_once_the_pause_lifts() {
    // Whole seconds, as the policy states it: the pause ends at exactly this time.
    let until = (Timestamp::now() + SignedDuration::from_secs(25)).round(k8s_openapi::jiff::Unit::Second).unwrap();
    let remediation = json!({"maxConcurrentPlans": 1, "maxUnhealthyPercent": 100});
    let s = Services::down("pause", &["a", "b"], 1, json!({"failureThreshold": 1, "successThreshold": 1}), remediation)
        .await;
    let slack = slack_secret(&s.client, &s.ns).await;
    let until_text = until.to_string();
    let patch = json!({"spec": {
        "alerts": slack_alerts(),
        "remediation": {"pause": {"until": until_text, "reason": "database maintenance", "requestedBy": "alice"}},
    }});
    policy::patch(&s.client, &s.ns, "shop", patch).await;
    let rx = Receivers::from_env();
    let ctl = ControllerProcess::start_args(&["--namespace", &s.ns, "--allow-insecure-endpoints"], &[]);
    eventually("both plans held by the pause", WAIT, || async {
        let ps = plans::all(&s.client, &s.ns).await;
        (ps.len() == 2 && ps.iter().all(|p| plans::held(p).as_deref() == Some("Paused"))).then_some(())
    })
    .await;
    let p = policy::get(&s.client, &s.ns, "shop").await;
    let (status, reason, message) = policy::condition(&p, "Paused").expect("a Paused condition");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "MaintenanceWindow"), "{message}");
    assert!(message.contains("database maintenance") && message.contains("(by alice)"), "{message}");
    let alerts = eventually("a Detected alert per incident", WAIT, || async {
        let posts = rx.slack(&slack).await;
        (posts.len() >= 2).then_some(posts)
    })
    .await;
    for post in &alerts {
        let text = post["json"].to_string();
        assert!(text.contains("Incident Detected") && text.contains("Remediation paused"), "{text}");
        assert!(text.contains(&until_text) && text.contains("database maintenance"), "{text}");
    }
    let (_, metrics) = ctl.get("/metrics").await;
    assert!(metrics.contains("recovery_pauses_active 1") && metrics.contains("recovery_paused_targets 2"), "{metrics}");
    // Until the pause lifts, nothing mutates.
    while Timestamp::now() < until - SignedDuration::from_secs(2) {
        assert_eq!(s.restarts().await.len(), 0, "UpdateService while paused");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let first = eventually("the first restart after the pause", WAIT, || async {
        let calls = s.restarts().await;
        (!calls.is_empty()).then_some(calls)
    })
    .await;
    let started = Timestamp::now();
    assert!(started >= until, "acted at {started}, before the pause ended at {until}");
    let first_service = first[0]["params"]["service"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let other = if first_service == "a" { "b" } else { "a" };
    // The other plan waits for the first: maxConcurrentPlans still holds.
    let held = eventually("the other plan held by maxConcurrentPlans", WAIT, || async {
        s.plan_of(other).await.and_then(|p| plans::held(&p))
    })
    .await;
    assert_eq!(held, "MaxConcurrentPlans");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.restarts().await.len(), 1, "one at a time");
    s.heal_service(&first_service).await;
    eventually("the other service's restart", WAIT, || async { (s.restarts_of(other).await == 1).then_some(()) }).await;
    s.heal_service(other).await;
    plans::wait_all(&s.client, &s.ns, PlanPhase::Completed, 2, WAIT).await;
    assert_eq!((s.restarts_of("a").await, s.restarts_of("b").await), (1, 1), "each acted on once");
    let p = policy::get(&s.client, &s.ns, "shop").await;
    let (status, reason, _) = policy::condition(&p, "Paused").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "PauseExpired"));
    let notes: Vec<String> = support::events(&s.client, &s.ns, "shop").await.into_iter().map(|e| e.1).collect();
    assert!(notes.iter().any(|r| r == "PauseStarted") && notes.iter().any(|r| r == "PauseEnded"), "{notes:?}");
    let detected =
        rx.slack(&slack).await.iter().filter(|p| p["json"].to_string().contains("Incident Detected")).count();
    assert_eq!(detected, 2, "one Detected alert per incident, none repeated");
}

/// `kubectl annotate` with a value never handled before.
fn annotate(ns: &str, plan: &str, action: RequestAction, who: &str) {
    let arg = format!("{}={who} {}", action.annotation(), Timestamp::now().as_millisecond());
    let out = kubectl(&["annotate", "recoveryplan", plan, "-n", ns, &arg, "--overwrite"], None);
    assert!(out.status.success(), "kubectl annotate: {}", String::from_utf8_lossy(&out.stderr));
}

fn request(plan: &RecoveryPlan, action: RequestAction) -> Option<(RequestOutcome, String, String)> {
    let st = plan.status.as_ref()?;
    st.requests.iter().find(|r| r.action == action).map(|r| (r.outcome, r.by.clone(), r.message.clone()))
}

/// A plan that failed (UpdateService refused) is retried with the documented annotation:
/// exactly one more UpdateService, then the plan completes; the request is on record.
#[tokio::test]
async fn a_retry_of_a_failed_plan_makes_exactly_one_more_call() {
    let s =
        Services::down("retry", &["web"], 1, json!({"failureThreshold": 1, "successThreshold": 1}), json!({})).await;
    let rule = json!({"service": "ecs", "operation": "UpdateService", "error": "AccessDeniedException",
                      "status": 400, "count": 1, "match": {"cluster": s.cluster}});
    s.faults.rule(rule).await;
    let ctl = ControllerProcess::start(&s.ns);
    let failed = plans::wait_phase(&s.client, &s.ns, PlanPhase::Failed, WAIT).await;
    assert_eq!(s.restarts().await.len(), 1, "the refused call");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.restarts().await.len(), 1, "a failed plan makes no call by itself");
    annotate(&s.ns, &failed.name_any(), RequestAction::Retry, "alice");
    eventually("the retried restart", WAIT, || async { (s.restarts().await.len() == 2).then_some(()) }).await;
    s.heal_service("web").await;
    let done = plans::wait_phase(&s.client, &s.ns, PlanPhase::Completed, WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.restarts().await.len(), 2, "exactly one more mutating call");
    let (outcome, by, message) = request(&done, RequestAction::Retry).expect("the request on record");
    assert_eq!((outcome, by.as_str()), (RequestOutcome::Accepted, "alice"), "{message}");
    let step = &done.status.as_ref().unwrap().steps[0];
    assert_eq!(step.attempts, 2, "the retry was attempt 2 of the same step: {step:?}");
    let inc = policy::incidents(&s.client, &s.ns).await.pop().unwrap();
    let failed_cond = inc.status.unwrap().conditions.into_iter().find(|c| c.type_ == "RemediationFailed").unwrap();
    assert_eq!((failed_cond.status.as_str(), failed_cond.reason.as_str()), ("False", "Retrying"));
    let (_, metrics) = ctl.get("/metrics").await;
    assert!(metrics.contains(r#"recovery_requests_total{action="retry",outcome="accepted"} 1"#), "{metrics}");
    let reasons: Vec<String> =
        support::events(&s.client, &s.ns, &done.name_any()).await.into_iter().map(|e| e.1).collect();
    assert!(reasons.iter().any(|r| r == "RequestAccepted"), "{reasons:?}");
}

/// A Manual plan waiting for approval is cancelled: an approval after that starts nothing.
#[tokio::test]
async fn a_cancelled_manual_plan_makes_no_call_even_when_approved_after() {
    let s = Services::down(
        "cancel",
        &["web"],
        1,
        json!({"failureThreshold": 1, "successThreshold": 1}),
        json!({"mode": "Manual"}),
    )
    .await;
    let _ctl = ControllerProcess::start(&s.ns);
    let waiting = plans::wait_phase(&s.client, &s.ns, PlanPhase::AwaitingApproval, WAIT).await;
    annotate(&s.ns, &waiting.name_any(), RequestAction::Cancel, "bob");
    let cancelled = plans::wait_phase(&s.client, &s.ns, PlanPhase::Cancelled, WAIT).await;
    let (outcome, by, _) = request(&cancelled, RequestAction::Cancel).expect("the request on record");
    assert_eq!((outcome, by.as_str()), (RequestOutcome::Accepted, "bob"));
    let approve = format!("{}=carol", aws_recovery_controller::api::plan::APPROVED_BY_ANNOTATION);
    let out = kubectl(&["annotate", "recoveryplan", &waiting.name_any(), "-n", &s.ns, &approve], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A retry of a cancelled plan is refused too: it did not fail.
    annotate(&s.ns, &waiting.name_any(), RequestAction::Retry, "carol");
    let refused = eventually("the retry refused", WAIT, || async {
        let p = plans::all(&s.client, &s.ns).await.pop()?;
        request(&p, RequestAction::Retry).filter(|r| r.0 == RequestOutcome::Refused).map(|_| p)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(plans::phase(&refused), Some(PlanPhase::Cancelled));
    assert_eq!(s.restarts().await.len(), 0, "no UpdateService for a cancelled plan");
    let inc = policy::incidents(&s.client, &s.ns).await.pop().unwrap();
    assert_ne!(inc.status.and_then(|s| s.phase), Some(IncidentPhase::Resolved), "the incident stays for people");
}

/// The admission webhook, as the API server calls it: a pause that ends in the past is refused
/// at `kubectl apply` with a message naming the field; one ahead is admitted; and a manifest
/// whose window has since passed can be applied again unchanged (GitOps re-syncs it).
#[tokio::test]
async fn a_pause_that_ends_in_the_past_is_refused_at_apply() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let client = support::client().await;
    let ns = support::namespace(&client, "pause-admit").await;
    let dir = std::path::PathBuf::from(support::var("RECOVERY_TESTENV_DIR")).join(format!("webhook-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a certificate");
    std::fs::write(dir.join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let _ctl = ControllerProcess::start_args(
        &["--namespace", &ns, "--webhook-addr", &addr, "--webhook-cert-dir", dir.to_str().unwrap()],
        &[],
    );
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": format!("recovery-{ns}")},
        "webhooks": [{
            "name": "recoverypolicies.recovery.dev",
            "clientConfig": {
                "url": format!("https://{addr}{}", aws_recovery_controller::webhook::PATH),
                "caBundle": k8s_openapi::ByteString(cert.cert.pem().into_bytes()),
            },
            "rules": [{"apiGroups": ["recovery.dev"], "apiVersions": ["v1alpha1"],
                       "resources": ["recoverypolicies"], "operations": ["CREATE", "UPDATE"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
        }],
    }))
    .expect("a webhook configuration");
    let configs = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    configs.create(&Default::default(), &config).await.expect("create the webhook configuration");
    let manifest = |until: &str, severity: &str| {
        format!(
            "apiVersion: recovery.dev/v1alpha1\nkind: RecoveryPolicy\nmetadata:\n  name: shop\nspec:\n  aws: {{ region: us-east-1 }}\n  \
             targets:\n    rdsInstances: [{{ identifier: prod-db, severity: {severity} }}]\n  remediation:\n    \
             mode: DryRun\n    pause: {{ until: \"{until}\", reason: maintenance }}\n"
        )
    };
    let apply = |text: String| {
        let out = kubectl(&["apply", "-n", &ns, "-f", "-"], Some(&text));
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // The API server takes up a new webhook configuration within a moment.
    let refused = eventually("the webhook refuses a past pause", WAIT, || async {
        let (ok, stderr) = apply(manifest("2024-05-01T00:00:00Z", "high"));
        (!ok && stderr.contains("denied the request")).then_some(stderr)
    })
    .await;
    assert!(refused.contains("spec.remediation.pause.until 2024-05-01T00:00:00Z is not in the future"), "{refused}");
    let far = (Timestamp::now() + SignedDuration::from_hours(24 * 40)).round(k8s_openapi::jiff::Unit::Second).unwrap();
    let (ok, stderr) = apply(manifest(&far.to_string(), "high"));
    assert!(!ok && stderr.contains("more than 30 days ahead"), "{stderr}");
    // A short window ahead is admitted; once it has passed, the same pause applies again.
    let soon = (Timestamp::now() + SignedDuration::from_secs(3)).round(k8s_openapi::jiff::Unit::Second).unwrap();
    let (ok, stderr) = apply(manifest(&soon.to_string(), "high"));
    assert!(ok, "a pause ahead: {stderr}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (ok, stderr) = apply(manifest(&soon.to_string(), "critical"));
    assert!(ok, "the same, now past, pause with another change: {stderr}");
    let (ok, stderr) = apply(manifest("2024-05-01T00:00:00Z", "critical"));
    assert!(!ok && stderr.contains("is not in the future"), "moving it into the past: {stderr}");
    configs.delete(&format!("recovery-{ns}"), &Default::default()).await.expect("delete the webhook configuration");
}
