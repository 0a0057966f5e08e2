//! The imperative shell: kube-runtime controllers that read, call the pure core, write
//! status and emit Events.

pub mod alerts;
pub mod client;
pub mod detection_writes;
pub mod events;
pub mod incident;
pub mod plan;
pub mod policy;
pub mod probes;
pub mod recorder;
pub mod retention;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::RecoveryPolicy;
use crate::api::incident::Incident;
use crate::api::plan::RecoveryPlan;
use crate::aws::ClientCache;
use crate::metrics::Metrics;

/// Name under which the controller writes and reports.
pub const MANAGER: &str = "aws-recovery-controller";

pub use crate::api::labels::{POLICY_LABEL, TARGET_LABEL};

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// AWS clients and process-wide AWS limits.
    pub aws: ClientCache,
    /// Events to publish, in order, by one background task (see [`Context::event`]).
    events: tokio::sync::mpsc::Sender<recorder::Outgoing>,
    /// This process's state writes in flight, which Events give way to (see [`recorder`]).
    state_writes: Arc<recorder::StateWrites>,
    /// Per-policy locks serialising plan starts (see `plan::reconcile`); each holds the
    /// name of the last plan started under it.
    locks: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<Option<String>>>>>,
    /// The mutating attempt this process last started, by plan uid: (step order, attempt).
    /// An attempt found in progress that is not here was started elsewhere or before a
    /// restart, and may have a call in flight (see `core::steps::Inputs::resumed`).
    attempts: std::sync::Mutex<std::collections::HashMap<String, (u32, u32)>>,
    /// Test-only: abort the process at this named point (`RECOVERY_FAILPOINT`).
    failpoint: Option<String>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// HTTP client for Slack webhooks.
    pub http: reqwest::Client,
    /// Test-only: admit `http` Slack webhooks.
    pub allow_insecure_endpoints: bool,
    /// The policies' probes, running and finished (see [`probes`]).
    pub probes: probes::Probes,
    /// The AWS event queues read (see [`events`]).
    pub queues: events::Queues,
    /// The watch caches, by watched namespace (`None`: all namespaces).
    caches: std::sync::Mutex<std::collections::HashMap<Option<String>, Caches>>,
    /// Policy status writes in flight (see [`POLICY_WRITES_IN_FLIGHT`]).
    pub policy_writes: tokio::sync::Semaphore,
}

/// Policy status writes in flight at once. A cycle's first writes come all together (every
/// policy due at once, their reads batched): unbounded, each opened a connection to the API
/// server of its own, with its TLS and HTTP buffers (about 30 KiB), and built its request
/// body while waiting: 348 connections, 10 MiB of heap at 10,000 targets (a heaptrack profile;
/// see BENCHMARKS.md). The API server takes a few writes at a time anyway.
pub const POLICY_WRITES_IN_FLIGHT: usize = 32;

/// What one watch scope shares: one watch cache per kind, read by every controller, and a
/// way to wake its policy controller.
#[derive(Clone)]
pub struct Caches {
    /// Policies in scope.
    pub policies: Store<RecoveryPolicy>,
    /// Incidents in scope.
    pub incidents: Store<Incident>,
    /// Plans in scope.
    pub plans: Store<RecoveryPlan>,
    /// Asks for a policy's reconcile (a probe of it has finished).
    pub wake_policy: tokio::sync::mpsc::UnboundedSender<ObjectRef<RecoveryPolicy>>,
    /// This process's own writes, on their way into the caches (see [`Context::wrote`]).
    written: Written,
}

/// Objects as the API server answered this process's writes, one channel per kind, each
/// feeding the kind's watch cache beside its watch (see [`shared`]).
#[derive(Clone)]
struct Written {
    policies: UnboundedSender<RecoveryPolicy>,
    incidents: UnboundedSender<Incident>,
    plans: UnboundedSender<RecoveryPlan>,
}

/// A kind with a watch cache: where this process's writes of it go (see [`Context::wrote`]).
pub trait Cached: Resource<DynamicType = ()> + Clone + Sized {
    /// The channel into this kind's cache.
    fn written(caches: &Caches) -> &UnboundedSender<Self>;
}

