//! The only code that talks to AWS: clients per region and role, probes, and actions.
//!
//! Every read goes through the SDK's standard retry (exponential backoff with jitter for
//! throttling, 5xx and timeouts) under per-attempt and per-operation timeouts. ECS and RDS
//! calls pass a process-wide bound on calls in flight; Route 53 calls pass a process-wide
//! rate limiter instead, since its 5 requests per second are per account, not per policy.
//! Mutating calls are sent once per attempt, never retried by the SDK: a call that timed out
//! or lost its connection may have taken effect, so only the step machine may try again,
//! after its check-first read (see `act`).

pub mod act;
pub mod batch;
pub mod breaker;
pub mod clients;
pub mod error;
pub mod kinds;
pub mod probe;
pub mod report;

pub use clients::{AwsSettings, ClientCache, Clients, SQS_LONG_POLL};
pub use error::AwsFault;
