//! Policy probes run as tasks of their own, outside the policy reconciler.
//!
//! A probe mostly waits: for its batch to fill, for AWS, for Route 53's rate. Waiting inside
//! the reconcile kept every policy of a cycle in kube-runtime's set of running reconciles,
//! and the runner looks at each of those whenever it wakes: at 1,000 policies that was about
//! a tenth of the controller's CPU. So the reconcile starts the probe and returns; the
//! probe, when done, leaves its report here and wakes the policy's reconcile, which detects
//! on it. Probes only read AWS, so a probe abandoned by a shutdown costs nothing.
//!
//! AWS events (`events`) leave wakes here: the targets they name. The policy's reconcile
//! starts a probe of just those targets at once (a *woken* probe), or folds them into the
//! probe of every target when one is due anyway. Woken probes leave the polling schedule
//! alone: `last` is the last probe of every target.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::Semaphore;

use crate::api::RecoveryPolicy;
use crate::api::policy::RecoveryPolicySpec;
use crate::aws::probe::{ProbeReport, probe_policy};
use crate::core::detection::Woken;
use crate::core::events::Wake;
use crate::core::targets::narrow;
use crate::core::time::since;

use super::{Context, now};

/// A finished probe, waiting for its policy's reconcile.
#[derive(Debug)]
pub struct Finished {
    /// The policy generation probed.
    pub generation: Option<i64>,
    /// When the probe started (after waiting for its permit).
    pub started: Timestamp,
    /// When its last answer came: the flap guard judges a slow probe's answers by this
    /// (see `core::detection::answered_at`).
    pub answered: Timestamp,
    /// What AWS said.
    pub report: ProbeReport,
    /// Which targets events woke for this probe (for a woken probe, the only ones asked).
    pub woken: Woken,
}

#[derive(Default)]
struct Slot {
    /// When the last probe of every target started.
    last: Option<Timestamp>,
    running: bool,
    finished: Option<Finished>,
    /// Targets events woke since the last probe started: whether a fresh trouble event
    /// corroborates them, and which event.
    wakes: BTreeMap<String, Option<String>>,
}

/// The probes of this process, by policy (`namespace/name`).
#[derive(Default)]
pub struct Probes {
    slots: Mutex<HashMap<String, Slot>>,
    /// Probes in flight at once (`--probe-concurrency`; unbounded until set).
    permits: OnceLock<Semaphore>,
}

impl Probes {
    /// Bounds the probes in flight at once; the first call decides.
    pub fn limit(&self, probes: u16) {
        let _ = self.permits.set(Semaphore::new(usize::from(probes.max(1))));
    }

    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Slot) -> T) -> T {
        f(self.slots.lock().expect("not poisoned").entry(key.to_owned()).or_default())
    }

    /// When this process last started a probe of the policy.
    pub fn last(&self, key: &str) -> Option<Timestamp> {
        self.slots.lock().expect("not poisoned").get(key).and_then(|s| s.last)
    }

    /// Whether a probe of the policy is running.
    pub fn running(&self, key: &str) -> bool {
        self.slots.lock().expect("not poisoned").get(key).is_some_and(|s| s.running)
    }

    /// The finished probe of the policy, if it probed this generation (one of another
    /// generation is dropped: the spec it probed is gone).
    pub fn take(&self, key: &str, generation: Option<i64>) -> Option<Finished> {
        self.with(key, |s| s.finished.take()).filter(|f| f.generation == generation)
    }

    /// Leaves an event's wakes for the policy; whether any is new (then wake its reconcile).
    /// `event` names the event, for the Event a corroborated incident gets.
    pub fn wake(&self, key: &str, wakes: &[Wake], event: &str) -> bool {
        self.with(key, |s| {
            let mut new = false;
            for w in wakes {
                let was = s.wakes.get(&w.target).cloned();
                let corroborates = w.corroborates.then(|| event.to_owned());
                match was {
                    None => {
                        s.wakes.insert(w.target.clone(), corroborates);
                        new = true;
                    }
                    Some(None) if corroborates.is_some() => {
                        s.wakes.insert(w.target.clone(), corroborates);
                        new = true;
                    }
                    Some(_) => {}
                }
            }
            new
        })
    }

    /// Whether events woke targets of the policy that no probe has asked about since.
    pub fn woken(&self, key: &str) -> bool {
        self.slots.lock().expect("not poisoned").get(key).is_some_and(|s| !s.wakes.is_empty())
    }

    /// Forgets a policy that no longer exists.
    fn forget(&self, key: &str) {
        self.slots.lock().expect("not poisoned").remove(key);
    }
}

