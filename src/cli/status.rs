//! `kubectl recovery status`: policies, the health of their targets, open incidents, their
//! plans and what holds them. The report is a pure function of the listed objects.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::api::common::{TRUE, condition};
use crate::api::conditions::{plan as plan_conditions, policy as policy_conditions};
use crate::api::incident::{Incident, IncidentPhase};
use crate::api::plan::{PlanPhase, RecoveryPlan};
use crate::api::{RecoveryPolicy, Severity};
use crate::core::detection::Health;
use crate::core::targets::plan_name;

use super::connect::{CliError, Kube, api_error};
use super::table::{age, render};
use super::{EXIT_UNHEALTHY, Output};

/// Everything `status` shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// One row a policy.
    pub policies: Vec<PolicyRow>,
    /// Targets: all of the one policy asked for, else only those not healthy.
    pub targets: Vec<TargetRow>,
    /// Open incidents.
    pub incidents: Vec<IncidentRow>,
    /// Whether any target is unhealthy or any incident open (the exit status says so too).
    pub unhealthy: bool,
}

/// A policy.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Remediation mode.
    pub mode: String,
    /// The Ready condition's status (`Unknown` before the first probe).
    pub ready: String,
    /// Targets named.
    pub total: u32,
    /// Healthy at the last probe.
    pub healthy: u32,
    /// Unhealthy at the last probe.
    pub unhealthy: u32,
    /// Could not be told.
    pub unknown: u32,
    /// Open incidents.
    pub open_incidents: u32,
    /// `Allowed`, or the rail holding remediation policy-wide, with its message.
    pub remediation: String,
    /// The pause in force, in a sentence.
    pub paused: Option<String>,
    /// When the policy was last probed.
    pub last_probe: Option<Timestamp>,
}

/// A target of a policy.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRow {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy.
    pub policy: String,
    /// The target's key.
    pub target: String,
    /// From the streaks in the policy's status.
    pub health: Health,
    /// Failing answers in a row, and the policy's failureThreshold.
    pub failing: String,
    /// When the failing streak began.
    pub unhealthy_since: Option<Timestamp>,
    /// The open incident, if any.
    pub incident: Option<String>,
}

/// An open incident and its plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The target.
    pub target: String,
    /// Severity.
    pub severity: Severity,
    /// Phase.
    pub phase: String,
    /// When it was detected.
    pub detected_at: Option<Timestamp>,
    /// Its plan.
    pub plan: Option<String>,
    /// The plan's phase.
    pub plan_phase: Option<String>,
    /// Steps completed of all.
    pub progress: Option<String>,
    /// What holds the plan (a rail, or a person's approval), with the command that frees it
    /// when there is one.
    pub held: Option<String>,
}

