//! RDS DB instances, the SDK half: DescribeDBInstances probes (filtered, many a call), the
//! reboot (with ForceFailover only for Multi-AZ) and its verification. The rules are in
//! `core::kinds::rds`.

use std::sync::Arc;

use aws_sdk_ecs::primitives::DateTime;
use aws_sdk_rds::types::{Filter, SourceType};
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;

use crate::api::plan::StepParameters;
use crate::api::policy::RecoveryPolicySpec;
use crate::core::detection::Probe;
use crate::core::kinds::{evidence, rds as rules};
use crate::core::steps::{ActionOutcome, VerifyOutcome};

use super::super::report::ProbeReport;
use super::super::{AwsFault, Clients};
use super::{failed, mutation_failed, now, once_rds, param, ts};

/// Values per RDS filter we send in one call (the API's documented bound is 100).
pub const BATCH: usize = 100;

/// This kind's probe calls for one policy: its instances in one shared, filtered
/// DescribeDBInstances batch.
pub fn probes<'a>(clients: &'a Clients, spec: &'a RecoveryPolicySpec) -> Vec<BoxFuture<'a, ProbeReport>> {
    if spec.targets.rds_instances.is_empty() {
        return vec![];
    }
    let call = async move {
        let ids: Vec<String> = spec.targets.rds_instances.iter().map(|d| d.identifier.clone()).collect();
        let answers = clients.limits.rds_batches.load(&clients.account, &ids, |ids| probe_batch(clients, ids)).await;
        let keys: Vec<String> = ids.iter().map(|id| rules::key(id)).collect();
        ProbeReport::picked(&answers, &keys)
    };
    vec![call.boxed()]
}

/// DescribeDBInstances filtered to the given identifiers, following pagination.
pub async fn probe_batch(clients: &Clients, identifiers: Vec<String>) -> ProbeReport {
    let key = |id: &str| rules::key(id);
    let mut report = ProbeReport::default();
    let filter = Filter::builder().name("db-instance-id").set_values(Some(identifiers.clone())).build();
    let mut marker: Option<String> = None;
    loop {
        let result = {
            let _permit = clients.limits.in_flight.acquire().await.expect("never closed");
            let call = clients.rds.describe_db_instances().filters(filter.clone()).set_marker(marker.clone());
            clients.observe("rds:DescribeDBInstances", call.send().await)
        };
        let out = match result {
            Ok(out) => out,
            Err(fault) => {
                for id in &identifiers {
                    report.probes.entry(key(id)).or_insert_with(|| Arc::new(Probe::Unknown(fault.to_string())));
                }
                report.faults.push(fault);
                return report;
            }
        };
        for db in out.db_instances() {
            let id = db.db_instance_identifier().unwrap_or_default();
            let snapshot = instance(db);
            if let Some(why) = rules::misplaced(&snapshot, id) {
                report.misplaced.insert(key(id), why);
            }
            report.found(key(id), rules::probe(&snapshot));
        }
        marker = out.marker().map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    for id in &identifiers {
        if let std::collections::btree_map::Entry::Vacant(slot) = report.probes.entry(key(id)) {
            slot.insert(Arc::new(Probe::Unknown(format!("RDS has no DB instance {id}"))));
            report.missing.push(key(id));
        }
    }
    report
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

pub(in crate::aws) async fn reboot(
    clients: &Clients,
    p: &StepParameters,
    since: Timestamp,
) -> Result<ActionOutcome, ActionOutcome> {
    let id = param(&p.identifier, "identifier")?;
    // Check first: RDS records a reboot (and a failover) as events of the instance.
    let events = events_since(clients, id, SourceType::DbInstance, since).await.map_err(failed)?;
    rules::effect_since(&events, since)?;
    // Then the instance as it is now: healthy, changing, stopped, or to be rebooted.
    let db = describe_instance(clients, id).await.map_err(failed)?;
    let instance = instance(&db);
    let reboot = rules::before_reboot(&instance, p.force_failover == Some(true), id, now())?;
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

pub(in crate::aws) async fn verify(clients: &Clients, p: &StepParameters) -> Result<VerifyOutcome, String> {
    let id = p.identifier.as_deref().unwrap_or_default();
    let db = describe_instance(clients, id).await.map_err(|f| f.to_string())?;
    let instance = instance(&db);
    if !rules::is_healthy(&instance) {
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

/// What the pure rules judge of one instance.
fn instance(db: &aws_sdk_rds::types::DbInstance) -> rules::Instance {
    rules::Instance {
        status: db.db_instance_status().unwrap_or("unknown").to_owned(),
        endpoint: db.endpoint().and_then(|e| e.address()).map(str::to_owned),
        multi_az: db.multi_az(),
        availability_zones: [db.availability_zone(), db.secondary_availability_zone()]
            .into_iter()
            .flatten()
            .map(str::to_owned)
            .collect(),
        cluster: db.db_cluster_identifier().map(str::to_owned),
    }
}

/// RDS events of an instance or a cluster since `since` (DescribeEvents): where RDS
/// records reboots and failovers, for the check-first reads.
pub(super) async fn events_since(
    clients: &Clients,
    id: &str,
    source: SourceType,
    since: Timestamp,
) -> Result<Vec<rules::Event>, AwsFault> {
    let out = {
        let _permit = clients.limits.in_flight.acquire().await.expect("never closed");
        let call = clients
            .rds
            .describe_events()
            .source_identifier(id)
            .source_type(source)
            .start_time(DateTime::from_secs(since.as_second()));
        clients.observe("rds:DescribeEvents", call.send().await)?
    };
    Ok(out
        .events()
        .iter()
        .map(|e| rules::Event { date: e.date().and_then(ts), message: e.message().unwrap_or_default().to_owned() })
        .collect())
}
