//! Where Heroku reaches the ingester (`spec.endpoint`): an HTTPS URL or
//! Ingress, or a syslog+TLS address, and how Fir apps' telemetry drains
//! reach it; and the drain targets the operator derives from it.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where Heroku reaches the ingester: set exactly one of `url` (HTTPS
/// drains) and `syslogTls` (syslog+tls drains).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.url) || has(self.ingress)) != has(self.syslogTls)").message("set exactly one of endpoint.url or endpoint.ingress (HTTPS drains) and endpoint.syslogTls (syslog+tls drains)"))]
#[x_kube(validation = Rule::new("!has(self.otlpTransport) || self.otlpTransport != 'grpc' || has(self.otlpGrpc)").message("otlpTransport grpc needs otlpGrpc, the host:port of the ingester's OTLP/gRPC listener"))]
pub struct EndpointSpec {
    /// Public HTTPS base URL of the ingester as Heroku sees it (an Ingress or
    /// load balancer in front of the ingester Service), without a trailing
    /// slash, credentials, query or fragment, e.g.
    /// `https://logs.example.com`. Each app's drain is
    /// `{url}/logplex/{app}` with the drain password added by drainpipe.
    /// Leave it out when `syslogTls` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 200))]
    #[x_kube(validation = Rule::new("self.matches('^https://[^/@?#\\\\s]+(/[^@?#\\\\s]*[^/@?#\\\\s])?$')").message("must be an https:// URL without credentials, query, fragment or trailing slash, e.g. https://logs.example.com"))]
    pub url: Option<String>,

    /// `host:port` where Heroku reaches the ingester's syslog listener over
    /// TLS, without a scheme, e.g. `logs.example.com:6514`: a LoadBalancer
    /// Service (or TCP proxy) in front of the ingester pods' `syslog` port,
    /// see `ingester.syslog`. Each app's drain is then
    /// `syslog+tls://{syslogTls}`, carrying no credentials: the ingester
    /// tells apps apart by the drain token Logplex sends as the syslog
    /// HOSTNAME, and drops messages whose token it does not know. The
    /// ingester learns each token from the routes Secret once Heroku has
    /// made the drain, so a new app's first messages (before the Secret
    /// reaches the pods, about a minute) are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 261))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}$') && int(self.substring(self.lastIndexOf(':') + 1)) >= 1 && int(self.substring(self.lastIndexOf(':') + 1)) <= 65535").message("must be host:port (a DNS name or IPv4 address, and a port from 1 to 65535) without a scheme, e.g. logs.example.com:6514"))]
    pub syslog_tls: Option<String>,

    /// An Ingress the operator creates for the ingester Service (owned by
    /// the LogDrain, removed with this field), routing `/logplex` on `host`
    /// to it. `url` then defaults to `https://{host}`. Heroku drains only to
    /// HTTPS with a certificate it trusts: name a TLS Secret, e.g. one
    /// cert-manager fills through a `cert-manager.io/cluster-issuer`
    /// annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<EndpointIngress>,

    /// How the telemetry drains of Fir apps reach the ingester (Fir apps
    /// have no Logplex drains; drainpipe reads each app's generation from
    /// Heroku): `http` (default) registers an OTLP/HTTP drain to
    /// `{url}/otlp/{app}`, `grpc` an OTLP/gRPC drain to `otlpGrpc`. Either
    /// carries the header `Authorization: Bearer <drain password>`; gRPC
    /// drains also `X-Drainpipe-App: <app>`. Cedar apps are not affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_transport: Option<OtlpTransport>,

    /// `host:port` where Heroku reaches the ingester's OTLP/gRPC listener,
    /// e.g. `logs.example.com:4317`; used when `otlpTransport` is `grpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 261))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}$')").message("must be host:port without a scheme, e.g. logs.example.com:4317"))]
    pub otlp_grpc: Option<String>,
}