/// Builds the report (pure).
pub fn report(
    policies: &[RecoveryPolicy],
    incidents: &[Incident],
    plans: &[RecoveryPlan],
    only: Option<&str>,
    now: Timestamp,
) -> Report {
    let mut out = Report { policies: vec![], targets: vec![], incidents: vec![], unhealthy: false };
    for p in policies.iter().filter(|p| only.is_none_or(|o| p.name_any() == o)) {
        let ns = p.namespace().unwrap_or_default();
        let status = p.status.clone().unwrap_or_default();
        let counts = status.targets.clone().unwrap_or_default();
        let held = condition(&status.conditions, policy_conditions::REMEDIATION_ALLOWED)
            .filter(|c| c.status != TRUE)
            .map(|c| format!("{}: {}", c.reason, c.message));
        let paused = crate::core::pause::state(&p.spec, now);
        out.policies.push(PolicyRow {
            namespace: ns.clone(),
            name: p.name_any(),
            mode: format!("{:?}", p.spec.remediation.mode),
            ready: condition(&status.conditions, policy_conditions::READY)
                .map_or_else(|| "Unknown".into(), |c| c.status.clone()),
            total: counts.total,
            healthy: counts.healthy,
            unhealthy: counts.unhealthy,
            unknown: counts.unknown,
            open_incidents: status.open_incidents,
            remediation: held.unwrap_or_else(|| "Allowed".into()),
            paused: paused.in_force.then(|| {
                let until = paused.until.map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default();
                format!("until {until}, {} target(s)", paused.paused_targets)
            }),
            last_probe: status.last_probe_time.as_ref().map(|t| t.0),
        });
        out.unhealthy |= counts.unhealthy > 0 || status.open_incidents > 0;
        let threshold = p.spec.detection.failure_threshold;
        for t in &status.target_states {
            let health = Health::of_streak(t);
            if only.is_none() && health == Health::Healthy && t.open_incident.is_none() {
                continue;
            }
            out.targets.push(TargetRow {
                namespace: ns.clone(),
                policy: p.name_any(),
                target: t.target.clone(),
                health,
                failing: format!("{}/{threshold}", t.consecutive_failures),
                unhealthy_since: t.unhealthy_since.as_ref().map(|m| m.0),
                incident: t.open_incident.clone(),
            });
        }
    }
    let shown: Vec<(String, String)> = out.policies.iter().map(|p| (p.namespace.clone(), p.name.clone())).collect();
    for inc in incidents {
        let ns = inc.namespace().unwrap_or_default();
        let status = inc.status.clone().unwrap_or_default();
        if status.phase == Some(IncidentPhase::Resolved) || !shown.contains(&(ns.clone(), inc.spec.policy.clone())) {
            continue;
        }
        out.unhealthy = true;
        let name = status.plan.clone().unwrap_or_else(|| plan_name(&inc.name_any()));
        let plan = plans.iter().find(|p| p.name_any() == name && p.namespace().as_deref() == Some(ns.as_str()));
        let plan_status = plan.and_then(|p| p.status.clone());
        let phase = plan_status.as_ref().and_then(|s| s.phase);
        let held = plan_status.as_ref().and_then(|s| {
            let rail = condition(&s.conditions, plan_conditions::HELD).filter(|c| c.status == TRUE);
            match (phase, rail) {
                (_, Some(c)) => Some(format!("{}: {}", c.reason, c.message)),
                (Some(PlanPhase::AwaitingApproval), None) => {
                    Some(format!("awaiting approval: kubectl recovery approve {name} -n {ns}"))
                }
                (Some(PlanPhase::Failed), None) => Some(format!("failed: kubectl recovery retry {name} -n {ns}")),
                _ => None,
            }
        });
        out.incidents.push(IncidentRow {
            namespace: ns.clone(),
            name: inc.name_any(),
            target: inc.spec.target.clone(),
            severity: inc.spec.severity,
            phase: status.phase.map_or_else(|| "Pending".into(), |p| format!("{p:?}")),
            detected_at: status.detected_at.as_ref().map(|t| t.0),
            plan: plan.map(|p| p.name_any()),
            plan_phase: phase.map(|p| format!("{p:?}")),
            progress: plan_status.as_ref().and_then(|s| s.progress.clone()),
            held,
        });
    }
    out
}

