//! RDS DB instances: healthy while `available`; the action is `RebootDBInstance`, with
//! ForceFailover only for a Multi-AZ instance, and its effect is an RDS event.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::Severity;
use crate::api::incident::{AwsResource, IncidentMetrics, IncidentSpec, ResourceKind};
use crate::api::plan::{StepAction, StepParameters};
use crate::api::policy::{Locale, RecoveryPolicySpec};
use crate::core::outcomes::{ActionOutcome, Probe};

use super::{Place, PlanError, Target, TargetKind, Template, detail, evidence, field, is_one_of, not_needed, resource};
use crate::core::events::{Envelope, Heard};

/// The kind.
pub struct Rds;

/// RDS event categories that report trouble: the rest (backup, configuration change,
/// maintenance, …) are changes worth a look. RDS delivers its events best effort.
const TROUBLE: [&str; 3] = ["failure", "failover", "availability"];

/// What an RDS event (instance or cluster: `segment` is `:db:` or `:cluster:` of the ARN)
/// says: the resource by `SourceIdentifier`, else by `SourceArn` or the event's resources.
pub(super) fn hear_rds(event: &Envelope, hears: &[(&str, &str)], segment: &str, key: fn(&str) -> String) -> Vec<Heard> {
    if !is_one_of(hears, event) {
        return Vec::new();
    }
    let categories = event.detail.get("EventCategories").and_then(|c| c.as_array());
    let trouble = categories.is_some_and(|c| c.iter().any(|c| c.as_str().is_some_and(|c| TROUBLE.contains(&c))));
    let from_arn = |arn: &str| arn.split_once(segment).map(|(_, id)| id.to_owned());
    let id = Some(detail(event, "SourceIdentifier").to_owned())
        .filter(|id| !id.is_empty())
        .or_else(|| from_arn(detail(event, "SourceArn")))
        .or_else(|| event.resources.iter().find_map(|r| from_arn(r)));
    id.map(|id| Heard { key: key(&id), trouble, global: false }).into_iter().collect()
}

/// The key of an instance: `rds/<identifier>`.
pub fn key(identifier: &str) -> String {
    format!("rds/{identifier}")
}

impl TargetKind for Rds {
    fn resource_kind(&self) -> ResourceKind {
        ResourceKind::RdsInstance
    }

    fn targets(&self, spec: &RecoveryPolicySpec) -> Vec<Target> {
        let region = &spec.aws.region;
        spec.targets
            .rds_instances
            .iter()
            .map(|db| Target {
                key: key(&db.identifier),
                resource: AwsResource {
                    identifier: Some(db.identifier.clone()),
                    ..resource(ResourceKind::RdsInstance, region)
                },
                severity: db.severity.unwrap_or(Severity::Critical),
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
        let identifier = field(&incident.resource.identifier, "identifier")?;
        // ForceFailover is only valid for Multi-AZ; a single-AZ instance gets a plain
        // reboot. Unknown Multi-AZ (no metrics yet) is treated as single-AZ: a plain reboot
        // is safe on both, a forced failover is not.
        let multi_az = metrics.and_then(|m| m.multi_az);
        let reason = match multi_az {
            Some(true) => "Multi-AZ instance: reboot with ForceFailover to the standby",
            Some(false) => "single-AZ instance: plain reboot (ForceFailover needs Multi-AZ)",
            None => "Multi-AZ unknown: plain reboot, which is safe either way",
        };
        let parameters = StepParameters {
            identifier: Some(identifier),
            force_failover: Some(multi_az == Some(true)),
            reason: Some(reason.into()),
            ..base
        };
        Ok(Template { act: StepAction::FailoverDatabase, verify: StepAction::VerifyDatabase, parameters })
    }

    fn describe_incident(&self, r: &AwsResource, m: &IncidentMetrics) -> String {
        format!(
            "RDS instance {} is {}, not available{}",
            r.identifier.as_deref().unwrap_or_default(),
            m.db_status.as_deref().unwrap_or("unknown"),
            if m.multi_az == Some(true) { " (Multi-AZ)" } else { "" }
        )
    }

    fn affected(&self, r: &AwsResource, _policy: &RecoveryPolicySpec) -> Vec<String> {
        vec![format!("rds:{}", r.identifier.as_deref().unwrap_or_default())]
    }

    fn describe_act(&self, p: &StepParameters) -> String {
        format!(
            "call RDS RebootDBInstance(DBInstanceIdentifier={}, ForceFailover={})",
            p.identifier.as_deref().unwrap_or_default(),
            p.force_failover.unwrap_or(false)
        )
    }

    fn noun(&self, locale: Locale) -> &'static str {
        match locale {
            Locale::En => "RDS instance",
            Locale::Ko => "RDS 인스턴스",
        }
    }

    fn alert_resource(&self, r: &AwsResource) -> (String, Vec<Place>) {
        (r.identifier.clone().unwrap_or_else(|| "?".into()), vec![Place::Region(r.region.clone())])
    }

    fn hears(&self) -> &'static [(&'static str, &'static str)] {
        &[("aws.rds", "RDS DB Instance Event")]
    }

