//! What a probe learned: per target key, its finding; the calls that failed; the targets
//! AWS says do not exist. Batches of many policies' ids share one report.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::core::detection::Probe;

use super::AwsFault;

/// Everything one probe cycle learned.
#[derive(Debug, Default)]
pub struct ProbeReport {
    /// One entry per target key that was asked about.
    pub probes: BTreeMap<String, Probe>,
    /// Calls that failed after retries.
    pub faults: Vec<AwsFault>,
    /// Targets AWS says do not exist.
    pub missing: Vec<String>,
    /// Targets listed under the wrong kind, by key, with what to do about it (an Aurora
    /// instance under `rdsInstances` belongs under `rdsClusters`).
    pub misplaced: BTreeMap<String, String>,
}

impl ProbeReport {
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
                report.probes.insert(key.clone(), answer.probes[key].clone());
            }
            report.missing.extend(answer.missing.iter().filter(|m| keys.contains(m)).cloned());
            let misplaced = answer.misplaced.iter().filter(|(k, _)| keys.contains(k));
            report.misplaced.extend(misplaced.map(|(k, why)| (k.clone(), why.clone())));
            report.faults.extend(answer.faults.iter().cloned());
        }
        report
    }
}
