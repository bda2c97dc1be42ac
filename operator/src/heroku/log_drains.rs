//! Log drains, the drains of a Cedar app (`/apps/{app}/log-drains`):
//! list, info, an idempotent create (which waits out a new app's "log
//! channel" 422 and adopts a drain that is already there) and delete.

use reqwest::{Method, StatusCode};

use super::Variant;
use super::client::{HerokuClient, parse_json};
use super::error::{ErrorBody, HerokuError};
use super::schema::Drain;
use super::secret::{ApiToken, DrainUrl};
use crate::backoff;

/// What a create did.
#[derive(Debug, Clone)]
pub struct EnsuredDrain {
    pub drain: Drain,
    /// True when this call added the drain; false when it was already there.
    pub created: bool,
}

impl HerokuClient {
    /// Every drain of `app`, following `Next-Range` until the last page.
    pub async fn list_drains(
        &self,
        token: &ApiToken,
        app: &str,
    ) -> Result<Vec<Drain>, HerokuError> {
        let target = self.url(Variant::V3, &["apps", app, "log-drains"])?;
        self.list_pages(token, app, target).await
    }

    /// Info for one drain by id, URL or token; `None` when Heroku has no such
    /// drain (or no such app).
    pub async fn get_drain(
        &self,
        token: &ApiToken,
        app: &str,
        id_or_token: &str,
    ) -> Result<Option<Drain>, HerokuError> {
        let target = self.url(Variant::V3, &["apps", app, "log-drains", id_or_token])?;
        let resp = self
            .send(token, Method::GET, target, None, None, true)
            .await?;
        match resp.status() {
            s if s.is_success() => parse_json(resp, token).await.map(Some),
            StatusCode::NOT_FOUND => self.drain_not_found(resp, app).await.map(|()| None),
            _ => Err(self.error_from(resp, app, token, None).await),
        }
    }

    /// A 404 on one drain of `app`: `Ok` when the drain is what is missing,
    /// [`HerokuError::AppNotFound`] when the app is (renamed or deleted).
    async fn drain_not_found(&self, resp: reqwest::Response, app: &str) -> Result<(), HerokuError> {
        let text = resp.text().await.unwrap_or_default();
        let body: ErrorBody = serde_json::from_str(&text).unwrap_or_default();
        if body.app_missing() {
            return Err(HerokuError::AppNotFound {
                app: app.to_owned(),
            });
        }
        Ok(())
    }

    /// Adds a drain to `url` without listing first (the controller has just
    /// listed the app's drains). Idempotent all the same: an "already exists" 422, or a
    /// 5xx/transport failure after which the drain turns out to exist, ends
    /// in a lookup instead of a second drain. The "log channel" 422 of a new
    /// app is retried with backoff.
    pub async fn create_drain(
        &self,
        token: &ApiToken,
        app: &str,
        url: &DrainUrl,
    ) -> Result<EnsuredDrain, HerokuError> {
        let endpoint = self.url(Variant::V3, &["apps", app, "log-drains"])?;
        let body = serde_json::json!({ "url": url.expose_secret() });
        let mut log_channel_attempts = 0u32;
        let mut failures = 0u32;
        loop {
            let sent = self
                .send(
                    token,
                    Method::POST,
                    endpoint.clone(),
                    None,
                    Some(&body),
                    false,
                )
                .await;
            // A transport failure or a 5xx: the create may have landed all
            // the same, so look before trying again.
            let failed = match sent {
                Ok(resp) if resp.status().is_server_error() => {
                    self.error_from(resp, app, token, Some(url)).await
                }
                Ok(resp) => {
                    match self
                        .answer_to_create(resp, token, app, url, &mut log_channel_attempts)
                        .await?
                    {
                        Some(done) => return Ok(done),
                        None => continue,
                    }
                }
                Err(e @ HerokuError::Transport(_)) => e,
                Err(e) => return Err(e),
            };
            if let Some(found) = self.lookup(token, app, url).await? {
                return Ok(EnsuredDrain {
                    drain: found,
                    created: true,
                });
            }
            failures += 1;
            if failures > self.opts.max_retries {
                return Err(failed);
            }
            tokio::time::sleep(self.backoff(failures - 1)).await;
        }
    }

    /// What a create's answer other than a 5xx means: the new drain, or
    /// `None` to send the create again (the "log channel" 422, after its
    /// wait), or the error to give up with.
    async fn answer_to_create(
        &self,
        resp: reqwest::Response,
        token: &ApiToken,
        app: &str,
        url: &DrainUrl,
        log_channel_attempts: &mut u32,
    ) -> Result<Option<EnsuredDrain>, HerokuError> {
        let status = resp.status();
        if status.is_success() {
            let drain: Drain = parse_json(resp, token).await?;
            return Ok(Some(EnsuredDrain {
                drain,
                created: true,
            }));
        }
        if status != StatusCode::UNPROCESSABLE_ENTITY {
            return Err(self.error_from(resp, app, token, Some(url)).await);
        }
        let err = self.error_from(resp, app, token, Some(url)).await;
        if is_log_channel_pending(&err) {
            *log_channel_attempts += 1;
            if *log_channel_attempts > self.opts.log_channel_retries {
                return Err(HerokuError::LogChannelPending {
                    app: app.to_owned(),
                    attempts: *log_channel_attempts,
                });
            }
            let wait = backoff::exponential(
                self.opts.log_channel_backoff,
                self.opts.backoff_max,
                *log_channel_attempts - 1,
            );
            tracing::debug!(app, ?wait, "Heroku log channel not assigned yet; retrying");
            tokio::time::sleep(wait).await;
            return Ok(None);
        }
        // "Url has already been taken": a concurrent create or an earlier
        // attempt whose answer was lost made it. Look it up and adopt it.
        // When the lookup fails too, the create's own error says more.
        if is_url_taken(&err)
            && let Ok(Some(found)) = self.lookup(token, app, url).await
        {
            return Ok(Some(EnsuredDrain {
                drain: found,
                created: false,
            }));
        }
        Err(err)
    }

    /// Removes a drain by id (or URL or token). Returns false when it was
    /// already gone (404 about the drain), which counts as success; a 404
    /// about the app is [`HerokuError::AppNotFound`]: under a name the app
    /// may have been renamed, and its drain still be there.
    pub async fn delete_drain(
        &self,
        token: &ApiToken,
        app: &str,
        drain_id: &str,
    ) -> Result<bool, HerokuError> {
        let target = self.url(Variant::V3, &["apps", app, "log-drains", drain_id])?;
        let resp = self
            .send(token, Method::DELETE, target, None, None, true)
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => self.drain_not_found(resp, app).await.map(|()| false),
            _ => Err(self.error_from(resp, app, token, None).await),
        }
    }

    async fn lookup(
        &self,
        token: &ApiToken,
        app: &str,
        url: &DrainUrl,
    ) -> Result<Option<Drain>, HerokuError> {
        let drains = self.list_drains(token, app).await?;
        Ok(drains.into_iter().find(|d| d.targets(url)))
    }
}

/// The 422 Heroku answers when a drain is added to an app too soon after the
/// app was created ("App hasn't yet been assigned a log channel. Please try
/// again momentarily."); it goes away by itself within seconds.
fn is_log_channel_pending(err: &HerokuError) -> bool {
    matches!(err, HerokuError::Api { status: 422, message, .. } if message.contains("log channel"))
}

/// The 422 Heroku answers a create whose URL the app already drains to
/// ("Url has already been taken").
fn is_url_taken(err: &HerokuError) -> bool {
    matches!(err, HerokuError::Api { status: 422, message, .. } if message.contains("already been taken"))
}
