//! Probes: what AWS says about each target of a policy, in as few calls as the APIs allow.
//!
//! ECS DescribeServices takes 10 services a call; RDS DescribeDBInstances takes a
//! `db-instance-id` filter with many values (paginated); Route 53 GetHealthCheckStatus takes
//! one check and is rate-limited process-wide. ECS and RDS ids of policies probing at the
//! same moment share calls (`aws::batch`). All calls of a policy run concurrently under the
//! process-wide in-flight bound, so one slow target does not hold up the others.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_rds::types::Filter;
use futures::FutureExt;
use futures::future::{BoxFuture, join_all};

use crate::api::policy::RecoveryPolicySpec;
use crate::core::detection::Probe;
use crate::core::kinds::{ecs, rds, route53};

use super::{AwsFault, Clients, snapshot};

/// ECS's limit on services per DescribeServices call.
pub const ECS_BATCH: usize = 10;
/// Values per RDS filter we send in one call (the API's documented bound is 100).
pub const RDS_BATCH: usize = 100;

/// Everything one probe cycle learned.
#[derive(Debug, Default)]
pub struct ProbeReport {
    /// One entry per target key that was asked about.
    pub probes: BTreeMap<String, Probe>,
    /// Calls that failed after retries.
    pub faults: Vec<AwsFault>,
    /// Targets AWS says do not exist.
    pub missing: Vec<String>,
}

impl ProbeReport {
    fn merge(&mut self, other: ProbeReport) {
        self.probes.extend(other.probes);
        self.faults.extend(other.faults);
        self.missing.extend(other.missing);
    }

    /// What shared batches said about `keys`: their probes, which of them are missing, and
    /// each batch's faults (a failed call failed for every id in it).
    fn picked(answers: &[Arc<ProbeReport>], keys: &[String]) -> ProbeReport {
        let mut report = ProbeReport::default();
        for answer in answers {
            let mine: Vec<&String> = keys.iter().filter(|k| answer.probes.contains_key(*k)).collect();
            if mine.is_empty() {
                continue;
            }
            for key in mine {
                report.probes.insert(key.clone(), answer.probes[key].clone());
            }
            report.missing.extend(answer.missing.iter().filter(|m| keys.contains(m)).cloned());
            report.faults.extend(answer.faults.iter().cloned());
        }
        report
    }
}

/// Probes every target of a policy. ECS and RDS reads go through the process-wide
/// coalescers (see `aws::batch`), so policies probing at the same moment share calls.
pub async fn probe_policy(clients: &Clients, spec: &RecoveryPolicySpec) -> ProbeReport {
    let t = &spec.targets;
    let limits = &clients.limits;
    let mut calls: Vec<BoxFuture<'_, ProbeReport>> = Vec::new();
    for group in &t.ecs_services {
        let cluster = group.cluster.as_str();
        calls.push(
            async move {
                let key = (clients.account.clone(), cluster.to_owned());
                let answers =
                    limits.ecs_batches.load(&key, &group.services, |ids| probe_ecs(clients, cluster, ids)).await;
                let keys: Vec<String> = group.services.iter().map(|s| ecs::key(cluster, s)).collect();
                ProbeReport::picked(&answers, &keys)
            }
            .boxed(),
        );
    }
    if !t.rds_instances.is_empty() {
        calls.push(
            async move {
                let ids: Vec<String> = t.rds_instances.iter().map(|d| d.identifier.clone()).collect();
                let answers = limits.rds_batches.load(&clients.account, &ids, |ids| probe_rds(clients, ids)).await;
                let keys: Vec<String> = ids.iter().map(|id| rds::key(id)).collect();
                ProbeReport::picked(&answers, &keys)
            }
            .boxed(),
        );
    }
    for hc in &t.route53_health_checks {
        calls.push(probe_health_check(clients, &hc.health_check_id).boxed());
    }
    let mut report = ProbeReport::default();
    for part in join_all(calls).await {
        report.merge(part);
    }
    report
}

/// One DescribeServices call for up to ten services of a cluster.
pub async fn probe_ecs(clients: &Clients, cluster: &str, services: Vec<String>) -> ProbeReport {
    let key = |s: &str| ecs::key(cluster, s);
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
                report.probes.insert(key(s), Probe::Unknown(format!("ECS has no cluster {cluster}")));
                report.missing.push(key(s));
            }
            return report;
        }
        Err(fault) => {
            for s in &services {
                report.probes.insert(key(s), Probe::Unknown(fault.to_string()));
            }
            report.faults.push(fault);
            return report;
        }
    };
    for svc in out.services() {
        let name = svc.service_name().unwrap_or_default();
        report.probes.insert(key(name), ecs::probe(&snapshot::ecs_service(svc)));
    }
    for f in out.failures() {
        // The failure names the service by ARN; its last path segment is the name.
        let name = f.arn().unwrap_or_default().rsplit('/').next().unwrap_or_default();
        let reason = f.reason().unwrap_or("failure");
        if services.iter().any(|s| s == name) {
            report.probes.insert(
                key(name),
                Probe::Unknown(format!("ECS reports {reason} for service {name} in cluster {cluster}")),
            );
            if reason == "MISSING" {
                report.missing.push(key(name));
            }
        }
    }
    for s in &services {
        report.probes.entry(key(s)).or_insert_with(|| Probe::Unknown("ECS did not mention the service".into()));
    }
    report
}

/// DescribeDBInstances filtered to the given identifiers, following pagination.
pub async fn probe_rds(clients: &Clients, identifiers: Vec<String>) -> ProbeReport {
    let key = |id: &str| rds::key(id);
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
                    report.probes.entry(key(id)).or_insert_with(|| Probe::Unknown(fault.to_string()));
                }
                report.faults.push(fault);
                return report;
            }
        };
        for db in out.db_instances() {
            let id = db.db_instance_identifier().unwrap_or_default();
            report.probes.insert(key(id), rds::probe(&snapshot::rds_instance(db)));
        }
        marker = out.marker().map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    for id in &identifiers {
        if let std::collections::btree_map::Entry::Vacant(slot) = report.probes.entry(key(id)) {
            slot.insert(Probe::Unknown(format!("RDS has no DB instance {id}")));
            report.missing.push(key(id));
        }
    }
    report
}

/// GetHealthCheckStatus for one check, under the process-wide Route 53 rate limit.
pub async fn probe_health_check(clients: &Clients, id: &str) -> ProbeReport {
    let key = route53::key(id);
    let mut report = ProbeReport::default();
    let result = clients
        .route53_read("route53:GetHealthCheckStatus", || {
            clients.route53.get_health_check_status().health_check_id(id).send()
        })
        .await;
    match result {
        Ok(out) => {
            report.probes.insert(key, route53::probe(id, &snapshot::health_check(&out)));
        }
        // A missing check is a target that does not exist, not AWS failing.
        Err(fault) if fault.code == "NoSuchHealthCheck" => {
            report.missing.push(key.clone());
            report.probes.insert(key, Probe::Unknown(format!("Route 53 has no health check {id}")));
        }
        Err(fault) => {
            report.probes.insert(key, Probe::Unknown(fault.to_string()));
            report.faults.push(fault);
        }
    }
    report
}
