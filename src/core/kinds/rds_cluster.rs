//! RDS DB clusters (Aurora, Multi-AZ DB clusters): healthy while the cluster is `available`
//! and has an `available` writer; the action is `FailoverDBCluster` (a reader becomes the
//! writer), and its effect is another writer, or an RDS failover event for the cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::Severity;
use crate::api::incident::{AwsResource, IncidentMetrics, IncidentSpec, ResourceKind};
use crate::api::plan::{StepAction, StepParameters};
use crate::api::policy::{Locale, RecoveryPolicySpec};
use crate::core::outcomes::{ActionOutcome, Probe};

use super::rds::{Event, hear_rds};
use super::{Place, PlanError, Target, TargetKind, Template, evidence, field, not_needed, resource};
use crate::core::events::{Envelope, Heard};

/// The kind.
pub struct RdsCluster;

/// The key of a cluster: `rdscluster/<identifier>`.
pub fn key(identifier: &str) -> String {
    format!("rdscluster/{identifier}")
}

/// One member of a cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Member {
    /// The instance identifier.
    pub id: String,
    /// `IsClusterWriter`.
    pub writer: bool,
    /// The instance's status (from DescribeDBInstances), if known.
    pub status: Option<String>,
}

impl Member {
    fn available(&self) -> bool {
        self.status.as_deref() == Some("available")
    }
}

/// What DescribeDBClusters (and the members' DescribeDBInstances) said about one cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cluster {
    /// The cluster's `Status`.
    pub status: String,
    /// `DBClusterMembers`, with their instances' statuses.
    pub members: Vec<Member>,
}

impl Cluster {
    /// The writer, if there is one.
    pub fn writer(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.writer)
    }
}

/// The health rule of a DB cluster, for detection and for the read before a failover.
pub fn is_healthy(c: &Cluster) -> bool {
    c.status == "available" && c.writer().is_some_and(Member::available)
}

/// What a probe of the cluster found.
pub fn probe(c: &Cluster) -> Probe {
    let metrics = IncidentMetrics {
        db_status: Some(c.status.clone()),
        writer: c.writer().map(|m| m.id.clone()),
        members: c
            .members
            .iter()
            .map(|m| {
                let role = if m.writer { "writer" } else { "reader" };
                format!("{} ({role}): {}", m.id, m.status.as_deref().unwrap_or("unknown"))
            })
            .collect(),
        ..IncidentMetrics::default()
    };
    if is_healthy(c) { Probe::Healthy(metrics) } else { Probe::Unhealthy(metrics) }
}

/// Cluster states in which it is already changing: wait rather than fail over.
const TRANSIENT: &[&str] = &[
    "failing-over",
    "modifying",
    "backing-up",
    "maintenance",
    "upgrading",
    "renaming",
    "starting",
    "stopping",
    "creating",
];

/// The reads before a failover, decided. In order: the failover already happened (the
/// writer is not the one seen at detection, or RDS reports a failover since the step
/// started); the cluster is healthy now (not needed); it is already changing (wait); it has
/// no available reader to fail over to (people must act: fail, not retried). Otherwise
/// fail over, to the preferred target if it is an available reader then.
pub fn before_failover(
    c: &Cluster,
    events: &[Event],
    writer_before: Option<&str>,
    since: Timestamp,
    preferred: Option<&str>,
    id: &str,
    read_at: Timestamp,
) -> Result<Option<String>, ActionOutcome> {
    let writer = c.writer().map(|m| m.id.as_str());
    if let (Some(before), Some(now)) = (writer_before, writer)
        && before != now
    {
        return Err(ActionOutcome::AlreadyDone {
            message: format!(
                "the writer of {id} is {now}, not {before} as at detection: the failover already happened"
            ),
            evidence: evidence([("writer", now.to_owned()), ("writerBefore", before.to_owned())]),
        });
    }
    let failover = events
        .iter()
        .find(|e| e.date.is_some_and(|t| t >= since) && e.message.to_ascii_lowercase().contains("failover"));
    if let Some(e) = failover {
        return Err(ActionOutcome::AlreadyDone {
            message: format!("RDS already reports \"{}\" for {id} since the step started", e.message),
            evidence: evidence([("event", e.message.clone())]),
        });
    }
    if is_healthy(c) {
        let ev = evidence([("status", c.status.clone()), ("writer", writer.unwrap_or_default().to_owned())]);
        return Err(not_needed(
            format!("cluster {id} is {} with writer {}", c.status, writer.unwrap_or("?")),
            ev,
            read_at,
        ));
    }
    if TRANSIENT.contains(&c.status.as_str()) {
        return Err(ActionOutcome::Deferred {
            message: format!("cluster {id} is {}; not failing over a cluster that is already changing", c.status),
            retry_after: Duration::from_secs(10),
        });
    }
    let readers: Vec<&Member> = c.members.iter().filter(|m| !m.writer && m.available()).collect();
    if readers.is_empty() {
        return Err(ActionOutcome::Failed {
            message: format!(
                "cluster {id} has no available reader: a failover needs somewhere to go; add or repair a reader"
            ),
            retryable: false,
        });
    }
    Ok(preferred.filter(|p| readers.iter().any(|r| r.id == *p)).map(str::to_owned))
}

