//! ECS services, the SDK half: DescribeServices probes (ten a call), the restart
//! (UpdateService forceNewDeployment) and its verification. The rules are in
//! `core::kinds::ecs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_ecs::operation::RequestId;
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;

use crate::api::plan::StepParameters;
use crate::api::policy::RecoveryPolicySpec;
use crate::core::detection::Probe;
use crate::core::kinds::{ecs as rules, evidence};
use crate::core::steps::{ActionOutcome, VerifyOutcome};

use super::super::report::ProbeReport;
use super::super::{AwsFault, Clients};
use super::{ActContext, failed, mutation_failed, now, once_ecs, param, ts};

/// ECS's limit on services per DescribeServices call.
pub const BATCH: usize = 10;

/// This kind's probe calls for one policy: one shared DescribeServices batch per cluster.
pub fn probes<'a>(clients: &'a Clients, spec: &'a RecoveryPolicySpec) -> Vec<BoxFuture<'a, ProbeReport>> {
    let limits = &clients.limits;
    spec.targets
        .ecs_services
        .iter()
        .map(|group| {
            let cluster = group.cluster.as_str();
            async move {
                let key = (clients.account.clone(), cluster.to_owned());
                let answers =
                    limits.ecs_batches.load(&key, &group.services, |ids| probe_batch(clients, cluster, ids)).await;
                let keys: Vec<String> = group.services.iter().map(|s| rules::key(cluster, s)).collect();
                ProbeReport::picked(&answers, &keys)
            }
            .boxed()
        })
        .collect()
}

/// One DescribeServices call for up to ten services of a cluster.
pub async fn probe_batch(clients: &Clients, cluster: &str, services: Vec<String>) -> ProbeReport {
    let key = |s: &str| rules::key(cluster, s);
    let mut report = ProbeReport::default();
    let result = {
        let _permit = clients.limits.in_flight.acquire().await.expect("never closed");
        let call = clients.ecs.describe_services().cluster(cluster).set_services(Some(services.clone()));
        clients.observe("ecs:DescribeServices", call.send().await)
    };
    let out = match result {
        Ok(out) => out,
        // A missing cluster is a target that does not exist, not AWS failing.
        Err(fault) if fault.code == "ClusterNotFoundException" => {
            for s in &services {
                report.found(key(s), Probe::Unknown(format!("ECS has no cluster {cluster}")));
                report.missing.push(key(s));
            }
            return report;
        }
        Err(fault) => {
            for s in &services {
                report.found(key(s), Probe::Unknown(fault.to_string()));
            }
            report.faults.push(fault);
            return report;
        }
    };
    for svc in out.services() {
        let name = svc.service_name().unwrap_or_default();
        report.found(key(name), rules::probe(&snapshot(svc)));
    }
    for f in out.failures() {
        // The failure names the service by ARN; its last path segment is the name.
        let name = f.arn().unwrap_or_default().rsplit('/').next().unwrap_or_default();
        let reason = f.reason().unwrap_or("failure");
        if services.iter().any(|s| s == name) {
            report.found(
                key(name),
                Probe::Unknown(format!("ECS reports {reason} for service {name} in cluster {cluster}")),
            );
            if reason == "MISSING" {
                report.missing.push(key(name));
            }
        }
    }
    for s in &services {
        report
            .probes
            .entry(key(s))
            .or_insert_with(|| Arc::new(Probe::Unknown("ECS did not mention the service".into())));
    }
    report
}

async fn describe_service(
    clients: &Clients,
    cluster: &str,
    service: &str,
) -> Result<aws_sdk_ecs::types::Service, AwsFault> {
    let _permit = clients.limits.in_flight.acquire().await.expect("never closed");
    let out = clients.observe(
        "ecs:DescribeServices",
        clients.ecs.describe_services().cluster(cluster).services(service).send().await,
    )?;
    out.services().first().cloned().ok_or_else(|| AwsFault {
        operation: "ecs:DescribeServices",
        code: "ServiceNotFound".into(),
        message: format!("service {service} not found in cluster {cluster}"),
        retryable: false,
    })
}

