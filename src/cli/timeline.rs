//! `kubectl recovery timeline INCIDENT`: the incident's story in time order, from the
//! incident, its plan (steps with their evidence, requests), its alert ledger and the Events
//! of both. Building it is a pure function of those objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::api::incident::{AlertState, Incident};
use crate::api::plan::{RecoveryPlan, StepPhase};
use crate::core::targets::plan_name;
use crate::core::time::since;

use super::connect::{CliError, Kube, api_error, get};
use super::table::{render, short};
use super::{Output, print_data};

/// One moment of the story.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// When.
    pub at: Timestamp,
    /// Where it comes from: `incident`, `plan`, `step N`, `alert`, `request`, `event`.
    pub source: String,
    /// What happened.
    pub what: String,
}

/// The story and its figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// The incident.
    pub incident: String,
    /// Its target.
    pub target: String,
    /// Its plan, if one was made.
    pub plan: Option<String>,
    /// In time order.
    pub entries: Vec<Entry>,
    /// Detected → first mutating AWS call, in seconds.
    pub seconds_to_first_action: Option<u64>,
    /// Detected → resolved, in seconds.
    pub seconds_to_resolve: Option<u64>,
}

fn evidence(e: &BTreeMap<String, String>) -> String {
    if e.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = e.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(" [{}]", pairs.join(" "))
}

/// Builds the timeline (pure). Events repeat what status says in other words, so only the
/// Events whose reasons status does not carry are kept (a held rail, a refused request, …).
pub fn timeline(incident: &Incident, plan: Option<&RecoveryPlan>, events: &[Event]) -> Timeline {
    let mut entries = vec![];
    let mut push = |at: Option<Timestamp>, source: &str, what: String| {
        if let Some(at) = at {
            entries.push(Entry { at, source: source.into(), what });
        }
    };
    let st = incident.status.clone().unwrap_or_default();
    let detected = st.detected_at.as_ref().map(|t| t.0);
    push(
        detected,
        "incident",
        format!("detected ({}): {}", incident.spec.severity.as_str(), incident.spec.description),
    );
    let mut first_action = None;
    if let Some(plan) = plan {
        let ps = plan.status.clone().unwrap_or_default();
        push(
            plan.metadata.creation_timestamp.as_ref().map(|t| t.0),
            "plan",
            format!("created{}", if plan.spec.dry_run { " (a dry run)" } else { "" }),
        );
        if let Some(by) = &ps.approved_by {
            push(ps.started_at.as_ref().map(|t| t.0), "plan", format!("approved by {by}"));
        }
        for step in &plan.spec.steps {
            let Some(s) = ps.steps.iter().find(|s| s.order == step.order) else { continue };
            let name = format!("step {}", step.order);
            let started = s.started_at.as_ref().map(|t| t.0);
            if step.action.is_mutating() && s.attempts > 0 {
                first_action = first_action.or(started);
            }
            push(started, &name, format!("{:?} started", step.action));
            if s.attempts > 1 {
                push(s.attempt_started_at.as_ref().map(|t| t.0), &name, format!("attempt {}", s.attempts));
            }
            let ended = match s.phase {
                StepPhase::Completed => "completed",
                StepPhase::Failed => "failed",
                StepPhase::Skipped => "skipped",
                StepPhase::Pending | StepPhase::InProgress => continue,
            };
            let message = s.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
            let took = match (started, s.completed_at.as_ref()) {
                (Some(a), Some(b)) => format!(" after {}", short(since(b.0, a))),
                _ => String::new(),
            };
            push(
                s.completed_at.as_ref().map(|t| t.0),
                &name,
                format!("{:?} {ended}{took}{message}{}", step.action, evidence(&s.evidence)),
            );
        }
        for r in &ps.requests {
            push(Some(r.at.0), "request", format!("{:?} by {}: {:?} ({})", r.action, r.by, r.outcome, r.message));
        }
        if let (Some(phase), Some(done)) = (ps.phase, ps.completed_at.as_ref()) {
            let message = ps.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
            push(Some(done.0), "plan", format!("{phase:?}{message}"));
        }
    }
    for a in &st.alerts {
        let at = a.sent_at.as_ref().or(a.last_attempt_at.as_ref()).map(|t| t.0);
        let how = match a.state {
            AlertState::Sent => "sent".to_owned(),
            AlertState::Sending => format!("sending (attempt {})", a.attempts),
            AlertState::Failed => format!("failed after {} attempt(s)", a.attempts),
        };
        let error = a.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        let thread = a.slack_message.as_ref().map(|m| format!(" (slack ts {})", m.ts)).unwrap_or_default();
        push(at, "alert", format!("{:?} via {:?} {how}{thread}{error}", a.alert, a.channel));
    }
    let resolved = st.resolved_at.as_ref().map(|t| t.0);
    push(resolved, "incident", "resolved".into());
    // Status records these moments itself; Events add what it does not keep.
    use crate::api::conditions::reason as r;
    const IN_STATUS: &[&str] = &[
        r::INCIDENT_OPENED,
        r::INCIDENT_RESOLVED,
        r::PLAN_CREATED,
        r::STEP_STARTED,
        r::STEP_COMPLETED,
        r::STEP_FAILED,
        r::STEP_SKIPPED,
        r::PLAN_COMPLETED,
        r::PLAN_FAILED,
        r::PLAN_NOT_NEEDED,
        r::PLAN_CANCELLED,
        r::REQUEST_ACCEPTED,
        r::REQUEST_REFUSED,
    ];
    for e in events {
        let reason = e.reason.clone().unwrap_or_default();
        if IN_STATUS.contains(&reason.as_str()) {
            continue;
        }
        // Whole seconds, as status keeps its times: within a second, status's own order
        // (which is the story's) stands, and Events follow it.
        let at = e
            .event_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
            .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
            .and_then(|t| Timestamp::from_second(t.as_second()).ok());
        let times = e.series.as_ref().and_then(|s| s.count).or(e.count).filter(|n| *n > 1);
        let repeat = times.map(|n| format!(" (x{n})")).unwrap_or_default();
        let kind = e.type_.as_deref().filter(|t| *t != "Normal").map(|t| format!("{t} ")).unwrap_or_default();
        let message = e.message.clone().unwrap_or_default();
        push(at, "event", format!("{kind}{reason}: {message}{repeat}"));
    }
    entries.sort_by_key(|e| e.at);
    let secs = |a: Option<Timestamp>| Some(since(a?, detected?).as_secs());
    Timeline {
        incident: incident.name_any(),
        target: incident.spec.target.clone(),
        plan: plan.map(|p| p.name_any()),
        entries,
        seconds_to_first_action: secs(first_action),
        seconds_to_resolve: secs(resolved),
    }
}

