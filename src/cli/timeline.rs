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
            format!("plan {} created{}", plan.name_any(), if plan.spec.dry_run { " (dry run)" } else { "" }),
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
            push(Some(done.0), "plan", format!("plan {phase:?}{message}"));
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
        let at = e
            .event_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
            .or_else(|| e.last_timestamp.as_ref().map(|t| t.0));
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
