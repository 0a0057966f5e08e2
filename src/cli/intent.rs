//! The intents people write: plan annotations (approve, retry, re-verify, cancel) and a
//! policy's pause. Each names who asked, checks first that it makes sense for the object's
//! state (nothing is written when it does not), and then waits a moment for the controller's
//! answer in status, so the command says what came of it.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::api::RecoveryPolicy;
use crate::api::labels::APPROVED_BY_ANNOTATION;
use crate::api::plan::{PlanPhase, RecoveryPlan, RequestAction, RequestOutcome};

use super::connect::{CliError, Kube, api_error, get};

/// The field manager of every write, so `managedFields` says who changed what.
const MANAGER: &str = "kubectl-recovery";
/// How long a command waits for the controller to answer in status.
const ANSWER_WAIT: Duration = Duration::from_secs(15);
/// The longest pause the admission webhook admits.
const MAX_PAUSE: Duration = Duration::from_secs(30 * 86_400);
/// Annotation Argo CD puts on what it manages (a sync may undo a spec change).
const ARGOCD_TRACKING: &str = "argocd.argoproj.io/tracking-id";

/// A plan intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanIntent {
    /// Approve a plan awaiting approval.
    Approve,
    /// Retry a failed step.
    Retry,
    /// Re-verify now.
    Reverify,
    /// Cancel a waiting plan.
    Cancel,
}

impl PlanIntent {
    fn request(self) -> Option<RequestAction> {
        match self {
            Self::Approve => None,
            Self::Retry => Some(RequestAction::Retry),
            Self::Reverify => Some(RequestAction::Reverify),
            Self::Cancel => Some(RequestAction::Cancel),
        }
    }
}

/// Whether the intent makes sense for a plan in `phase` (pure): the controller would refuse
/// it otherwise, and an annotation it refuses stays on the object as noise.
pub fn check(intent: PlanIntent, name: &str, phase: Option<PlanPhase>) -> Result<(), CliError> {
    let phase_name = phase.map_or_else(|| "new".to_owned(), |p| format!("{p:?}"));
    let refuse =
        |what: &str| Err(CliError::Refused(format!("plan {name} is {phase_name}: {what}; nothing was written")));
    match (intent, phase) {
        (PlanIntent::Approve, Some(PlanPhase::AwaitingApproval)) => Ok(()),
        (PlanIntent::Approve, _) => refuse("only a plan awaiting approval can be approved"),
        (PlanIntent::Retry, Some(PlanPhase::Failed)) => Ok(()),
        (PlanIntent::Retry, _) => refuse("only a failed plan can be retried"),
        (PlanIntent::Reverify, Some(PlanPhase::Executing | PlanPhase::Failed)) => Ok(()),
        (PlanIntent::Reverify, _) => refuse("only a plan verifying, or failed at its verify step, can be re-verified"),
        (
            PlanIntent::Cancel,
            Some(PlanPhase::Completed | PlanPhase::Failed | PlanPhase::NotNeeded | PlanPhase::Cancelled),
        ) => refuse("it has ended"),
        (PlanIntent::Cancel, _) => Ok(()),
    }
}

/// The annotation patch for an intent (pure): approval records who; a request's value is who
/// and when, so asking again is a new request.
pub fn plan_patch(intent: PlanIntent, who: &str, now: Timestamp) -> Value {
    let (key, value) = match intent.request() {
        None => (APPROVED_BY_ANNOTATION, who.to_owned()),
        Some(action) => (action.annotation(), format!("{who} {}", now.as_second())),
    };
    json!({"metadata": {"annotations": {key: value}}})
}

/// Approve, retry, re-verify or cancel a plan.
pub async fn plan(k: &Kube, name: &str, intent: PlanIntent) -> Result<u8, CliError> {
    let api = Api::<RecoveryPlan>::namespaced(k.client.clone(), &k.namespace);
    let plan = get(&api, "RecoveryPlan", "recoveryplans", name, &k.namespace).await?;
    check(intent, name, plan.status.as_ref().and_then(|s| s.phase))?;
    let who = k.whoami().await;
    let patch = plan_patch(intent, &who, Timestamp::now());
    let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    api.patch(name, &pp, &Patch::Merge(&patch)).await.map_err(|e| api_error(e, "recoveryplans"))?;
    let token = patch["metadata"]["annotations"].as_object().and_then(|m| m.values().next()).and_then(Value::as_str);
    let token = token.unwrap_or_default().to_owned();
    // The controller's answer: the phase leaving AwaitingApproval, or the request's record.
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = api.get(name).await.map_err(|e| api_error(e, "recoveryplans"))?;
        let status = now.status.unwrap_or_default();
        match intent.request() {
            None if status.phase != Some(PlanPhase::AwaitingApproval) => {
                println!("plan {name} approved by {who}: now {:?}", status.phase.unwrap_or(PlanPhase::Created));
                return Ok(0);
            }
            None => {}
            Some(action) => {
                if let Some(r) = status.requests.iter().find(|r| r.action == action && r.token == token) {
                    println!("{action:?} of plan {name} by {who}: {:?}: {}", r.outcome, r.message);
                    return Ok(if r.outcome == RequestOutcome::Accepted { 0 } else { 1 });
                }
            }
        }
    }
    println!(
        "asked ({} on plan {name}, by {who}); the controller has not answered within {}s: is it running? \
         `kubectl recovery status` shows when it does",
        patch["metadata"]["annotations"].as_object().and_then(|m| m.keys().next().cloned()).unwrap_or_default(),
        ANSWER_WAIT.as_secs()
    );
    Ok(0)
}

