//! Route 53 health checks: healthy while every checker reports success; the action UPSERTs
//! the policy's failover record to its alias target, and its effect is the record already
//! aliasing the target.

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;

use crate::api::Severity;
use crate::api::incident::{AwsResource, IncidentMetrics, IncidentSpec, ResourceKind};
use crate::api::plan::{StepAction, StepParameters};
use crate::api::policy::{AliasTarget, Locale, RecoveryPolicySpec, Route53Failover};
use crate::core::outcomes::{ActionOutcome, Probe};

use super::{Place, PlanError, Target, TargetKind, Template, evidence, field, is_one_of, not_needed, resource};
use crate::core::events::{Envelope, Heard};

/// The kind.
pub struct Route53;

/// The failover record the policy gives a health check, if any.
fn failover_of<'a>(policy: &'a RecoveryPolicySpec, id: &str) -> Option<&'a Route53Failover> {
    policy.targets.route53_health_checks.iter().find(|hc| hc.health_check_id == id)?.failover.as_ref()
}

/// The key of a health check: `route53/<id>`.
pub fn key(health_check_id: &str) -> String {
    format!("route53/{health_check_id}")
}

impl TargetKind for Route53 {
    fn resource_kind(&self) -> ResourceKind {
        ResourceKind::Route53HealthCheck
    }

    fn targets(&self, spec: &RecoveryPolicySpec) -> Vec<Target> {
        let region = &spec.aws.region;
        spec.targets
            .route53_health_checks
            .iter()
            .map(|hc| Target {
                key: key(&hc.health_check_id),
                resource: AwsResource {
                    health_check_id: Some(hc.health_check_id.clone()),
                    ..resource(ResourceKind::Route53HealthCheck, region)
                },
                severity: hc.severity.unwrap_or(Severity::High),
            })
            .collect()
    }

    fn plan(
        &self,
        incident: &IncidentSpec,
        _metrics: Option<&IncidentMetrics>,
        policy: &RecoveryPolicySpec,
        base: StepParameters,
    ) -> Result<Template, PlanError> {
        let id = field(&incident.resource.health_check_id, "healthCheckId")?;
        let failover = failover_of(policy, &id).cloned().ok_or_else(|| PlanError::NoFailover(id.clone()))?;
        let parameters = StepParameters {
            hosted_zone_id: Some(failover.hosted_zone_id),
            record_name: Some(failover.record_name),
            record_type: Some(failover.record_type),
            // The alias keeps its own hosted zone id; the seed reused the record's.
            alias_target: Some(failover.alias_target),
            // Read again just before the change: a primary passing again needs none.
            health_check_id: Some(id),
            ..base
        };
        Ok(Template { act: StepAction::UpdateDns, verify: StepAction::VerifyDns, parameters })
    }

    fn describe_incident(&self, r: &AwsResource, m: &IncidentMetrics) -> String {
        format!(
            "Route 53 health check {}: {} of {} checkers report failure",
            r.health_check_id.as_deref().unwrap_or_default(),
            m.failing_observations.unwrap_or_default(),
            m.total_observations.unwrap_or_default()
        )
    }

    fn affected(&self, r: &AwsResource, policy: &RecoveryPolicySpec) -> Vec<String> {
        let id = r.health_check_id.as_deref().unwrap_or_default();
        let record = failover_of(policy, id).map(|f| format!("dns:{}", f.record_name));
        std::iter::once(format!("route53-health-check:{id}")).chain(record).collect()
    }

    fn describe_act(&self, p: &StepParameters) -> String {
        let (name, zone) =
            p.alias_target.as_ref().map(|a| (a.dns_name.clone(), a.hosted_zone_id.clone())).unwrap_or_default();
        format!(
            "call Route 53 ChangeResourceRecordSets(zone={}, UPSERT {} {} ALIAS {name} in zone {zone})",
            p.hosted_zone_id.as_deref().unwrap_or_default(),
            p.record_name.as_deref().unwrap_or_default(),
            p.record_type.map(|t| t.as_str()).unwrap_or("A"),
        )
    }