impl Cached for RecoveryPolicy {
    fn written(caches: &Caches) -> &UnboundedSender<Self> {
        &caches.written.policies
    }
}

impl Cached for Incident {
    fn written(caches: &Caches) -> &UnboundedSender<Self> {
        &caches.written.incidents
    }
}

impl Cached for RecoveryPlan {
    fn written(caches: &Caches) -> &UnboundedSender<Self> {
        &caches.written.plans
    }
}

/// How long a reconcile waits for a cache's initial list before asking the API server.
const CACHE_WAIT: Duration = Duration::from_secs(5);

impl Context {
    /// A context for the given clients.
    pub fn new(
        client: Client,
        aws: ClientCache,
        instance: Option<String>,
        metrics: Arc<Metrics>,
        allow_insecure_endpoints: bool,
    ) -> Arc<Self> {
        let reporter = Reporter { controller: MANAGER.into(), instance };
        let (events, queue) = tokio::sync::mpsc::channel(recorder::EVENT_QUEUE);
        let state_writes = Arc::new(recorder::StateWrites::default());
        tokio::spawn(recorder::publish(Recorder::new(client.clone(), reporter), queue, state_writes.clone()));
        Arc::new(Self {
            events,
            state_writes,
            client,
            aws,
            locks: Default::default(),
            attempts: Default::default(),
            failpoint: std::env::var("RECOVERY_FAILPOINT").ok().filter(|f| !f.is_empty()),
            metrics,
            http: reqwest::Client::new(),
            allow_insecure_endpoints,
            probes: Default::default(),
            queues: Default::default(),
            caches: Default::default(),
            policy_writes: tokio::sync::Semaphore::new(POLICY_WRITES_IN_FLIGHT),
        })
    }

