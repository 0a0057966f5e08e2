//! SDK clients per (region, role), shared by every policy that names the same pair.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use super::AwsFault;
use super::batch::Coalescer;
use super::breaker::{Breaker, BreakerConfig};
use super::kinds::{ecs, rds, rds_cluster};
use super::report::ProbeReport;
use crate::metrics::Metrics;

/// Route 53's account-wide limit.
const ROUTE53_PER_SECOND: u32 = 5;

/// Clients for one region and role.
#[derive(Clone, Debug)]
pub struct Clients {
    /// ECS.
    pub ecs: aws_sdk_ecs::Client,
    /// RDS.
    pub rds: aws_sdk_rds::Client,
    /// Route 53.
    pub route53: aws_sdk_route53::Client,
    /// Process-wide limits shared by every client.
    pub limits: Arc<Limits>,
    /// Where calls are counted.
    pub metrics: Arc<Metrics>,
    /// The region and role these clients act in: probe batches never mix accounts.
    pub account: Arc<str>,
}

impl Clients {
    /// Turns an SDK result into ours and counts the call by operation and outcome.
    pub fn observe<T, E>(
        &self,
        operation: &'static str,
        result: Result<T, SdkError<E, HttpResponse>>,
    ) -> Result<T, AwsFault>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let result = result.map_err(|e| AwsFault::from_sdk(operation, &e));
        self.metrics.aws_call(operation, result.as_ref().err());
        // Only outage-like failures count against AWS; a missing resource or a denied call
        // says nothing about AWS's health.
        match &result {
            Ok(_) => self.limits.breaker.record(false),
            Err(f) if f.retryable => self.limits.breaker.record(true),
            Err(_) => {}
        }
        self.metrics.aws_circuit_open.set(i64::from(self.limits.breaker.is_open()));
        result
    }

    /// A Route 53 read, retried here rather than by the SDK (whose Route 53 client never
    /// retries), so that every attempt, not just the first, waits for its turn under the
    /// account-wide rate limit: SDK retries of throttled calls went out unlimited, which is
    /// how one throttled account stays throttled. Throttling, 5xx and timeouts are tried
    /// again up to [`ROUTE53_READ_ATTEMPTS`] times with full-jitter exponential backoff.
    pub async fn route53_read<T, E, Fut>(&self, operation: &'static str, call: impl Fn() -> Fut) -> Result<T, AwsFault>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        let mut attempt = 1;
        loop {
            self.limits.route53_turn().await;
            // Counted once per operation, as the SDK's own retries are for the others.
            let result = call().await;
            match result {
                Err(e) if attempt < ROUTE53_READ_ATTEMPTS && AwsFault::from_sdk(operation, &e).retryable => {
                    let ceiling = ROUTE53_RETRY_BASE.saturating_mul(1 << (attempt - 1)).min(ROUTE53_RETRY_MAX);
                    tokio::time::sleep(ceiling.mul_f64(fastrand::f64())).await;
                    attempt += 1;
                }
                other => return self.observe(operation, other),
            }
        }
    }
}

/// Attempts of a Route 53 read (the SDK's standard retry makes as many for the others).
pub const ROUTE53_READ_ATTEMPTS: u32 = 4;
const ROUTE53_RETRY_BASE: Duration = Duration::from_secs(1);
const ROUTE53_RETRY_MAX: Duration = Duration::from_secs(5);

/// How long one ReceiveMessage waits for messages (SQS's longest long poll).
pub const SQS_LONG_POLL: Duration = Duration::from_secs(20);

/// How the process talks to AWS (the `run` command's `--aws-*` flags).
#[derive(Clone, Debug)]
pub struct AwsSettings {
    /// ECS and RDS calls in flight across the process (Route 53's rate limit bounds its own).
    pub in_flight: usize,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// One HTTP attempt's limit. A mutating call that runs past it may still take effect,
    /// which the next attempt's check-first read finds.
    pub attempt_timeout: Duration,
    /// A whole operation's limit, the SDK's retries of reads included.
    pub operation_timeout: Duration,
    /// How long a probe read waits for other policies' ids to share its call.
    pub batch_window: Duration,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            in_flight: 32,
            breaker: BreakerConfig::default(),
            attempt_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(30),
            batch_window: Duration::from_millis(50),
        }
    }
}

/// Process-wide limits on AWS calls.
pub struct Limits {
    /// ECS and RDS calls in flight across the process: bounds memory and sockets at 10,000
    /// targets. (Route 53's rate limit bounds its own.)
    pub in_flight: Semaphore,
    /// Route 53 requests per second across the process.
    pub route53: DefaultDirectRateLimiter,
    /// Pauses new remediation while AWS is failing.
    pub breaker: Breaker,
    /// Open DescribeServices batches by account and cluster.
    pub ecs_batches: Coalescer<(Arc<str>, String), ProbeReport>,
    /// Open DescribeDBInstances batches by account.
    pub rds_batches: Coalescer<Arc<str>, ProbeReport>,
    /// Open DescribeDBClusters batches by account.
    pub rds_cluster_batches: Coalescer<Arc<str>, ProbeReport>,
}

