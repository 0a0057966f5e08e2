//! Fixtures shared by the core's table tests.

use k8s_openapi::jiff::Timestamp;

use crate::api::policy::RecoveryPolicySpec;

/// A policy with two ECS services, one RDS instance and one Route 53 check with failover.
pub fn policy() -> RecoveryPolicySpec {
    serde_norway::from_str(
        r#"
aws: { region: us-east-1 }
targets:
  ecsServices: [{ cluster: prod, services: [checkout, cart] }]
  rdsInstances: [{ identifier: prod-db }]
  route53HealthChecks:
    - healthCheckId: 0b7e2c5e-8b6f-4f43-9d1a-0a6c2d3e4f51
      failover:
        hostedZoneId: Z123
        recordName: api.example.com
        recordType: A
        aliasTarget: { dnsName: backup.example.com, hostedZoneId: Z456, evaluateTargetHealth: true }
"#,
    )
    .expect("fixture policy parses")
}

/// `secs` seconds after a fixed epoch.
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("in range")
}