    fn hear(&self, event: &Envelope) -> Vec<Heard> {
        hear_rds(event, self.hears(), ":db:", key)
    }

    fn keep(&self, spec: &mut RecoveryPolicySpec, keep: &BTreeSet<String>) {
        spec.targets.rds_instances.retain(|i| keep.contains(&key(&i.identifier)));
    }

    fn describe_verify(&self, p: &StepParameters) -> String {
        format!("wait until RDS instance {} is available", p.identifier.as_deref().unwrap_or_default())
    }
}

/// What DescribeDBInstances said about one instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Instance {
    /// `DBInstanceStatus`.
    pub status: String,
    /// The endpoint address.
    pub endpoint: Option<String>,
    /// Whether it is Multi-AZ.
    pub multi_az: Option<bool>,
    /// Primary and secondary availability zones.
    pub availability_zones: Vec<String>,
    /// The DB cluster it belongs to (Aurora, Multi-AZ DB clusters), if any.
    pub cluster: Option<String>,
}

/// Why an instance of a DB cluster is not a target of this kind, if it is one: a cluster's
/// instances fail over with the cluster (RebootDBInstance with ForceFailover is not
/// supported for them), so the cluster is the target.
pub fn misplaced(i: &Instance, id: &str) -> Option<String> {
    i.cluster.as_ref().map(|c| format!("instance {id} belongs to DB cluster {c}: list the cluster under rdsClusters"))
}

/// One RDS event of the instance (DescribeEvents).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// When RDS recorded it.
    pub date: Option<Timestamp>,
    /// What it says.
    pub message: String,
}

/// The health rule of an RDS instance, for detection and for the read before a reboot.
pub fn is_healthy(i: &Instance) -> bool {
    i.status == "available"
}

/// What a probe of the instance found.
pub fn probe(i: &Instance) -> Probe {
    let metrics = IncidentMetrics {
        db_status: Some(i.status.clone()),
        endpoint: i.endpoint.clone(),
        multi_az: i.multi_az,
        availability_zones: i.availability_zones.clone(),
        ..IncidentMetrics::default()
    };
    if is_healthy(i) { Probe::Healthy(metrics) } else { Probe::Unhealthy(metrics) }
}

/// RDS states in which an instance is already changing: wait rather than reboot.
const TRANSIENT: &[&str] = &[
    "rebooting",
    "starting",
    "stopping",
    "modifying",
    "backing-up",
    "maintenance",
    "upgrading",
    "renaming",
    "resetting-master-credentials",
    "configuring-enhanced-monitoring",
    "configuring-iam-database-auth",
    "configuring-log-exports",
    "storage-optimization",
    "creating",
    "moving-to-vpc",
];

/// The check-first read of a reboot step: an RDS event since the step started that records
/// a reboot or a failover is the step's effect.
pub fn effect_since(events: &[Event], since: Timestamp) -> Result<(), ActionOutcome> {
    let done = events.iter().find(|e| {
        let msg = e.message.to_ascii_lowercase();
        e.date.is_some_and(|t| t >= since)
            && (msg.contains("restarted") || msg.contains("reboot") || msg.contains("failover"))
    });
    match done {
        Some(e) => Err(ActionOutcome::AlreadyDone {
            message: format!("RDS already reports \"{}\" since the step started", e.message),
            evidence: evidence([("event", e.message.clone())]),
        }),
        None => Ok(()),
    }
}