pub(in crate::aws) async fn restart(
    clients: &Clients,
    p: &StepParameters,
    since: Timestamp,
    ctx: &ActContext,
) -> Result<ActionOutcome, ActionOutcome> {
    let (cluster, service) = (param(&p.cluster, "cluster")?, param(&p.service, "service")?);
    // One read serves the check-first, the pre-check and the rollout rail.
    let svc = describe_service(clients, cluster, service).await.map_err(failed)?;
    let restart = rules::Restart {
        deployment_before: p.deployment_before.as_deref(),
        since,
        own_deployments: &ctx.own_deployments,
    };
    rules::before_restart(&snapshot(&svc), &restart, now())?;
    let out = {
        let _permit = clients.limits.in_flight.acquire().await.expect("never closed");
        clients
            .observe(
                "ecs:UpdateService",
                clients
                    .ecs
                    .update_service()
                    .cluster(cluster)
                    .service(service)
                    .force_new_deployment(true)
                    .customize()
                    .config_override(once_ecs())
                    .send()
                    .await,
            )
            .map_err(mutation_failed)?
    };
    let primary = out.service().and_then(|s| s.deployments().iter().find(|d| d.status() == Some("PRIMARY")));
    let id = primary.and_then(|d| d.id()).unwrap_or_default().to_owned();
    let created = primary.and_then(|d| d.created_at()).and_then(ts).map(|t| t.to_string()).unwrap_or_default();
    Ok(ActionOutcome::Done {
        message: format!("UpdateService(forceNewDeployment) started deployment {id}"),
        evidence: evidence([
            ("deploymentId", id),
            ("deploymentCreatedAt", created),
            ("requestId", out.request_id().unwrap_or_default().to_owned()),
        ]),
    })
}

pub(in crate::aws) async fn verify(
    clients: &Clients,
    p: &StepParameters,
    earlier: &BTreeMap<String, String>,
) -> Result<VerifyOutcome, String> {
    let (cluster, service) = (p.cluster.as_deref().unwrap_or_default(), p.service.as_deref().unwrap_or_default());
    let svc = describe_service(clients, cluster, service).await.map_err(|f| f.to_string())?;
    let restart_at: Option<Timestamp> = earlier.get("deploymentCreatedAt").and_then(|t| t.parse().ok());
    let primary = svc.deployments().iter().find(|d| d.status() == Some("PRIMARY")).ok_or("no PRIMARY deployment")?;
    let id = primary.id().unwrap_or_default();
    let newer = earlier.get("deploymentId").is_some_and(|d| d == id)
        || primary.created_at().and_then(ts).zip(restart_at).is_some_and(|(c, r)| c >= r);
    let (running, desired) = (svc.running_count(), svc.desired_count());
    if !newer {
        return Err(format!("PRIMARY deployment {id} is not newer than the restart"));
    }
    if running < desired {
        return Err(format!("deployment {id} is PRIMARY; runningCount {running} < desiredCount {desired}"));
    }
    Ok(VerifyOutcome::Satisfied {
        message: format!("deployment {id} is PRIMARY with {running}/{desired} tasks running"),
        evidence: evidence([
            ("primaryDeployment", id.to_owned()),
            ("runningCount", running.to_string()),
            ("desiredCount", desired.to_string()),
        ]),
    })
}

/// What the pure rules judge of one service.
fn snapshot(svc: &aws_sdk_ecs::types::Service) -> rules::Service {
    rules::Service {
        running: svc.running_count(),
        desired: svc.desired_count(),
        pending: svc.pending_count(),
        deployments: svc
            .deployments()
            .iter()
            .map(|d| rules::Deployment {
                id: d.id().unwrap_or_default().to_owned(),
                status: d.status().unwrap_or_default().to_owned(),
                created_at: d.created_at().and_then(ts),
                rollout_state: d.rollout_state().map(|r| r.as_str().to_owned()),
            })
            .collect(),
        // ECS lists events newest first.
        events: svc.events().iter().take(5).filter_map(|e| e.message().map(str::to_owned)).collect(),
    }
}
