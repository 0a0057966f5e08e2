//! The Event publisher: one task publishes the queued Events in order, giving way to this
//! process's state writes.
//!
//! An Event is the record people read; the status writes are what the next step waits
//! on. In a storm of incidents both go to the same API server at once, and every Event
//! published then (each incident makes about six) takes server time from a plan about to
//! act. So an Event waits while state writes are in flight, for at most [`EVENT_HOLD`] after
//! it was queued: under steady load Events flow at the same rate, later by that much at
//! most, and status, which carries every decision, is never held.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kube::runtime::events::{Event, Recorder};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Events waiting to be published; beyond this, new ones are dropped.
pub const EVENT_QUEUE: usize = 4096;

/// Longest an Event waits for a pause in state writes.
pub const EVENT_HOLD: Duration = Duration::from_secs(5);

/// What the publisher is asked to do.
pub enum Outgoing {
    /// Publish an Event about an object, queued at the given time.
    Event(Box<(Event, k8s_openapi::api::core::v1::ObjectReference)>, Instant),
    /// Say when everything queued before has been published.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// State writes in flight.
#[derive(Default)]
pub struct StateWrites {
    in_flight: AtomicUsize,
    /// Wakes the publisher when the last write in flight is done.
    idle: Notify,
}

impl StateWrites {
    /// A write begins; it ends when the returned guard drops.
    pub fn begin(self: &std::sync::Arc<Self>) -> Writing {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Writing(self.clone())
    }

    /// Waits until no state write is in flight, or until `deadline`.
    async fn pause(&self, deadline: Instant) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the count is read, so a write ending in between still wakes it.
            idle.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::select! {
                () = idle => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

/// A state write in flight (see [`StateWrites::begin`]).
pub struct Writing(std::sync::Arc<StateWrites>);

impl Drop for Writing {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Publishes the queue in order until it closes; a failure to record is logged, never fatal.
pub async fn publish(
    recorder: Recorder,
    mut queue: tokio::sync::mpsc::Receiver<Outgoing>,
    state_writes: std::sync::Arc<StateWrites>,
) {
    while let Some(next) = queue.recv().await {
        match next {
            Outgoing::Event(event, queued) => {
                // A stopping process publishes what it has at once.
                if !super::stopping() {
                    state_writes.pause(queued + EVENT_HOLD).await;
                }
                let (ev, reference) = *event;
                if let Err(e) = recorder.publish(&ev, &reference).await {
                    tracing::warn!(error = %e, reason = ev.reason, "could not record event");
                }
            }
            Outgoing::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::StateWrites;

    #[tokio::test(start_paused = true)]
    async fn an_event_waits_for_a_pause_in_state_writes_for_at_most_the_hold() {
        let writes = Arc::new(StateWrites::default());
        // No write in flight: at once.
        let start = Instant::now();
        writes.pause(start + Duration::from_secs(5)).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Writes in flight end after 2 s: it goes then.
        let (a, b) = (writes.begin(), writes.begin());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(a);
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(b);
        });
        writes.pause(start + Duration::from_secs(5)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // Writes that never pause: it goes at its deadline.
        let _busy = writes.begin();
        let start = Instant::now();
        writes.pause(start + Duration::from_secs(5)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
}
