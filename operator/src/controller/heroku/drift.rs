//! Drift of a registered drain: the runbook's "compare the drain URL with
//! the stored secret". When the operator lists an app's drains it compares
//! the drain it registered with what the ingesters accept, the routes
//! Secret as it was before this reconcile: same URL (host and path), the
//! same password for HTTPS drains, and the drain token the routes pin.
//! Planned changes are not drift: a rotated password or a moved endpoint
//! unpins the app's token in the routes (apply.rs, `routes_for`) until the
//! new drain is recorded, and then no comparison is made.
//!
//! The repair is the drain sync's own (drains.rs): a drain that no longer
//! sends to the URL wanted is replaced, a gone one re-created, a new token
//! pinned. This only says what was wrong, for the `DrainsRegistered`
//! reason `Drifted` and a `DrainDrifted` event; it never names a password.

use std::fmt;

use drainpipe_contract::routes::AppRoute;
use reqwest::Url;

use crate::crd::DrainStatus;
use crate::heroku::{Drain, DrainUrl};

/// What differs for one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Drift {
    pub(crate) app: String,
    pub(crate) differences: Vec<String>,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.app, self.differences.join("; "))
    }
}

/// `app`'s drift: `listed` is what Heroku has now, `wanted` the URL the
/// drain should have, `known` the drain drainpipe recorded and `accepted`
/// the app's route the ingesters have. `None` when nothing differs, or
/// when there is nothing settled to compare (a new app, a drain being
/// replaced on purpose).
pub(crate) fn drift(
    app: &str,
    listed: &[Drain],
    wanted: &DrainUrl,
    known: Option<&DrainStatus>,
    accepted: Option<&AppRoute>,
) -> Option<Drift> {
    let known = known?;
    let accepted = accepted?;
    // Only a drain the ingesters accept by its token is settled: an
    // unpinned route means a replacement is under way.
    if !accepted.drain_tokens.contains(&known.token) {
        return None;
    }
    let mut differences = Vec::new();
    let ours = |d: &&Drain| d.addon.is_none();
    match listed.iter().filter(ours).find(|d| d.id == known.id) {
        None => differences.push(format!(
            "drain {} ({}) that drainpipe registered is gone from Heroku",
            known.id, known.token
        )),
        Some(d) => {
            let now = d.url.without_credentials();
            if now != known.url {
                differences.push(format!(
                    "drain {} sends to {now}, not to {}",
                    d.id, known.url
                ));
            }
            if wanted.expose_secret().starts_with("http")
                && password_differs(&d.url, &accepted.password)
            {
                differences.push(format!(
                    "drain {}'s password differs from the routes Secret (the ingesters answer it 401)",
                    d.id
                ));
            }
        }
    }
    // The drain the sync keeps (the first of ours to the wanted URL, as
    // drains.rs picks it), when it is not the recorded one: e.g. one made by
    // hand, whose token the ingesters do not accept.
    if let Some(d) = listed.iter().filter(ours).find(|d| d.targets(wanted))
        && d.id != known.id
        && !accepted.drain_tokens.contains(&d.token)
    {
        differences.push(format!(
            "drain {} to the drain URL has token {}, the routes Secret pins {}",
            d.id,
            d.token,
            accepted.drain_tokens.join(", ")
        ));
    }
    (!differences.is_empty()).then(|| Drift {
        app: app.to_string(),
        differences,
    })
}

