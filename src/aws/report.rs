//! What a probe learned: per target key, its finding; the calls that failed; the targets
//! AWS says do not exist. Batches of many policies' ids share one report.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::core::detection::Probe;

use super::AwsFault;

/// Everything one probe cycle learned.
#[derive(Debug, Default)]
pub struct ProbeReport {
    /// One entry per target key that was asked about. A finding is shared, not copied, by
    /// the reports of every policy whose ids a batch carried: at 10,000 targets, copies
    /// held by every policy's report at once were 3 MiB of the cold cycle's heap peak.
    pub probes: BTreeMap<String, Arc<Probe>>,
    /// Calls that failed after retries.
    pub faults: Vec<AwsFault>,
    /// Targets AWS says do not exist.
    pub missing: Vec<String>,
    /// Targets listed under the wrong kind, by key, with what to do about it (an Aurora
    /// instance under `rdsInstances` belongs under `rdsClusters`).
    pub misplaced: BTreeMap<String, String>,
}

impl ProbeReport {
    /// Records what was found about `key`.
    pub(crate) fn found(&mut self, key: String, probe: Probe) {
        self.probes.insert(key, Arc::new(probe));
    }

    pub(super) fn merge(&mut self, other: ProbeReport) {
        self.probes.extend(other.probes);
        self.faults.extend(other.faults);
        self.missing.extend(other.missing);
        self.misplaced.extend(other.misplaced);
    }

    /// What shared batches said about `keys`: their probes, which of them are missing, and
    /// each batch's faults (a failed call failed for every id in it).
    pub(super) fn picked(answers: &[Arc<ProbeReport>], keys: &[String]) -> ProbeReport {
        let mut report = ProbeReport::default();
        for answer in answers {
            let mine: Vec<&String> = keys.iter().filter(|k| answer.probes.contains_key(*k)).collect();
            if mine.is_empty() {
                continue;
            }
            for key in mine {
                report.probes.insert(key.clone(), Arc::clone(&answer.probes[key]));
            }
            report.missing.extend(answer.missing.iter().filter(|m| keys.contains(m)).cloned());
            let misplaced = answer.misplaced.iter().filter(|(k, _)| keys.contains(k));
            report.misplaced.extend(misplaced.map(|(k, why)| (k.clone(), why.clone())));
            report.faults.extend(answer.faults.iter().cloned());
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::incident::IncidentMetrics;

    #[test]
    fn a_policy_report_shares_the_batch_findings_it_asked_for() {
        let mut batch = ProbeReport::default();
        batch.found("ecs/prod/a".into(), Probe::Healthy(IncidentMetrics::default()));
        batch.found("ecs/prod/b".into(), Probe::Unknown("throttled".into()));
        batch.missing.push("ecs/prod/b".into());
        let batch = Arc::new(batch);

        let mine = ProbeReport::picked(std::slice::from_ref(&batch), &["ecs/prod/b".to_string()]);

        assert_eq!(mine.probes.keys().collect::<Vec<_>>(), ["ecs/prod/b"]);
        assert!(Arc::ptr_eq(&mine.probes["ecs/prod/b"], &batch.probes["ecs/prod/b"]), "shared, not copied");
        assert_eq!(mine.missing, ["ecs/prod/b"]);
        // The batch's finding lives as long as a report that asked for it, no longer.
        drop(batch);
        assert_eq!(*mine.probes["ecs/prod/b"], Probe::Unknown("throttled".into()));
    }
}