    /// The cache (picked from [`Caches`]) that holds namespace `ns`, once it holds its
    /// initial list: `None` before `run`, or while it is not filled within [`CACHE_WAIT`]
    /// (callers then ask the API server).
    pub async fn cache<K>(&self, ns: &str, pick: impl FnOnce(&Caches) -> &Store<K>) -> Option<Store<K>>
    where
        K: kube::runtime::reflector::Lookup + Clone + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        let store = self.in_scope(ns, |scope| pick(scope).clone())?;
        let filled = tokio::time::timeout(CACHE_WAIT, store.wait_until_ready()).await;
        matches!(filled, Ok(Ok(()))).then_some(store)
    }

    /// What the watch scope holding namespace `ns` shares; `None` before `run`.
    pub fn scope(&self, ns: &str) -> Option<Caches> {
        self.in_scope(ns, Caches::clone)
    }

    /// Every watch scope.
    pub fn scopes(&self) -> Vec<Caches> {
        self.caches.lock().expect("not poisoned").values().cloned().collect()
    }

    /// `f` of the watch scope holding namespace `ns` (under the lock: clone only what is used).
    fn in_scope<T>(&self, ns: &str, f: impl FnOnce(&Caches) -> T) -> Option<T> {
        let caches = self.caches.lock().expect("not poisoned");
        caches.get(&Some(ns.to_owned())).or_else(|| caches.get(&None)).map(f)
    }

    /// `name` in namespace `ns`: from the cache `pick`ed from [`Caches`] once it is filled
    /// (see [`Context::cache`]), else from the API server.
    pub async fn get<K>(
        &self,
        ns: &str,
        pick: impl FnOnce(&Caches) -> &Store<K>,
        name: &str,
    ) -> Result<Option<Arc<K>>, kube::Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + 'static,
    {
        if let Some(store) = self.cache(ns, pick).await {
            return Ok(store.get(&ObjectRef::new(name).within(ns)));
        }
        Ok(Api::<K>::namespaced(self.client.clone(), ns).get_opt(name).await?.map(Arc::new))
    }

    /// Hands an object as the API server answered a write of it to its kind's cache, so that
    /// the next read, and the controllers triggered by it, see it at once rather than after
    /// the watch brings it. An incident's way to its first action is several writes that wait
    /// on the one before (the incident's status, the policy's counts, the plan), and with
    /// only the watch between them each step also waited for a watch delivery, and decided on
    /// copies that its own writes had overtaken: 0.87 refused incident-status writes a plan in
    /// a storm of 100, none with this (BENCHMARKS.md). client-go's controllers keep a mutation
    /// cache for the same reason. The cache takes a copy only if it is newer than the one it
    /// holds, so the watch's later copy of the same version is dropped (one trigger per
    /// version), and an object the watch reported gone stays gone (see [`Freshness`]).
    pub fn wrote<K: Cached>(&self, obj: &K) {
        let Some(ns) = obj.meta().namespace.as_deref() else { return };
        if let Some(written) = self.in_scope(ns, |scope| K::written(scope).clone()) {
            // Closed only when the watch has stopped (the process is ending).
            let _ = written.unbounded_send(obj.clone());
        }
    }

    /// Marks a write of an incident's, plan's or policy's state in flight until dropped:
    /// Events wait for a pause in them (see [`recorder`]).
    pub fn state_write(&self) -> recorder::Writing {
        self.state_writes.begin()
    }

    /// The lock of one policy.
    pub fn policy_lock(&self, namespace: &str, policy: &str) -> Arc<tokio::sync::Mutex<Option<String>>> {
        let mut locks = self.locks.lock().expect("not poisoned");
        locks.entry(format!("{namespace}/{policy}")).or_default().clone()
    }

    /// Records that this process started `attempt` of step `order` of the plan `uid`.
    pub fn started_attempt(&self, uid: &str, order: u32, attempt: u32) {
        self.attempts.lock().expect("not poisoned").insert(uid.to_owned(), (order, attempt));
    }

    /// Whether this process started that attempt.
    pub fn started_here(&self, uid: &str, order: u32, attempt: u32) -> bool {
        self.attempts.lock().expect("not poisoned").get(uid) == Some(&(order, attempt))
    }

    /// Forgets a finished plan's attempts.
    pub fn plan_finished(&self, uid: &str) {
        self.attempts.lock().expect("not poisoned").remove(uid);
    }

    /// Aborts the process here if the test-only failpoint names this point: a crash at an
    /// exact line of the at-most-once protocol, for the kill tests.
    pub fn failpoint(&self, name: &str) {
        if self.failpoint.as_deref() == Some(name) {
            eprintln!("failpoint {name}: aborting");
            std::process::abort();
        }
    }

    /// Queues an Event. A reconcile never waits for the API server to record it (an
    /// Event is two round trips, and a plan about to act should not pay them); one task
    /// publishes the queue in order, and a failure to record is logged, never fatal.
    pub fn event<K>(&self, obj: &K, type_: EventType, reason: &str, action: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: action.into(),
            secondary: None,
        };
        let queued = recorder::Outgoing::Event(Box::new((ev, obj.object_ref(&()))), tokio::time::Instant::now());
        if self.events.try_send(queued).is_err() {
            // Only while the API server has been refusing Events for thousands in a row;
            // status still carries every decision.
            tracing::warn!(reason, "event queue full; dropping the event");
        }
    }

    /// Waits until every Event queued so far is published (at shutdown).
    pub async fn flush_events(&self) {
        let (done, published) = tokio::sync::oneshot::channel();
        if self.events.send(recorder::Outgoing::Flush(done)).await.is_ok() {
            let _ = published.await;
        }
    }
}

/// Errors of a reconcile, by what should happen next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed; retry soon.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// The object cannot be acted on until it changes.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The reconcile took too long and was abandoned.
    #[error("reconcile timed out")]
    Timeout,
}

impl Error {
    /// A short label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(e)) if e.code == 409 => "conflict",
            Self::Kube(_) => "kubernetes",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::Timeout => "timeout",
        }
    }
}

/// Retry policy shared by the controllers: an invalid spec waits for a change; a conflict
/// re-reads at once; other API errors back off.
pub fn error_policy<K>(_obj: Arc<K>, err: &Error, _ctx: Arc<Context>) -> Action {
    match err {
        Error::InvalidSpec(_) => Action::await_change(),
        Error::Kube(kube::Error::Api(e)) if e.code == 409 => Action::requeue(Duration::from_millis(200)),
        Error::Kube(_) | Error::Timeout => Action::requeue(Duration::from_secs(5)),
    }
}

