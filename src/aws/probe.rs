//! Probes: what AWS says about each target of a policy, in as few calls as the APIs allow.
//!
//! ECS DescribeServices takes 10 services a call; RDS DescribeDBInstances takes a
//! `db-instance-id` filter with many values (paginated); Route 53 GetHealthCheckStatus takes
//! one check and is rate-limited process-wide. All calls of a policy run concurrently under
//! the process-wide in-flight bound, so one slow target does not hold up the others.

use std::collections::BTreeMap;

use aws_sdk_rds::types::Filter;
use futures::FutureExt;
use futures::future::{BoxFuture, join_all};

use crate::api::incident::IncidentMetrics;
use crate::api::policy::RecoveryPolicySpec;
use crate::core::detection::Probe;

use super::{AwsFault, Clients};

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
}

/// Probes every target of a policy.
pub async fn probe_policy(clients: &Clients, spec: &RecoveryPolicySpec) -> ProbeReport {
    let t = &spec.targets;
    let mut calls: Vec<BoxFuture<'_, ProbeReport>> = Vec::new();
    for group in &t.ecs_services {
        for chunk in group.services.chunks(ECS_BATCH) {
            calls.push(probe_ecs(clients, &group.cluster, chunk).boxed());
        }
    }
    let ids: Vec<&str> = t.rds_instances.iter().map(|d| d.identifier.as_str()).collect();
    for chunk in ids.chunks(RDS_BATCH) {
        calls.push(probe_rds(clients, chunk.to_vec()).boxed());
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
pub async fn probe_ecs(clients: &Clients, cluster: &str, services: &[String]) -> ProbeReport {
    let key = |s: &str| format!("ecs/{cluster}/{s}");
    let mut report = ProbeReport::default();
    let result = {
        let _permit = clients.limits.in_flight.acquire().await.expect("never closed");
        let call = clients.ecs.describe_services().cluster(cluster).set_services(Some(services.to_vec()));
        clients.observe("ecs:DescribeServices", call.send().await)
    };
    let out = match result {
        Ok(out) => out,
        // A missing cluster is a target that does not exist, not AWS failing.
        Err(fault) if fault.code == "ClusterNotFoundException" => {
            for s in services {
                report.probes.insert(key(s), Probe::Unknown(format!("ECS has no cluster {cluster}")));
                report.missing.push(key(s));
            }
            return report;
        }
        Err(fault) => {
            for s in services {
                report.probes.insert(key(s), Probe::Unknown(fault.to_string()));
            }
            report.faults.push(fault);
            return report;
        }
    };
    for svc in out.services() {
        let name = svc.service_name().unwrap_or_default();
        let metrics = IncidentMetrics {
            running_count: Some(svc.running_count()),
            desired_count: Some(svc.desired_count()),
            pending_count: Some(svc.pending_count()),
            primary_deployment: svc
                .deployments()
                .iter()
                .find(|d| d.status() == Some("PRIMARY"))
                .and_then(|d| d.id().map(str::to_owned)),
            // ECS lists events newest first.
            recent_events: svc.events().iter().take(5).filter_map(|e| e.message().map(str::to_owned)).collect(),
            ..IncidentMetrics::default()
        };
        let probe =
            if svc.running_count() < svc.desired_count() { Probe::Unhealthy(metrics) } else { Probe::Healthy(metrics) };
        report.probes.insert(key(name), probe);
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
    for s in services {
        report.probes.entry(key(s)).or_insert_with(|| Probe::Unknown("ECS did not mention the service".into()));
    }
    report
}

/// DescribeDBInstances filtered to the given identifiers, following pagination.
pub async fn probe_rds(clients: &Clients, identifiers: Vec<&str>) -> ProbeReport {
    let key = |id: &str| format!("rds/{id}");
    let mut report = ProbeReport::default();
    let filter = Filter::builder()
        .name("db-instance-id")
        .set_values(Some(identifiers.iter().map(|s| s.to_string()).collect()))
        .build();
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
            let status = db.db_instance_status().unwrap_or("unknown").to_owned();
            let metrics = IncidentMetrics {
                db_status: Some(status.clone()),
                endpoint: db.endpoint().and_then(|e| e.address()).map(str::to_owned),
                multi_az: db.multi_az(),
                availability_zones: [db.availability_zone(), db.secondary_availability_zone()]
                    .into_iter()
                    .flatten()
                    .map(str::to_owned)
                    .collect(),
                ..IncidentMetrics::default()
            };
            let probe = if status == "available" { Probe::Healthy(metrics) } else { Probe::Unhealthy(metrics) };
            report.probes.insert(key(id), probe);
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
    let key = format!("route53/{id}");
    let mut report = ProbeReport::default();
    clients.limits.route53.until_ready().await;
    let result = {
        let _permit = clients.limits.in_flight.acquire().await.expect("never closed");
        clients.observe(
            "route53:GetHealthCheckStatus",
            clients.route53.get_health_check_status().health_check_id(id).send().await,
        )
    };
    match result {
        Ok(out) => {
            let observations = out.health_check_observations();
            let failing = observations
                .iter()
                .filter(|o| !o.status_report().and_then(|r| r.status()).is_some_and(|s| s.starts_with("Success")))
                .count() as u32;
            let metrics = IncidentMetrics {
                health_check_id: Some(id.to_owned()),
                failing_observations: Some(failing),
                total_observations: Some(observations.len() as u32),
                ..IncidentMetrics::default()
            };
            let probe = if observations.is_empty() {
                Probe::Unknown(format!("health check {id} has no observations yet"))
            } else if failing > 0 {
                Probe::Unhealthy(metrics)
            } else {
                Probe::Healthy(metrics)
            };
            report.probes.insert(key, probe);
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
