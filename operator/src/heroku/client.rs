//! The Platform API client ([`HerokuClient`]) and its options: how one
//! request is sent (rate limiter, retries of 429s, 5xx and transport
//! errors, `Accept` variant), `Range` pagination, App Info, and how an
//! unsuccessful answer becomes a scrubbed [`HerokuError`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};

use super::error::{ErrorBody, HerokuError};
use super::schema::AppInfo;
use super::secret::{ApiToken, DrainUrl, mask_url_text, scrub};
use super::{RateLimitConfig, RateLimitSnapshot, RateLimiter, Target, Variant, default_user_agent};
use crate::backoff;

/// Tunables of a [`HerokuClient`]. The defaults suit the real API; tests
/// shorten the waits.
#[derive(Debug, Clone)]
pub struct HerokuOptions {
    pub user_agent: String,
    /// `max` in the `Range` header (Heroku allows up to 1000).
    pub page_size: u32,
    /// Retries after a 429, a 5xx or a transport error, per call.
    pub max_retries: u32,
    /// First backoff; doubles with each retry, with jitter.
    pub backoff_base: Duration,
    /// Upper bound of one backoff.
    pub backoff_max: Duration,
    /// A `Retry-After` longer than this is not waited out inside the call:
    /// the call fails with [`HerokuError::RateLimited`] so the caller can
    /// requeue instead of holding a reconcile for minutes.
    pub max_retry_after: Duration,
    /// Retries of the "log channel" 422 on create.
    pub log_channel_retries: u32,
    /// First wait before retrying the "log channel" 422; doubles, capped by
    /// `backoff_max`.
    pub log_channel_backoff: Duration,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    pub rate_limit: RateLimitConfig,
}

impl Default for HerokuOptions {
    fn default() -> Self {
        HerokuOptions {
            user_agent: default_user_agent(),
            page_size: 1000,
            max_retries: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            log_channel_retries: 8,
            log_channel_backoff: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            rate_limit: RateLimitConfig::default(),
        }
    }
}

/// Platform API client. Cheap to clone; clones share the HTTP connection
/// pool, the rate limiter and the request counter.
#[derive(Debug, Clone)]
pub struct HerokuClient {
    http: reqwest::Client,
    base: Url,
    pub(super) opts: Arc<HerokuOptions>,
    limiter: RateLimiter,
    requests: Arc<AtomicU64>,
}

impl HerokuClient {
    /// A client with default options and the given User-Agent.
    pub fn new(base_url: &str, user_agent: &str) -> Result<Self, HerokuError> {
        Self::with_options(
            base_url,
            HerokuOptions {
                user_agent: user_agent.to_owned(),
                ..HerokuOptions::default()
            },
        )
    }