/// Writes an object's status with its resourceVersion as a precondition: a concurrent writer
/// makes this fail with 409, and the reconcile re-reads instead of overwriting. What the
/// API server answers goes to the cache (see [`Context::wrote`]).
pub async fn replace_status<K>(ctx: &Context, api: &Api<K>, obj: &K) -> Result<K, kube::Error>
where
    K: Cached + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let _writing = ctx.state_write();
    let written = api
        .replace_status(&obj.name_any(), &PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, obj)
        .await?;
    ctx.wrote(&written);
    Ok(written)
}

/// Creates an object; what the API server answers goes to the cache (see [`Context::wrote`]).
pub async fn create<K>(ctx: &Context, api: &Api<K>, obj: &K) -> Result<K, kube::Error>
where
    K: Cached + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let _writing = ctx.state_write();
    let created = api.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, obj).await?;
    ctx.wrote(&created);
    Ok(created)
}

/// Now, as the API's timestamp type.
pub fn now() -> Timestamp {
    Timestamp::now()
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// What the controllers watch.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Label selector on policies (sharding). Incidents and plans carry their policy's
    /// labels, so the same selector picks them.
    pub selector: Option<String>,
    /// Incidents, plans or alerts reconciled at once.
    pub concurrency: u16,
    /// Policies reconciled (probed) at once.
    pub probe_concurrency: u16,
}

/// Runs the four controllers (policy, incident, alert, plan) for every namespace in scope,
/// and the readers of the AWS event queues, until the process is asked to stop (SIGTERM or Ctrl-C), finishing in-flight reconciles
/// first.
pub async fn run(ctx: Arc<Context>, scope: Scope) {
    let namespaces: Vec<Option<String>> =
        if scope.namespaces.is_empty() { vec![None] } else { scope.namespaces.iter().cloned().map(Some).collect() };
    let controllers =
        futures::future::join_all(namespaces.into_iter().map(|ns| run_in(ctx.clone(), ns, scope.clone())));
    // The event queues are read while the controllers run, so by the leader only; the
    // consumers never finish by themselves.
    tokio::select! {
        _ = controllers => {}
        () = events::consume_all(ctx.clone()) => {}
    }
}

