//! The live routing table: the routes file (format in
//! [`drainpipe_contract::routes`]) loaded, re-read when it changes, and
//! consulted on every request with constant-time secret comparison.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use drainpipe_contract::alerts::AlertRule;
use drainpipe_contract::routes::{RoutesFile, parse_redacted};
use subtle::ConstantTimeEq;

use crate::alert::Alerts;
use crate::telemetry::metrics::{Metrics, ResultLabel};

/// Why a drain request is refused (404, 401, 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    UnknownApp,
    BadPassword,
    TokenMismatch,
}

/// Where a syslog drain token leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRoute {
    /// The app whose `drainTokens` list it.
    App(String),
    /// No app lists it.
    Unknown,
    /// No routes file: nothing is known about tokens.
    Open,
}

/// The live routing table the server consults on every request. Cheap to
/// clone; a reload swaps the whole table at once so a request never sees half
/// of an old file and half of a new one.
#[derive(Clone)]
pub struct Routes {
    /// `None`: no routes file, every app accepted without authentication.
    table: Option<Arc<RwLock<Arc<RoutesFile>>>>,
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.table {
            None => f.write_str("Routes(open)"),
            Some(t) => {
                let apps = t.read().map(|t| t.apps.len()).unwrap_or(0);
                write!(f, "Routes({apps} apps)")
            }
        }
    }
}

/// A routes file that cannot be read at start-up.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read routes file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("routes file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl Routes {
    /// No routes file: accept any app without authentication.
    pub fn open() -> Self {
        Routes { table: None }
    }

    /// A fixed table (tests and callers that manage reloads themselves).
    pub fn fixed(routes: RoutesFile) -> Self {
        Routes {
            table: Some(Arc::new(RwLock::new(Arc::new(routes)))),
        }
    }

    /// Read the routes file once; fails when it is missing or invalid.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let routes = parse_redacted(&text).map_err(|reason| LoadError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
        Ok(Self::fixed(routes))
    }

    /// The alert rules of the current file (none in open mode).
    pub(crate) fn alert_rules(&self) -> Vec<AlertRule> {
        self.current().map(|t| t.alerts.clone()).unwrap_or_default()
    }

    /// Number of apps, `None` in open mode.
    pub fn app_count(&self) -> Option<usize> {
        self.current().map(|t| t.apps.len())
    }

    fn current(&self) -> Option<Arc<RoutesFile>> {
        let table = self.table.as_ref()?;
        // A poisoned lock still holds a complete table: swaps are one assignment.
        let guard = table.read().unwrap_or_else(|e| e.into_inner());
        Some(Arc::clone(&guard))
    }

    fn replace(&self, routes: RoutesFile) {
        if let Some(table) = &self.table {
            let mut guard = table.write().unwrap_or_else(|e| e.into_inner());
            *guard = Arc::new(routes);
        }
    }

    /// Decide whether a request for `app` may be stored. `password` is the
    /// Basic-auth password or `?token=`; `drain_token` the
    /// `Logplex-Drain-Token` header. An app with no known drain tokens yet
    /// (drain not registered) accepts any token.
    pub fn check(
        &self,
        app: &str,
        password: Option<&[u8]>,
        drain_token: Option<&str>,
    ) -> Result<(), Denied> {
        let Some(table) = self.current() else {
            return Ok(());
        };
        let Some(route) = table.apps.get(app) else {
            return Err(Denied::UnknownApp);
        };
        match password {
            Some(given) if secret_eq(given, route.password.as_bytes()) => {}
            _ => return Err(Denied::BadPassword),
        }
        if let Some(token) = drain_token
            && !route.drain_tokens.is_empty()
        {
            // Fold over every known token so the time does not say which matched.
            let known = route
                .drain_tokens
                .iter()
                .fold(subtle::Choice::from(0), |acc, t| {
                    acc | subtle::Choice::from(u8::from(secret_eq(token.as_bytes(), t.as_bytes())))
                });
            if !bool::from(known) {
                return Err(Denied::TokenMismatch);
            }
        }
        Ok(())
    }

    /// The app a syslog drain token belongs to. Every known token is
    /// compared (constant time), so the time taken does not say which one
    /// matched or how close an unknown token came.
    pub fn app_for_token(&self, token: &[u8]) -> TokenRoute {
        let Some(table) = self.current() else {
            return TokenRoute::Open;
        };
        let mut found: Option<&str> = None;
        for (app, route) in &table.apps {
            for known in &route.drain_tokens {
                if secret_eq(token, known.as_bytes()) && found.is_none() {
                    found = Some(app.as_str());
                }
            }
        }
        match found {
            Some(app) => TokenRoute::App(app.to_owned()),
            None => TokenRoute::Unknown,
        }
    }

    /// Re-read `path` every `interval` and swap the table when its content
    /// changed, and the alert rules when they changed. Polling the content (not inotify) follows a mounted Secret,
    /// which Kubernetes updates by swapping a symlink to a new directory. An
    /// invalid file is logged and counted; the previous table stays.
    pub(crate) fn watch(
        &self,
        path: PathBuf,
        interval: Duration,
        metrics: Arc<Metrics>,
        alerts: Arc<Alerts>,
    ) {
        let routes = self.clone();
        let mut last = std::fs::read(&path).ok();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let text = match tokio::fs::read(&path).await {
                    Ok(text) => text,
                    Err(e) => {
                        // A Secret swap can briefly remove the file; keep the table.
                        tracing::debug!(path = %path.display(), error = %e, "routes file not readable; keeping current routes");
                        continue;
                    }
                };
                // Empty: an editor in the middle of rewriting the file (an
                // app-less file says `apps: {}`).
                if text.is_empty() || last.as_deref() == Some(&text[..]) {
                    continue;
                }
                match parse_redacted(&text) {
                    Ok(new) => {
                        let apps = new.apps.len();
                        if new.alerts != routes.alert_rules() {
                            alerts.set_rules(&new.alerts);
                        }
                        routes.replace(new);
                        metrics
                            .routes_reloads
                            .get_or_create(&ResultLabel { result: "ok" })
                            .inc();
                        tracing::info!(path = %path.display(), apps, "routes file reloaded");
                    }
                    Err(reason) => {
                        metrics
                            .routes_reloads
                            .get_or_create(&ResultLabel { result: "error" })
                            .inc();
                        tracing::error!(path = %path.display(), %reason, "routes file invalid; keeping previous routes");
                    }
                }
                last = Some(text);
            }
        });
    }
}

