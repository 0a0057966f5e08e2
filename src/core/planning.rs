//! Planning: an incident → the ordered steps of its recovery plan.

use crate::api::incident::{IncidentMetrics, IncidentSpec};
use crate::api::plan::{PlanStep, StepParameters};
use crate::api::policy::RecoveryPolicySpec;

pub use super::kinds::PlanError;
use super::kinds::{self, Template};

/// The steps for an incident: its kind's template (e.g. service → RestartService,
/// VerifyService), the action first, its verification second.
pub fn plan_steps(
    incident: &IncidentSpec,
    metrics: Option<&IncidentMetrics>,
    policy: &RecoveryPolicySpec,
) -> Result<Vec<PlanStep>, PlanError> {
    let base = StepParameters { region: incident.resource.region.clone(), ..StepParameters::default() };
    let Template { act, verify, parameters } =
        kinds::of(incident.resource.kind).plan(incident, metrics, policy, base)?;
    let step = |order, action, parameters| PlanStep { order, action, target: incident.target.clone(), parameters };
    Ok(vec![step(1, act, parameters.clone()), step(2, verify, parameters)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::plan::StepAction;
    use crate::core::targets::targets;
    use crate::core::testing::policy;

    fn incident_for(key: &str) -> IncidentSpec {
        let t = targets(&policy()).into_iter().find(|t| t.key == key).expect("target");
        IncidentSpec {
            id: "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f".into(),
            type_: t.incident_type(),
            severity: t.severity,
            policy: "pol".into(),
            target: t.key.clone(),
            resource: t.resource,
            description: String::new(),
            affected_components: vec![],
        }
    }

    #[test]
    fn templates() {
        let p = policy();
        let cases = [
            ("ecs/prod/checkout", None, [StepAction::RestartService, StepAction::VerifyService]),
            ("rds/prod-db", None, [StepAction::FailoverDatabase, StepAction::VerifyDatabase]),
            ("route53/0b7e2c5e-8b6f-4f43-9d1a-0a6c2d3e4f51", None, [StepAction::UpdateDns, StepAction::VerifyDns]),
        ];
        for (key, metrics, actions) in cases {
            let steps = plan_steps(&incident_for(key), metrics, &p).unwrap();
            let got: Vec<_> = steps.iter().map(|s| (s.order, s.action)).collect();
            assert_eq!(got, vec![(1, actions[0]), (2, actions[1])], "{key}");
            assert!(steps.iter().all(|s| s.target == key));
        }
    }

    #[test]
    fn force_failover_only_for_multi_az() {
        let p = policy();
        let inc = incident_for("rds/prod-db");
        for (multi_az, want) in [(Some(true), true), (Some(false), false), (None, false)] {
            let m = IncidentMetrics { multi_az, ..Default::default() };
            let steps = plan_steps(&inc, Some(&m), &p).unwrap();
            assert_eq!(steps[0].parameters.force_failover, Some(want), "{multi_az:?}");
            assert!(steps[0].parameters.reason.is_some());
        }
    }

    #[test]
    fn dns_alias_keeps_its_own_zone() {
        let steps = plan_steps(&incident_for("route53/0b7e2c5e-8b6f-4f43-9d1a-0a6c2d3e4f51"), None, &policy()).unwrap();
        let params = &steps[0].parameters;
        assert_eq!(params.hosted_zone_id.as_deref(), Some("Z123"));
        assert_eq!(params.alias_target.as_ref().unwrap().hosted_zone_id, "Z456");
    }

    #[test]
    fn network_without_failover_cannot_be_planned() {
        let mut p = policy();
        p.targets.route53_health_checks[0].failover = None;
        let err = plan_steps(&incident_for("route53/0b7e2c5e-8b6f-4f43-9d1a-0a6c2d3e4f51"), None, &p).unwrap_err();
        assert!(matches!(err, PlanError::NoFailover(_)));
        let mut inc = incident_for("ecs/prod/checkout");
        inc.resource.service = None;
        assert_eq!(plan_steps(&inc, None, &p).unwrap_err(), PlanError::MissingField("service"));
    }
}