async fn run_in(ctx: Arc<Context>, namespace: Option<String>, scope: Scope) {
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let client = &ctx.client;
    let cfg = kube::runtime::controller::Config::default().concurrency(scope.concurrency);
    let watch = match &scope.selector {
        Some(sel) => watcher::Config::default().labels(sel),
        None => watcher::Config::default(),
    };
    // One watch per kind, whatever the number of controllers reading it: each object
    // is decoded and cached once, and the reconcilers read each other's kinds from it.
    let (policy_store, [policy_trigger, policy_to_plans], policies_written, policy_watch) =
        shared(ctx.clone(), api::<DeserializeGuard<RecoveryPolicy>>(client, &namespace), watch.clone());
    let (incident_store, [incident_trigger, incident_to_alerts], incidents_written, incident_watch) =
        shared(ctx.clone(), api::<DeserializeGuard<Incident>>(client, &namespace), watch.clone());
    let (plan_store, [plan_trigger, plan_to_incidents, plan_to_alerts], plans_written, plan_watch) =
        shared(ctx.clone(), api::<DeserializeGuard<RecoveryPlan>>(client, &namespace), watch);
    let (wake_policy, woken) = tokio::sync::mpsc::unbounded_channel();
    let caches = Caches {
        policies: policy_store.clone(),
        incidents: incident_store.clone(),
        plans: plan_store.clone(),
        wake_policy,
        written: Written { policies: policies_written, incidents: incidents_written, plans: plans_written },
    };
    ctx.caches.lock().expect("not poisoned").insert(namespace.clone(), caches);

    ctx.probes.limit(scope.probe_concurrency);
    let woken = futures::stream::unfold(woken, |mut rx| async move { rx.recv().await.map(|policy| (policy, rx)) });
    let policies = Controller::for_shared_stream(policy_trigger, policy_store)
        .reconcile_on(woken)
        .with_config(kube::runtime::controller::Config::default().concurrency(scope.probe_concurrency))
        .graceful_shutdown_on(shutdown_signal())
        .run(|o, c| measured("policy", c.clone(), policy::reconcile(o, c)), error_policy, ctx.clone())
        .for_each(|r| log_result("policy", r));
    let incidents = Controller::for_shared_stream(incident_trigger, incident_store.clone())
        .owns_shared_stream(plan_to_incidents)
        .with_config(cfg.clone())
        .graceful_shutdown_on(shutdown_signal())
        .run(|o, c| measured("incident", c.clone(), incident::reconcile(o, c)), error_policy, ctx.clone())
        .for_each(|r| log_result("incident", r));
    let alerts = Controller::for_shared_stream(incident_to_alerts, incident_store)
        .owns_shared_stream(plan_to_alerts)
        .with_config(cfg.clone())
        .graceful_shutdown_on(shutdown_signal())
        .run(|o, c| measured("alert", c.clone(), alerts::reconcile(o, c)), error_policy, ctx.clone())
        .for_each(|r| log_result("alert", r));
    let plans_of_policy = plan_store.clone();
    let plans = Controller::for_shared_stream(plan_trigger, plan_store)
        // A policy's status write (its counts, for the storm guard) may free its unfinished
        // plans at once rather than at their next recheck.
        .watches_shared_stream(policy_to_plans, move |policy| {
            let (ns, name) = (policy.namespace(), policy.name_any());
            plans_of_policy
                .state()
                .into_iter()
                .filter(|p| p.namespace() == ns && p.spec.policy == name)
                .filter(|p| !p.status.as_ref().and_then(|s| s.phase).is_some_and(|phase| phase.is_terminal()))
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        })
        .with_config(cfg)
        .graceful_shutdown_on(shutdown_signal())
        .run(|o, c| measured("plan", c.clone(), plan::reconcile(o, c)), error_policy, ctx.clone())
        .for_each(|r| log_result("plan", r));
    // Each controller and watch is a task of its own: a controller looks at every reconcile
    // it has in flight whenever its task wakes (kube-runtime's runner polls them all), so it
    // should wake for its own events only, not for another controller's or a watch's. The
    // watches run until the last controller has finished.
    let watches = [tokio::spawn(policy_watch), tokio::spawn(incident_watch), tokio::spawn(plan_watch)];
    let mut controllers: futures::stream::FuturesUnordered<_> =
        [tokio::spawn(policies), tokio::spawn(incidents), tokio::spawn(plans), tokio::spawn(alerts)]
            .into_iter()
            .collect();
    while let Some(finished) = controllers.next().await {
        // A panic stays what it was before the split: the process ends, and is restarted.
        if let Err(e) = finished
            && let Ok(panic) = e.try_into_panic()
        {
            std::panic::resume_unwind(panic);
        }
    }
    watches.iter().for_each(tokio::task::JoinHandle::abort);
}

/// Objects a shared watch may hold for a subscriber that has not taken them yet; beyond
/// this the watch waits (the controllers take them as they come).
const WATCH_BUFFER: usize = 1024;

