//! Telemetry drains, the only drains a Fir app can have (heroku-go
//! `v6/schema.json`, `definitions.telemetry-drain`): `POST /telemetry-drains`,
//! `GET /apps/{app}/telemetry-drains`, `PATCH` and `DELETE
//! /telemetry-drains/{id}`.
//!
//! The only credentials of a telemetry drain are its exporter headers, which
//! Heroku stores and returns as they were set (the schema has them as a
//! plain readable object; `heroku telemetry:info` prints them). So header
//! values are secrets here: [`ExporterHeaders`] masks them in `Debug`, and
//! errors are scrubbed of them.

use std::collections::BTreeMap;
use std::fmt;

use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::client::parse_json;
use super::{ApiToken, HerokuClient, HerokuError, MASK, Variant};

/// The one signal drainpipe archives.
pub(crate) const LOGS: &str = "logs";

/// `exporter.type`: OTLP over HTTP (`otlphttp`, the OTLP/HTTP exporter,
/// which appends `/v1/logs` to the endpoint) or over gRPC (`otlp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExporterType {
    OtlpHttp,
    Otlp,
}

impl ExporterType {
    pub fn as_str(self) -> &'static str {
        match self {
            ExporterType::OtlpHttp => "otlphttp",
            ExporterType::Otlp => "otlp",
        }
    }
}

/// Exporter headers. Values carry credentials (the drain password), so
/// `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub struct ExporterHeaders(BTreeMap<String, String>);

impl ExporterHeaders {
    pub fn new(headers: BTreeMap<String, String>) -> Self {
        ExporterHeaders(headers)
    }

    /// Header names and values, values included: for requests and
    /// comparisons only.
    pub fn expose_secret(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Names compare case-insensitively, as HTTP header names do; values
    /// exactly.
    fn same_as(&self, other: &ExporterHeaders) -> bool {
        let fold = |h: &ExporterHeaders| -> BTreeMap<String, String> {
            h.0.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect()
        };
        fold(self) == fold(other)
    }

    /// The value of header `name` (any case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for ExporterHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, MASK)))
            .finish()
    }
}

/// `headers` may be absent or `null` in an answer: no headers.
fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<ExporterHeaders, D::Error> {
    Ok(Option::<ExporterHeaders>::deserialize(d)?.unwrap_or_default())
}

/// A telemetry drain as the Platform API returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetryDrain {
    /// Unique identifier (uuid).
    pub id: String,
    pub owner: TelemetryOwner,
    #[serde(default)]
    pub signals: Vec<String>,
    pub exporter: TelemetryExporter,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
}

/// `owner`: the app (or space) the drain belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TelemetryOwner {
    pub id: String,
    #[serde(rename = "type")]
    pub owner_type: String,
}

/// `exporter` as returned. The type is kept as text: Heroku has more types
/// than the schema lists (the CLI knows `splunk_hec`), and a foreign drain
/// of such a type must not fail the whole list.
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetryExporter {
    #[serde(rename = "type")]
    pub exporter_type: String,
    pub endpoint: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub headers: ExporterHeaders,
}

/// The exporter drainpipe wants on an app's telemetry drain (signals are
/// always `["logs"]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WantedExporter {
    pub exporter_type: ExporterType,
    /// `{endpoint.url}/otlp/{app}` (OTLP/HTTP) or `host:port` (gRPC).
    pub endpoint: String,
    pub headers: ExporterHeaders,
}

impl WantedExporter {
    /// Whether `exporter` sends to this endpoint, whatever its type and
    /// headers: what makes a drain drainpipe's, like a log drain's URL.
    pub fn same_endpoint(&self, exporter: &TelemetryExporter) -> bool {
        same_endpoint(&self.endpoint, &exporter.endpoint)
    }

    /// Whether `drain` is exactly what is wanted: nothing to change.
    pub fn satisfied_by(&self, drain: &TelemetryDrain) -> bool {
        drain.exporter.exporter_type == self.exporter_type.as_str()
            && self.same_endpoint(&drain.exporter)
            && drain.exporter.headers.same_as(&self.headers)
            && drain.signals.len() == 1
            && drain.signals[0] == LOGS
    }

    /// The `exporter` object of a create or update, secrets included.
    fn exporter_json(&self) -> serde_json::Value {
        json!({
            "type": self.exporter_type.as_str(),
            "endpoint": self.endpoint,
            "headers": self.headers.expose_secret(),
        })
    }

    fn secrets(&self) -> Vec<&str> {
        self.headers
            .expose_secret()
            .values()
            .map(String::as_str)
            .collect()
    }
}

/// Equal endpoints: equal URLs after normalisation (scheme and host case,
/// default port, trailing slash), or equal `host:port` text (any case).
fn same_endpoint(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    match (Url::parse(a), Url::parse(b)) {
        (Ok(x), Ok(y)) if x.has_host() && y.has_host() => {
            x.scheme() == y.scheme()
                && x.host_str() == y.host_str()
                && x.port_or_known_default() == y.port_or_known_default()
                && x.path().trim_end_matches('/') == y.path().trim_end_matches('/')
                && x.query() == y.query()
        }
        _ => false,
    }
}

impl HerokuClient {
    /// Every telemetry drain of `app` (name or id).
    pub async fn list_telemetry_drains(
        &self,
        token: &ApiToken,
        app: &str,
    ) -> Result<Vec<TelemetryDrain>, HerokuError> {
        let target = self.url(Variant::Sdk, &["apps", app, "telemetry-drains"])?;
        self.list_pages(token, app, target).await
    }

