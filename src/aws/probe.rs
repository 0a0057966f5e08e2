//! Probes: what AWS says about each target of a policy, in as few calls as the APIs allow.
//!
//! Each kind probes its own targets (`aws::kinds`): ECS DescribeServices takes 10 services
//! a call; RDS DescribeDBInstances takes a `db-instance-id` filter with many values
//! (paginated); Route 53 GetHealthCheckStatus takes one check and is rate-limited
//! process-wide. ECS and RDS ids of policies probing at the same moment share calls
//! (`aws::batch`). All calls of a policy run concurrently under the process-wide in-flight
//! bound, so one slow target does not hold up the others.

use futures::future::{BoxFuture, join_all};

use crate::api::incident::ResourceKind;
use crate::api::policy::RecoveryPolicySpec;

pub use super::report::ProbeReport;
use super::{Clients, kinds};

/// Probes every target of a policy. ECS and RDS reads go through the process-wide
/// coalescers (see `aws::batch`), so policies probing at the same moment share calls.
pub async fn probe_policy(clients: &Clients, spec: &RecoveryPolicySpec) -> ProbeReport {
    // One arm per kind, no wildcard: a new kind must say how it is probed.
    let calls: Vec<BoxFuture<'_, ProbeReport>> = crate::core::kinds::ALL
        .iter()
        .flat_map(|kind| match kind {
            ResourceKind::EcsService => kinds::ecs::probes(clients, spec),
            ResourceKind::RdsInstance => kinds::rds::probes(clients, spec),
            ResourceKind::RdsCluster => kinds::rds_cluster::probes(clients, spec),
            ResourceKind::Route53HealthCheck => kinds::route53::probes(clients, spec),
        })
        .collect();
    let mut report = ProbeReport::default();
    for part in join_all(calls).await {
        report.merge(part);
    }
    report
}
