//! Reaching the cluster as kubectl would (kubeconfig, context, namespace, impersonation), and
//! errors that say what to do.

use std::path::PathBuf;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// How to reach the cluster: kubectl's own flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Conn {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace (default: the context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Every namespace (`status`).
    #[arg(short = 'A', long, global = true)]
    all_namespaces: bool,
    /// Act as this user (impersonation, as `kubectl --as`).
    #[arg(long = "as", global = true)]
    as_user: Option<String>,
    /// Act with this group (repeat; with --as).
    #[arg(long = "as-group", global = true, requires = "as_user")]
    as_groups: Vec<String>,
}

/// A client and where it works.
pub struct Kube {
    /// The client.
    pub client: Client,
    /// The namespace verbs work in.
    pub namespace: String,
    /// `-A`: every namespace (for listing).
    pub all_namespaces: bool,
}

impl Kube {
    /// Who the API server says we are (`kubectl auth whoami`), for "who asked" in intents;
    /// `$USER` when the server will not say (an old server, or RBAC without the review).
    pub async fn whoami(&self) -> String {
        let review = SelfSubjectReview::default();
        match Api::<SelfSubjectReview>::all(self.client.clone()).create(&PostParams::default(), &review).await {
            Ok(r) => r.status.and_then(|s| s.user_info).and_then(|u| u.username).unwrap_or_else(local_user),
            Err(_) => local_user(),
        }
    }
}

fn local_user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
}

impl Conn {
    /// The client, from the kubeconfig (or the pod's service account when there is none).
    pub async fn connect(&self) -> Result<Kube, CliError> {
        let mut config = self.config().await?;
        if let Some(user) = &self.as_user {
            config.auth_info.impersonate = Some(user.clone());
            config.auth_info.impersonate_groups = (!self.as_groups.is_empty()).then(|| self.as_groups.clone());
        }
        let namespace = self.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| CliError::Kubeconfig(e.to_string()))?;
        Ok(Kube { client, namespace, all_namespaces: self.all_namespaces })
    }

    async fn config(&self) -> Result<Config, CliError> {
        let options = KubeConfigOptions { context: self.context.clone(), ..Default::default() };
        if let Some(path) = &self.kubeconfig {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| CliError::Kubeconfig(format!("cannot read kubeconfig {}: {e}", path.display())))?;
            return Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| CliError::Kubeconfig(e.to_string()));
        }
        match Config::from_kubeconfig(&options).await {
            Ok(c) => Ok(c),
            Err(e) => Config::incluster().map_err(|_| CliError::NoKubeconfig(e.to_string())),
        }
    }
}

/// What went wrong, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No kubeconfig and not in a pod.
    #[error(
        "no cluster to talk to ({0}): set KUBECONFIG or pass --kubeconfig, or pick a context with --context \
         (`kubectl config get-contexts` lists them)"
    )]
    NoKubeconfig(String),
    /// The kubeconfig is unusable.
    #[error("{0}")]
    Kubeconfig(String),
    /// The recovery.dev CRDs are not installed.
    #[error(
        "the recovery.dev CRDs are not installed in this cluster (the API server does not know {0}): install the \
         chart (`helm install recovery charts/aws-recovery-controller`) or `kubectl apply -f crds/`"
    )]
    CrdsMissing(&'static str),
    /// RBAC refused.
    #[error(
        "forbidden: {0}. Ask a cluster admin for that permission (reading needs get/list on recovery.dev resources \
         and events; approve/retry/cancel need patch on recoveryplans; pause/resume need patch on recoverypolicies)"
    )]
    Forbidden(String),
    /// An object that does not exist.
    #[error("{kind} {name} not found in namespace {namespace}{hint}")]
    NotFound {
        /// Its kind.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Where it was looked for.
        namespace: String,
        /// What to try.
        hint: String,
    },
    /// The request makes no sense for the object's state; nothing was written.
    #[error("{0}")]
    Refused(String),
    /// Anything else the API server said.
    #[error("the API server answered: {0}")]
    Api(String),
    /// AWS could not be read.
    #[error("{0}")]
    Aws(String),
    /// A file or output problem.
    #[error("{0}")]
    Io(String),
}

/// Maps an API error while working with `plural` (a recovery.dev resource or `events`).
pub fn api_error(e: kube::Error, plural: &'static str) -> CliError {
    match e {
        kube::Error::Api(s) if s.code == 403 => CliError::Forbidden(s.message),
        kube::Error::Api(s) if s.code == 404 && s.message.contains("could not find the requested resource") => {
            CliError::CrdsMissing(plural)
        }
        kube::Error::Api(s) => CliError::Api(format!("{} ({})", s.message, s.code)),
        other => CliError::Api(other.to_string()),
    }
}

/// Gets one object, mapping a missing one to [`CliError::NotFound`] with a hint.
pub async fn get<K>(api: &Api<K>, kind: &'static str, plural: &'static str, name: &str, ns: &str) -> Result<K, CliError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await.map_err(|e| api_error(e, plural))? {
        Some(obj) => Ok(obj),
        None => Err(CliError::NotFound {
            kind,
            name: name.to_owned(),
            namespace: ns.to_owned(),
            hint: format!(" (`kubectl get {plural} -n {ns}` lists them; -n picks another namespace)"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            serde_json::from_value(serde_json::json!({"code": code, "message": message, "reason": "x"})).unwrap(),
        ))
    }

    #[test]
    fn api_errors_say_what_to_do() {
        let missing = api_error(api(404, "the server could not find the requested resource"), "recoverypolicies");
        assert!(matches!(missing, CliError::CrdsMissing("recoverypolicies")));
        assert!(missing.to_string().contains("kubectl apply -f crds/"), "{missing}");
        let forbidden = api_error(
            api(403, r#"recoveryplans.recovery.dev "p" is forbidden: User "bob" cannot patch resource"#),
            "recoveryplans",
        );
        let shown = forbidden.to_string();
        assert!(shown.starts_with(r#"forbidden: recoveryplans.recovery.dev "p" is forbidden: User "bob""#), "{shown}");
        assert!(shown.contains("patch on recoveryplans"), "{shown}");
        let other = api_error(api(500, "etcdserver: request timed out"), "incidents");
        assert_eq!(other.to_string(), "the API server answered: etcdserver: request timed out (500)");
    }
}