/// The pause patch (pure).
pub fn pause_patch(until: Timestamp, targets: &[String], reason: &str, who: &str) -> Value {
    let mut pause = json!({"until": Time(until), "reason": reason, "requestedBy": who});
    if !targets.is_empty() {
        pause["targets"] = json!(targets);
    }
    json!({"spec": {"remediation": {"pause": pause}}})
}

fn warn_if_gitops(policy: &RecoveryPolicy) {
    if policy.annotations().contains_key(ARGOCD_TRACKING) {
        eprintln!(
            "warning: Argo CD manages policy {}: a sync (or self-heal) puts back what Git says; to keep the pause, \
             commit it to Git or ignore spec.remediation.pause in the Application",
            policy.name_any()
        );
    }
}

/// Pauses a policy's remediation for `duration` (of some targets, or all).
pub async fn pause(k: &Kube, name: &str, duration: Duration, targets: &[String], reason: &str) -> Result<u8, CliError> {
    if duration.is_zero() || duration > MAX_PAUSE {
        return Err(CliError::Refused(format!(
            "--for {} is out of range: a pause lasts more than 0s and at most 30 days",
            humantime::format_duration(duration)
        )));
    }
    if reason.trim().is_empty() {
        return Err(CliError::Refused("--reason is empty: say why, for the Paused condition and the alerts".into()));
    }
    let api = Api::<RecoveryPolicy>::namespaced(k.client.clone(), &k.namespace);
    let policy = get(&api, "RecoveryPolicy", "recoverypolicies", name, &k.namespace).await?;
    let keys: Vec<String> = crate::core::targets::targets(&policy.spec).into_iter().map(|t| t.key).collect();
    let unknown: Vec<&String> = targets.iter().filter(|t| !keys.contains(t)).collect();
    if !unknown.is_empty() {
        return Err(CliError::Refused(format!(
            "not targets of policy {name}: {unknown:?}; its targets are {keys:?}; nothing was written"
        )));
    }
    let who = k.whoami().await;
    let until = Timestamp::now()
        .checked_add(k8s_openapi::jiff::SignedDuration::try_from(duration).map_err(|e| CliError::Io(e.to_string()))?)
        .map_err(|e| CliError::Io(e.to_string()))?;
    let patch = pause_patch(until, targets, reason, &who);
    let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    api.patch(name, &pp, &Patch::Merge(&patch)).await.map_err(|e| api_error(e, "recoverypolicies"))?;
    let scope = if targets.is_empty() { "every target".to_owned() } else { targets.join(", ") };
    println!("policy {name} paused until {} ({scope}), by {who}: {reason}", until.strftime("%Y-%m-%d %H:%M:%S UTC"));
    warn_if_gitops(&policy);
    Ok(0)
}

/// Ends a policy's pause.
pub async fn resume(k: &Kube, name: &str) -> Result<u8, CliError> {
    let api = Api::<RecoveryPolicy>::namespaced(k.client.clone(), &k.namespace);
    let policy = get(&api, "RecoveryPolicy", "recoverypolicies", name, &k.namespace).await?;
    if policy.spec.remediation.pause.is_none() {
        println!("policy {name} is not paused");
        return Ok(0);
    }
    let patch = json!({"spec": {"remediation": {"pause": null}}});
    let pp = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    api.patch(name, &pp, &Patch::Merge(&patch)).await.map_err(|e| api_error(e, "recoverypolicies"))?;
    println!("policy {name} resumed: its plans may act again (the rails still apply)");
    warn_if_gitops(&policy);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::at;

    #[test]
    fn each_intent_is_checked_against_the_plans_phase() {
        use PlanPhase::*;
        let all = [None, Some(Created), Some(AwaitingApproval), Some(Executing), Some(Completed), Some(Failed)];
        let allowed = |intent| -> Vec<Option<PlanPhase>> {
            all.iter().copied().filter(|p| check(intent, "p", *p).is_ok()).collect()
        };
        assert_eq!(allowed(PlanIntent::Approve), [Some(AwaitingApproval)]);
        assert_eq!(allowed(PlanIntent::Retry), [Some(Failed)]);
        assert_eq!(allowed(PlanIntent::Reverify), [Some(Executing), Some(Failed)]);
        assert_eq!(allowed(PlanIntent::Cancel), [None, Some(Created), Some(AwaitingApproval), Some(Executing)]);
        let e = check(PlanIntent::Approve, "shop-plan", Some(Completed)).unwrap_err().to_string();
        assert_eq!(
            e,
            "plan shop-plan is Completed: only a plan awaiting approval can be approved; nothing was written"
        );
    }

    #[test]
    fn patches_name_who_asked() {
        assert_eq!(
            plan_patch(PlanIntent::Approve, "alice", at(0)),
            json!({"metadata": {"annotations": {"recovery.dev/approved-by": "alice"}}})
        );
        assert_eq!(
            plan_patch(PlanIntent::Retry, "alice", at(5)),
            json!({"metadata": {"annotations": {"recovery.dev/retry": "alice 1800000005"}}})
        );
        assert_eq!(
            plan_patch(PlanIntent::Cancel, "bob", at(0))["metadata"]["annotations"]["recovery.dev/cancel"],
            "bob 1800000000"
        );
        let p = pause_patch(at(0), &["ecs/prod/web".into()], "db migration", "alice");
        assert_eq!(
            p,
            json!({"spec": {"remediation": {"pause": {
                "until": "2027-01-15T08:00:00Z", "reason": "db migration", "requestedBy": "alice",
                "targets": ["ecs/prod/web"]}}}})
        );
        assert!(pause_patch(at(0), &[], "r", "a")["spec"]["remediation"]["pause"].get("targets").is_none());
    }
}