/// Constant-time equality whose time depends only on `expected`'s length.
fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut eq = (given.len() as u64).ct_eq(&(expected.len() as u64));
    for (i, e) in expected.iter().enumerate() {
        eq &= given.get(i).copied().unwrap_or(0).ct_eq(e);
    }
    eq.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Routes {
        Routes::fixed(
            RoutesFile::from_yaml(
                "apps:\n  shop:\n    password: hunter2\n    drainTokens: [d.11111111-2222-3333-4444-555555555555]\n  blog:\n    password: pw\n",
            )
            .expect("valid"),
        )
    }

    #[test]
    fn check_decides_404_401_403() {
        let r = table();
        let tok = Some("d.11111111-2222-3333-4444-555555555555");
        assert_eq!(r.check("shop", Some(b"hunter2"), tok), Ok(()));
        assert_eq!(r.check("shop", Some(b"hunter2"), None), Ok(()));
        assert_eq!(
            r.check("nope", Some(b"hunter2"), tok),
            Err(Denied::UnknownApp)
        );
        assert_eq!(r.check("shop", None, tok), Err(Denied::BadPassword));
        assert_eq!(
            r.check("shop", Some(b"hunter"), tok),
            Err(Denied::BadPassword)
        );
        assert_eq!(
            r.check("shop", Some(b"hunter22"), tok),
            Err(Denied::BadPassword)
        );
        assert_eq!(r.check("shop", Some(b""), tok), Err(Denied::BadPassword));
        assert_eq!(r.check("shop", Some(b"pw"), tok), Err(Denied::BadPassword));
        assert_eq!(
            r.check(
                "shop",
                Some(b"hunter2"),
                Some("d.99999999-2222-3333-4444-555555555555")
            ),
            Err(Denied::TokenMismatch)
        );
        // No known tokens yet: the drain is being registered.
        assert_eq!(r.check("blog", Some(b"pw"), Some("d.anything")), Ok(()));
        assert_eq!(Routes::open().check("any-app", None, None), Ok(()));
    }

    #[test]
    fn syslog_tokens_lead_to_their_app() {
        let r = table();
        assert_eq!(
            r.app_for_token(b"d.11111111-2222-3333-4444-555555555555"),
            TokenRoute::App("shop".to_owned())
        );
        assert_eq!(
            r.app_for_token(b"d.11111111-2222-3333-4444-55555555555"),
            TokenRoute::Unknown
        );
        assert_eq!(r.app_for_token(b""), TokenRoute::Unknown);
        assert_eq!(Routes::open().app_for_token(b"d.x"), TokenRoute::Open);
    }

    #[test]
    fn secret_eq_is_exact() {
        assert!(secret_eq(b"abc", b"abc"));
        assert!(!secret_eq(b"abd", b"abc"));
        assert!(!secret_eq(b"ab", b"abc"));
        assert!(!secret_eq(b"abc\0", b"abc"));
        assert!(!secret_eq(b"ab\0", b"ab"));
        assert!(secret_eq(b"", b""));
    }

    #[tokio::test]
    async fn watch_swaps_the_table_when_the_file_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("routes.yaml");
        std::fs::write(&path, "apps:\n  shop:\n    password: old\n").expect("write");
        let routes = Routes::load(&path).expect("load");
        let metrics = Arc::new(Metrics::new());
        let alerts = Alerts::start(Arc::clone(&metrics));
        routes.watch(
            path.clone(),
            Duration::from_millis(20),
            metrics.clone(),
            Arc::clone(&alerts),
        );
        assert_eq!(routes.check("shop", Some(b"old"), None), Ok(()));
        // Invalid content keeps the previous table.
        std::fs::write(&path, "apps: [").expect("write");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(routes.check("shop", Some(b"old"), None), Ok(()));
        std::fs::write(&path, "apps:\n  shop:\n    password: new\n").expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while routes.check("shop", Some(b"new"), None).is_err() {
            assert!(std::time::Instant::now() < deadline, "reload not seen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            routes.check("shop", Some(b"old"), None),
            Err(Denied::BadPassword)
        );
        let text = metrics.render();
        assert!(
            text.contains("drainpipe_routes_reloads_total{result=\"error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("drainpipe_routes_reloads_total{result=\"ok\"} 1"),
            "{text}"
        );
        // Alert rules come and go with the file, without a restart.
        assert!(alerts.rules().is_empty());
        std::fs::write(
            &path,
            "apps:\n  shop:\n    password: new\nalerts:\n- name: h12\n  match: {code: [H12]}\n  destination: {slack: {webhookUrl: 'http://127.0.0.1:9/x'}}\n",
        )
        .expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alerts.rules().is_empty() {
            assert!(std::time::Instant::now() < deadline, "rules not loaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(&*alerts.rules().rules[0].name, "h12");
    }
}