/// One watch of `K` for `N` controllers: the cache, a stream of changed objects for each
/// controller, the channel by which this process's own writes join the watch (see
/// [`Context::wrote`] and [`Freshness`]), and the future that drives both. The cache keeps
/// its objects without `metadata.managedFields` — the server-side-apply bookkeeping that
/// every status write extends and nothing here reads; at 10,000 targets the policies'
/// copies of it were the largest share of the heap.
///
/// An object that does not decode (a field from a newer CRD under this controller's
/// `deny_unknown_fields`, say) must not stall the watch for every other object: it is
/// reported on itself (a Warning Event), in `recovery_undecodable_objects_total{kind}` and
/// the log, and left out of the cache — a copy cached before it stopped decoding is
/// dropped, so nothing acts on a spec that is no longer the one written.
fn shared<K, const N: usize>(
    ctx: Arc<Context>,
    api: Api<DeserializeGuard<K>>,
    watch: watcher::Config,
) -> (Store<K>, [ReflectHandle<K>; N], UnboundedSender<K>, impl std::future::Future<Output = ()>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = kube::runtime::reflector::store_shared(WATCH_BUFFER);
    let handles = std::array::from_fn(|_| writer.subscribe().expect("a shared store can be subscribed to"));
    let (cached, fresh) = (reader.clone(), reader.clone());
    let (written, own_writes) = futures::channel::mpsc::unbounded();
    let watched = watcher(api, watch).default_backoff().filter_map(move |event| {
        futures::future::ready(match event {
            Ok(event) => decoded(&ctx, &cached, event).map(|e| Ok((e, Origin::Watch))),
            Err(e) => Some(Err(e)),
        })
    });
    let own_writes = own_writes.map(|o| Ok((watcher::Event::Apply(o), Origin::OwnWrite)));
    let mut freshness = Freshness::default();
    // Each event is in the cache before the next is looked at (the reflector applies one at
    // a time), so the freshness check sees every copy that came before.
    let driver = futures::stream::select(watched, own_writes)
        .filter_map(move |event| {
            futures::future::ready(match event {
                Ok((event, origin)) => freshness.admit(&fresh, &event, origin).then_some(Ok(event)),
                Err(e) => Some(Err(e)),
            })
        })
        .modify(|o| o.managed_fields_mut().clear())
        .reflect_shared(writer)
        .for_each(|event| async move {
            if let Err(e) = event {
                tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying with backoff");
            }
        });
    (reader, handles, written, driver)
}

/// Where an object copy for a watch cache comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// The watch.
    Watch,
    /// The API server's answer to this process's write (see [`Context::wrote`]).
    OwnWrite,
}

/// Keeps a watch cache fed by two streams, the watch and this process's writes, from going
/// back in time: a copy is taken only if it is newer than the cached one, and a write's
/// answer for an object the watch reported gone (deleted, or moved out of its label
/// selection) is dropped. Deletions are remembered for [`TOMBSTONE_TTL`], far longer than
/// the answer to a write takes to arrive after the watch's report of a later deletion.
struct Freshness<K: kube::runtime::reflector::Lookup>
where
    K::DynamicType: Eq + std::hash::Hash,
{
    /// Deleted objects: the resourceVersion of the deletion, and when it was seen.
    tombstones: std::collections::HashMap<ObjectRef<K>, (String, std::time::Instant)>,
    /// Size at which old tombstones are swept next.
    sweep_at: usize,
}

/// How long a deletion is remembered (see [`Freshness`]).
const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

impl<K: Resource<DynamicType = ()> + Clone> Default for Freshness<K> {
    fn default() -> Self {
        Self { tombstones: Default::default(), sweep_at: 64 }
    }
}

impl<K: Resource<DynamicType = ()> + Clone> Freshness<K> {
    /// Whether `event` goes into the cache `cached`.
    fn admit(&mut self, cached: &Store<K>, event: &watcher::Event<K>, origin: Origin) -> bool {
        let (watcher::Event::Apply(obj) | watcher::Event::Delete(obj)) = event else {
            return true; // a relist replaces the cache whole
        };
        let at = ObjectRef::from_obj(obj);
        let version = obj.meta().resource_version.as_deref().unwrap_or_default();
        let held = cached.get(&at);
        let held = held.as_ref().and_then(|o| o.meta().resource_version.as_deref());
        match event {
            watcher::Event::Delete(_) => {
                self.remember(at, version);
                true
            }
            _ => {
                let deleted = self.tombstones.get(&at).map(|(v, _)| v.as_str());
                crate::core::versions::admit(version, held, deleted, origin == Origin::OwnWrite)
            }
        }
    }

    fn remember(&mut self, at: ObjectRef<K>, version: &str) {
        let now = std::time::Instant::now();
        self.tombstones.insert(at, (version.to_owned(), now));
        if self.tombstones.len() >= self.sweep_at {
            self.tombstones.retain(|_, (_, seen)| now.duration_since(*seen) < TOMBSTONE_TTL);
            self.sweep_at = (2 * self.tombstones.len()).max(64);
        }
    }
}

