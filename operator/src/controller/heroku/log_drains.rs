//! Cedar apps' drains: each listed Cedar app gets exactly one Logplex log
//! drain of ours, to `{endpoint.url}/logplex/{app}` with the drain password
//! (or the shared `syslog+tls://` address). A drain is ours when it is
//! recorded in the status or sends to that very URL; add-on drains and
//! drains to other URLs are never touched.

use drainpipe_contract::routes::AppRoute;

use super::drift::drift;
use super::identity::{app_id_of, list_app, named};
use super::report::Change;
use crate::controller::{Context, DRAIN_USER};
use crate::crd::{DrainKind, DrainStatus, DrainTarget};
use crate::heroku::{ApiToken, Drain, DrainUrl, Generation, HerokuError};

/// The drain URL `app` should have: HTTPS with the drain password, or the
/// syslog+tls listener (the same for every app).
pub(crate) fn drain_url(
    target: Option<&DrainTarget>,
    app: &str,
    password: &str,
) -> Result<DrainUrl, HerokuError> {
    match target {
        Some(DrainTarget::Https { url }) => DrainUrl::for_app(url, app, DRAIN_USER, password),
        Some(DrainTarget::SyslogTls { address }) => DrainUrl::syslog_tls(address),
        None => Err(HerokuError::InvalidDrainUrl(
            "set exactly one of spec.endpoint.url and spec.endpoint.syslogTls".to_string(),
        )),
    }
}

/// The drain of ours already sending to `url`, if any. Add-on drains are
/// never ours: only removing the add-on removes them.
fn ours_to<'a>(listed: &'a [Drain], url: &DrainUrl) -> Option<&'a Drain> {
    listed
        .iter()
        .filter(|d| d.addon.is_none())
        .find(|d| d.targets(url))
}

/// The drains of ours an app has besides the one kept.
#[derive(Debug)]
struct Obsolete<'a> {
    /// The drain recorded before, when it is not the one kept: the endpoint
    /// or the password changed.
    replaced: Option<&'a Drain>,
    /// Other drains to the very same URL (Heroku normally refuses that).
    duplicates: Vec<&'a Drain>,
}

fn obsolete<'a>(
    listed: &'a [Drain],
    url: &DrainUrl,
    known: Option<&DrainStatus>,
    kept_id: &str,
) -> Obsolete<'a> {
    let replaced = known
        .filter(|k| k.id != kept_id)
        .and_then(|old| listed.iter().find(|d| d.id == old.id && d.addon.is_none()));
    let duplicates = listed
        .iter()
        .filter(|d| d.addon.is_none() && d.id != kept_id && d.targets(url))
        .collect();
    Obsolete {
        replaced,
        duplicates,
    }
}

