//! The Heroku half of a reconcile: one drain of ours per listed app, none
//! for apps no longer listed.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;

use super::conditions::Cond;
use super::{Context, DRAIN_USER, fingerprint};
use crate::crd::{DrainStatus, DrainTarget, LogDrain};
use crate::error::{Error, Result};
use crate::heroku::{ApiToken, Drain, DrainUrl, HerokuError};
use crate::resources;

pub(super) struct HerokuOutcome {
    pub(super) condition: Cond,
    pub(super) error: Option<Error>,
}

/// The Heroku API token from the Secret the LogDrain names.
pub(super) async fn heroku_token(ctx: &Context, ld: &LogDrain) -> Result<ApiToken> {
    let ns = ld.namespace().ok_or(Error::MissingObjectKey)?;
    let sel = &ld.spec.heroku.api_token_secret_ref;
    let missing = |problem: String| Error::HerokuTokenMissing {
        namespace: ns.clone(),
        name: sel.name.clone(),
        problem,
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = api
        .get_opt(&sel.name)
        .await?
        .ok_or_else(|| missing("does not exist".to_string()))?;
    let value = resources::secret_value(&secret, &sel.key)
        .ok_or_else(|| missing(format!("has no key {:?}", sel.key)))?;
    let token = ApiToken::new(value);
    if token.is_empty() {
        return Err(missing(format!("holds an empty value under {:?}", sel.key)));
    }
    Ok(token)
}

/// One app's outcome: its drain, or why there is none.
type AppResult = (
    String,
    DrainUrl,
    Result<(DrainStatus, Vec<Change>), HerokuError>,
);

/// What happened to one app's drain.
enum Change {
    Created(Drain),
    Replaced(Drain),
    Removed { id: String, token: String },
}

pub(super) async fn sync_drains(
    ctx: &Context,
    ld: &LogDrain,
    uid: &str,
    reference: &ObjectReference,
    password: &str,
    drains: &mut BTreeMap<String, DrainStatus>,
) -> HerokuOutcome {
    let apps = ld.app_set();
    let target = ld.spec.endpoint.target();
    let mut desired: BTreeMap<String, DrainUrl> = BTreeMap::new();
    for app in &apps {
        match drain_url(target.as_ref(), app, password) {
            Ok(url) => {
                desired.insert(app.clone(), url);
            }
            Err(e) => {
                return HerokuOutcome {
                    condition: Cond::failed(e.reason(), e.to_string()),
                    error: Some(Error::Heroku(e)),
                };
            }
        }
    }
    let stale: Vec<DrainStatus> = drains
        .values()
        .filter(|d| !apps.contains(&d.app))
        .cloned()
        .collect();
    let todo: Vec<(String, DrainUrl)> = desired
        .iter()
        .filter(|(app, url)| {
            !(drains.contains_key(*app)
                && ctx.drain_fresh(uid, app, fingerprint(&url.expose_secret())))
        })
        .map(|(a, u)| (a.clone(), u.clone()))
        .collect();
    let ok = || drains_ok(apps.len(), target.as_ref());
    if todo.is_empty() && stale.is_empty() {
        return HerokuOutcome {
            condition: ok(),
            error: None,
        };
    }

    let token = match heroku_token(ctx, ld).await {
        Ok(t) => t,
        Err(e) => {
            return HerokuOutcome {
                condition: Cond::failed(e.reason(), e.to_string()),
                error: Some(e),
            };
        }
    };

    let mut errors: Vec<(String, HerokuError)> = Vec::new();

    // Removed apps: delete the drain this LogDrain made.
    for d in stale {
        match ctx.delete_drain(&token, &d.app, &d.id).await {
            Ok(existed) => {
                drains.remove(&d.app);
                ctx.drain_removed(uid, &d);
                if existed {
                    ctx.metrics.drain_changed("removed");
                    ctx.publish(
                        reference,
                        EventType::Normal,
                        "DrainRemoved",
                        format!(
                            "removed Heroku drain {} ({}) of app {}: the app is no longer listed",
                            d.id, d.token, d.app
                        ),
                    )
                    .await;
                }
            }
            Err(e) => errors.push((d.app.clone(), e)),
        }
    }

    // Listed apps: one list each, a create when the drain is missing.
    let results: Vec<AppResult> = futures::stream::iter(todo.into_iter().map(|(app, url)| {
        let known = drains.get(&app).cloned();
        let token = token.clone();
        async move {
            let r = sync_app(ctx, &token, &app, &url, known.as_ref()).await;
            (app, url, r)
        }
    }))
    .buffer_unordered(ctx.settings.app_concurrency.max(1))
    .collect()
    .await;
    for (app, url, result) in results {
        match result {
            Ok((status, changes)) => {
                let fp = fingerprint(&url.expose_secret());
                ctx.set_drain_verified(uid, &app, fp, status.clone());
                drains.insert(app.clone(), status);
                for change in changes {
                    announce(ctx, reference, &app, &url, change).await;
                }
            }
            Err(e) => {
                ctx.unverify_drain(uid, &app);
                errors.push((app, e));
            }
        }
    }

    if errors.is_empty() {
        return HerokuOutcome {
            condition: ok(),
            error: None,
        };
    }
    // The most actionable error leads: credentials, then missing apps, then
    // the passing troubles.
    errors.sort_by_key(|(app, e)| (e.severity(), app.clone()));
    let message = errors
        .iter()
        .map(|(app, e)| format!("{app}: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    let message = format!(
        "{} of {} apps have no drain yet: {message}",
        errors.len(),
        apps.len().max(errors.len())
    );
    let first = errors.swap_remove(0).1;
    HerokuOutcome {
        condition: Cond::failed(first.reason(), message.clone()),
        error: Some(Error::Drains { message, first }),
    }
}

fn drains_ok(n: usize, target: Option<&DrainTarget>) -> Cond {
    let to = target.map(DrainTarget::describe).unwrap_or_default();
    Cond::ok(
        "DrainsRegistered",
        format!("{n} Heroku drains send to {to}"),
    )
}

/// The drain URL `app` should have: HTTPS with the drain password, or the
/// syslog+tls listener (the same for every app).
pub(super) fn drain_url(
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

async fn announce(
    ctx: &Context,
    reference: &ObjectReference,
    app: &str,
    url: &DrainUrl,
    change: Change,
) {
    let base = url.without_credentials();
    let (reason, note) = match change {
        Change::Created(d) => {
            ctx.metrics.drain_changed("created");
            (
                "DrainCreated",
                format!(
                    "created Heroku drain {} ({}) for app {app} to {base}",
                    d.id, d.token
                ),
            )
        }
        Change::Replaced(d) => {
            ctx.metrics.drain_changed("removed");
            (
                "DrainReplaced",
                format!(
                    "removed Heroku drain {} ({}) of app {app}: replaced by the drain to {base}",
                    d.id, d.token
                ),
            )
        }
        Change::Removed { id, token } => {
            ctx.metrics.drain_changed("removed");
            (
                "DrainRemoved",
                format!("removed Heroku drain {id} ({token}) of app {app}"),
            )
        }
    };
    ctx.publish(reference, EventType::Normal, reason, note)
        .await;
}

/// Makes `app` have exactly one drain of ours, to `url`. Ours are the drain
/// recorded in the status and any drain to `url` itself; a drain another
/// LogDrain or a person added to the same endpoint is left alone.
async fn sync_app(
    ctx: &Context,
    token: &ApiToken,
    app: &str,
    url: &DrainUrl,
    known: Option<&DrainStatus>,
) -> Result<(DrainStatus, Vec<Change>), HerokuError> {
    let listed = ctx.list_drains(token, app).await?;
    let mut changes = Vec::new();
    let existing = listed
        .iter()
        .filter(|d| d.addon.is_none())
        .find(|d| d.targets(url))
        .cloned();
    let kept = match existing {
        Some(d) => d,
        None => {
            let ensured = ctx.create_drain(token, app, url).await?;
            if ensured.created {
                changes.push(Change::Created(ensured.drain.clone()));
            }
            ensured.drain
        }
    };
    // The drain recorded before, when it is not the one kept: the endpoint or
    // the password changed. Removed after the new one exists, so Heroku
    // always has somewhere to send.
    if let Some(old) = known.filter(|k| k.id != kept.id)
        && let Some(old) = listed.iter().find(|d| d.id == old.id && d.addon.is_none())
        && ctx.delete_drain(token, app, &old.id).await?
    {
        changes.push(Change::Replaced(old.clone()));
    }
    for dup in listed
        .iter()
        .filter(|d| d.addon.is_none() && d.id != kept.id && d.targets(url))
    {
        // Two drains to the very same URL (Heroku normally refuses that).
        if ctx.delete_drain(token, app, &dup.id).await? {
            changes.push(Change::Removed {
                id: dup.id.clone(),
                token: dup.token.clone(),
            });
        }
    }
    Ok((
        DrainStatus {
            app: app.to_string(),
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
    use crate::controller::fixtures::https;

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
}