/// How the telemetry drains of Fir apps reach the ingester (Fir apps have no
/// Logplex drains; drainpipe reads each app's generation from Heroku):
/// `http` (default) registers an OTLP/HTTP drain to `{url}/otlp/{app}`,
/// `grpc` an OTLP/gRPC drain to `otlpGrpc`. Either carries the header
/// `Authorization: Bearer <drain password>`; gRPC drains also
/// `X-Drainpipe-App: <app>`. Cedar apps are not affected.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum OtlpTransport {
    /// OTLP/HTTP (Heroku's `otlphttp` exporter) to `{url}/otlp/{app}`.
    #[default]
    Http,
    /// OTLP/gRPC (Heroku's `otlp` exporter) to `otlpGrpc`.
    Grpc,
}

/// The Ingress in front of the ingester Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointIngress {
    /// IngressClass to use (`spec.ingressClassName`); omit for the
    /// cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,
    /// Public DNS name Heroku sends to, e.g. `logs.example.com`.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")
    )]
    pub host: String,
    /// TLS for `host`; omit only when something in front of the Ingress
    /// controller terminates TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<IngressTls>,
    /// Annotations of the Ingress, e.g.
    /// `cert-manager.io/cluster-issuer: letsencrypt` or the controller's
    /// own settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The certificate the Ingress serves for its host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    /// A `kubernetes.io/tls` Secret in the LogDrain's namespace (cert-manager
    /// creates it when the Ingress carries its issuer annotation).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// What each app's Heroku drain sends to, from `spec.endpoint`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainTarget {
    /// `{url}/logplex/{app}`, with the drain password as credentials.
    Https { url: String },
    /// `syslog+tls://{address}` for every app, without credentials.
    SyslogTls { address: String },
}

impl DrainTarget {
    /// An app's drain URL as the status shows it (no credentials).
    pub fn public_url(&self, app: &str) -> String {
        match self {
            DrainTarget::Https { url } => format!("{}/logplex/{app}", url.trim_end_matches('/')),
            DrainTarget::SyslogTls { address } => format!("syslog+tls://{address}"),
        }
    }

    /// Whether the drain URL carries the drain password (so rotating the
    /// password replaces the drains).
    pub fn carries_password(&self) -> bool {
        matches!(self, DrainTarget::Https { .. })
    }

    /// `https://host/logplex/<app>` or `syslog+tls://host:port`, for
    /// messages.
    pub fn describe(&self) -> String {
        self.public_url("<app>")
    }
}

/// Where each Fir app's telemetry drain sends, from `spec.endpoint`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OtlpTarget {
    /// OTLP/HTTP to `{url}/otlp/{app}`.
    Http { url: String },
    /// OTLP/gRPC to `address` (`host:port`) for every app.
    Grpc { address: String },
}

impl OtlpTarget {
    /// An app's telemetry drain endpoint (it carries no credentials).
    pub fn endpoint(&self, app: &str) -> String {
        match self {
            OtlpTarget::Http { url } => format!("{}/otlp/{app}", url.trim_end_matches('/')),
            OtlpTarget::Grpc { address } => address.clone(),
        }
    }

    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            OtlpTarget::Http { .. } => format!("OTLP/HTTP {}", self.endpoint("<app>")),
            OtlpTarget::Grpc { address } => format!("OTLP/gRPC {address}"),
        }
    }
}

impl EndpointSpec {
    /// Where Fir apps' telemetry drains send: `None` for OTLP/HTTP without
    /// an HTTPS endpoint (`syslogTls` only), or gRPC without `otlpGrpc`.
    pub fn otlp_target(&self) -> Option<OtlpTarget> {
        match self.otlp_transport.unwrap_or_default() {
            OtlpTransport::Grpc => self
                .otlp_grpc
                .clone()
                .map(|address| OtlpTarget::Grpc { address }),
            OtlpTransport::Http => match self.target()? {
                DrainTarget::Https { url } => Some(OtlpTarget::Http { url }),
                DrainTarget::SyslogTls { .. } => None,
            },
        }
    }