/// A watch event of possibly undecodable objects → the event of decoded ones, if any (see
/// [`shared`]). An undecodable object becomes the deletion of its cached copy, if there is
/// one; a relist leaves it out by itself.
fn decoded<K>(ctx: &Context, cached: &Store<K>, event: watcher::Event<DeserializeGuard<K>>) -> Option<watcher::Event<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let good = |guard: DeserializeGuard<K>| match guard.0 {
        Ok(object) => Some(object),
        Err(ref invalid) => {
            let kind = K::kind(&()).to_string();
            let name = invalid.metadata.name.clone().unwrap_or_default();
            tracing::warn!(%kind, %name, error = %invalid.error, "object does not decode; it is left alone until it does");
            ctx.metrics.undecodable(K::kind(&()).into_owned());
            let note =
                format!("this controller cannot read the object, so it is left alone until it can: {}", invalid.error);
            ctx.event(
                &guard,
                EventType::Warning,
                crate::api::conditions::reason::UNDECODABLE,
                crate::api::conditions::action::WATCH,
                note,
            );
            None
        }
    };
    match event {
        watcher::Event::Apply(guard) => {
            let at = guard_ref(&guard);
            match good(guard) {
                Some(object) => Some(watcher::Event::Apply(object)),
                None => cached.get(&at).map(|old| watcher::Event::Delete((*old).clone())),
            }
        }
        watcher::Event::InitApply(guard) => good(guard).map(watcher::Event::InitApply),
        // A deleted object that did not decode was not cached.
        watcher::Event::Delete(guard) => guard.0.ok().map(watcher::Event::Delete),
        watcher::Event::Init => Some(watcher::Event::Init),
        watcher::Event::InitDone => Some(watcher::Event::InitDone),
    }
}

/// Where an object, decodable or not, would be in the cache.
fn guard_ref<K: Resource<DynamicType = ()>>(guard: &DeserializeGuard<K>) -> ObjectRef<K> {
    let meta = guard.meta();
    let at = ObjectRef::new(meta.name.as_deref().unwrap_or_default());
    match meta.namespace.as_deref() {
        Some(ns) => at.within(ns),
        None => at,
    }
}

/// Longest a single reconcile may take before it is abandoned and retried.
const RECONCILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Times a reconcile and counts it by result (a Drop-free wrapper: the future is awaited here).
async fn measured(
    controller: &'static str,
    ctx: Arc<Context>,
    reconcile: impl std::future::Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    // A reconcile that hangs (a stalled connection) would never be requeued; bound it.
    let result = match tokio::time::timeout(RECONCILE_TIMEOUT, reconcile).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(controller, "reconcile did not finish within {RECONCILE_TIMEOUT:?}; retrying");
            Err(Error::Timeout)
        }
    };
    let label = result.as_ref().map_or_else(Error::category, |_| "ok");
    ctx.metrics.reconciled(controller, label, started.elapsed());
    result
}

async fn log_result<T, E: std::fmt::Display>(kind: &'static str, res: Result<T, E>) {
    if let Err(e) = res {
        tracing::debug!(kind, error = %e, "reconcile failed");
    }
}

/// Whether the process is shutting down: SIGTERM or Ctrl-C arrived. Reconciles then finish
/// what they started but begin nothing new, so a stop never leaves an action without its
/// record.
pub fn stopping() -> bool {
    SHUTDOWN.get().is_some_and(|stop| *stop.borrow())
}

/// Set to `true`, once, by the signal listener (see [`listen_for_shutdown`]).
static SHUTDOWN: std::sync::OnceLock<tokio::sync::watch::Sender<bool>> = std::sync::OnceLock::new();