    pub fn with_options(base_url: &str, opts: HerokuOptions) -> Result<Self, HerokuError> {
        let base = Url::parse(base_url).map_err(|e| {
            HerokuError::InvalidBaseUrl(format!("{}: {e}", mask_url_text(base_url)))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(HerokuError::InvalidBaseUrl(format!(
                "{} is not an http(s) URL",
                mask_url_text(base_url)
            )));
        }
        let http = reqwest::Client::builder()
            .user_agent(opts.user_agent.clone())
            .timeout(opts.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| HerokuError::Transport(e.without_url().to_string()))?;
        Ok(HerokuClient {
            http,
            base,
            limiter: RateLimiter::new(opts.rate_limit),
            opts: Arc::new(opts),
            requests: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn options(&self) -> &HerokuOptions {
        &self.opts
    }

    /// The remaining budget as this client sees it.
    pub fn rate_limit(&self) -> RateLimitSnapshot {
        self.limiter.snapshot()
    }

    /// HTTP requests sent so far by this client and its clones (retries
    /// included).
    pub(crate) fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Every item a list endpoint answers for `app`, following `Next-Range`
    /// until the last page (Dev Center, Platform API Reference, "Ranges").
    pub(super) async fn list_pages<T: serde::de::DeserializeOwned>(
        &self,
        token: &ApiToken,
        app: &str,
        target: Target,
    ) -> Result<Vec<T>, HerokuError> {
        let mut range = format!("id ..; max={}", self.opts.page_size.max(1));
        let mut items = Vec::new();
        // Bounds a server that keeps answering the same Next-Range.
        for _ in 0..10_000 {
            let resp = self
                .send(token, Method::GET, target.clone(), Some(&range), None, true)
                .await?;
            let status = resp.status();
            if status != StatusCode::OK && status != StatusCode::PARTIAL_CONTENT {
                return Err(self.error_from(resp, app, token, None).await);
            }
            let next = resp
                .headers()
                .get("Next-Range")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let page: Vec<T> = parse_json(resp, token).await?;
            items.extend(page);
            match next {
                Some(next) if status == StatusCode::PARTIAL_CONTENT => {
                    if next == range {
                        return Err(HerokuError::InvalidResponse(
                            "Next-Range repeats the requested range".into(),
                        ));
                    }
                    range = next;
                }
                _ => return Ok(items),
            }
        }
        Err(HerokuError::InvalidResponse(
            "too many pages of drains".into(),
        ))
    }

    /// Info for an app by name or id: its id, current name and generation.
    /// A renamed app keeps its id, so the id finds it under any name. Asked
    /// with the `sdk` variant, as the CLI's `telemetry:add` asks, since only
    /// that variant's answer names the generation.
    pub async fn app_info(&self, token: &ApiToken, app: &str) -> Result<AppInfo, HerokuError> {
        let target = self.url(Variant::Sdk, &["apps", app])?;
        let resp = self
            .send(token, Method::GET, target, None, None, true)
            .await?;
        if resp.status().is_success() {
            return parse_json(resp, token).await;
        }
        Err(self.error_from(resp, app, token, None).await)
    }

    pub(super) fn url(&self, variant: Variant, segments: &[&str]) -> Result<Target, HerokuError> {
        let mut url = self.base.clone();
        {
            let mut segs = url
                .path_segments_mut()
                .map_err(|()| HerokuError::InvalidBaseUrl("cannot take a path".into()))?;
            segs.pop_if_empty();
            segs.extend(segments);
        }
        Ok(Target { url, variant })
    }

    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        backoff::exponential(self.opts.backoff_base, self.opts.backoff_max, attempt)
    }

    /// Sends one request through the rate limiter. A 429 is retried (after
    /// `Retry-After` or a backoff) up to `max_retries` times; 5xx answers and
    /// transport errors too when `idempotent`. Any other answer, and the last
    /// 5xx, is returned for the caller to interpret.
    pub(super) async fn send(
        &self,
        token: &ApiToken,
        method: Method,
        target: Target,
        range: Option<&str>,
        body: Option<&serde_json::Value>,
        idempotent: bool,
    ) -> Result<reqwest::Response, HerokuError> {
        let Target { url, variant } = target;
        let mut attempt = 0u32;
        loop {
            self.limiter.acquire().await;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .header(ACCEPT, variant.accept())
                .header(AUTHORIZATION, bearer(token)?);
            if let Some(r) = range {
                req = req.header("Range", r);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let result = req.send().await;
            let resp = match result {
                Ok(resp) => resp,
                Err(e) => {
                    let msg = scrub(&e.without_url().to_string(), &[token.expose_secret()]);
                    if idempotent && attempt < self.opts.max_retries {
                        tracing::debug!(%method, path = url.path(), error = %msg, "Heroku request failed; retrying");
                        tokio::time::sleep(self.backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(HerokuError::Transport(msg));
                }
            };
            let status = resp.status();
            tracing::debug!(%method, path = url.path(), status = status.as_u16(), "Heroku request");
            if let Some(remaining) = header_u32(resp.headers(), "RateLimit-Remaining") {
                self.limiter.observe_remaining(remaining);
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let asked = retry_after(resp.headers());
                let pause = asked.unwrap_or_else(|| self.backoff(attempt));
                self.limiter.observe_throttled(pause);
                if attempt >= self.opts.max_retries || pause > self.opts.max_retry_after {
                    return Err(HerokuError::RateLimited {
                        retry_after: asked,
                        attempts: attempt + 1,
                    });
                }
                tracing::debug!(%method, path = url.path(), ?pause, "Heroku rate limit hit; backing off");
                // The limiter's pause makes the next acquire() wait it out.
                attempt += 1;
                continue;
            }
            if status.is_server_error() && idempotent && attempt < self.opts.max_retries {
                tracing::debug!(%method, path = url.path(), status = status.as_u16(), "Heroku server error; retrying");
                tokio::time::sleep(self.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            return Ok(resp);
        }
    }

    /// Turns an unsuccessful answer into an error, scrubbing the token and
    /// the drain URL's password from whatever Heroku wrote.
    pub(super) async fn error_from(
        &self,
        resp: reqwest::Response,
        app: &str,
        token: &ApiToken,
        url: Option<&DrainUrl>,
    ) -> HerokuError {
        let password = url.and_then(DrainUrl::password);
        self.error_scrubbed(resp, app, token, password.as_deref().into_iter().collect())
            .await
    }

    /// [`Self::error_from`] with `extra` secrets (e.g. telemetry drain
    /// header values) scrubbed from Heroku's words too.
    pub(super) async fn error_scrubbed(
        &self,
        resp: reqwest::Response,
        app: &str,
        token: &ApiToken,
        extra: Vec<&str>,
    ) -> HerokuError {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: ErrorBody = serde_json::from_str(&text).unwrap_or_default();
        let mut secrets = vec![token.expose_secret()];
        secrets.extend(extra);
        let message = if body.message.is_empty() {
            status.canonical_reason().unwrap_or("no message").to_owned()
        } else {
            scrub(&body.message, &secrets)
        };
        let id = scrub(&body.id, &secrets);
        match status {
            StatusCode::UNAUTHORIZED => HerokuError::Unauthorized,
            StatusCode::FORBIDDEN => HerokuError::Forbidden {
                app: app.to_owned(),
                id,
                message,
            },
            StatusCode::NOT_FOUND => HerokuError::AppNotFound {
                app: app.to_owned(),
            },
            _ => HerokuError::Api {
                status: status.as_u16(),
                id,
                message,
            },
        }
    }
}

fn bearer(token: &ApiToken) -> Result<HeaderValue, HerokuError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
        .map_err(|_| HerokuError::Unauthorized)?;
    v.set_sensitive(true);
    Ok(v)
}

pub(super) async fn parse_json<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    token: &ApiToken,
) -> Result<T, HerokuError> {
    let bytes = resp.bytes().await.map_err(|e| {
        HerokuError::Transport(scrub(
            &e.without_url().to_string(),
            &[token.expose_secret()],
        ))
    })?;
    // serde_json's message names a position and an expectation, never the
    // input, so it cannot leak a drain URL.
    serde_json::from_slice(&bytes).map_err(|e| HerokuError::InvalidResponse(e.to_string()))
}

fn header_u32(headers: &HeaderMap, name: &str) -> Option<u32> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `Retry-After` in seconds; the HTTP-date form is not used by Heroku.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: f64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}