    fn noun(&self, locale: Locale) -> &'static str {
        match locale {
            Locale::En => "Route 53 health check",
            Locale::Ko => "Route 53 헬스 체크",
        }
    }

    /// Route 53 is global: its region says nothing.
    fn alert_resource(&self, r: &AwsResource) -> (String, Vec<Place>) {
        (r.health_check_id.clone().unwrap_or_else(|| "?".into()), vec![])
    }

    fn hears(&self) -> &'static [(&'static str, &'static str)] {
        &[("aws.cloudwatch", "CloudWatch Alarm State Change")]
    }

    /// Route 53 sends no events of its own: a CloudWatch alarm on a health check's
    /// `AWS/Route53` metric (in us-east-1, where those metrics live) is how one is heard.
    /// The alarm names the check in its metric's `HealthCheckId` dimension; going to ALARM
    /// is trouble.
    fn hear(&self, event: &Envelope) -> Vec<Heard> {
        if !is_one_of(self.hears(), event) {
            return Vec::new();
        }
        let trouble = event.detail.pointer("/state/value").and_then(|v| v.as_str()) == Some("ALARM");
        let metrics = event.detail.pointer("/configuration/metrics").and_then(|m| m.as_array());
        metrics
            .into_iter()
            .flatten()
            .filter_map(|m| m.pointer("/metricStat/metric"))
            .filter(|m| m.get("namespace").and_then(|n| n.as_str()) == Some("AWS/Route53"))
            .filter_map(|m| m.pointer("/dimensions/HealthCheckId")?.as_str())
            .map(|id| Heard { key: key(id), trouble, global: true })
            .collect()
    }

    fn keep(&self, spec: &mut RecoveryPolicySpec, keep: &BTreeSet<String>) {
        spec.targets.route53_health_checks.retain(|hc| keep.contains(&key(&hc.health_check_id)));
    }

    fn describe_verify(&self, p: &StepParameters) -> String {
        format!(
            "wait until the change is INSYNC and {} aliases the target",
            p.record_name.as_deref().unwrap_or_default()
        )
    }
}

/// What GetHealthCheckStatus said: one status report per checker (`Success: …`,
/// `Failure: …`; empty when a checker sent none).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observations {
    /// Each checker's status report.
    pub statuses: Vec<String>,
}

impl Observations {
    /// Checkers that do not report success.
    pub fn failing(&self) -> u32 {
        self.statuses.iter().filter(|s| !s.starts_with("Success")).count() as u32
    }
}

/// The health rule of a health check, for detection and for the read before a failover:
/// healthy when every checker reports success; unknown while there are no observations.
pub fn probe(id: &str, o: &Observations) -> Probe {
    let metrics = IncidentMetrics {
        health_check_id: Some(id.to_owned()),
        failing_observations: Some(o.failing()),
        total_observations: Some(o.statuses.len() as u32),
        ..IncidentMetrics::default()
    };
    if o.statuses.is_empty() {
        Probe::Unknown(format!("health check {id} has no observations yet"))
    } else if o.failing() > 0 {
        Probe::Unhealthy(metrics)
    } else {
        Probe::Healthy(metrics)
    }
}

/// One record set, as ListResourceRecordSets lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Its name.
    pub name: String,
    /// Its type (`A`, `AAAA`, `CNAME`).
    pub r#type: String,
    /// Its alias target's DNS name and hosted zone, if it is an alias.
    pub alias: Option<(String, String)>,
}

fn fqdn(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with('.') { lower } else { format!("{lower}.") }
}

/// Whether `records` hold `name`/`type` aliasing `target` (names compared as FQDNs, case
/// aside; zone ids with or without their `/hostedzone/` prefix).
pub fn aliases(records: &[Record], name: &str, r#type: &str, target: &AliasTarget) -> bool {
    records.iter().any(|r| {
        fqdn(&r.name) == fqdn(name)
            && r.r#type == r#type
            && r.alias.as_ref().is_some_and(|(dns, zone)| {
                fqdn(dns) == fqdn(&target.dns_name) && zone.trim_start_matches("/hostedzone/") == target.hosted_zone_id
            })
    })
}

