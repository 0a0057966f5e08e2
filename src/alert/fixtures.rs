//! A realistic alert for the unit tests: an ECS service incident with a plan, resolved 4m 12s
//! after detection.

use k8s_openapi::jiff::Timestamp;

use super::Alert;
use crate::api::Severity;
use crate::api::incident::{AlertKind, AwsResource, IncidentMetrics, IncidentSpec, IncidentType, ResourceKind};
use crate::api::policy::Locale;

pub(crate) const ID: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

pub(crate) fn alert(kind: AlertKind) -> Alert {
    let detected = Timestamp::from_second(1_700_000_000).unwrap();
    Alert {
        kind,
        namespace: "prod".into(),
        incident_name: "ecs-prod-checkout-1".into(),
        incident: IncidentSpec {
            id: ID.into(),
            type_: IncidentType::Service,
            severity: Severity::High,
            policy: "prod-watch".into(),
            target: "ecs/prod/checkout".into(),
            resource: AwsResource {
                kind: ResourceKind::EcsService,
                region: "us-east-1".into(),
                cluster: Some("prod".into()),
                service: Some("checkout".into()),
                identifier: None,
                health_check_id: None,
            },
            description: "ECS service checkout in cluster prod runs 1 of 3 desired tasks (2 pending)".into(),
            affected_components: vec!["ecs:prod/checkout".into()],
        },
        metrics: Some(IncidentMetrics {
            running_count: Some(1),
            desired_count: Some(3),
            pending_count: Some(2),
            recent_events: vec!["(service checkout) has started 2 tasks: (task a) (task b).".into()],
            ..Default::default()
        }),
        plan_name: Some("ecs-prod-checkout-1-plan".into()),
        plan_summary: Some("ForceNewDeployment of checkout succeeded; 3 of 3 tasks running".into()),
        detected_at: Some(detected),
        resolved_at: Some(Timestamp::from_second(1_700_000_252).unwrap()),
        locale: Locale::En,
        slack_channel: Some("#incidents".into()),
        paused: None,
    }
}