/// Takes over SIGTERM and SIGINT for the process, from this moment: called at the start of
/// `run`, before the health server can say ready, because a SIGTERM that arrives before a
/// handler is registered kills the process outright (Kubernetes may stop a pod at any
/// moment after its start). Every [`shutdown_signal`] waits on this one listener, so a
/// signal is seen by all of them however late they start waiting. Idempotent; needs a Tokio
/// runtime.
pub fn listen_for_shutdown() -> &'static tokio::sync::watch::Sender<bool> {
    SHUTDOWN.get_or_init(|| {
        use tokio::signal::unix::{SignalKind, signal};
        let (tx, _) = tokio::sync::watch::channel(false);
        // Registered here, synchronously: the handlers are in place when this returns.
        let (term, int) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
        let listener = tx.clone();
        tokio::spawn(async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => futures::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(term) => {},
                _ = wait(int) => {},
            }
            tracing::info!("shutting down: finishing in-flight reconciles, starting nothing new");
            listener.send_replace(true);
        });
        tx
    })
}

/// SIGTERM or Ctrl-C (from [`listen_for_shutdown`]'s listener, started here if it was not).
pub async fn shutdown_signal() {
    let mut stop = listen_for_shutdown().subscribe();
    // The sender lives in a static, so the channel cannot close.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Fixtures for the unit tests of the controllers.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    /// A context whose clients point at nothing (they connect on first use).
    pub fn context() -> Arc<super::Context> {
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("a URL"));
        let client = kube::Client::try_from(config).expect("a client");
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let sdk = aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
        let aws = crate::aws::ClientCache::new(sdk, &crate::aws::AwsSettings::default(), metrics.clone());
        super::Context::new(client, aws, None, metrics, false)
    }

    /// A policy `n/p` with no targets.
    pub fn policy() -> crate::api::RecoveryPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "recovery.dev/v1alpha1", "kind": "RecoveryPolicy",
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {"aws": {"region": "us-east-1"}, "targets": {}}
        }))
        .expect("a policy")
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector::{ObjectRef, store};
    use kube::runtime::watcher::Event;

    use super::{Freshness, Origin};
    use crate::api::RecoveryPolicy;

    fn at(version: &str) -> RecoveryPolicy {
        let mut policy = super::testing::policy();
        policy.metadata.resource_version = Some(version.into());
        policy
    }

    /// The watch cache fed by the watch and by this process's writes, as `shared` feeds it.
    #[test]
    fn the_cache_keeps_the_newest_copy_and_deleted_objects_stay_deleted() {
        let (cache, mut writer) = store::<RecoveryPolicy>();
        let mut freshness = Freshness::default();
        let mut feed = |event: Event<RecoveryPolicy>, origin| {
            let admitted = freshness.admit(&cache, &event, origin);
            if admitted {
                writer.apply_watcher_event(&event);
            }
            admitted
        };
        let held = |cache: &kube::runtime::reflector::Store<RecoveryPolicy>| {
            cache.get(&ObjectRef::new("p").within("n")).and_then(|p| p.metadata.resource_version.clone())
        };
        assert!(feed(Event::Init, Origin::Watch) && feed(Event::InitDone, Origin::Watch));
        assert!(feed(Event::Apply(at("10")), Origin::Watch));
        // An own write's answer comes first: taken; the watch's copies up to it are not.
        assert!(feed(Event::Apply(at("12")), Origin::OwnWrite));
        assert!(!feed(Event::Apply(at("11")), Origin::Watch));
        assert!(!feed(Event::Apply(at("12")), Origin::Watch));
        assert_eq!(held(&cache).as_deref(), Some("12"));
        // The watch is ahead of a late answer: the answer is dropped.
        assert!(feed(Event::Apply(at("14")), Origin::Watch));
        assert!(!feed(Event::Apply(at("13")), Origin::OwnWrite));
        assert_eq!(held(&cache).as_deref(), Some("14"));
        // Deleted, then an answer to a write made before the deletion: it stays deleted.
        assert!(feed(Event::Delete(at("15")), Origin::Watch));
        assert!(!feed(Event::Apply(at("14")), Origin::OwnWrite));
        assert_eq!(held(&cache), None);
        // Written after the watch reported it gone (deleted, or out of the watch's selection):
        // left to the watch, which brings an object made again.
        assert!(!feed(Event::Apply(at("16")), Origin::OwnWrite));
        assert_eq!(held(&cache), None);
        assert!(feed(Event::Apply(at("17")), Origin::Watch));
        assert_eq!(held(&cache).as_deref(), Some("17"));
    }
}