/// Renders the timeline: time, offset from detection, source, what; then the durations.
pub fn table(t: &Timeline) -> String {
    let start = t.entries.first().map(|e| e.at);
    let rows: Vec<Vec<String>> = t
        .entries
        .iter()
        .map(|e| {
            let offset = start.map(|s| format!("+{}", short(since(e.at, s)))).unwrap_or_default();
            vec![e.at.strftime("%Y-%m-%d %H:%M:%S").to_string(), offset, e.source.clone(), e.what.clone()]
        })
        .collect();
    let mut out = format!(
        "Incident {} ({}){}\n\n",
        t.incident,
        t.target,
        t.plan.as_ref().map(|p| format!(", plan {p}")).unwrap_or_default()
    );
    out.push_str(&render(&["TIME (UTC)", "OFFSET", "SOURCE", "WHAT"], &rows));
    let d = |s: Option<u64>| s.map_or_else(|| "-".into(), |s| short(std::time::Duration::from_secs(s)));
    out.push_str(&format!(
        "\nFirst action {} after detection; resolved {} after detection.\n",
        d(t.seconds_to_first_action),
        d(t.seconds_to_resolve)
    ));
    out
}

/// Reads the incident, its plan and their Events, and prints the timeline.
pub async fn run(k: &Kube, name: &str, out: Output) -> Result<u8, CliError> {
    let ns = &k.namespace;
    let incident = get(&Api::<Incident>::namespaced(k.client.clone(), ns), "Incident", "incidents", name, ns).await?;
    let plan_of = incident.status.as_ref().and_then(|s| s.plan.clone()).unwrap_or_else(|| plan_name(name));
    let plan = Api::<RecoveryPlan>::namespaced(k.client.clone(), ns)
        .get_opt(&plan_of)
        .await
        .map_err(|e| api_error(e, "recoveryplans"))?;
    let events_api = Api::<Event>::namespaced(k.client.clone(), ns);
    let mut events = vec![];
    for (kind, object) in [("Incident", Some(name.to_owned())), ("RecoveryPlan", plan.as_ref().map(|p| p.name_any()))] {
        let Some(object) = object else { continue };
        let lp = ListParams::default().fields(&format!("involvedObject.kind={kind},involvedObject.name={object}"));
        events.extend(events_api.list(&lp).await.map_err(|e| api_error(e, "events"))?.items);
    }
    let t = timeline(&incident, plan.as_ref(), &events);
    match out {
        Output::Table => print!("{}", table(&t)),
        _ => print_data(&t, out)?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::incident::{AlertChannel, AlertKind, AlertRecord, IncidentPhase, IncidentStatus};
    use crate::api::plan::{PlanPhase, PlanStep, RecoveryPlanSpec, RecoveryPlanStatus, StepAction, StepStatus};
    use crate::core::testing::at;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

    fn incident() -> Incident {
        let mut i: Incident = serde_json::from_value(serde_json::json!({
            "apiVersion": "recovery.dev/v1alpha1", "kind": "Incident",
            "metadata": {"name": "shop-ecs-1-0", "namespace": "prod"},
            "spec": {"id": "id", "type": "service", "severity": "high", "policy": "shop", "target": "ecs/prod/web",
                     "resource": {"kind": "EcsService", "region": "us-east-1", "cluster": "prod", "service": "web"},
                     "description": "web runs 1 of 2"}
        }))
        .unwrap();
        i.status = Some(IncidentStatus {
            phase: Some(IncidentPhase::Resolved),
            detected_at: Some(Time(at(0))),
            resolved_at: Some(Time(at(120))),
            alerts: vec![AlertRecord {
                alert: AlertKind::Detected,
                channel: AlertChannel::Slack,
                state: AlertState::Sent,
                attempts: 1,
                last_attempt_at: Some(Time(at(1))),
                sent_at: Some(Time(at(2))),
                error: None,
                slack_message: None,
            }],
            ..Default::default()
        });
        i
    }

    fn plan() -> RecoveryPlan {
        let step =
            |order, action| PlanStep { order, action, target: "ecs/prod/web".into(), parameters: Default::default() };
        let mut p = RecoveryPlan::new(
            "shop-ecs-1-0-plan",
            RecoveryPlanSpec {
                incident: "shop-ecs-1-0".into(),
                incident_id: "id".into(),
                policy: "shop".into(),
                dry_run: false,
                steps: vec![step(1, StepAction::RestartService), step(2, StepAction::VerifyService)],
            },
        );
        p.metadata.creation_timestamp = Some(Time(at(3)));
        let done = |order, started, ended, evidence: &[(&str, &str)]| StepStatus {
            order,
            phase: StepPhase::Completed,
            started_at: Some(Time(at(started))),
            attempt_started_at: Some(Time(at(started))),
            completed_at: Some(Time(at(ended))),
            next_attempt_at: None,
            attempts: 1,
            message: Some(format!("step {order} done")),
            evidence: evidence.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        };
        p.status = Some(RecoveryPlanStatus {
            phase: Some(PlanPhase::Completed),
            steps: vec![done(1, 5, 6, &[("deploymentId", "d-2")]), done(2, 6, 100, &[])],
            completed_at: Some(Time(at(100))),
            message: Some("every step completed".into()),
            ..Default::default()
        });
        p
    }

    fn event(reason: &str, at_secs: i64) -> Event {
        Event {
            reason: Some(reason.into()),
            message: Some(format!("{reason} message")),
            type_: Some("Warning".into()),
            event_time: Some(MicroTime(at(at_secs))),
            ..Default::default()
        }
    }

    #[test]
    fn the_story_is_in_time_order_with_durations() {
        let events = [event("StepStarted", 5), event("Cooldown", 4)];
        let t = timeline(&incident(), Some(&plan()), &events);
        let lines: Vec<(i64, &str, &str)> = t
            .entries
            .iter()
            .map(|e| (e.at.as_second() - at(0).as_second(), e.source.as_str(), e.what.as_str()))
            .collect();
        assert_eq!(
            lines,
            vec![
                (0, "incident", "detected (high): web runs 1 of 2"),
                (2, "alert", "Detected via Slack sent"),
                (3, "plan", "created"),
                (4, "event", "Warning Cooldown: Cooldown message"),
                (5, "step 1", "RestartService started"),
                (6, "step 1", "RestartService completed after 1s: step 1 done [deploymentId=d-2]"),
                (6, "step 2", "VerifyService started"),
                (100, "step 2", "VerifyService completed after 1m34s: step 2 done"),
                (100, "plan", "Completed: every step completed"),
                (120, "incident", "resolved"),
            ],
            "an Event status already tells (StepStarted) is left out"
        );
        assert_eq!((t.seconds_to_first_action, t.seconds_to_resolve), (Some(5), Some(120)));
        let shown = table(&t);
        assert!(
            shown.starts_with("Incident shop-ecs-1-0 (ecs/prod/web), plan shop-ecs-1-0-plan\n\nTIME (UTC)"),
            "{shown}"
        );
        assert!(shown.ends_with("First action 5s after detection; resolved 2m0s after detection.\n"), "{shown}");
    }

    #[test]
    fn an_incident_without_a_plan_has_no_first_action() {
        let t = timeline(&incident(), None, &[]);
        assert_eq!(t.plan, None);
        assert_eq!(t.seconds_to_first_action, None);
        assert_eq!(t.entries.len(), 3);
    }
}
