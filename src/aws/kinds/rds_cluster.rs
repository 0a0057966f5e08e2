//! RDS DB clusters, the SDK half: probes (DescribeDBClusters filtered to many clusters, and
//! one DescribeDBInstances for their members' statuses), the failover (FailoverDBCluster)
//! and its verification. The rules are in `core::kinds::rds_cluster`.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_rds::types::{Filter, SourceType};
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;

use crate::api::plan::StepParameters;
use crate::api::policy::RecoveryPolicySpec;
use crate::core::detection::Probe;
use crate::core::kinds::{evidence, rds_cluster as rules};
use crate::core::steps::{ActionOutcome, VerifyOutcome};

use super::super::report::ProbeReport;
use super::super::{AwsFault, Clients};
use super::{failed, mutation_failed, now, once_rds, param};

/// Clusters per filtered call (the API's documented bound for filter values is 100).
pub const BATCH: usize = 100;

/// This kind's probe calls for one policy: its clusters in one shared, filtered batch.
pub fn probes<'a>(clients: &'a Clients, spec: &'a RecoveryPolicySpec) -> Vec<BoxFuture<'a, ProbeReport>> {
    if spec.targets.rds_clusters.is_empty() {
        return vec![];
    }
    let call = async move {
        let ids: Vec<String> = spec.targets.rds_clusters.iter().map(|c| c.identifier.clone()).collect();
        let batches = &clients.limits.rds_cluster_batches;
        let answers = batches.load(&clients.account, &ids, |ids| probe_batch(clients, ids)).await;
        let keys: Vec<String> = ids.iter().map(|id| rules::key(id)).collect();
        ProbeReport::picked(&answers, &keys)
    };
    vec![call.boxed()]
}

