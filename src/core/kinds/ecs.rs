//! ECS services: healthy while `runningCount >= desiredCount`; a restart is
//! `UpdateService(forceNewDeployment)`, and its effect is a new deployment.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::Severity;
use crate::api::incident::{AwsResource, IncidentMetrics, IncidentSpec, ResourceKind};
use crate::api::plan::{StepAction, StepParameters};
use crate::api::policy::{Locale, RecoveryPolicySpec};
use crate::core::outcomes::{ActionOutcome, Probe};

use super::{Place, PlanError, Target, TargetKind, Template, detail, evidence, field, is_one_of, not_needed, resource};
use crate::core::events::{Envelope, Heard, arn_tail};

/// The kind.
pub struct Ecs;

/// The key of a service: `ecs/<cluster>/<service>`.
pub fn key(cluster: &str, service: &str) -> String {
    format!("ecs/{cluster}/{service}")
}

/// ECS events this kind hears.
const HEARS: [(&str, &str); 3] = [
    ("aws.ecs", "ECS Service Action"),
    ("aws.ecs", "ECS Deployment State Change"),
    ("aws.ecs", "ECS Task State Change"),
];

impl TargetKind for Ecs {
    fn resource_kind(&self) -> ResourceKind {
        ResourceKind::EcsService
    }

    fn targets(&self, spec: &RecoveryPolicySpec) -> Vec<Target> {
        let groups = &spec.targets.ecs_services;
        let services = groups.iter().flat_map(|g| g.services.iter().map(move |s| (g, s)));
        services
            .map(|(group, service)| Target {
                key: key(&group.cluster, service),
                resource: AwsResource {
                    cluster: Some(group.cluster.clone()),
                    service: Some(service.clone()),
                    ..resource(ResourceKind::EcsService, &spec.aws.region)
                },
                severity: group.severity.unwrap_or(Severity::High),
            })
            .collect()
    }

    fn plan(
        &self,
        incident: &IncidentSpec,
        metrics: Option<&IncidentMetrics>,
        _policy: &RecoveryPolicySpec,
        base: StepParameters,
    ) -> Result<Template, PlanError> {
        let r = &incident.resource;
        let parameters = StepParameters {
            cluster: Some(field(&r.cluster, "cluster")?),
            service: Some(field(&r.service, "service")?),
            // The restart's effect is a deployment other than this one.
            deployment_before: metrics.and_then(|m| m.primary_deployment.clone()),
            ..base
        };
        Ok(Template { act: StepAction::RestartService, verify: StepAction::VerifyService, parameters })
    }

    fn describe_incident(&self, r: &AwsResource, m: &IncidentMetrics) -> String {
        format!(
            "ECS service {} in cluster {} runs {} of {} desired tasks ({} pending)",
            r.service.as_deref().unwrap_or_default(),
            r.cluster.as_deref().unwrap_or_default(),
            m.running_count.unwrap_or_default(),
            m.desired_count.unwrap_or_default(),
            m.pending_count.unwrap_or_default()
        )
    }

    fn affected(&self, r: &AwsResource, _policy: &RecoveryPolicySpec) -> Vec<String> {
        vec![format!("ecs:{}/{}", r.cluster.as_deref().unwrap_or_default(), r.service.as_deref().unwrap_or_default())]
    }

    fn describe_act(&self, p: &StepParameters) -> String {
        format!(
            "call ECS UpdateService(cluster={}, service={}, forceNewDeployment=true)",
            p.cluster.as_deref().unwrap_or_default(),
            p.service.as_deref().unwrap_or_default()
        )
    }

