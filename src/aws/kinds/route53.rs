//! Route 53 health checks, the SDK half: GetHealthCheckStatus probes (rate-limited), the
//! DNS failover (UPSERT of the failover record) and its verification. The rules are in
//! `core::kinds::route53`.

use std::collections::BTreeMap;

use aws_sdk_route53::types::{AliasTarget, Change, ChangeAction, ChangeBatch, ResourceRecordSet, RrType};
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::api::plan::StepParameters;
use crate::api::policy::RecoveryPolicySpec;
use crate::core::detection::Probe;
use crate::core::kinds::{evidence, route53 as rules};
use crate::core::steps::{ActionOutcome, VerifyOutcome};

use super::super::report::ProbeReport;
use super::super::{AwsFault, Clients};
use super::{failed, mutation_failed, now, param};

/// This kind's probe calls for one policy: one GetHealthCheckStatus per check, each under
/// the account-wide rate limit.
pub fn probes<'a>(clients: &'a Clients, spec: &'a RecoveryPolicySpec) -> Vec<BoxFuture<'a, ProbeReport>> {
    spec.targets.route53_health_checks.iter().map(|hc| probe_one(clients, &hc.health_check_id).boxed()).collect()
}

/// GetHealthCheckStatus for one check, under the process-wide Route 53 rate limit.
pub async fn probe_one(clients: &Clients, id: &str) -> ProbeReport {
    let key = rules::key(id);
    let mut report = ProbeReport::default();
    let result = clients
        .route53_read("route53:GetHealthCheckStatus", || {
            clients.route53.get_health_check_status().health_check_id(id).send()
        })
        .await;
    match result {
        Ok(out) => {
            report.found(key, rules::probe(id, &observations(&out)));
        }
        // A missing check is a target that does not exist, not AWS failing.
        Err(fault) if fault.code == "NoSuchHealthCheck" => {
            report.missing.push(key.clone());
            report.found(key, Probe::Unknown(format!("Route 53 has no health check {id}")));
        }
        Err(fault) => {
            report.found(key, Probe::Unknown(fault.to_string()));
            report.faults.push(fault);
        }
    }
    report
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
    Ok(rules::aliases(&records(out.resource_record_sets()), name, rr_type(p).as_str(), target))
}

pub(in crate::aws) async fn update_dns(clients: &Clients, p: &StepParameters) -> Result<ActionOutcome, ActionOutcome> {
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
                .map(|out| observations(&out))
                .map_err(failed)?,
        ),
        _ => None,
    };
    let health = p.health_check_id.as_deref().zip(observations.as_ref());
    rules::before_update(aliased, name, &target, health, now())?;
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

pub(in crate::aws) async fn verify(
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

/// A health check's observations.
fn observations(
    out: &aws_sdk_route53::operation::get_health_check_status::GetHealthCheckStatusOutput,
) -> rules::Observations {
    rules::Observations {
        statuses: out
            .health_check_observations()
            .iter()
            .map(|o| o.status_report().and_then(|r| r.status()).unwrap_or_default().to_owned())
            .collect(),
    }
}

/// Record sets.
fn records(sets: &[aws_sdk_route53::types::ResourceRecordSet]) -> Vec<rules::Record> {
    sets.iter()
        .map(|r| rules::Record {
            name: r.name().to_owned(),
            r#type: r.r#type().as_str().to_owned(),
            alias: r.alias_target().map(|a| (a.dns_name().to_owned(), a.hosted_zone_id().to_owned())),
        })
        .collect()
}
