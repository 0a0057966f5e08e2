//! aws-recovery-controller: detects unhealthy AWS workloads and drives their recovery through
//! Kubernetes resources, acting at most once per step.
#![forbid(unsafe_code)]

pub mod alert;
pub mod api;
pub mod aws;
pub mod cli;
pub mod controller;
pub mod core;
pub mod metrics;
pub mod server;
pub mod webhook;