/// The verification: `available`, with an `available` writer other than the one before.
pub fn verified(c: &Cluster, writer_before: Option<&str>) -> Result<String, String> {
    let writer = c.writer().ok_or("the cluster has no writer yet")?;
    if Some(writer.id.as_str()) == writer_before {
        return Err(format!("the writer is still {}", writer.id));
    }
    if !is_healthy(c) {
        return Err(format!(
            "the cluster is {}, writer {} is {}",
            c.status,
            writer.id,
            writer.status.as_deref().unwrap_or("unknown")
        ));
    }
    Ok(writer.id.clone())
}

impl TargetKind for RdsCluster {
    fn resource_kind(&self) -> ResourceKind {
        ResourceKind::RdsCluster
    }

    fn targets(&self, spec: &RecoveryPolicySpec) -> Vec<Target> {
        let region = &spec.aws.region;
        spec.targets
            .rds_clusters
            .iter()
            .map(|c| Target {
                key: key(&c.identifier),
                resource: AwsResource {
                    identifier: Some(c.identifier.clone()),
                    ..resource(ResourceKind::RdsCluster, region)
                },
                severity: c.severity.unwrap_or(Severity::Critical),
            })
            .collect()
    }

    fn plan(
        &self,
        incident: &IncidentSpec,
        metrics: Option<&IncidentMetrics>,
        policy: &RecoveryPolicySpec,
        base: StepParameters,
    ) -> Result<Template, PlanError> {
        let identifier = field(&incident.resource.identifier, "identifier")?;
        let preferred = policy
            .targets
            .rds_clusters
            .iter()
            .find(|c| c.identifier == identifier)
            .and_then(|c| c.failover_target.clone());
        let parameters = StepParameters {
            identifier: Some(identifier),
            writer_before: metrics.and_then(|m| m.writer.clone()),
            failover_target: preferred,
            ..base
        };
        Ok(Template { act: StepAction::FailoverCluster, verify: StepAction::VerifyCluster, parameters })
    }

    fn describe_incident(&self, r: &AwsResource, m: &IncidentMetrics) -> String {
        format!(
            "DB cluster {} is {}, writer {}",
            r.identifier.as_deref().unwrap_or_default(),
            m.db_status.as_deref().unwrap_or("unknown"),
            m.writer.as_deref().unwrap_or("none"),
        )
    }

    fn affected(&self, r: &AwsResource, _policy: &RecoveryPolicySpec) -> Vec<String> {
        vec![format!("rds-cluster:{}", r.identifier.as_deref().unwrap_or_default())]
    }

    fn describe_act(&self, p: &StepParameters) -> String {
        let target = p
            .failover_target
            .as_deref()
            .map(|t| format!(", TargetDBInstanceIdentifier={t} if available"))
            .unwrap_or_default();
        format!(
            "call RDS FailoverDBCluster(DBClusterIdentifier={}{target})",
            p.identifier.as_deref().unwrap_or_default()
        )
    }

    fn describe_verify(&self, p: &StepParameters) -> String {
        format!(
            "wait until DB cluster {} is available with an available writer other than {}",
            p.identifier.as_deref().unwrap_or_default(),
            p.writer_before.as_deref().unwrap_or("the one before")
        )
    }

