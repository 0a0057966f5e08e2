//! Planning: an incident → the ordered steps of its recovery plan.

use crate::api::incident::{IncidentMetrics, IncidentSpec, ResourceKind};
use crate::api::plan::{PlanStep, StepAction, StepParameters};
use crate::api::policy::RecoveryPolicySpec;

/// Why no plan can be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The incident's resource lacks a field its kind needs.
    #[error("incident resource is missing {0}")]
    MissingField(&'static str),
    /// A network incident whose health check has no failover record in the policy.
    #[error("health check {0} has no failover record in the policy, so there is nothing to point DNS at")]
    NoFailover(String),
}

/// The steps for an incident, per the templates:
/// service → RestartService, VerifyService; database → FailoverDatabase, VerifyDatabase;
/// network → UpdateDns, VerifyDns.
pub fn plan_steps(
    incident: &IncidentSpec,
    metrics: Option<&IncidentMetrics>,
    policy: &RecoveryPolicySpec,
) -> Result<Vec<PlanStep>, PlanError> {
    let r = &incident.resource;
    let base = StepParameters { region: r.region.clone(), ..StepParameters::default() };
    let (act, verify, params) = match r.kind {
        ResourceKind::EcsService => (
            StepAction::RestartService,
            StepAction::VerifyService,
            StepParameters {
                cluster: Some(r.cluster.clone().ok_or(PlanError::MissingField("cluster"))?),
                service: Some(r.service.clone().ok_or(PlanError::MissingField("service"))?),
                deployment_before: metrics.and_then(|m| m.primary_deployment.clone()),
                ..base
            },
        ),
        ResourceKind::RdsInstance => {
            let identifier = r.identifier.clone().ok_or(PlanError::MissingField("identifier"))?;
            // ForceFailover is only valid for Multi-AZ; a single-AZ instance gets a plain
            // reboot. Unknown Multi-AZ (no metrics yet) is treated as single-AZ: a plain
            // reboot is safe on both, a forced failover is not.
            let multi_az = metrics.and_then(|m| m.multi_az);
            let reason = match multi_az {
                Some(true) => "Multi-AZ instance: reboot with ForceFailover to the standby",
                Some(false) => "single-AZ instance: plain reboot (ForceFailover needs Multi-AZ)",
                None => "Multi-AZ unknown: plain reboot, which is safe either way",
            };
            (
                StepAction::FailoverDatabase,
                StepAction::VerifyDatabase,
                StepParameters {
                    identifier: Some(identifier),
                    force_failover: Some(multi_az == Some(true)),
                    reason: Some(reason.into()),
                    ..base
                },
            )
        }
        ResourceKind::Route53HealthCheck => {
            let id = r.health_check_id.clone().ok_or(PlanError::MissingField("healthCheckId"))?;
            let failover = policy
                .targets
                .route53_health_checks
                .iter()
                .find(|hc| hc.health_check_id == id)
                .and_then(|hc| hc.failover.clone())
                .ok_or_else(|| PlanError::NoFailover(id.clone()))?;
            (
                StepAction::UpdateDns,
                StepAction::VerifyDns,
                StepParameters {
                    hosted_zone_id: Some(failover.hosted_zone_id),
                    record_name: Some(failover.record_name),
                    record_type: Some(failover.record_type),
                    // The alias keeps its own hosted zone id; the seed reused the record's.
                    alias_target: Some(failover.alias_target),
                    // Read again just before the change: a primary passing again needs none.
                    health_check_id: Some(id),
                    ..base
                },
            )
        }
    };
    let step = |order, action, parameters| PlanStep { order, action, target: incident.target.clone(), parameters };
    Ok(vec![step(1, act, params.clone()), step(2, verify, params)])
}

#[cfg(test)]
mod tests {
    use super::*;
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
