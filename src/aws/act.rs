//! Actions and verifications of plan steps. Every mutating action first reads AWS and lets
//! the kind's pure rules (`core::kinds`) decide: did the effect already happen since the
//! step started (the at-most-once protocol's check), is the target still unhealthy (the
//! act-time pre-check, with the health rule detection uses), may it act now. Only then
//! does it call AWS. A read that fails is a failed attempt, never "healthy".

use std::collections::BTreeMap;

use aws_config::retry::RetryConfig;
use aws_sdk_ecs::operation::RequestId;
use aws_sdk_ecs::primitives::DateTime;
use aws_sdk_rds::types::SourceType;
use aws_sdk_route53::types::{AliasTarget, Change, ChangeAction, ChangeBatch, ResourceRecordSet, RrType};
use k8s_openapi::jiff::Timestamp;

use crate::api::plan::{StepAction, StepParameters};
use crate::core::kinds::{ecs, evidence, rds, route53};
use crate::core::steps::{ActionOutcome, Started, VerifyOutcome};

use super::snapshot::{self, ts};
use super::{AwsFault, Clients};

/// What an action needs to know beyond its step.
#[derive(Clone, Debug, Default)]
pub struct ActContext {
    /// ECS deployment ids made by this controller's earlier plans for the same target:
    /// a restart is not stacked on a rollout one of them still runs.
    pub own_deployments: Vec<String>,
}

fn failed(f: AwsFault) -> ActionOutcome {
    ActionOutcome::Failed { retryable: f.retryable, message: f.to_string() }
}

/// What a mutating call's failure means for its step. Throttling is AWS refusing the call
/// before doing anything, so the step waits and sends it again without spending an attempt;
/// anything else (5xx, a timeout, a lost connection) may have taken effect and costs an
/// attempt, whose successor starts with the check-first read.
fn mutation_failed(f: AwsFault) -> ActionOutcome {
    if f.is_throttling() {
        // 2–6 s with jitter, so that plans throttled together do not come back together.
        let retry_after = std::time::Duration::from_millis(2_000 + fastrand::u64(0..4_000));
        return ActionOutcome::Deferred { message: format!("throttled, nothing was changed: {f}"), retry_after };
    }
    failed(f)
}

/// Per-call override for mutating calls: one HTTP request, never an SDK retry (see
/// [`mutation_failed`]). Each SDK has its own config type, hence two; the Route 53 client
/// never retries (see `Clients::route53_read`).
fn once_ecs() -> aws_sdk_ecs::config::Builder {
    aws_sdk_ecs::config::Builder::default().retry_config(RetryConfig::disabled())
}

fn once_rds() -> aws_sdk_rds::config::Builder {
    aws_sdk_rds::config::Builder::default().retry_config(RetryConfig::disabled())
}

fn param<'a>(p: &'a Option<String>, name: &str) -> Result<&'a str, ActionOutcome> {
    p.as_deref().ok_or_else(|| ActionOutcome::Failed { message: format!("step has no {name}"), retryable: false })
}

/// Allowance for the controller's clock running ahead of AWS's when the check-first read
/// compares AWS timestamps with the step's start. An effect a few seconds older than the
/// step is still a fresh restart, so counting it as done errs on the side of acting once.
const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(5);

fn now() -> Timestamp {
    Timestamp::now()
}

/// Performs a mutating step: read, let the kind's rules decide, and only then act.
pub async fn act(clients: &Clients, step: &Started, ctx: &ActContext) -> ActionOutcome {
    let p = step.parameters();
    let since = step
        .since()
        .checked_sub(k8s_openapi::jiff::SignedDuration::try_from(CLOCK_SKEW).expect("small"))
        .unwrap_or(step.since());
    let result = match step.action() {
        StepAction::RestartService => restart_service(clients, p, since, ctx).await,
        StepAction::FailoverDatabase => reboot_database(clients, p, since).await,
        StepAction::UpdateDns => update_dns(clients, p).await,
        action @ (StepAction::VerifyService | StepAction::VerifyDatabase | StepAction::VerifyDns) => {
            Err(ActionOutcome::Failed { message: format!("{action:?} is not an action"), retryable: false })
        }
    };
    result.unwrap_or_else(|outcome| outcome)
}