impl Limits {
    /// Waits for a Route 53 request's turn. The rate limit alone bounds Route 53 calls: taking
    /// an in-flight permit after it would let requests that passed the limiter queue for
    /// permits and then leave together, over the limit (the bench saw 53 in one second while
    /// a cycle's ECS reads held every permit). Call `send` right after, with no other wait.
    pub async fn route53_turn(&self) {
        self.route53.until_ready().await;
    }
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("in_flight", &self.in_flight)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

/// Builds and caches [`Clients`].
pub struct ClientCache {
    base: SdkConfig,
    /// One HTTP attempt's limit (`--aws-attempt-timeout`).
    pub attempt_timeout: Duration,
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    clients: Mutex<HashMap<(String, Option<String>), Clients>>,
}

impl ClientCache {
    /// Loads the standard provider chain (environment, web identity / IRSA, profile) once.
    /// `AWS_ENDPOINT_URL` is honoured by the SDK, which is how tests reach moto.
    pub async fn from_env(settings: AwsSettings, metrics: Arc<Metrics>) -> Self {
        let base = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(4).with_max_backoff(Duration::from_secs(5)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(settings.attempt_timeout)
                    .operation_timeout(settings.operation_timeout)
                    .build(),
            )
            .load()
            .await;
        Self::new(base, &settings, metrics)
    }

    /// From a ready config.
    pub fn new(base: SdkConfig, settings: &AwsSettings, metrics: Arc<Metrics>) -> Self {
        let limits = Arc::new(Limits {
            in_flight: Semaphore::new(settings.in_flight.max(1)),
            // Evenly spaced, no burst: a burst of 5 at the end of one second and 5 more at the
            // start of the next would be 10 in one second (the bench saw 8 with per_second).
            // A fifth slower than the limit: a request let through on time can still leave
            // (and arrive) late behind other work, and the next, on time, then follows it
            // closely; with a tenth, the bench saw six arrive in one second at 10,000 targets.
            route53: RateLimiter::direct(
                Quota::with_period(Duration::from_millis(1200 / u64::from(ROUTE53_PER_SECOND)))
                    .expect("non-zero")
                    .allow_burst(std::num::NonZeroU32::MIN),
            ),
            breaker: Breaker::new(settings.breaker),
            ecs_batches: Coalescer::new(settings.batch_window, ecs::BATCH),
            rds_batches: Coalescer::new(settings.batch_window, rds::BATCH),
            rds_cluster_batches: Coalescer::new(settings.batch_window, rds_cluster::BATCH),
        });
        Self { base, attempt_timeout: settings.attempt_timeout, limits, metrics, clients: Mutex::new(HashMap::new()) }
    }

    /// Whether the process-wide AWS circuit breaker is open.
    pub fn circuit_open(&self) -> bool {
        self.limits.breaker.is_open()
    }

    /// An SQS client for reading event queues in `region` (the queue's URL says which;
    /// `None`: the base chain's region), with the controller's own credentials: a queue
    /// lives in the controller's account, and other accounts' rules forward to it. Its
    /// attempts outlast a long poll ([`SQS_LONG_POLL`]) by the usual attempt timeout.
    pub fn sqs(&self, region: Option<&str>) -> aws_sdk_sqs::Client {
        let mut builder = aws_sdk_sqs::config::Builder::from(&self.base).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(SQS_LONG_POLL + self.attempt_timeout)
                .operation_timeout(2 * (SQS_LONG_POLL + self.attempt_timeout))
                .build(),
        );
        if let Some(region) = region {
            builder = builder.region(Region::new(region.to_owned()));
        }
        aws_sdk_sqs::Client::from_conf(builder.build())
    }

    /// The clients for a region and optional role. With a role, credentials come from STS
    /// AssumeRole on top of the base chain and are cached and refreshed by the SDK.
    pub async fn get(&self, region: &str, role_arn: Option<&str>) -> Clients {
        let key = (region.to_owned(), role_arn.map(str::to_owned));
        if let Some(c) = self.clients.lock().expect("not poisoned").get(&key) {
            return c.clone();
        }
        let mut builder = self.base.to_builder().region(Region::new(region.to_owned()));
        if let Some(role) = role_arn {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("aws-recovery-controller")
                .region(Region::new(region.to_owned()))
                .configure(&self.base)
                .build()
                .await;
            builder =
                builder.credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(provider));
        }
        let config = builder.build();
        let clients = Clients {
            ecs: aws_sdk_ecs::Client::new(&config),
            rds: aws_sdk_rds::Client::new(&config),
            // Retries of Route 53 calls are made by `route53_read`, under the rate limit.
            route53: aws_sdk_route53::Client::from_conf(
                aws_sdk_route53::config::Builder::from(&config).retry_config(RetryConfig::disabled()).build(),
            ),
            limits: self.limits.clone(),
            metrics: self.metrics.clone(),
            account: format!("{region} {}", role_arn.unwrap_or_default()).into(),
        };
        self.clients.lock().expect("not poisoned").entry(key).or_insert(clients).clone()
    }
}
