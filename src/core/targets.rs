//! The targets a policy names (each kind makes its own, see `kinds`), and deterministic
//! incident and plan names.

use crate::api::policy::RecoveryPolicySpec;

use super::kinds;
pub use super::kinds::Target;

/// Every target of a policy, kind by kind in [`kinds::ALL`] order, each kind's in spec
/// order. Keys are unique because the CRD schema makes clusters, services, identifiers and
/// health check ids unique within their lists.
pub fn targets(spec: &RecoveryPolicySpec) -> Vec<Target> {
    kinds::ALL.iter().flat_map(|k| kinds::of(*k).targets(spec)).collect()
}

/// The policy narrowed to the targets whose keys are in `keep`, kind by kind: what a probe
/// woken by events reads.
pub fn narrow(spec: &RecoveryPolicySpec, keep: &std::collections::BTreeSet<String>) -> RecoveryPolicySpec {
    let mut narrowed = spec.clone();
    for kind in kinds::ALL {
        kinds::of(kind).keep(&mut narrowed, keep);
    }
    narrowed
}

/// The name of the `n`th incident of a target: DNS-safe, at most 63 characters, and the
/// same every time it is computed, so a retried create finds the object it already made.
pub fn incident_name(policy: &str, target_key: &str, n: u32) -> String {
    let kind = target_key.split('/').next().unwrap_or("target");
    // The key can be long (cluster and service names run to 255); a hash keeps names short
    // and distinct while the policy prefix keeps them readable in `kubectl get`.
    let hash = fnv1a(&format!("{policy}\0{target_key}"));
    let suffix = format!("-{kind}-{hash:08x}-{n}");
    let prefix: String = policy.chars().take(63 - suffix.len()).collect();
    format!("{}{suffix}", prefix.trim_end_matches(['-', '.']))
}

/// The one plan of an incident.
pub fn plan_name(incident_name: &str) -> String {
    format!("{incident_name}-plan")
}

/// A label value naming a target: keys hold `/` and can be long, so labels carry their hash.
pub fn target_label(target_key: &str) -> String {
    format!("{:08x}", fnv1a(target_key))
}

/// 32-bit FNV-1a: stable across releases and platforms, unlike `DefaultHasher`.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Severity;
    use crate::api::incident::IncidentType;
    use crate::core::testing::policy;

    #[test]
    fn keys_and_default_severities() {
        let ts = targets(&policy());
        let keys: Vec<_> = ts.iter().map(|t| (t.key.as_str(), t.severity)).collect();
        assert_eq!(
            keys,
            vec![
                ("ecs/prod/checkout", Severity::High),
                ("ecs/prod/cart", Severity::High),
                ("rds/prod-db", Severity::Critical),
                ("route53/0b7e2c5e-8b6f-4f43-9d1a-0a6c2d3e4f51", Severity::High),
            ]
        );
        assert_eq!(ts[2].incident_type(), IncidentType::Database);
    }

    #[test]
    fn incident_names_are_stable_short_and_dns_safe() {
        let a = incident_name("payments", "ecs/prod/checkout", 0);
        assert_eq!(a, incident_name("payments", "ecs/prod/checkout", 0));
        assert_ne!(a, incident_name("payments", "ecs/prod/checkout", 1));
        assert_ne!(a, incident_name("payments", "ecs/prod/cart", 0));
        assert!(a.starts_with("payments-ecs-"), "{a}");
        let long = incident_name(&"p".repeat(253), &format!("ecs/{}/s", "c".repeat(255)), 4_000_000_000);
        assert!(long.len() <= 63, "{long}");
        let re = |s: &str| {
            s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        assert!(re(&a) && re(&long), "{a} {long}");
    }
}
