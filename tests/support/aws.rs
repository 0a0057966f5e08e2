//! AWS fixtures made through the Rust SDK against moto (`AWS_ENDPOINT_URL`).

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecs::types::ContainerDefinition;
use aws_sdk_route53::types::{HealthCheckConfig, HealthCheckType};

/// SDK config aimed at moto (the SDK reads AWS_ENDPOINT_URL itself).
pub async fn config() -> SdkConfig {
    super::var("AWS_ENDPOINT_URL");
    aws_config::defaults(BehaviorVersion::latest()).region(Region::new("us-east-1")).load().await
}

/// An ECS cluster with services, each at `desired` tasks.
pub async fn ecs_services(cfg: &SdkConfig, cluster: &str, services: &[String], desired: i32) {
    let ecs = aws_sdk_ecs::Client::new(cfg);
    ecs.create_cluster().cluster_name(cluster).send().await.expect("create cluster");
    let family = format!("{cluster}-task");
    ecs.register_task_definition()
        .family(&family)
        .container_definitions(ContainerDefinition::builder().name("app").image("nginx").memory(128).build())
        .send()
        .await
        .expect("register task definition");
    for s in services {
        ecs.create_service()
            .cluster(cluster)
            .service_name(s)
            .task_definition(&family)
            .desired_count(desired)
            .send()
            .await
            .expect("create service");
    }
}

/// An RDS instance.
pub async fn rds_instance(cfg: &SdkConfig, id: &str, multi_az: bool) {
    aws_sdk_rds::Client::new(cfg)
        .create_db_instance()
        .db_instance_identifier(id)
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("admin")
        .master_user_password("password123")
        .multi_az(multi_az)
        .send()
        .await
        .expect("create db instance");
}

/// An Aurora PostgreSQL cluster with the given instances; the first one created is its
/// writer.
pub async fn rds_cluster(cfg: &SdkConfig, id: &str, instances: &[String]) {
    let rds = aws_sdk_rds::Client::new(cfg);
    rds.create_db_cluster()
        .db_cluster_identifier(id)
        .engine("aurora-postgresql")
        .master_username("admin")
        .master_user_password("password123")
        .send()
        .await
        .expect("create db cluster");
    for instance in instances {
        rds.create_db_instance()
            .db_instance_identifier(instance)
            .db_cluster_identifier(id)
            .engine("aurora-postgresql")
            .db_instance_class("db.r6g.large")
            .send()
            .await
            .expect("create cluster instance");
    }
}

/// A Route 53 health check; returns its id.
pub async fn health_check(cfg: &SdkConfig, fqdn: &str) -> String {
    let out = aws_sdk_route53::Client::new(cfg)
        .create_health_check()
        .caller_reference(uuid::Uuid::new_v4().to_string())
        .health_check_config(
            HealthCheckConfig::builder()
                .r#type(HealthCheckType::Https)
                .fully_qualified_domain_name(fqdn)
                .port(443)
                .resource_path("/health")
                .build()
                .expect("health check config"),
        )
        .send()
        .await
        .expect("create health check");
    out.health_check().map(|h| h.id().to_owned()).expect("id")
}

/// A hosted zone; returns its id without the `/hostedzone/` prefix.
pub async fn hosted_zone(cfg: &SdkConfig, name: &str) -> String {
    let out = aws_sdk_route53::Client::new(cfg)
        .create_hosted_zone()
        .name(name)
        .caller_reference(uuid::Uuid::new_v4().to_string())
        .send()
        .await
        .expect("create hosted zone");
    out.hosted_zone().map(|z| z.id().trim_start_matches("/hostedzone/").to_owned()).expect("zone id")
}
