//! Time arithmetic between API timestamps and std durations.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// `t + d`, saturating at the end of representable time.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d).ok().and_then(|d| t.checked_add(d).ok()).unwrap_or(Timestamp::MAX)
}

/// How long from `earlier` to `later`, zero if `later` is not after it.
pub fn since(later: Timestamp, earlier: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(earlier)).unwrap_or(Duration::ZERO)
}