/// Makes Cedar app `app` have exactly one drain of ours, to `url`. Ours are
/// the drain recorded in the status and any drain to `url` itself; a drain
/// another LogDrain or a person added to the same endpoint is left alone.
pub(crate) async fn sync_log_app(
    ctx: &Context,
    token: &ApiToken,
    app: &str,
    url: &DrainUrl,
    accepted: Option<&AppRoute>,
    known: Option<&DrainStatus>,
    app_id: Option<&str>,
) -> Result<(DrainStatus, Vec<Change>), HerokuError> {
    let (address, listed) = list_app(ctx, token, app, app_id).await?;
    let named = |e| named(e, app);
    let mut changes: Vec<Change> = drift(app, &listed, url, known, accepted)
        .map(Change::Drifted)
        .into_iter()
        .collect();
    let kept = match ours_to(&listed, url).cloned() {
        Some(d) => d,
        None => {
            let ensured = ctx
                .create_drain(token, &address, url)
                .await
                .map_err(named)?;
            if ensured.created {
                changes.push(Change::Created(ensured.drain.clone()));
            }
            ensured.drain
        }
    };
    // Removed after the new one exists, so Heroku always has somewhere to
    // send.
    let Obsolete {
        replaced,
        duplicates,
    } = obsolete(&listed, url, known, &kept.id);
    if let Some(old) = replaced
        && ctx
            .delete_drain(token, &address, &old.id)
            .await
            .map_err(named)?
    {
        changes.push(Change::Replaced(old.clone()));
    }
    for dup in duplicates {
        if ctx
            .delete_drain(token, &address, &dup.id)
            .await
            .map_err(named)?
        {
            changes.push(Change::Removed {
                id: dup.id.clone(),
                token: dup.token.clone(),
            });
        }
    }
    Ok((
        DrainStatus {
            app: app.to_string(),
            generation: Some(Generation::Cedar.as_str().to_string()),
            kind: DrainKind::Log,
            app_id: app_id_of(&kept, app, &address),
            id: kept.id.clone(),
            token: kept.token.clone(),
            url: url.without_credentials(),
        },
        changes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{example_url, heroku_drains, https};

    #[test]
    fn drain_urls_follow_the_endpoint() {
        let h = drain_url(Some(&https("https://logs.example.com")), "a-app", "pw").expect("https");
        assert_eq!(
            h.expose_secret(),
            "https://drainpipe:pw@logs.example.com/logplex/a-app"
        );
        let target = DrainTarget::SyslogTls {
            address: "logs.example.com:6514".to_string(),
        };
        let s = drain_url(Some(&target), "a-app", "pw").expect("syslog");
        assert_eq!(s.expose_secret(), "syslog+tls://logs.example.com:6514");
        assert!(drain_url(None, "a-app", "pw").is_err());
    }

    fn known(id: &str) -> DrainStatus {
        DrainStatus {
            app: "example".into(),
            generation: Some("cedar".into()),
            kind: DrainKind::Log,
            app_id: None,
            id: id.into(),
            token: format!("d.{id}"),
            url: "https://logs.example.com/logplex/example".into(),
        }
    }

    #[test]
    fn the_drain_kept_is_ours_to_the_url_never_an_addons() {
        let listed = heroku_drains();
        let kept = ours_to(&listed, &example_url()).expect("ours is listed");
        assert_eq!(kept.id, "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(kept.token, "d.01234567-89ab-cdef-0123-456789abcdef");
        // Only the add-on's drain goes to the URL: it is not ours.
        let addon_only: Vec<Drain> = listed.into_iter().filter(|d| d.addon.is_some()).collect();
        assert!(ours_to(&addon_only, &example_url()).is_none());
        let other =
            DrainUrl::new("https://drainpipe:pw-current@elsewhere.example.com/logplex/example");
        assert!(ours_to(&heroku_drains(), &other).is_none());
    }

    #[test]
    fn obsolete_drains_are_the_one_replaced_and_duplicates_of_ours() {
        let listed = heroku_drains();
        let kept = "01234567-89ab-cdef-0123-456789abcdef";
        // The status recorded the drain from before the password rotation.
        let old = known("11234567-89ab-cdef-0123-456789abcdef");
        let o = obsolete(&listed, &example_url(), Some(&old), kept);
        assert_eq!(o.replaced.map(|d| d.id.as_str()), Some(old.id.as_str()));
        // The same URL spelled differently; not the add-on's drain to it.
        let dups: Vec<&str> = o.duplicates.iter().map(|d| d.token.as_str()).collect();
        assert_eq!(dups, ["d.31234567-89ab-cdef-0123-456789abcdef"]);

        // Recorded and kept are the same drain: nothing replaced.
        let o = obsolete(&listed, &example_url(), Some(&known(kept)), kept);
        assert!(o.replaced.is_none());
        // A recorded drain Heroku no longer lists, or an add-on's: left be.
        let gone = known("99999999-89ab-cdef-0123-456789abcdef");
        assert!(
            obsolete(&listed, &example_url(), Some(&gone), kept)
                .replaced
                .is_none()
        );
        let addon = known("21234567-89ab-cdef-0123-456789abcdef");
        assert!(
            obsolete(&listed, &example_url(), Some(&addon), kept)
                .replaced
                .is_none()
        );
    }
}