/// Renders the report as three tables (an empty one is left out).
pub fn table(r: &Report, with_namespace: bool, now: Timestamp) -> String {
    if r.policies.is_empty() {
        return "No RecoveryPolicies found.\n".into();
    }
    let ns = |n: &str| if with_namespace { vec![n.to_owned()] } else { vec![] };
    let head = |cols: &[&'static str]| -> Vec<&'static str> {
        let mut h = if with_namespace { vec!["NAMESPACE"] } else { vec![] };
        h.extend(cols);
        h
    };
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = r
        .policies
        .iter()
        .map(|p| {
            let mut row = ns(&p.namespace);
            row.extend([
                p.name.clone(),
                p.mode.clone(),
                p.ready.clone(),
                format!("{}/{}", p.healthy, p.total),
                p.unhealthy.to_string(),
                p.unknown.to_string(),
                p.open_incidents.to_string(),
                p.remediation.clone(),
                dash(&p.paused),
                age(p.last_probe, now),
            ]);
            row
        })
        .collect();
    let mut out = render(
        &head(&[
            "POLICY",
            "MODE",
            "READY",
            "HEALTHY",
            "UNHEALTHY",
            "UNKNOWN",
            "INCIDENTS",
            "REMEDIATION",
            "PAUSED",
            "LAST PROBE",
        ]),
        &rows,
    );
    if !r.targets.is_empty() {
        let rows: Vec<Vec<String>> = r
            .targets
            .iter()
            .map(|t| {
                let mut row = ns(&t.namespace);
                row.extend([
                    t.policy.clone(),
                    t.target.clone(),
                    format!("{:?}", t.health),
                    t.failing.clone(),
                    age(t.unhealthy_since, now),
                    dash(&t.incident),
                ]);
                row
            })
            .collect();
        out.push('\n');
        out.push_str(&render(&head(&["POLICY", "TARGET", "HEALTH", "FAILING", "SINCE", "INCIDENT"]), &rows));
    }
    if !r.incidents.is_empty() {
        let rows: Vec<Vec<String>> = r
            .incidents
            .iter()
            .map(|i| {
                let mut row = ns(&i.namespace);
                row.extend([
                    i.name.clone(),
                    i.target.clone(),
                    i.severity.as_str().to_owned(),
                    i.phase.clone(),
                    age(i.detected_at, now),
                    dash(&i.plan),
                    dash(&i.plan_phase),
                    dash(&i.progress),
                    dash(&i.held),
                ]);
                row
            })
            .collect();
        out.push('\n');
        out.push_str(&render(
            &head(&["INCIDENT", "TARGET", "SEVERITY", "PHASE", "AGE", "PLAN", "PLAN PHASE", "STEPS", "HELD"]),
            &rows,
        ));
    }
    out
}

async fn gather(k: &Kube, only: Option<&str>) -> Result<Report, CliError> {
    fn api<K>(k: &Kube) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        if k.all_namespaces { Api::all(k.client.clone()) } else { Api::namespaced(k.client.clone(), &k.namespace) }
    }
    let lp = ListParams::default();
    let policies = api::<RecoveryPolicy>(k).list(&lp).await.map_err(|e| api_error(e, "recoverypolicies"))?.items;
    if let Some(name) = only
        && !policies.iter().any(|p| p.name_any() == name)
    {
        return Err(CliError::NotFound {
            kind: "RecoveryPolicy",
            name: name.to_owned(),
            namespace: k.namespace.clone(),
            hint: " (`kubectl recovery status` lists every policy; -n picks another namespace)".into(),
        });
    }
    let incidents = api::<Incident>(k).list(&lp).await.map_err(|e| api_error(e, "incidents"))?.items;
    let plans = api::<RecoveryPlan>(k).list(&lp).await.map_err(|e| api_error(e, "recoveryplans"))?.items;
    Ok(report(&policies, &incidents, &plans, only, Timestamp::now()))
}

/// One print of the report. Under `--watch` each print is a document a script can split on:
/// a JSON object on one line (JSON Lines), a YAML document after `---`, a table after a
/// `--- HH:MM:SS` line (the first print has none).
fn show(r: &Report, k: &Kube, out: Output, watching: bool, first: bool) -> Result<String, CliError> {
    let io = |e: String| CliError::Io(e);
    Ok(match (out, watching) {
        (Output::Table, _) => {
            let stamp = if first { String::new() } else { format!("--- {}\n", Timestamp::now().strftime("%H:%M:%S")) };
            stamp + &table(r, k.all_namespaces, Timestamp::now())
        }
        (Output::Json, false) => serde_json::to_string_pretty(r).map_err(|e| io(e.to_string()))? + "\n",
        (Output::Json, true) => serde_json::to_string(r).map_err(|e| io(e.to_string()))? + "\n",
        (Output::Yaml, false) => serde_norway::to_string(r).map_err(|e| io(e.to_string()))?,
        (Output::Yaml, true) => "---\n".to_owned() + &serde_norway::to_string(r).map_err(|e| io(e.to_string()))?,
    })
}

/// Prints the report once, or on every change with `watch`; the exit status says whether
/// anything is unhealthy (as of the last print).
pub async fn run(k: &Kube, only: Option<&str>, watch: bool, every: Duration, out: Output) -> Result<u8, CliError> {
    let code = |r: &Report| if r.unhealthy { EXIT_UNHEALTHY } else { 0 };
    let first = gather(k, only).await?;
    if !watch {
        print!("{}", show(&first, k, out, false, true)?);
        return Ok(code(&first));
    }
    // Ages change every second; a new print is for a change of state, not of ages.
    let mut last = first;
    print!("{}", show(&last, k, out, true, true)?);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(code(&last)),
            _ = tokio::time::sleep(every) => {}
        }
        let next = gather(k, only).await?;
        let same = Report { policies: strip(&next.policies), ..next.clone() }
            == Report { policies: strip(&last.policies), ..last.clone() };
        if !same {
            print!("{}", show(&next, k, out, true, false)?);
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
        last = next;
    }
}

