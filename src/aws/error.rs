//! AWS errors reduced to what conditions, retries and metrics need.

use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};

/// An AWS call that failed, after the SDK's own retries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {code}: {message}")]
pub struct AwsFault {
    /// The operation, e.g. `ecs:DescribeServices`.
    pub operation: &'static str,
    /// The AWS error code (`ThrottlingException`, `DBInstanceNotFound`) or the transport
    /// failure (`Timeout`, `Dispatch`).
    pub code: String,
    /// AWS's message, or the transport error.
    pub message: String,
    /// Whether trying again later may succeed (throttling, 5xx, timeouts, connection errors).
    pub retryable: bool,
}

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "PriorRequestNotComplete",
    "RequestThrottled",
    "RequestThrottledException",
];

impl AwsFault {
    /// Builds a fault from any SDK's error (they share the smithy runtime's response type).
    pub fn from_sdk<E>(operation: &'static str, err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (code, message, retryable) = match err {
            SdkError::ServiceError(e) => {
                let code = e.err().code().unwrap_or("Unknown").to_owned();
                let retryable = THROTTLING.contains(&code.as_str()) || e.raw().status().as_u16() >= 500;
                (code, e.err().message().unwrap_or_default().to_owned(), retryable)
            }
            SdkError::TimeoutError(_) => ("Timeout".into(), "no answer within the timeout".into(), true),
            SdkError::DispatchFailure(_) => ("Dispatch".into(), error_chain(err), true),
            SdkError::ResponseError(_) => ("Response".into(), error_chain(err), true),
            _ => ("Request".into(), error_chain(err), false),
        };
        Self { operation, code, message, retryable }
    }

    /// Whether this is throttling.
    pub fn is_throttling(&self) -> bool {
        THROTTLING.contains(&self.code.as_str())
    }
}

/// An error and its sources, joined: SDK errors put the useful part in the source chain.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
