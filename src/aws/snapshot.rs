//! SDK answers → the small snapshots the pure rules of `core::kinds` judge. Probes and
//! actions both read through these, so detection and the read before acting see a target
//! the same way.

use aws_sdk_ecs::primitives::DateTime;
use k8s_openapi::jiff::Timestamp;

use crate::core::kinds::{ecs, rds, route53};

/// An SDK time as a timestamp.
pub fn ts(dt: &DateTime) -> Option<Timestamp> {
    Timestamp::new(dt.secs(), dt.subsec_nanos() as i32).ok()
}

/// One ECS service.
pub fn ecs_service(svc: &aws_sdk_ecs::types::Service) -> ecs::Service {
    ecs::Service {
        running: svc.running_count(),
        desired: svc.desired_count(),
        pending: svc.pending_count(),
        deployments: svc
            .deployments()
            .iter()
            .map(|d| ecs::Deployment {
                id: d.id().unwrap_or_default().to_owned(),
                status: d.status().unwrap_or_default().to_owned(),
                created_at: d.created_at().and_then(ts),
                rollout_state: d.rollout_state().map(|r| r.as_str().to_owned()),
            })
            .collect(),
        // ECS lists events newest first.
        events: svc.events().iter().take(5).filter_map(|e| e.message().map(str::to_owned)).collect(),
    }
}

/// One RDS instance.
pub fn rds_instance(db: &aws_sdk_rds::types::DbInstance) -> rds::Instance {
    rds::Instance {
        status: db.db_instance_status().unwrap_or("unknown").to_owned(),
        endpoint: db.endpoint().and_then(|e| e.address()).map(str::to_owned),
        multi_az: db.multi_az(),
        availability_zones: [db.availability_zone(), db.secondary_availability_zone()]
            .into_iter()
            .flatten()
            .map(str::to_owned)
            .collect(),
    }
}

/// RDS events.
pub fn rds_events(events: &[aws_sdk_rds::types::Event]) -> Vec<rds::Event> {
    events
        .iter()
        .map(|e| rds::Event { date: e.date().and_then(ts), message: e.message().unwrap_or_default().to_owned() })
        .collect()
}

/// A health check's observations.
pub fn health_check(
    out: &aws_sdk_route53::operation::get_health_check_status::GetHealthCheckStatusOutput,
) -> route53::Observations {
    route53::Observations {
        statuses: out
            .health_check_observations()
            .iter()
            .map(|o| o.status_report().and_then(|r| r.status()).unwrap_or_default().to_owned())
            .collect(),
    }
}

/// Record sets.
pub fn records(sets: &[aws_sdk_route53::types::ResourceRecordSet]) -> Vec<route53::Record> {
    sets.iter()
        .map(|r| route53::Record {
            name: r.name().to_owned(),
            r#type: r.r#type().as_str().to_owned(),
            alias: r.alias_target().map(|a| (a.dns_name().to_owned(), a.hosted_zone_id().to_owned())),
        })
        .collect()
}