    fn noun(&self, locale: Locale) -> &'static str {
        match locale {
            Locale::En => "ECS service",
            Locale::Ko => "ECS 서비스",
        }
    }

    fn alert_resource(&self, r: &AwsResource) -> (String, Vec<Place>) {
        let cluster = Place::Cluster(r.cluster.clone().unwrap_or_else(|| "?".into()));
        (r.service.clone().unwrap_or_else(|| "?".into()), vec![cluster, Place::Region(r.region.clone())])
    }

    fn hears(&self) -> &'static [(&'static str, &'static str)] {
        &HEARS
    }

    /// Service actions and deployment changes name the service by ARN (with its cluster, or,
    /// in the old ARN format, without: then `clusterArn` says it) and are trouble when WARN
    /// or ERROR; a task's change names its service in `group` and is trouble when the task
    /// stopped because it failed to start or its essential container exited.
    fn hear(&self, event: &Envelope) -> Vec<Heard> {
        if !is_one_of(&HEARS, event) {
            return Vec::new();
        }
        let cluster_of_detail = arn_tail(detail(event, "clusterArn"));
        let heard =
            |cluster: &str, service: &str, trouble: bool| Heard { key: key(cluster, service), trouble, global: false };
        if event.detail_type == "ECS Task State Change" {
            let Some(service) = detail(event, "group").strip_prefix("service:") else { return Vec::new() };
            let stopped = detail(event, "lastStatus") == "STOPPED";
            let failed = matches!(detail(event, "stopCode"), "TaskFailedToStart" | "EssentialContainerExited");
            return vec![heard(cluster_of_detail, service, stopped && failed)];
        }
        let trouble = matches!(detail(event, "eventType"), "WARN" | "ERROR");
        event
            .resources
            .iter()
            .filter_map(|arn| {
                let path = arn.split_once(":service/")?.1;
                Some(match path.split_once('/') {
                    Some((cluster, service)) => heard(cluster, service, trouble),
                    None => heard(cluster_of_detail, path, trouble),
                })
            })
            .filter(|h| !h.key.starts_with("ecs//"))
            .collect()
    }

    fn keep(&self, spec: &mut RecoveryPolicySpec, keep: &BTreeSet<String>) {
        let groups = &mut spec.targets.ecs_services;
        for g in groups.iter_mut() {
            let cluster = g.cluster.clone();
            g.services.retain(|s| keep.contains(&key(&cluster, s)));
        }
        groups.retain(|g| !g.services.is_empty());
    }

    fn describe_verify(&self, p: &StepParameters) -> String {
        format!(
            "wait until a deployment newer than the restart of {}/{} is PRIMARY with runningCount >= desiredCount",
            p.cluster.as_deref().unwrap_or_default(),
            p.service.as_deref().unwrap_or_default()
        )
    }
}

/// One deployment of a service, as DescribeServices lists it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Deployment {
    /// The deployment id (`ecs-svc/…`).
    pub id: String,
    /// `PRIMARY`, `ACTIVE` or `INACTIVE`.
    pub status: String,
    /// When ECS created it.
    pub created_at: Option<Timestamp>,
    /// `IN_PROGRESS`, `COMPLETED`, `FAILED`, if ECS says.
    pub rollout_state: Option<String>,
}

/// What DescribeServices said about one service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Service {
    /// Tasks running.
    pub running: i32,
    /// Tasks desired.
    pub desired: i32,
    /// Tasks pending.
    pub pending: i32,
    /// Its deployments.
    pub deployments: Vec<Deployment>,
    /// Service event messages, newest first.
    pub events: Vec<String>,
}

impl Service {
    fn primary(&self) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.status == "PRIMARY")
    }
}

/// The health rule of an ECS service, for detection and for the read before a restart.
pub fn is_healthy(s: &Service) -> bool {
    s.running >= s.desired
}

/// The figures an incident shows.
pub fn metrics(s: &Service) -> IncidentMetrics {
    IncidentMetrics {
        running_count: Some(s.running),
        desired_count: Some(s.desired),
        pending_count: Some(s.pending),
        primary_deployment: s.primary().map(|d| d.id.clone()),
        recent_events: s.events.iter().take(5).cloned().collect(),
        ..IncidentMetrics::default()
    }
}

/// What a probe of the service found.
pub fn probe(s: &Service) -> Probe {
    if is_healthy(s) { Probe::Healthy(metrics(s)) } else { Probe::Unhealthy(metrics(s)) }
}

/// What a restart step knows beyond the service: the deployment seen at detection, when the
/// step started (less the clock-skew allowance), and the deployments earlier restarts by
/// this controller made for the same service.
#[derive(Clone, Copy, Debug)]
pub struct Restart<'a> {
    /// The PRIMARY deployment when the incident was detected.
    pub deployment_before: Option<&'a str>,
    /// Effects newer than this are the step's.
    pub since: Timestamp,
    /// Deployments started by this controller's earlier plans for this service.
    pub own_deployments: &'a [String],
}