/// Checks a verify step's condition.
pub async fn verify(clients: &Clients, step: &Started) -> VerifyOutcome {
    let p = step.parameters();
    let result = match step.action() {
        StepAction::VerifyService => verify_service(clients, p, step.earlier_evidence()).await,
        StepAction::VerifyDatabase => verify_database(clients, p).await,
        StepAction::VerifyDns => verify_dns(clients, p, step.earlier_evidence()).await,
        action @ (StepAction::RestartService | StepAction::FailoverDatabase | StepAction::UpdateDns) => {
            Err(format!("{action:?} is not a verification"))
        }
    };
    result.unwrap_or_else(|message| VerifyOutcome::NotYet { message })
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

async fn restart_service(
    clients: &Clients,
    p: &StepParameters,
    since: Timestamp,
    ctx: &ActContext,
) -> Result<ActionOutcome, ActionOutcome> {
    let (cluster, service) = (param(&p.cluster, "cluster")?, param(&p.service, "service")?);
    // One read serves the check-first, the pre-check and the rollout rail.
    let svc = describe_service(clients, cluster, service).await.map_err(failed)?;
    let restart = ecs::Restart {
        deployment_before: p.deployment_before.as_deref(),
        since,
        own_deployments: &ctx.own_deployments,
    };
    ecs::before_restart(&snapshot::ecs_service(&svc), &restart, now())?;
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

async fn verify_service(
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

async fn describe_instance(clients: &Clients, id: &str) -> Result<aws_sdk_rds::types::DbInstance, AwsFault> {
    let _permit = clients.limits.in_flight.acquire().await.expect("never closed");
    let out = clients.observe(
        "rds:DescribeDBInstances",
        clients.rds.describe_db_instances().db_instance_identifier(id).send().await,
    )?;
    out.db_instances().first().cloned().ok_or_else(|| AwsFault {
        operation: "rds:DescribeDBInstances",
        code: "DBInstanceNotFound".into(),
        message: format!("no DB instance {id}"),
        retryable: false,
    })
}

async fn reboot_database(
    clients: &Clients,
    p: &StepParameters,
    since: Timestamp,
) -> Result<ActionOutcome, ActionOutcome> {
    let id = param(&p.identifier, "identifier")?;
    // Check first: RDS records a reboot (and a failover) as events of the instance.
    let events = {
        let _permit = clients.limits.in_flight.acquire().await.expect("never closed");
        let call = clients
            .rds
            .describe_events()
            .source_identifier(id)
            .source_type(SourceType::DbInstance)
            .start_time(DateTime::from_secs(since.as_second()));
        clients.observe("rds:DescribeEvents", call.send().await).map_err(failed)?
    };
    rds::effect_since(&snapshot::rds_events(events.events()), since)?;
    // Then the instance as it is now: healthy, changing, stopped, or to be rebooted.
    let db = describe_instance(clients, id).await.map_err(failed)?;
    let instance = snapshot::rds_instance(&db);
    let reboot = rds::before_reboot(&instance, p.force_failover == Some(true), id, now())?;
    let out = {
        let _permit = clients.limits.in_flight.acquire().await.expect("never closed");
        clients
            .observe(
                "rds:RebootDBInstance",
                clients
                    .rds
                    .reboot_db_instance()
                    .db_instance_identifier(id)
                    .force_failover(reboot.force_failover)
                    .customize()
                    .config_override(once_rds())
                    .send()
                    .await,
            )
            .map_err(mutation_failed)?
    };
    Ok(ActionOutcome::Done {
        message: format!("RebootDBInstance accepted (was {}); {}", instance.status, reboot.why),
        evidence: evidence([
            ("forceFailover", reboot.force_failover.to_string()),
            ("statusBefore", instance.status),
            ("requestId", aws_sdk_rds::operation::RequestId::request_id(&out).unwrap_or_default().to_owned()),
        ]),
    })
}

async fn verify_database(clients: &Clients, p: &StepParameters) -> Result<VerifyOutcome, String> {
    let id = p.identifier.as_deref().unwrap_or_default();
    let db = describe_instance(clients, id).await.map_err(|f| f.to_string())?;
    let instance = snapshot::rds_instance(&db);
    if !rds::is_healthy(&instance) {
        return Err(format!("instance {id} is {}", instance.status));
    }
    Ok(VerifyOutcome::Satisfied {
        message: format!("instance {id} is available"),
        evidence: evidence([
            ("status", instance.status),
            ("availabilityZone", db.availability_zone().unwrap_or_default().to_owned()),
        ]),
    })
}

fn rr_type(p: &StepParameters) -> RrType {
    RrType::from(p.record_type.map(|t| t.as_str()).unwrap_or("A"))
}

/// Whether the record already aliases the target (ListResourceRecordSets).
async fn record_aliases_target(clients: &Clients, p: &StepParameters) -> Result<bool, AwsFault> {
    let (zone, name) = (p.hosted_zone_id.as_deref().unwrap_or_default(), p.record_name.as_deref().unwrap_or_default());
    let target = p.alias_target.as_ref().ok_or_else(|| AwsFault {
        operation: "route53:ListResourceRecordSets",
        code: "NoAliasTarget".into(),
        message: "step has no alias target".into(),
        retryable: false,
    })?;
    let out = clients
        .route53_read("route53:ListResourceRecordSets", || {
            clients
                .route53
                .list_resource_record_sets()
                .hosted_zone_id(zone)
                .start_record_name(name)
                .start_record_type(rr_type(p))
                .max_items(1)
                .send()
        })
        .await?;
    Ok(route53::aliases(&snapshot::records(out.resource_record_sets()), name, rr_type(p).as_str(), target))
}

async fn update_dns(clients: &Clients, p: &StepParameters) -> Result<ActionOutcome, ActionOutcome> {
    let zone = param(&p.hosted_zone_id, "hostedZoneId")?;
    let name = param(&p.record_name, "recordName")?;
    let target = p
        .alias_target
        .clone()
        .ok_or_else(|| ActionOutcome::Failed { message: "step has no aliasTarget".into(), retryable: false })?;
    // Check first: an UPSERT to the same alias is harmless, but the rule is one call per step.
    let aliased = record_aliases_target(clients, p).await.map_err(failed)?;
    // Then the primary's health check, read now: passing again means no failover.
    let observations = match (&p.health_check_id, aliased) {
        (Some(id), false) => Some(
            clients
                .route53_read("route53:GetHealthCheckStatus", || {
                    clients.route53.get_health_check_status().health_check_id(id).send()
                })
                .await
                .map(|out| snapshot::health_check(&out))
                .map_err(failed)?,
        ),
        _ => None,
    };
    let health = p.health_check_id.as_deref().zip(observations.as_ref());
    route53::before_update(aliased, name, &target, health, now())?;
    let alias = AliasTarget::builder()
        // The alias target's own zone, never the record's (the seed's bug).
        .hosted_zone_id(&target.hosted_zone_id)
        .dns_name(&target.dns_name)
        .evaluate_target_health(target.evaluate_target_health)
        .build()
        .map_err(|e| ActionOutcome::Failed { message: e.to_string(), retryable: false })?;
    let record = ResourceRecordSet::builder()
        .name(name)
        .r#type(rr_type(p))
        .alias_target(alias)
        .build()
        .map_err(|e| ActionOutcome::Failed { message: e.to_string(), retryable: false })?;
    let change = Change::builder()
        .action(ChangeAction::Upsert)
        .resource_record_set(record)
        .build()
        .map_err(|e| ActionOutcome::Failed { message: e.to_string(), retryable: false })?;
    let batch = ChangeBatch::builder()
        .comment("aws-recovery-controller failover")
        .changes(change)
        .build()
        .map_err(|e| ActionOutcome::Failed { message: e.to_string(), retryable: false })?;
    // One request, never retried (the Route 53 client does not retry; see `mutation_failed`).
    clients.limits.route53_turn().await;
    let out = clients
        .observe(
            "route53:ChangeResourceRecordSets",
            clients.route53.change_resource_record_sets().hosted_zone_id(zone).change_batch(batch).send().await,
        )
        .map_err(mutation_failed)?;
    let change_id = out.change_info().map(|c| c.id().to_owned()).unwrap_or_default();
    Ok(ActionOutcome::Done {
        message: format!(
            "UPSERT {name} ALIAS {} (zone {}) submitted as change {change_id}",
            target.dns_name, target.hosted_zone_id
        ),
        evidence: evidence([
            ("changeId", change_id),
            ("requestId", aws_sdk_route53::operation::RequestId::request_id(&out).unwrap_or_default().to_owned()),
        ]),
    })
}

async fn verify_dns(
    clients: &Clients,
    p: &StepParameters,
    earlier: &BTreeMap<String, String>,
) -> Result<VerifyOutcome, String> {
    let mut ev = BTreeMap::new();
    if let Some(change_id) = earlier.get("changeId") {
        let out = clients
            .route53_read("route53:GetChange", || clients.route53.get_change().id(change_id).send())
            .await
            .map_err(|f| f.to_string())?;
        let status = out.change_info().map(|c| c.status().as_str().to_owned()).unwrap_or_default();
        if status != "INSYNC" {
            return Err(format!("change {change_id} is {status}"));
        }
        ev.insert("changeStatus".to_owned(), status);
    }
    if !record_aliases_target(clients, p).await.map_err(|f| f.to_string())? {
        return Err(format!("{} does not alias the target yet", p.record_name.as_deref().unwrap_or_default()));
    }
    Ok(VerifyOutcome::Satisfied {
        message: "the change is INSYNC and the record aliases the target".into(),
        evidence: ev,
    })
}