    /// The drain target, `None` unless exactly one of `url` and `syslogTls`
    /// is set (the schema enforces that; objects stored before it did may
    /// not).
    pub fn target(&self) -> Option<DrainTarget> {
        let https = self
            .url
            .clone()
            .or_else(|| self.ingress.as_ref().map(|i| format!("https://{}", i.host)));
        match (https, &self.syslog_tls) {
            (Some(url), None) => Some(DrainTarget::Https { url }),
            (None, Some(address)) => Some(DrainTarget::SyslogTls {
                address: address.clone(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crd::fixtures::{crd_json, spec_schema};
    use crate::crd::{IngesterSyslog, LogDrain, LogDrainSpec};

    #[test]
    fn endpoint_url_has_a_cel_rule_with_a_message() {
        let crd = crd_json();
        let url = &spec_schema(&crd)["properties"]["endpoint"]["properties"]["url"];
        let rules = url["x-kubernetes-validations"].as_array().expect("rules");
        assert_eq!(rules.len(), 1);
        assert!(
            rules[0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("https://")
        );
    }

    #[test]
    fn endpoint_takes_exactly_one_transport_and_syslog_needs_it() {
        let crd = crd_json();
        let endpoint = &spec_schema(&crd)["properties"]["endpoint"];
        let rules = endpoint["x-kubernetes-validations"]
            .as_array()
            .expect("endpoint rules");
        assert_eq!(
            rules[0]["rule"],
            "(has(self.url) || has(self.ingress)) != has(self.syslogTls)"
        );
        let required = endpoint["required"].as_array().cloned().unwrap_or_default();
        assert!(required.is_empty(), "{required:?}");
        let syslog = &endpoint["properties"]["syslogTls"];
        assert!(
            syslog["x-kubernetes-validations"][0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("host:port")
        );
        let spec_rules = spec_schema(&crd)["x-kubernetes-validations"]
            .as_array()
            .expect("spec rules");
        assert!(
            spec_rules[0]["rule"]
                .as_str()
                .unwrap_or("")
                .contains("has(self.endpoint.syslogTls)")
        );
        let port = &spec_schema(&crd)["properties"]["ingester"]["properties"]["syslog"]["properties"]
            ["port"];
        assert_eq!(port["default"], 6514);
    }

    #[test]
    fn targets_and_the_syslog_listener_follow_the_endpoint() {
        let base = json!({
            "apps": ["my-app"],
            "heroku": {"apiTokenSecretRef": {"name": "heroku", "key": "token"}},
            "endpoint": {"url": "https://logs.example.com"},
            "archive": {"s3": {"bucket": "logs-bucket", "region": "eu-west-1"}},
        });
        let https: LogDrainSpec = serde_json::from_value(base.clone()).expect("https spec");
        let ld = LogDrain::new("a", https);
        assert_eq!(
            ld.spec.endpoint.target().map(|t| t.public_url("my-app")),
            Some("https://logs.example.com/logplex/my-app".to_string())
        );
        assert_eq!(ld.syslog_listener(), None);

        let mut syslog = base;
        syslog["endpoint"] = json!({"syslogTls": "logs.example.com:6514"});
        let ld = LogDrain::new("b", serde_json::from_value(syslog).expect("syslog spec"));
        let target = ld.spec.endpoint.target().expect("target");
        assert_eq!(
            target.public_url("my-app"),
            "syslog+tls://logs.example.com:6514"
        );
        assert!(!target.carries_password());
        assert_eq!(ld.syslog_listener(), Some(IngesterSyslog::default()));
        assert_eq!(IngesterSyslog::default().port, 6514);

        let ingress: EndpointSpec =
            serde_json::from_value(json!({"ingress": {"host": "logs.example.com"}}))
                .expect("ingress");
        assert_eq!(
            ingress.target().map(|t| t.public_url("my-app")),
            Some("https://logs.example.com/logplex/my-app".to_string())
        );

        let both: EndpointSpec = serde_json::from_value(
            json!({"url": "https://logs.example.com", "syslogTls": "logs.example.com:6514"}),
        )
        .expect("both");
        assert_eq!(both.target(), None);
    }
}
