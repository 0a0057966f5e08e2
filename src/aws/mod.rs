//! The only code that talks to AWS: clients per region and role, probes, and (later) actions.
//!
//! Every call goes through the SDK's standard retry (exponential backoff with jitter for
//! throttling, 5xx and timeouts) under per-attempt and per-operation timeouts, and through a
//! process-wide bound on calls in flight. Route 53 calls also pass a process-wide rate
//! limiter, since its 5 requests per second are per account, not per policy.

pub mod act;
pub mod breaker;
pub mod clients;
pub mod error;
pub mod probe;

pub use clients::{ClientCache, Clients};
pub use error::AwsFault;