/// How to reboot, once [`before_reboot`] allows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reboot {
    /// Send ForceFailover.
    pub force_failover: bool,
    /// Why, for the step's message.
    pub why: &'static str,
}

/// The read of the instance before a reboot (after [`effect_since`] found no effect),
/// decided: healthy now is not needed; an instance already changing waits; a stopped one
/// is refused; otherwise reboot, with ForceFailover only where it is valid (Multi-AZ now,
/// not just when planned).
pub fn before_reboot(
    i: &Instance,
    failover_planned: bool,
    id: &str,
    read_at: Timestamp,
) -> Result<Reboot, ActionOutcome> {
    if is_healthy(i) {
        let ev = evidence([
            ("status", i.status.clone()),
            ("availabilityZone", i.availability_zones.first().cloned().unwrap_or_default()),
        ]);
        return Err(not_needed(format!("instance {id} is {}", i.status), ev, read_at));
    }
    if let Some(why) = misplaced(i, id) {
        return Err(ActionOutcome::Failed { message: format!("not rebooted: {why}"), retryable: false });
    }
    if TRANSIENT.contains(&i.status.as_str()) {
        return Err(ActionOutcome::Deferred {
            message: format!("instance {id} is {}; not rebooting an instance that is already changing", i.status),
            retry_after: Duration::from_secs(10),
        });
    }
    if i.status == "stopped" {
        return Err(ActionOutcome::Failed {
            message: format!(
                "instance {id} is stopped: a reboot cannot start it, and a stopped database is usually stopped on purpose"
            ),
            retryable: false,
        });
    }
    let multi_az = i.multi_az == Some(true);
    let why = match (failover_planned, multi_az) {
        (true, true) => "Multi-AZ: rebooting with ForceFailover to the standby",
        (true, false) => "planned a failover, but the instance is no longer Multi-AZ: plain reboot",
        (false, _) => "plain reboot (no failover planned)",
    };
    Ok(Reboot { force_failover: failover_planned && multi_az, why })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::at;

    fn db(status: &str, multi_az: bool) -> Instance {
        Instance { status: status.into(), multi_az: Some(multi_az), ..Instance::default() }
    }

    #[test]
    fn health_rule() {
        for (status, healthy) in [("available", true), ("failed", false), ("rebooting", false), ("storage-full", false)]
        {
            assert_eq!(is_healthy(&db(status, false)), healthy, "{status}");
            assert_eq!(matches!(probe(&db(status, false)), Probe::Healthy(_)), healthy, "{status}: probe agrees");
        }
    }

    #[test]
    fn effect_table() {
        let e = |t: i64, m: &str| Event { date: Some(at(t)), message: m.into() };
        let cases = [
            (vec![], false),
            (vec![e(101, "DB instance restarted")], true),
            (vec![e(101, "Multi-AZ instance failover started")], true),
            (vec![e(99, "DB instance restarted")], false), // before the step
            (vec![e(101, "Backing up DB instance")], false),
        ];
        for (events, done) in cases {
            assert_eq!(effect_since(&events, at(100)).is_err(), done, "{events:?}");
        }
    }

    #[test]
    fn before_reboot_table() {
        let cases: Vec<(Instance, bool, Result<bool, &str>)> = vec![
            (db("failed", true), true, Ok(true)),
            (db("failed", false), true, Ok(false)),
            (db("incompatible-parameters", true), false, Ok(false)),
            (db("available", true), true, Err("not-needed")),
            (db("rebooting", true), true, Err("wait")),
            (db("modifying", false), true, Err("wait")),
            (db("stopped", false), true, Err("failed")),
            (Instance { cluster: Some("aurora".into()), ..db("failed", false) }, true, Err("failed")),
        ];
        for (i, planned, want) in cases {
            let got = before_reboot(&i, planned, "db1", at(5)).map(|r| r.force_failover).map_err(|o| match o {
                ActionOutcome::NotNeeded { .. } => "not-needed",
                ActionOutcome::Deferred { .. } => "wait",
                ActionOutcome::Failed { .. } => "failed",
                _ => "other",
            });
            assert_eq!(got, want, "{} planned={planned}", i.status);
        }
        let Err(ActionOutcome::NotNeeded { evidence, .. }) = before_reboot(&db("available", true), true, "db1", at(5))
        else {
            panic!("not needed")
        };
        assert_eq!(evidence["status"], "available");
    }
}