/// Starts a probe of every target of `policy` unless one is running; the targets events
/// woke meanwhile are asked about in it.
pub fn start(ctx: &Arc<Context>, policy: Arc<RecoveryPolicy>, key: String) {
    let started = now();
    let begun = ctx.probes.with(&key, |s| {
        let idle = !s.running;
        if idle {
            s.running = true;
            s.last = Some(started);
        }
        idle.then(|| Woken { only: None, corroborated: corroborated(std::mem::take(&mut s.wakes)) })
    });
    if let Some(woken) = begun {
        tokio::spawn(probe(ctx.clone(), policy, key, woken));
    }
}

/// Starts a probe of just the targets events woke, unless one is running or none was woken.
/// Returns whether one started.
pub fn start_woken(ctx: &Arc<Context>, policy: Arc<RecoveryPolicy>, key: String) -> bool {
    let begun = ctx.probes.with(&key, |s| {
        let idle = !s.running && !s.wakes.is_empty();
        if idle {
            s.running = true;
        }
        idle.then(|| std::mem::take(&mut s.wakes))
    });
    let Some(wakes) = begun else { return false };
    ctx.metrics.probes_woken.inc();
    ctx.metrics.targets_woken.inc_by(wakes.len() as u64);
    let only = wakes.keys().cloned().collect();
    tokio::spawn(probe(ctx.clone(), policy, key, Woken { only: Some(only), corroborated: corroborated(wakes) }));
    true
}

fn corroborated(wakes: BTreeMap<String, Option<String>>) -> BTreeMap<String, String> {
    wakes.into_iter().filter_map(|(target, event)| Some((target, event?))).collect()
}

/// One probe: waits for a permit, asks AWS, leaves the report and wakes the reconcile.
/// Every policy of a cycle waits here at once, so this future stays small: see
/// `tests::a_waiting_probe_is_small`.
async fn probe(ctx: Arc<Context>, policy: Arc<RecoveryPolicy>, key: String, woken: Woken) {
    let _permit = match ctx.probes.permits.get() {
        Some(permits) => Some(permits.acquire().await.expect("never closed")),
        None => None,
    };
    // Detection judges by when AWS was asked, which a full set of permits delays.
    let started = now();
    // A woken probe reads only the targets it was woken for; boxed, to keep this small.
    let narrowed: Option<Box<RecoveryPolicySpec>> =
        woken.only.as_ref().map(|only| Box::new(narrow(&policy.spec, only)));
    let spec = narrowed.as_deref().unwrap_or(&policy.spec);
    let clients = Box::pin(ctx.aws.get(&spec.aws.region, spec.aws.role_arn.as_deref())).await;
    let report = Box::pin(probe_policy(&clients, spec)).await;
    let answered = now();
    if woken.only.is_none() {
        ctx.metrics.probe_cycle_seconds.observe(since(answered, started).as_secs_f64());
    }
    let finished = Finished { generation: policy.metadata.generation, started, answered, report, woken };
    ctx.probes.with(&key, |s| {
        s.running = false;
        s.finished = Some(finished);
    });
    // Wake the policy's reconcile; without a watch scope (before `run`), its requeue finds
    // the report. A policy deleted meanwhile leaves nothing behind.
    let policy = ObjectRef::from_obj(&*policy);
    let Some(scope) = policy.namespace.as_deref().and_then(|ns| ctx.scope(ns)) else { return };
    if scope.policies.get(&policy).is_none() {
        ctx.probes.forget(&key);
    } else {
        // The controller is gone only when the process is stopping.
        let _ = scope.wake_policy.send(policy);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Finished, Probes};

    fn finished(generation: i64) -> Finished {
        let started = k8s_openapi::jiff::Timestamp::UNIX_EPOCH;
        let (report, woken) = Default::default();
        Finished { generation: Some(generation), started, answered: started, report, woken }
    }

    /// A report is taken once, and only by the generation it probed.
    #[test]
    fn a_report_goes_to_its_generation_once() {
        let probes = Probes::default();
        assert!(probes.take("n/p", Some(1)).is_none(), "nothing probed yet");
        for (stored, asked, taken) in [(1, 1, true), (1, 2, false), (2, 1, false)] {
            probes.with("n/p", |s| s.finished = Some(finished(stored)));
            assert_eq!(probes.take("n/p", Some(asked)).is_some(), taken, "stored {stored}, asked {asked}");
            assert!(probes.take("n/p", Some(stored)).is_none(), "stored {stored}: taken or dropped, never twice");
        }
        assert!(!probes.running("n/p") && probes.last("n/p").is_none());
    }

    /// Every policy of a probe cycle waits in a probe at once, and a future is as large as
    /// its largest await: the probe's own state must stay small (1,000 of them at 10,000
    /// targets).
    #[tokio::test]
    async fn a_waiting_probe_is_small() {
        let ctx = crate::controller::testing::context();
        let policy = crate::controller::testing::policy();
        let probe = super::probe(ctx, Arc::new(policy), "n/p".into(), Default::default());
        let size = std::mem::size_of_val(&probe);
        assert!(size <= 1024, "a probe future is {size} bytes");
        eprintln!("a waiting probe: {size} bytes");
    }
}