/// Whether `url`'s userinfo password is other than `password` (compared in
/// the URL's own encoding, as the drain URL was built).
fn password_differs(url: &DrainUrl, password: &str) -> bool {
    let Ok(registered) = Url::parse(url.expose_secret()) else {
        return true;
    };
    let mut expected = registered.clone();
    if expected.set_password(Some(password)).is_err() {
        return true;
    }
    expected.password() != registered.password()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{example_url, heroku_drains};
    use crate::crd::DrainKind;

    const OURS: &str = "01234567-89ab-cdef-0123-456789abcdef";
    const ROTATED_AWAY: &str = "11234567-89ab-cdef-0123-456789abcdef";
    const SOMEONE_ELSES: &str = "41234567-89ab-cdef-0123-456789abcdef";

    fn known(id: &str, url: &str) -> DrainStatus {
        DrainStatus {
            app: "example".into(),
            app_id: None,
            id: id.into(),
            token: format!("d.{id}"),
            url: url.into(),
            generation: Some("cedar".into()),
            kind: DrainKind::Log,
        }
    }

    fn pinned(password: &str, token: &str) -> AppRoute {
        AppRoute {
            password: password.into(),
            drain_tokens: vec![token.into()],
        }
    }

    const URL: &str = "https://logs.example.com/logplex/example";

    /// The sample without the duplicate of ours (`3...`), which the sync
    /// removes on its own and which says nothing about drift.
    fn listed() -> Vec<Drain> {
        heroku_drains()
            .into_iter()
            .filter(|d| !d.id.starts_with('3'))
            .collect()
    }

    #[test]
    fn the_drain_as_registered_has_no_drift() {
        let k = known(OURS, URL);
        let route = pinned("pw-current", &k.token);
        assert_eq!(
            drift("example", &listed(), &example_url(), Some(&k), Some(&route)),
            None
        );
    }

    #[test]
    fn a_password_the_ingesters_refuse_is_drift_never_named() {
        // The drain drainpipe recorded carries another password than the
        // routes Secret (someone re-made it with a wrong one).
        let k = known(ROTATED_AWAY, URL);
        let route = pinned("pw-current", &k.token);
        let d = drift("example", &listed(), &example_url(), Some(&k), Some(&route)).expect("drift");
        assert_eq!(
            d.to_string(),
            "example: drain 11234567-89ab-cdef-0123-456789abcdef's password differs from the \
             routes Secret (the ingesters answer it 401); drain 01234567-89ab-cdef-0123-456789abcdef \
             to the drain URL has token d.01234567-89ab-cdef-0123-456789abcdef, the routes Secret \
             pins d.11234567-89ab-cdef-0123-456789abcdef"
        );
        assert!(!d.to_string().contains("pw-"), "{d}");
    }

    #[test]
    fn a_planned_replacement_is_not_drift() {
        // The password was rotated: the routes unpin the app's token until
        // the new drain is recorded.
        let k = known(ROTATED_AWAY, URL);
        let unpinned = AppRoute {
            password: "pw-current".into(),
            drain_tokens: Vec::new(),
        };
        assert_eq!(
            drift(
                "example",
                &listed(),
                &example_url(),
                Some(&k),
                Some(&unpinned)
            ),
            None
        );
        // A new app: nothing recorded, nothing accepted yet.
        assert_eq!(
            drift("example", &listed(), &example_url(), None, None),
            None
        );
    }

    #[test]
    fn a_gone_or_moved_drain_is_drift() {
        let gone = known("99999999-89ab-cdef-0123-456789abcdef", URL);
        let route = pinned("pw-current", &gone.token);
        let d = drift(
            "example",
            &listed(),
            &example_url(),
            Some(&gone),
            Some(&route),
        )
        .expect("drift");
        assert!(
            d.differences[0].contains("that drainpipe registered is gone from Heroku"),
            "{d}"
        );
        // The recorded drain now sends somewhere else (the schema's
        // example URL).
        let moved = known(SOMEONE_ELSES, URL);
        let route = pinned("pw-current", &moved.token);
        let d = drift(
            "example",
            &listed(),
            &example_url(),
            Some(&moved),
            Some(&route),
        )
        .expect("drift");
        assert!(
            d.differences[0].contains(
                "sends to https://example.com/drain, not to https://logs.example.com/logplex/example"
            ),
            "{d}"
        );
    }

    #[test]
    fn a_syslog_drain_with_a_token_the_routes_do_not_pin_is_drift() {
        let syslog = DrainUrl::new("syslog+tls://logs.example.com:6514");
        let mut listed: Vec<Drain> = listed();
        for d in &mut listed {
            if d.id == OURS {
                d.url = syslog.clone();
            }
        }
        // Recorded: a drain since removed by hand; Heroku now has one to the
        // same address (someone re-added it), whose token nobody pinned.
        let old = known(
            "99999999-89ab-cdef-0123-456789abcdef",
            "syslog+tls://logs.example.com:6514",
        );
        let route = pinned("pw-current", &old.token);
        let d = drift("example", &listed, &syslog, Some(&old), Some(&route)).expect("drift");
        assert_eq!(d.differences.len(), 2, "{d}");
        assert!(
            d.differences[1].contains("has token d.01234567-89ab-cdef-0123-456789abcdef"),
            "{d}"
        );
        // No password in syslog+tls URLs: nothing to compare there.
        let current = known(OURS, "syslog+tls://logs.example.com:6514");
        let route = pinned("pw-current", &current.token);
        assert_eq!(
            drift("example", &listed, &syslog, Some(&current), Some(&route)),
            None
        );
    }
}