/// The clusters named, with their members' statuses: two filtered, paginated calls.
async fn clusters(clients: &Clients, ids: &[String]) -> Result<BTreeMap<String, rules::Cluster>, AwsFault> {
    let filter = Filter::builder().name("db-cluster-id").set_values(Some(ids.to_vec())).build();
    let mut found = BTreeMap::new();
    let mut marker: Option<String> = None;
    loop {
        let out = {
            let _permit = clients.limits.in_flight.acquire().await.expect("never closed");
            let call = clients.rds.describe_db_clusters().filters(filter.clone()).set_marker(marker.clone());
            clients.observe("rds:DescribeDBClusters", call.send().await)?
        };
        for c in out.db_clusters() {
            let members = c
                .db_cluster_members()
                .iter()
                .map(|m| rules::Member {
                    id: m.db_instance_identifier().unwrap_or_default().to_owned(),
                    writer: m.is_cluster_writer() == Some(true),
                    status: None,
                })
                .collect();
            let cluster = rules::Cluster { status: c.status().unwrap_or("unknown").to_owned(), members };
            found.insert(c.db_cluster_identifier().unwrap_or_default().to_owned(), cluster);
        }
        marker = out.marker().map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    // The members' own statuses: a writer can be failing while its cluster says available.
    let mut statuses = BTreeMap::new();
    let mut marker: Option<String> = None;
    loop {
        let out = {
            let _permit = clients.limits.in_flight.acquire().await.expect("never closed");
            let call = clients.rds.describe_db_instances().filters(filter.clone()).set_marker(marker.clone());
            clients.observe("rds:DescribeDBInstances", call.send().await)?
        };
        for db in out.db_instances() {
            let id = db.db_instance_identifier().unwrap_or_default().to_owned();
            statuses.insert(id, db.db_instance_status().unwrap_or("unknown").to_owned());
        }
        marker = out.marker().map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    for cluster in found.values_mut() {
        for m in &mut cluster.members {
            m.status = statuses.get(&m.id).cloned();
        }
    }
    Ok(found)
}

/// One batch of cluster ids, possibly of several policies.
pub async fn probe_batch(clients: &Clients, identifiers: Vec<String>) -> ProbeReport {
    let mut report = ProbeReport::default();
    match clusters(clients, &identifiers).await {
        Ok(found) => {
            for id in &identifiers {
                match found.get(id) {
                    Some(c) => {
                        report.found(rules::key(id), rules::probe(c));
                    }
                    None => {
                        report.found(rules::key(id), Probe::Unknown(format!("RDS has no DB cluster {id}")));
                        report.missing.push(rules::key(id));
                    }
                }
            }
        }
        Err(fault) => {
            for id in &identifiers {
                report.found(rules::key(id), Probe::Unknown(fault.to_string()));
            }
            report.faults.push(fault);
        }
    }
    report
}

async fn cluster(clients: &Clients, id: &str) -> Result<rules::Cluster, AwsFault> {
    clusters(clients, &[id.to_owned()]).await?.remove(id).ok_or_else(|| AwsFault {
        operation: "rds:DescribeDBClusters",
        code: "DBClusterNotFoundFault".into(),
        message: format!("no DB cluster {id}"),
        retryable: false,
    })
}

/// Check first (the writer changed, or a failover event since the step started), then the
/// pre-checks, then one FailoverDBCluster.
pub(in crate::aws) async fn failover(
    clients: &Clients,
    p: &StepParameters,
    since: Timestamp,
) -> Result<ActionOutcome, ActionOutcome> {
    let id = param(&p.identifier, "identifier")?;
    let events = super::rds::events_since(clients, id, SourceType::DbCluster, since).await.map_err(failed)?;
    let c = cluster(clients, id).await.map_err(failed)?;
    let writer_before = p.writer_before.as_deref();
    let target = rules::before_failover(&c, &events, writer_before, since, p.failover_target.as_deref(), id, now())?;
    let out = {
        let _permit = clients.limits.in_flight.acquire().await.expect("never closed");
        let call = clients
            .rds
            .failover_db_cluster()
            .db_cluster_identifier(id)
            .set_target_db_instance_identifier(target.clone())
            .customize()
            .config_override(once_rds());
        clients.observe("rds:FailoverDBCluster", call.send().await).map_err(refused_or_failed)?
    };
    let to = target.unwrap_or_else(|| "a reader RDS chose".into());
    Ok(ActionOutcome::Done {
        message: format!(
            "FailoverDBCluster accepted for {id} (writer was {}), to {to}",
            writer_before.unwrap_or("none")
        ),
        evidence: evidence([
            ("writerBefore", writer_before.unwrap_or_default().to_owned()),
            ("statusBefore", c.status),
            ("requestId", aws_sdk_rds::operation::RequestId::request_id(&out).unwrap_or_default().to_owned()),
        ]),
    })
}

/// RDS refuses a failover while the cluster is changing (or one just happened): nothing was
/// done, so the step waits and asks again without spending an attempt.
fn refused_or_failed(f: AwsFault) -> ActionOutcome {
    if f.code == "InvalidDBClusterStateFault" {
        return ActionOutcome::Deferred {
            message: format!("RDS refused the failover for now, nothing was changed: {f}"),
            retry_after: std::time::Duration::from_secs(30),
        };
    }
    mutation_failed(f)
}

/// The cluster is `available` with an `available` writer other than the one before.
pub(in crate::aws) async fn verify(clients: &Clients, p: &StepParameters) -> Result<VerifyOutcome, String> {
    let id = p.identifier.as_deref().unwrap_or_default();
    let c = cluster(clients, id).await.map_err(|f| f.to_string())?;
    let writer = rules::verified(&c, p.writer_before.as_deref())?;
    let readers: BTreeSet<&str> = c.members.iter().filter(|m| !m.writer).map(|m| m.id.as_str()).collect();
    Ok(VerifyOutcome::Satisfied {
        message: format!("cluster {id} is available with writer {writer}"),
        evidence: evidence([
            ("writer", writer),
            ("readers", readers.into_iter().collect::<Vec<_>>().join(",")),
            ("status", c.status),
        ]),
    })
}