    fn noun(&self, locale: Locale) -> &'static str {
        match locale {
            Locale::En => "DB cluster",
            Locale::Ko => "DB 클러스터",
        }
    }

    fn alert_resource(&self, r: &AwsResource) -> (String, Vec<Place>) {
        (r.identifier.clone().unwrap_or_else(|| "?".into()), vec![Place::Region(r.region.clone())])
    }

    fn hears(&self) -> &'static [(&'static str, &'static str)] {
        &[("aws.rds", "RDS DB Cluster Event")]
    }

    fn hear(&self, event: &Envelope) -> Vec<Heard> {
        hear_rds(event, self.hears(), ":cluster:", key)
    }

    fn keep(&self, spec: &mut RecoveryPolicySpec, keep: &BTreeSet<String>) {
        spec.targets.rds_clusters.retain(|c| keep.contains(&key(&c.identifier)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::at;

    fn member(id: &str, writer: bool, status: &str) -> Member {
        Member { id: id.into(), writer, status: Some(status.into()) }
    }

    fn cluster(status: &str, members: Vec<Member>) -> Cluster {
        Cluster { status: status.into(), members }
    }

    #[test]
    fn health_rule() {
        let cases = [
            (cluster("available", vec![member("a", true, "available"), member("b", false, "available")]), true),
            (cluster("available", vec![member("a", true, "failed"), member("b", false, "available")]), false),
            (cluster("available", vec![member("a", false, "available")]), false), // no writer
            (cluster("failing-over", vec![member("a", true, "available")]), false),
            (cluster("available", vec![Member { id: "a".into(), writer: true, status: None }]), false),
        ];
        for (c, healthy) in cases {
            assert_eq!(is_healthy(&c), healthy, "{c:?}");
            assert_eq!(matches!(probe(&c), Probe::Healthy(_)), healthy);
        }
        let Probe::Unhealthy(m) =
            probe(&cluster("available", vec![member("a", true, "failed"), member("b", false, "available")]))
        else {
            panic!("unhealthy")
        };
        assert_eq!(m.writer.as_deref(), Some("a"));
        assert_eq!(m.members, ["a (writer): failed", "b (reader): available"]);
    }

    #[test]
    fn before_failover_table() {
        let broken = || {
            cluster(
                "available",
                vec![member("a", true, "failed"), member("b", false, "available"), member("c", false, "available")],
            )
        };
        let kind = |o: Result<Option<String>, ActionOutcome>| match o {
            Ok(None) => "act".to_owned(),
            Ok(Some(t)) => format!("act to {t}"),
            Err(ActionOutcome::AlreadyDone { .. }) => "already".into(),
            Err(ActionOutcome::NotNeeded { .. }) => "not-needed".into(),
            Err(ActionOutcome::Deferred { .. }) => "wait".into(),
            Err(ActionOutcome::Failed { retryable: false, .. }) => "fail".into(),
            Err(other) => format!("{other:?}"),
        };
        let ev = |t: i64, m: &str| vec![Event { date: Some(at(t)), message: m.into() }];
        type Case = (&'static str, Cluster, Vec<Event>, Option<&'static str>, &'static str);
        let cases: Vec<Case> = vec![
            ("broken writer: act", broken(), vec![], None, "act"),
            ("the preferred reader is available", broken(), vec![], Some("c"), "act to c"),
            ("the preferred instance is the broken writer: RDS chooses", broken(), vec![], Some("a"), "act"),
            (
                "the writer changed since detection",
                cluster("available", vec![member("a", false, "failed"), member("b", true, "available")]),
                vec![],
                None,
                "already",
            ),
            (
                "a failover event since the step started",
                broken(),
                ev(101, "Started cross AZ failover to DB instance"),
                None,
                "already",
            ),
            (
                "an older failover event is not this step's",
                broken(),
                ev(99, "Completed failover to DB instance"),
                None,
                "act",
            ),
            (
                "healthy again",
                cluster("available", vec![member("a", true, "available"), member("b", false, "available")]),
                vec![],
                None,
                "not-needed",
            ),
            (
                "already failing over",
                cluster("failing-over", vec![member("a", true, "failed"), member("b", false, "available")]),
                vec![],
                None,
                "wait",
            ),
            (
                "no reader to go to",
                cluster("available", vec![member("a", true, "failed"), member("b", false, "rebooting")]),
                vec![],
                None,
                "fail",
            ),
        ];
        for (name, c, events, preferred, want) in cases {
            assert_eq!(
                kind(before_failover(&c, &events, Some("a"), at(100), preferred, "db", at(120))),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn verified_needs_another_available_writer() {
        let before = Some("a");
        assert!(verified(&cluster("available", vec![member("a", true, "available")]), before).is_err(), "same writer");
        assert!(
            verified(&cluster("available", vec![member("b", true, "rebooting")]), before).is_err(),
            "new writer not up"
        );
        assert!(verified(&cluster("failing-over", vec![member("b", true, "available")]), before).is_err());
        assert_eq!(verified(&cluster("available", vec![member("b", true, "available")]), before), Ok("b".into()));
    }
}
