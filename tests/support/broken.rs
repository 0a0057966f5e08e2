//! One broken target of each kind under an Automatic policy, for tests that must treat the
//! three recovery templates alike: a degraded ECS service, a failed RDS instance, a failing
//! Route 53 health check with a failover record.

use serde_json::{Value, json};

use super::{Faults, aws, namespace, policy, unique};

/// The three templates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// RestartService → VerifyService.
    Ecs,
    /// FailoverDatabase → VerifyDatabase.
    Rds,
    /// UpdateDns → VerifyDns.
    Dns,
    /// FailoverCluster → VerifyCluster.
    Cluster,
}

/// A broken target, its policy `p` (probed every 2s, one failed probe opens an incident) in
/// a fresh namespace, and how to find the one mutating call its plan makes.
pub struct Broken {
    /// Which template.
    pub kind: Kind,
    /// Kube client.
    pub client: kube::Client,
    /// The test namespace.
    pub ns: String,
    /// The fault layer.
    pub faults: Faults,
    /// Cluster, DB identifier or hosted zone id: what the mutating call names.
    pub id: String,
    /// The health check (DNS only).
    pub health_check: Option<String>,
    /// The failover record's name (DNS only).
    pub record: Option<String>,
}

impl Broken {
    /// Breaks a new target of `kind`; `remediation` is merged into the policy's remediation.
    /// An RDS instance is pinned `failed` (reboots do not heal it) until [`Broken::heal`].
    pub async fn new(kind: Kind, prefix: &str, remediation: Value) -> Self {
        let client = super::client().await;
        let ns = namespace(&client, prefix).await;
        let cfg = aws::config().await;
        let faults = Faults::from_env();
        let (id, health_check, record, targets) = match kind {
            Kind::Ecs => {
                let cluster = unique(prefix);
                aws::ecs_services(&cfg, &cluster, &["web".into()], 2).await;
                faults.ecs_service(json!({"cluster": cluster, "service": "web", "runningCount": 1})).await;
                let targets = json!({"ecsServices": [{"cluster": cluster, "services": ["web"]}]});
                (cluster, None, None, targets)
            }
            Kind::Rds => {
                let db = unique("fdb");
                aws::rds_instance(&cfg, &db, true).await;
                faults.rds_instance(json!({"dbInstanceIdentifier": db, "status": "failed", "pin": true})).await;
                let targets = json!({"rdsInstances": [{"identifier": db}]});
                (db, None, None, targets)
            }
            Kind::Dns => {
                let zone_name = format!("{}.example.com", unique("fz"));
                let zone = aws::hosted_zone(&cfg, &zone_name).await;
                let record = format!("api.{zone_name}");
                let hc = aws::health_check(&cfg, &record).await;
                faults.health_check(&hc, 3, 3).await;
                let targets = json!({"route53HealthChecks": [{"healthCheckId": hc, "failover": {
                    "hostedZoneId": zone, "recordName": record, "recordType": "A",
                    "aliasTarget": {"dnsName": "backup-lb.elb.amazonaws.com", "hostedZoneId": "Z35SXDOTRQ7X7K", "evaluateTargetHealth": true}}}]});
                (zone, Some(hc), Some(record), targets)
            }
            Kind::Cluster => {
                // The writer is pinned failed; a failover to the reader repairs the cluster.
                let cluster = unique("fcl");
                let members = [format!("{cluster}-a"), format!("{cluster}-b")];
                aws::rds_cluster(&cfg, &cluster, &members).await;
                let pin = json!({"dbInstanceIdentifier": members[0], "status": "failed", "pin": true});
                faults.rds_instance(pin).await;
                let targets = json!({"rdsClusters": [{"identifier": cluster}]});
                (cluster, None, None, targets)
            }
        };
        let mut r = json!({"mode": "Automatic", "stepTimeout": "120s", "cooldown": "0s", "maxUnhealthyPercent": 100});
        r.as_object_mut().expect("an object").extend(remediation.as_object().cloned().unwrap_or_default());
        let spec = json!({
            "aws": {"region": "us-east-1"},
            "probeInterval": "2s",
            "targets": targets,
            "detection": {"failureThreshold": 1, "successThreshold": 1},
            "remediation": r,
        });
        policy::create(&client, &ns, "p", spec).await;
        Self { kind, client, ns, faults, id, health_check, record }
    }

    /// The mutating call's service, operation and the parameter that names this target.
    pub fn mutation(&self) -> (&'static str, &'static str, &'static str) {
        match self.kind {
            Kind::Ecs => ("ecs", "UpdateService", "cluster"),
            Kind::Rds => ("rds", "RebootDBInstance", "DBInstanceIdentifier"),
            Kind::Dns => ("route53", "ChangeResourceRecordSets", "HostedZoneId"),
            Kind::Cluster => ("rds", "FailoverDBCluster", "DBClusterIdentifier"),
        }
    }

    /// A fault rule body for this target's mutating call; `fault` adds error/delay/reset/count.
    pub fn mutation_rule(&self, fault: &Value) -> Value {
        let (service, operation, key) = self.mutation();
        self.rule(service, operation, key, fault)
    }

    /// A fault rule body for the reads of this target's verify step (the ECS read is also
    /// the probe's; the RDS one is by identifier, which the probe's filtered read is not).
    pub fn verify_rule(&self, fault: &Value) -> Value {
        match self.kind {
            Kind::Ecs => self.rule("ecs", "DescribeServices", "cluster", fault),
            Kind::Rds => self.rule("rds", "DescribeDBInstances", "DBInstanceIdentifier", fault),
            Kind::Dns => self.rule("route53", "ListResourceRecordSets", "HostedZoneId", fault),
            Kind::Cluster => self.rule("rds", "DescribeDBClusters", "Filters", fault),
        }
    }

    fn rule(&self, service: &str, operation: &str, key: &str, fault: &Value) -> Value {
        let mut rule = json!({"service": service, "operation": operation, "match": {key: self.id}});
        rule.as_object_mut().expect("an object").extend(fault.as_object().cloned().unwrap_or_default());
        rule
    }

    /// Every request of the mutating call for this target, faulted or not.
    pub async fn mutations(&self) -> Vec<Value> {
        let (service, operation, key) = self.mutation();
        self.faults.calls_for(service, operation, key, &self.id).await
    }

    /// Mutating requests AWS carried out: answered 2xx, including one a delay rule held
    /// past the client's timeout before passing it on (the client gave up; AWS did not).
    pub async fn effective_mutations(&self) -> usize {
        self.mutations().await.iter().filter(|e| e["status"].as_u64().is_some_and(|s| (200..300).contains(&s))).count()
    }

    /// Makes the target healthy once acted on: the rollout finishes, the instance comes
    /// back, the health check passes.
    pub async fn heal(&self) {
        match self.kind {
            Kind::Ecs => {
                let body = json!({"cluster": self.id, "service": "web", "runningCount": 2, "completeRollout": true});
                self.faults.ecs_service(body).await;
            }
            Kind::Rds => {
                let body = json!({"dbInstanceIdentifier": self.id, "status": "available", "pin": false});
                self.faults.rds_instance(body).await;
            }
            Kind::Dns => {
                self.faults.clear_health_check(self.health_check.as_deref().expect("a health check")).await;
            }
            // The failover made the reader the writer; the old writer comes back as a reader.
            Kind::Cluster => {
                let body =
                    json!({"dbInstanceIdentifier": format!("{}-a", self.id), "status": "available", "pin": false});
                self.faults.rds_instance(body).await;
            }
        }
    }
}