/// The read before a restart, decided: `Ok(())` is "call UpdateService now"; anything else
/// is what the step records instead of calling.
///
/// In order: the restart already happened (a deployment other than the one seen at
/// detection, created since the step started: a crash came after the call); the service is
/// healthy now (it recovered while the plan waited: a restart would roll production for
/// nothing); a rollout of an earlier restart by this controller is still running (wait,
/// never stack restarts).
pub fn before_restart(s: &Service, r: &Restart, read_at: Timestamp) -> Result<(), ActionOutcome> {
    let effect = s
        .deployments
        .iter()
        .find(|d| Some(d.id.as_str()) != r.deployment_before && d.created_at.is_some_and(|t| t >= r.since));
    if let Some(d) = effect {
        let created = d.created_at.map(|t| t.to_string()).unwrap_or_default();
        return Err(ActionOutcome::AlreadyDone {
            message: format!("deployment {} was created after the step started: the restart already happened", d.id),
            evidence: evidence([("deploymentId", d.id.clone()), ("deploymentCreatedAt", created)]),
        });
    }
    if is_healthy(s) {
        let what = format!("{} of {} desired tasks running", s.running, s.desired);
        let ev = evidence([
            ("runningCount", s.running.to_string()),
            ("desiredCount", s.desired.to_string()),
            ("pendingCount", s.pending.to_string()),
            ("primaryDeployment", s.primary().map(|d| d.id.clone()).unwrap_or_default()),
        ]);
        return Err(not_needed(what, ev, read_at));
    }
    let own_rollout = s.deployments.iter().find(|d| {
        d.status == "PRIMARY" && d.rollout_state.as_deref() == Some("IN_PROGRESS") && r.own_deployments.contains(&d.id)
    });
    if let Some(d) = own_rollout {
        return Err(ActionOutcome::Deferred {
            message: format!("deployment {} from an earlier restart by this controller is still rolling out", d.id),
            retry_after: Duration::from_secs(15),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::at;

    fn dep(id: &str, status: &str, created: i64, rollout: &str) -> Deployment {
        Deployment {
            id: id.into(),
            status: status.into(),
            created_at: Some(at(created)),
            rollout_state: Some(rollout.into()),
        }
    }

    fn svc(running: i32, desired: i32, deployments: Vec<Deployment>) -> Service {
        Service { running, desired, pending: 0, deployments, events: vec![] }
    }

    #[test]
    fn health_rule() {
        let cases = [(0, 0, true), (1, 3, false), (3, 3, true), (4, 3, true), (0, 1, false)];
        for (running, desired, healthy) in cases {
            let s = svc(running, desired, vec![]);
            assert_eq!(is_healthy(&s), healthy, "{running}/{desired}");
            assert_eq!(matches!(probe(&s), Probe::Healthy(_)), healthy, "{running}/{desired}: probe agrees");
        }
        let m = metrics(&svc(1, 3, vec![dep("d1", "ACTIVE", 0, "COMPLETED"), dep("d2", "PRIMARY", 5, "IN_PROGRESS")]));
        assert_eq!(m.primary_deployment.as_deref(), Some("d2"));
    }

    #[test]
    fn before_restart_table() {
        let own = vec!["mine".to_string()];
        let r = Restart { deployment_before: Some("d0"), since: at(100), own_deployments: &own };
        let kind = |o: Result<(), ActionOutcome>| match o {
            Ok(()) => "act",
            Err(ActionOutcome::AlreadyDone { .. }) => "already",
            Err(ActionOutcome::NotNeeded { .. }) => "not-needed",
            Err(ActionOutcome::Deferred { .. }) => "wait",
            Err(ActionOutcome::Failed { .. }) => "failed",
            Err(ActionOutcome::Done { .. }) => "done",
        };
        let cases: Vec<(&str, Service, &str)> = vec![
            ("unhealthy, nothing new: act", svc(1, 3, vec![dep("d0", "PRIMARY", 0, "COMPLETED")]), "act"),
            ("healthy at the moment of acting", svc(3, 3, vec![dep("d0", "PRIMARY", 0, "COMPLETED")]), "not-needed"),
            (
                "a deployment since the step started is the effect, healthy or not",
                svc(3, 3, vec![dep("d0", "ACTIVE", 0, "COMPLETED"), dep("d9", "PRIMARY", 101, "IN_PROGRESS")]),
                "already",
            ),
            (
                "the deployment seen at detection is not the effect",
                svc(1, 3, vec![dep("d0", "PRIMARY", 200, "IN_PROGRESS")]),
                "act",
            ),
            ("an older deployment is not the effect", svc(1, 3, vec![dep("d5", "PRIMARY", 50, "IN_PROGRESS")]), "act"),
            (
                "an earlier restart of ours still rolling out: wait",
                svc(1, 3, vec![dep("mine", "PRIMARY", 50, "IN_PROGRESS")]),
                "wait",
            ),
            (
                "someone else's rollout does not hold a restart",
                svc(1, 3, vec![dep("theirs", "PRIMARY", 50, "IN_PROGRESS")]),
                "act",
            ),
        ];
        for (name, s, want) in cases {
            assert_eq!(kind(before_restart(&s, &r, at(120))), want, "{name}");
        }
        let Err(ActionOutcome::NotNeeded { evidence, message }) =
            before_restart(&svc(3, 3, vec![dep("d0", "PRIMARY", 0, "COMPLETED")]), &r, at(120))
        else {
            panic!("not needed")
        };
        assert_eq!(evidence["runningCount"], "3");
        assert_eq!(evidence["desiredCount"], "3");
        assert_eq!(evidence["readAt"], at(120).to_string());
        assert!(message.starts_with("not needed: the target recovered"), "{message}");
    }
}