    /// Adds a logs-only telemetry drain to app `owner_id` (its id: the
    /// schema's owner is by id). Like [`HerokuClient::create_drain`], a 5xx
    /// or a transport failure is followed by a look at the app's drains
    /// before trying again, so a create whose answer was lost does not make
    /// a second drain. `app` names the app in errors.
    pub async fn create_telemetry_drain(
        &self,
        token: &ApiToken,
        app: &str,
        owner_id: &str,
        wanted: &WantedExporter,
    ) -> Result<TelemetryDrain, HerokuError> {
        let endpoint = self.url(Variant::Sdk, &["telemetry-drains"])?;
        let body = json!({
            "owner": {"id": owner_id, "type": "app"},
            "signals": [LOGS],
            "exporter": wanted.exporter_json(),
        });
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
            let failed = match sent {
                Ok(resp) if resp.status().is_success() => return parse_json(resp, token).await,
                Ok(resp) if resp.status().is_server_error() => {
                    self.error_scrubbed(resp, app, token, wanted.secrets())
                        .await
                }
                Ok(resp) => {
                    return Err(self
                        .error_scrubbed(resp, app, token, wanted.secrets())
                        .await);
                }
                Err(e @ HerokuError::Transport(_)) => e,
                Err(e) => return Err(e),
            };
            let listed = self.list_telemetry_drains(token, owner_id).await?;
            if let Some(found) = listed
                .into_iter()
                .find(|d| wanted.same_endpoint(&d.exporter))
            {
                return Ok(found);
            }
            failures += 1;
            if failures > self.opts.max_retries {
                return Err(failed);
            }
            tokio::time::sleep(self.backoff(failures - 1)).await;
        }
    }

    /// Sets drain `id`'s signals to logs and its exporter to `wanted` (the
    /// schema's update takes the whole exporter: `type` and `endpoint` are
    /// required in it). `None` when Heroku has no such drain.
    pub async fn update_telemetry_drain(
        &self,
        token: &ApiToken,
        app: &str,
        id: &str,
        wanted: &WantedExporter,
    ) -> Result<Option<TelemetryDrain>, HerokuError> {
        let target = self.url(Variant::Sdk, &["telemetry-drains", id])?;
        let body = json!({"signals": [LOGS], "exporter": wanted.exporter_json()});
        // The same PATCH twice leaves the same drain: safe to retry.
        let resp = self
            .send(token, Method::PATCH, target, None, Some(&body), true)
            .await?;
        match resp.status() {
            s if s.is_success() => parse_json(resp, token).await.map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self
                .error_scrubbed(resp, app, token, wanted.secrets())
                .await),
        }
    }

    /// Removes telemetry drain `id`. Returns false when it was already gone
    /// (404: the path names no app, so a 404 is about the drain).
    pub async fn delete_telemetry_drain(
        &self,
        token: &ApiToken,
        app: &str,
        id: &str,
    ) -> Result<bool, HerokuError> {
        let target = self.url(Variant::Sdk, &["telemetry-drains", id])?;
        let resp = self
            .send(token, Method::DELETE, target, None, None, true)
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.error_from(resp, app, token, None).await),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pw: &str) -> ExporterHeaders {
        ExporterHeaders::new(BTreeMap::from([(
            "Authorization".to_string(),
            format!("Bearer {pw}"),
        )]))
    }

    #[test]
    fn header_values_never_show_in_debug() {
        let h = headers("s3cr3t-Pa55word");
        let dbg = format!("{h:?}");
        assert_eq!(dbg, r#"{"Authorization": "****"}"#);
        let w = WantedExporter {
            exporter_type: ExporterType::OtlpHttp,
            endpoint: "https://logs.example.com/otlp/a".into(),
            headers: h,
        };
        assert!(!format!("{w:?}").contains("s3cr3t"));
    }

    #[test]
    fn endpoints_compare_after_normalisation() {
        assert!(same_endpoint(
            "https://logs.example.com/otlp/a",
            "HTTPS://Logs.Example.com:443/otlp/a/"
        ));
        assert!(!same_endpoint(
            "https://logs.example.com/otlp/a",
            "https://logs.example.com/otlp/b"
        ));
        assert!(same_endpoint(
            "logs.example.com:4317",
            "LOGS.example.com:4317"
        ));
        assert!(!same_endpoint(
            "logs.example.com:4317",
            "logs.example.com:4318"
        ));
    }

    #[test]
    fn the_schema_example_parses_and_null_headers_are_none() {
        let d: TelemetryDrain = serde_json::from_value(json!({
            "created_at": "2024-12-01T12:00:00Z",
            "id": "01234567-89ab-cdef-0123-456789abcdef",
            "owner": {"id": "01234567-89ab-cdef-0123-456789abcdef", "type": "app"},
            "signals": ["traces", "metrics"],
            "exporter": {"type": "otlphttp", "endpoint": "https://api.otelproduct.example/consumer",
                         "headers": {"API-Key": "example_api_key_012345", "Environment": "production"}},
            "updated_at": "2012-01-01T12:00:00Z"
        }))
        .unwrap();
        assert_eq!(
            d.exporter.headers.get("api-key"),
            Some("example_api_key_012345")
        );
        let bare: TelemetryExporter =
            serde_json::from_value(json!({"type": "splunk_hec", "endpoint": "x", "headers": null}))
                .unwrap();
        assert!(bare.headers.expose_secret().is_empty());
    }
}
