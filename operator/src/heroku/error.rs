//! A failed Heroku call ([`HerokuError`]): its scrubbed, actionable
//! message, metric label, condition reason and severity, and the error
//! body Heroku answers with.

use std::time::Duration;

use serde::Deserialize;

/// Heroku's error body: `{"id": "not_found", "message": "..."}`, with
/// `"resource": "app"` when what was not found is the app.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub(super) id: String,
    #[serde(default)]
    pub(super) message: String,
    #[serde(default)]
    pub(super) resource: String,
}

impl ErrorBody {
    /// A 404 about the app itself (`{"resource":"app","id":"not_found",
    /// "message":"Couldn't find that app."}`), not about a drain of it: the
    /// app name may have changed, so the drain is not known to be gone.
    pub(super) fn app_missing(&self) -> bool {
        self.resource == "app" || self.message.contains("find that app")
    }
}

/// A failed Heroku call. Messages are scrubbed of credentials and written for
/// a person reading a status condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HerokuError {
    #[error(
        "Heroku refused the API token (401): check the Secret named by heroku.apiTokenSecretRef"
    )]
    Unauthorized,
    #[error("Heroku denied access to app {app} ({id}): {message}")]
    Forbidden {
        app: String,
        id: String,
        message: String,
    },
    #[error("Heroku app {app} not found, or the API token's account cannot see it")]
    AppNotFound { app: String },
    #[error("Heroku rate limit exhausted after {attempts} attempts{}", fmt_retry_after(.retry_after))]
    RateLimited {
        /// `Retry-After` as Heroku sent it; `None` when it sent none.
        retry_after: Option<Duration>,
        attempts: u32,
    },
    #[error(
        "Heroku has not yet assigned app {app} a log channel after {attempts} attempts; it usually does within a minute of the app's creation"
    )]
    LogChannelPending { app: String, attempts: u32 },
    #[error(
        "Heroku's App Info for app {app} names no generation, so drainpipe cannot tell whether it takes a log drain (Cedar) or a telemetry drain (Fir); it asks again on its backoff"
    )]
    GenerationUnknown { app: String },
    #[error("Heroku API error {status} ({id}): {message}")]
    Api {
        status: u16,
        id: String,
        message: String,
    },
    #[error("cannot reach the Heroku API: {0}")]
    Transport(String),
    #[error("unexpected response from the Heroku API: {0}")]
    InvalidResponse(String),
    #[error("invalid Heroku API base URL: {0}")]
    InvalidBaseUrl(String),
    #[error("invalid drain URL: {0}")]
    InvalidDrainUrl(String),
}

/// Only a wait Heroku itself sent is attributed to Heroku; the operator's
/// own backoff is stated where it is decided.
fn fmt_retry_after(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!("; Heroku sent Retry-After: {} s", d.as_secs().max(1)),
        None => String::new(),
    }
}

impl HerokuError {
    /// A fixed, low-cardinality name for metrics labels.
    pub fn metric_label(&self) -> &'static str {
        match self {
            HerokuError::Unauthorized => "unauthorized",
            HerokuError::Forbidden { .. } => "forbidden",
            HerokuError::AppNotFound { .. } => "app_not_found",
            HerokuError::RateLimited { .. } => "rate_limited",
            HerokuError::LogChannelPending { .. } => "log_channel_pending",
            HerokuError::GenerationUnknown { .. } => "generation_unknown",
            HerokuError::Api { status, .. } if *status >= 500 => "server_error",
            HerokuError::Api { .. } => "api_error",
            HerokuError::Transport(_) => "transport",
            HerokuError::InvalidResponse(_) => "invalid_response",
            HerokuError::InvalidBaseUrl(_) | HerokuError::InvalidDrainUrl(_) => "config",
        }
    }

    /// True when the same call may succeed later without anyone changing
    /// anything (the controller requeues sooner for these).
    pub fn is_transient(&self) -> bool {
        match self {
            HerokuError::RateLimited { .. }
            | HerokuError::LogChannelPending { .. }
            | HerokuError::GenerationUnknown { .. }
            | HerokuError::Transport(_) => true,
            HerokuError::Api { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// How long Heroku asked to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HerokuError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The status condition reason: what a person reading `kubectl get`
    /// should look at.
    pub fn reason(&self) -> &'static str {
        match self {
            HerokuError::Unauthorized => "HerokuUnauthorized",
            HerokuError::Forbidden { .. } => "HerokuForbidden",
            HerokuError::AppNotFound { .. } => "AppNotFound",
            HerokuError::RateLimited { .. } => "HerokuRateLimited",
            HerokuError::LogChannelPending { .. } => "LogChannelPending",
            HerokuError::GenerationUnknown { .. } => "GenerationUnknown",
            HerokuError::Api { status, .. } if *status >= 500 => "HerokuUnavailable",
            HerokuError::Transport(_) => "HerokuUnavailable",
            HerokuError::InvalidDrainUrl(_) => "InvalidEndpoint",
            _ => "HerokuError",
        }
    }

    /// Rank among several apps' errors, most actionable first: credentials,
    /// then missing apps, then the passing troubles. The first one names the
    /// condition reason and the metric label.
    pub fn severity(&self) -> u8 {
        match self {
            HerokuError::Unauthorized => 0,
            HerokuError::Forbidden { .. } => 1,
            HerokuError::AppNotFound { .. } => 2,
            HerokuError::InvalidDrainUrl(_) => 3,
            _ if !self.is_transient() => 4,
            _ => 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_actionable_and_labelled() {
        let e = HerokuError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
            attempts: 6,
        };
        assert_eq!(
            e.to_string(),
            "Heroku rate limit exhausted after 6 attempts; Heroku sent Retry-After: 30 s"
        );
        assert_eq!(e.metric_label(), "rate_limited");
        assert!(e.is_transient());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
        assert!(
            HerokuError::Unauthorized
                .to_string()
                .contains("apiTokenSecretRef")
        );
        assert!(!HerokuError::Unauthorized.is_transient());
        let five = HerokuError::Api {
            status: 503,
            id: "unavailable".into(),
            message: "down".into(),
        };
        assert_eq!(five.metric_label(), "server_error");
        assert!(five.is_transient());
    }

    #[test]
    fn heroku_errors_map_to_actionable_reasons() {
        assert_eq!(HerokuError::Unauthorized.reason(), "HerokuUnauthorized");
        assert_eq!(
            HerokuError::AppNotFound { app: "x".into() }.reason(),
            "AppNotFound"
        );
        assert_eq!(
            HerokuError::Api {
                status: 503,
                id: "x".into(),
                message: "down".into()
            }
            .reason(),
            "HerokuUnavailable"
        );
        assert!(
            HerokuError::Unauthorized.severity() < HerokuError::Transport("x".into()).severity()
        );
    }
}
