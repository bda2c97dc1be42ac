//! The routes file: which apps an ingester accepts, with their drain
//! password and known Heroku drain tokens. The operator writes it into a
//! Secret; the ingester mounts it and re-reads it when it changes.
//!
//! ```yaml
//! apps:
//!   my-app:
//!     password: s3cr3t
//!     drainTokens: ["d.01234567-89ab-cdef-0123-456789abcdef"]
//! alerts: []   # see crate::alerts
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::alerts::AlertRule;

/// The parsed routes file.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    #[serde(default)]
    pub apps: BTreeMap<String, AppRoute>,
    /// Alert rules (`spec.alerts`, Secrets resolved); see [`crate::alerts`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertRule>,
}

/// One accepted app.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppRoute {
    /// HTTP Basic password (any user name), also accepted as `?token=`.
    pub password: String,
    /// Heroku drain tokens (`d.` + UUID) Logplex sends for this app.
    #[serde(default)]
    pub drain_tokens: Vec<String>,
}

/// A routes file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("routes file is not valid YAML for drainpipe routes: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("routes file: app {app:?} has an empty password")]
    EmptyPassword { app: String },
}

impl RoutesFile {
    /// Parse and validate a routes file.
    pub fn from_yaml(text: &str) -> Result<Self, RoutesError> {
        let routes: RoutesFile = serde_yaml::from_str(text)?;
        if let Some((app, _)) = routes.apps.iter().find(|(_, r)| r.password.is_empty()) {
            return Err(RoutesError::EmptyPassword { app: app.clone() });
        }
        Ok(routes)
    }

    /// Serialize for the operator's routes Secret.
    pub fn to_yaml(&self) -> Result<String, RoutesError> {
        Ok(serde_yaml::to_string(self)?)
    }
}

// Debug never shows passwords: routes end up in logs and error chains.
impl fmt::Debug for RoutesFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutesFile")
            .field("apps", &self.apps)
            .field("alerts", &self.alerts)
            .finish()
    }
}

impl fmt::Debug for AppRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppRoute")
            .field("password", &"<redacted>")
            .field("drain_tokens", &self.drain_tokens)
            .finish()
    }
}

/// Parse a routes file, describing a failure without quoting the file:
/// serde_yaml errors can echo values, and values here are passwords.
pub fn parse_redacted(text: &[u8]) -> Result<RoutesFile, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_owned())?;
    RoutesFile::from_yaml(text).map_err(|e| match e {
        RoutesError::Yaml(y) => match y.location() {
            Some(loc) => format!(
                "not a valid drainpipe routes file (error at line {}, column {})",
                loc.line(),
                loc.column()
            ),
            None => "not a valid drainpipe routes file".to_owned(),
        },
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_round_trips_and_redacts() {
        let text = "apps:\n  my-app:\n    password: hunter2\n    drainTokens: [d.abc]\n";
        let routes = RoutesFile::from_yaml(text).expect("valid routes");
        assert_eq!(routes.apps["my-app"].drain_tokens, vec!["d.abc"]);
        let again = RoutesFile::from_yaml(&routes.to_yaml().expect("yaml")).expect("valid");
        assert_eq!(again, routes);
        assert!(!format!("{routes:?}").contains("hunter2"));
    }

    #[test]
    fn rejects_unknown_fields_and_empty_passwords() {
        assert!(RoutesFile::from_yaml("apps:\n  a:\n    pasword: x\n").is_err());
        let err = RoutesFile::from_yaml("apps:\n  a:\n    password: ''\n").unwrap_err();
        assert!(err.to_string().contains("empty password"));
    }
    #[test]
    fn invalid_file_errors_do_not_quote_passwords() {
        let err =
            parse_redacted(b"apps:\n  a:\n    password: [sekrit-value]\n").expect_err("invalid");
        assert!(!err.contains("sekrit"), "{err}");
        let err = parse_redacted(b"apps:\n  a:\n    password: sekrit\n    extra: sekrit2\n")
            .expect_err("invalid");
        assert!(!err.contains("sekrit"), "{err}");
    }
}
