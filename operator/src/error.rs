//! Why a reconcile failed. Messages end up in status conditions and events,
//! so they name what a person can fix and never carry a secret.

use std::time::Duration;

use drainpipe_contract::routes::RoutesError;

use crate::glue::GlueError;
use crate::heroku::HerokuError;
use crate::lifecycle::LifecycleError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] kube::Error),

    #[error("the LogDrain has no name, namespace or uid yet")]
    MissingObjectKey,

    /// Other writers kept creating and deleting the drain password Secret
    /// while this reconcile tried to read or create it.
    #[error("Kubernetes API error: the drain password Secret {namespace}/{name} keeps changing")]
    PasswordSecretContended { namespace: String, name: String },

    #[error("Secret {namespace}/{name} named by heroku.apiTokenSecretRef {problem}")]
    HerokuTokenMissing {
        namespace: String,
        name: String,
        problem: String,
    },

    #[error("{0}")]
    Heroku(#[source] HerokuError),

    /// Several apps failed; the first error decides the label.
    #[error("{message}")]
    Drains { message: String, first: HerokuError },

    #[error("{0}")]
    Glue(#[source] GlueError),

    #[error("{0}")]
    Lifecycle(#[source] LifecycleError),

    #[error("cannot write the routes file: {0}")]
    Routes(#[source] RoutesError),

    /// A deleted LogDrain waits for its buffer claims to be flushed.
    #[error(
        "{claims} buffer claims still hold the write-ahead log of stopped ingesters: waiting for their flush Jobs before the LogDrain goes (see its BufferFlush events; delete a claim by hand to give up its data)"
    )]
    BuffersNotFlushed { claims: usize },

    /// Boxed: the finalizer's error wraps this type.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A fixed, low-cardinality name for the failures metric.
    pub fn metric_label(&self) -> String {
        match self {
            // The label it had as a made-up kube::Error: dashboards keep working.
            Error::Kube(_) | Error::PasswordSecretContended { .. } => "kube".to_string(),
            Error::MissingObjectKey => "missing_object_key".to_string(),
            Error::HerokuTokenMissing { .. } => "heroku_token_missing".to_string(),
            Error::Heroku(e) | Error::Drains { first: e, .. } => {
                format!("heroku_{}", e.metric_label())
            }
            Error::Glue(e) => format!("glue_{}", e.metric_label()),
            Error::Lifecycle(e) => format!("s3_lifecycle_{}", e.metric_label()),
            Error::Routes(_) => "routes".to_string(),
            Error::BuffersNotFlushed { .. } => "buffers_not_flushed".to_string(),
            Error::Finalizer(_) => "finalizer".to_string(),
        }
    }

    /// True when retrying soon may succeed with nothing changed; otherwise a
    /// person has to act (and the change they make triggers a reconcile).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube(_)
            | Error::Finalizer(_)
            | Error::PasswordSecretContended { .. }
            | Error::BuffersNotFlushed { .. } => true,
            Error::Heroku(e) | Error::Drains { first: e, .. } => e.is_transient(),
            // A table that manageTable=false waits for is usually created
            // by another LogDrain sharing it: keep retrying, with backoff.
            Error::Glue(GlueError::TableNotFound { .. } | GlueError::DatabaseNotFound { .. }) => {
                true
            }
            Error::Glue(e) => e.is_transient(),
            Error::Lifecycle(e) => e.is_transient(),
            Error::MissingObjectKey | Error::HerokuTokenMissing { .. } | Error::Routes(_) => false,
        }
    }

    /// The status condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::HerokuTokenMissing { .. } => "HerokuTokenMissing",
            Error::Heroku(e) | Error::Drains { first: e, .. } => e.reason(),
            Error::Glue(e) => e.reason(),
            Error::Lifecycle(e) => e.reason(),
            Error::Routes(_) => "RoutesError",
            Error::BuffersNotFlushed { .. } => "BuffersNotFlushed",
            Error::Kube(_)
            | Error::MissingObjectKey
            | Error::PasswordSecretContended { .. }
            | Error::Finalizer(_) => "KubernetesError",
        }
    }

    /// A wait the remote service asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Heroku(e) | Error::Drains { first: e, .. } => e.retry_after(),
            _ => None,
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_prefixed_by_service() {
        assert_eq!(
            Error::Heroku(HerokuError::Unauthorized).metric_label(),
            "heroku_unauthorized"
        );
        let e = Error::HerokuTokenMissing {
            namespace: "logs".into(),
            name: "heroku".into(),
            problem: "does not exist".into(),
        };
        assert_eq!(e.metric_label(), "heroku_token_missing");
        assert_eq!(
            e.to_string(),
            "Secret logs/heroku named by heroku.apiTokenSecretRef does not exist"
        );
        assert!(!e.is_transient());
        assert!(Error::Heroku(HerokuError::Transport("reset".into())).is_transient());
    }

    #[test]
    fn errors_carry_their_condition_reason() {
        let missing = Error::HerokuTokenMissing {
            namespace: "logs".into(),
            name: "heroku".into(),
            problem: "does not exist".into(),
        };
        assert_eq!(missing.reason(), "HerokuTokenMissing");
        assert_eq!(Error::MissingObjectKey.reason(), "KubernetesError");
        assert_eq!(
            Error::Heroku(HerokuError::Unauthorized).reason(),
            "HerokuUnauthorized"
        );
        let glue = Error::Glue(GlueError::AccessDenied {
            operation: "GetTable",
            message: "no".into(),
        });
        assert_eq!(glue.reason(), "GlueAccessDenied");
        assert_eq!(glue.metric_label(), "glue_access_denied");
    }

    #[test]
    fn a_contended_password_secret_is_a_transient_kube_failure() {
        let e = Error::PasswordSecretContended {
            namespace: "logs".into(),
            name: "prod-drain-password".into(),
        };
        assert_eq!(e.metric_label(), "kube");
        assert!(e.is_transient());
        assert_eq!(e.reason(), "KubernetesError");
        assert!(e.to_string().contains("logs/prod-drain-password"), "{e}");
    }

    #[test]
    fn routes_and_finalizer_errors_keep_their_source() {
        use std::error::Error as _;
        let yaml = serde_yaml::from_str::<u32>("[").expect_err("not yaml");
        let e = Error::Routes(RoutesError::Yaml(yaml));
        assert!(e.source().is_some());
        assert!(
            e.to_string().starts_with("cannot write the routes file: "),
            "{e}"
        );
        let f = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::UnnamedObject));
        assert!(f.source().is_some());
        assert_eq!(f.metric_label(), "finalizer");
    }
}
