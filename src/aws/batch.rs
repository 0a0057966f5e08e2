//! Coalescing of probe reads across policies.
//!
//! Each policy probes its own targets, but AWS's read APIs take many ids a call: ten ECS
//! services of one cluster, a hundred RDS identifiers per filter. Probes of policies that
//! run at about the same moment (they share the interval grid, see
//! `core::detection::next_probe`) therefore put their ids into a shared open batch per
//! key (account, region and cluster); a batch is sent when it is full or when its window
//! has passed since it opened, and every policy that put ids into it gets the whole
//! answer and picks its own. An id asked for by two policies is sent once.
//!
//! No batch is lost to cancellation: whichever of its waiters is still there sends it (the
//! result cell lets another waiter take over if the one sending is dropped).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

/// One batch: ids gathered until it is sealed, then one answer for all its waiters.
struct Batch<R> {
    ids: Mutex<Vec<String>>,
    deadline: Instant,
    result: OnceCell<Arc<R>>,
}

/// Open batches by key; see the module docs.
pub struct Coalescer<K, R> {
    window: Duration,
    max: usize,
    open: Mutex<HashMap<K, Arc<Batch<R>>>>,
}

impl<K: Hash + Eq + Clone, R> Coalescer<K, R> {
    /// Batches of at most `max` ids, each sent at most `window` after its first id arrived.
    pub fn new(window: Duration, max: usize) -> Self {
        Self { window, max: max.max(1), open: Mutex::new(HashMap::new()) }
    }

    /// Adds `ids` to the open batches of `key` and returns the answers of every batch they
    /// went into (one, or more when they did not fit). `send` makes the call for one batch's
    /// ids; it runs once per batch, in whichever waiter gets there first.
    pub async fn load<F, Fut>(&self, key: &K, ids: &[String], send: F) -> Vec<Arc<R>>
    where
        F: Fn(Vec<String>) -> Fut,
        Fut: Future<Output = R>,
    {
        let mut mine: Vec<Arc<Batch<R>>> = Vec::new();
        {
            let mut open = self.open.lock().expect("not poisoned");
            let deadline = Instant::now() + self.window;
            for id in ids {
                let batch = open
                    .entry(key.clone())
                    .or_insert_with(|| Arc::new(Batch { ids: Mutex::default(), deadline, result: OnceCell::new() }))
                    .clone();
                let full = {
                    let mut batch_ids = batch.ids.lock().expect("not poisoned");
                    if !batch_ids.contains(id) {
                        batch_ids.push(id.clone());
                    }
                    batch_ids.len() >= self.max
                };
                if full {
                    // Sealed: nobody adds to it any more, so it can go at once.
                    open.remove(key);
                }
                if !mine.iter().any(|b| Arc::ptr_eq(b, &batch)) {
                    mine.push(batch);
                }
            }
        }
        let send = &send;
        futures::future::join_all(mine.into_iter().map(|batch| async move {
            if self.is_open(key, &batch) {
                tokio::time::sleep_until(batch.deadline).await;
                self.seal(key, &batch);
            }
            let answer = batch
                .result
                .get_or_init(|| async {
                    let ids = batch.ids.lock().expect("not poisoned").clone();
                    // Boxed: only the waiter that sends holds the call's state (an SDK call
                    // is kilobytes); every other waiter stays small while it waits.
                    Arc::new(Box::pin(send(ids)).await)
                })
                .await;
            answer.clone()
        }))
        .await
    }

    fn is_open(&self, key: &K, batch: &Arc<Batch<R>>) -> bool {
        self.open.lock().expect("not poisoned").get(key).is_some_and(|b| Arc::ptr_eq(b, batch))
    }

    /// Closes `batch` to new ids if it is still the open one of `key`.
    fn seal(&self, key: &K, batch: &Arc<Batch<R>>) {
        let mut open = self.open.lock().expect("not poisoned");
        if open.get(key).is_some_and(|b| Arc::ptr_eq(b, batch)) {
            open.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    /// Answers with the ids it was sent, counting calls.
    async fn echo(calls: &AtomicUsize, ids: Vec<String>) -> Vec<String> {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        ids
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_full_batches() {
        let c = Coalescer::<&str, Vec<String>>::new(Duration::from_millis(50), 10);
        let calls = AtomicUsize::new(0);
        // Ten policies with seven services each in one cluster: 70 ids, 7 calls.
        let asks: Vec<Vec<String>> = (0..10).map(|p| ids(&format!("p{p}-"), 7)).collect();
        let answers =
            futures::future::join_all(asks.iter().map(|a| c.load(&"cluster", a, |ids| echo(&calls, ids)))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 7);
        for (ask, got) in asks.iter().zip(&answers) {
            let seen: Vec<&String> = got.iter().flat_map(|a| a.iter()).collect();
            assert!(ask.iter().all(|id| seen.contains(&id)), "every caller gets its own ids back");
            assert!(got.iter().all(|a| a.len() <= 10), "no batch over the limit");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keys_do_not_mix_and_shared_ids_are_sent_once() {
        let c = Coalescer::<&str, Vec<String>>::new(Duration::from_millis(50), 10);
        let calls = AtomicUsize::new(0);
        let (a, b) = (ids("s", 3), ids("s", 4));
        let (ra, rb, rc) = tokio::join!(
            c.load(&"one", &a, |ids| echo(&calls, ids)),
            c.load(&"one", &b, |ids| echo(&calls, ids)),
            c.load(&"two", &a, |ids| echo(&calls, ids)),
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one call per key");
        assert_eq!(*ra[0], ids("s", 4), "s0..s2 asked twice, sent once");
        assert!(Arc::ptr_eq(&ra[0], &rb[0]));
        assert_eq!(*rc[0], ids("s", 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_waits_for_the_window_only() {
        let c = Coalescer::<&str, Vec<String>>::new(Duration::from_millis(50), 10);
        let calls = AtomicUsize::new(0);
        let started = Instant::now();
        let got = c.load(&"k", &ids("x", 3), |ids| echo(&calls, ids)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        assert_eq!(*got[0], ids("x", 3));
        // Later callers open a new batch rather than join a sent one.
        c.load(&"k", &ids("x", 3), |ids| echo(&calls, ids)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_whose_sender_is_dropped_is_sent_by_another_waiter() {
        let c = Coalescer::<&str, Vec<String>>::new(Duration::from_millis(50), 10);
        let calls = AtomicUsize::new(0);
        let slow = |ids: Vec<String>| async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            ids
        };
        let (a, b) = (ids("a", 2), ids("b", 2));
        let first = c.load(&"k", &a, slow);
        let second = c.load(&"k", &b, slow);
        // The first caller gives up while its call is in flight; the second still gets the answer.
        // (`futures::future::join` polls in order, so the first caller is the one sending.)
        let (_, got) = futures::future::join(tokio::time::timeout(Duration::from_millis(100), first), second).await;
        assert_eq!(got[0].len(), 4);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "sent again by the waiter that stayed");
    }
}