/// Policies without their last probe time (it moves every cycle).
fn strip(rows: &[PolicyRow]) -> Vec<PolicyRow> {
    rows.iter().map(|p| PolicyRow { last_probe: None, ..p.clone() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::set_condition;
    use crate::api::policy::{RecoveryPolicyStatus, TargetCounts, TargetState};
    use crate::core::testing::{at, policy};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn shop(unhealthy: u32) -> RecoveryPolicy {
        let mut p = RecoveryPolicy::new("shop", policy());
        p.metadata.namespace = Some("prod".into());
        let mut status = RecoveryPolicyStatus {
            targets: Some(TargetCounts { total: 4, healthy: 4 - unhealthy, unhealthy, unknown: 0 }),
            open_incidents: unhealthy.min(1),
            last_probe_time: Some(Time(at(95))),
            target_states: vec![
                TargetState { target: "ecs/prod/checkout".into(), consecutive_successes: 3, ..Default::default() },
                TargetState {
                    target: "ecs/prod/cart".into(),
                    consecutive_failures: unhealthy,
                    consecutive_successes: u32::from(unhealthy == 0),
                    open_incident: (unhealthy > 0).then(|| "shop-ecs-1-0".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        set_condition(&mut status.conditions, policy_conditions::READY, true, "Probing", "ok", None, at(0));
        p.status = Some(status);
        p
    }

    #[test]
    fn a_healthy_fleet_lists_policies_only_and_exits_zero() {
        let r = report(&[shop(0)], &[], &[], None, at(100));
        assert!(!r.unhealthy);
        assert!(r.targets.is_empty() && r.incidents.is_empty());
        assert_eq!(
            table(&r, false, at(100)),
            "POLICY  MODE       READY  HEALTHY  UNHEALTHY  UNKNOWN  INCIDENTS  REMEDIATION  PAUSED  LAST PROBE\n\
             shop    Automatic  True   4/4      0          0        0          Allowed      -       5s\n"
        );
        // One policy asked for: every target, healthy ones too.
        assert_eq!(report(&[shop(0)], &[], &[], Some("shop"), at(100)).targets.len(), 2);
    }

    #[test]
    fn an_unhealthy_target_its_incident_and_what_holds_its_plan() {
        let incident: Incident = serde_json::from_value(serde_json::json!({
            "apiVersion": "recovery.dev/v1alpha1", "kind": "Incident",
            "metadata": {"name": "shop-ecs-1-0", "namespace": "prod"},
            "spec": {"id": "id", "type": "service", "severity": "high", "policy": "shop", "target": "ecs/prod/cart",
                     "resource": {"kind": "EcsService", "region": "us-east-1", "cluster": "prod", "service": "cart"},
                     "description": "cart is down"},
            "status": {"phase": "Investigating", "detectedAt": "2027-01-15T08:00:10Z"}
        }))
        .unwrap();
        let mut plan: RecoveryPlan = serde_json::from_value(serde_json::json!({
            "apiVersion": "recovery.dev/v1alpha1", "kind": "RecoveryPlan",
            "metadata": {"name": "shop-ecs-1-0-plan", "namespace": "prod"},
            "spec": {"incident": "shop-ecs-1-0", "incidentId": "id", "policy": "shop", "steps": []},
            "status": {"phase": "Created", "progress": "0/2"}
        }))
        .unwrap();
        let st = plan.status.as_mut().unwrap();
        set_condition(&mut st.conditions, plan_conditions::HELD, true, "Cooldown", "cooling down for 4m", None, at(0));
        let r = report(&[shop(1)], &[incident], &[plan], None, at(100));
        assert!(r.unhealthy);
        assert_eq!(r.targets.len(), 1, "only targets that are not healthy");
        assert_eq!((r.targets[0].health, r.targets[0].failing.as_str()), (Health::Unhealthy, "1/2"));
        let i = &r.incidents[0];
        assert_eq!(i.held.as_deref(), Some("Cooldown: cooling down for 4m"));
        assert_eq!((i.plan_phase.as_deref(), i.progress.as_deref()), (Some("Created"), Some("0/2")));
        let shown = table(&r, true, at(100));
        assert!(
            shown.contains("\n\nNAMESPACE  POLICY  TARGET         HEALTH     FAILING  SINCE  INCIDENT\n"),
            "{shown}"
        );
        assert!(shown.contains("prod       shop-ecs-1-0  ecs/prod/cart  high      Investigating  1m30s"), "{shown}");
    }
}