/// The reads before a DNS failover, decided: the record already aliasing the target is the
/// step's effect; a primary whose health check passes again (read just now) needs no
/// failover. `health` is `None` when the step names no health check (plans made by
/// earlier versions): then only the effect is checked.
pub fn before_update(
    already_aliased: bool,
    record: &str,
    target: &AliasTarget,
    health: Option<(&str, &Observations)>,
    read_at: Timestamp,
) -> Result<(), ActionOutcome> {
    if already_aliased {
        return Err(ActionOutcome::AlreadyDone {
            message: format!("{record} already aliases {} in zone {}", target.dns_name, target.hosted_zone_id),
            evidence: evidence([("record", record.to_owned())]),
        });
    }
    if let Some((id, o)) = health
        && matches!(probe(id, o), Probe::Healthy(_))
    {
        let what = format!("health check {id}: all {} checkers report success", o.statuses.len());
        let ev = evidence([
            ("healthCheckId", id.to_owned()),
            ("failingObservations", o.failing().to_string()),
            ("totalObservations", o.statuses.len().to_string()),
        ]);
        return Err(not_needed(what, ev, read_at));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::at;

    fn obs(statuses: &[&str]) -> Observations {
        Observations { statuses: statuses.iter().map(|s| s.to_string()).collect() }
    }

    fn target() -> AliasTarget {
        AliasTarget {
            dns_name: "backup.example.com".into(),
            hosted_zone_id: "Z456".into(),
            evaluate_target_health: true,
        }
    }

    #[test]
    fn health_rule() {
        let kind = |p: Probe| match p {
            Probe::Healthy(_) => "healthy",
            Probe::Unhealthy(_) => "unhealthy",
            Probe::Unknown(_) => "unknown",
        };
        let cases = [
            (obs(&["Success: HTTP 200"]), "healthy"),
            (obs(&["Success: HTTP 200", "Failure: HTTP 503"]), "unhealthy"),
            (obs(&["", "Success"]), "unhealthy"), // a checker without a report is not success
            (obs(&[]), "unknown"),
        ];
        for (o, want) in cases {
            assert_eq!(kind(probe("hc", &o)), want, "{o:?}");
        }
    }

    #[test]
    fn aliases_compares_names_as_fqdns() {
        let rec = |name: &str, t: &str, alias: Option<(&str, &str)>| Record {
            name: name.into(),
            r#type: t.into(),
            alias: alias.map(|(a, b)| (a.into(), b.into())),
        };
        let cases = [
            (rec("api.example.com.", "A", Some(("backup.example.com.", "Z456"))), true),
            (rec("API.example.com", "A", Some(("Backup.Example.com", "/hostedzone/Z456"))), true),
            (rec("api.example.com.", "AAAA", Some(("backup.example.com.", "Z456"))), false),
            (rec("api.example.com.", "A", Some(("primary.example.com.", "Z456"))), false),
            (rec("api.example.com.", "A", Some(("backup.example.com.", "Z123"))), false), // the record's zone
            (rec("api.example.com.", "A", None), false),
        ];
        for (r, want) in cases {
            assert_eq!(aliases(std::slice::from_ref(&r), "api.example.com", "A", &target()), want, "{r:?}");
        }
    }

    #[test]
    fn before_update_table() {
        let t = target();
        let kind = |o: Result<(), ActionOutcome>| match o {
            Ok(()) => "act",
            Err(ActionOutcome::AlreadyDone { .. }) => "already",
            Err(ActionOutcome::NotNeeded { .. }) => "not-needed",
            Err(_) => "other",
        };
        let passing = obs(&["Success", "Success"]);
        let failing = obs(&["Success", "Failure"]);
        let none = obs(&[]);
        let cases = [
            (false, Some(("hc", &failing)), "act"),
            (false, Some(("hc", &passing)), "not-needed"),
            (true, Some(("hc", &passing)), "already"),
            (false, Some(("hc", &none)), "act"), // no observations: not known healthy
            (false, None, "act"),                // an older plan without the check's id
        ];
        for (aliased, health, want) in cases {
            assert_eq!(
                kind(before_update(aliased, "api.example.com", &t, health, at(1))),
                want,
                "{aliased} {health:?}"
            );
        }
    }
}
