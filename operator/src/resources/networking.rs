//! How the ingester pods are reached: the ClusterIP Service in front of
//! them and the optional Ingress of `spec.endpoint.ingress`.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pod::listeners;
use super::{INGESTER_PORT, Owner, ingester_name, selector_labels};
use crate::crd::LogDrain;

/// The ClusterIP Service in front of the ingester pods: port 8080 (`http`),
/// the syslog port (`syslog`) for syslog+tls drains and the OTLP/gRPC port
/// (`otlp-grpc`) for Fir apps over gRPC. An Ingress or load
/// balancer the user owns exposes it as `endpoint.url` or
/// `endpoint.syslogTls`.
pub(crate) fn service(owner: &Owner, ld: &LogDrain) -> Service {
    let mut ports = vec![ServicePort {
        name: Some("http".to_string()),
        port: INGESTER_PORT,
        target_port: Some(IntOrString::String("http".to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }];
    for l in listeners(ld) {
        ports.push(ServicePort {
            name: Some(l.name.to_string()),
            port: l.port,
            target_port: Some(IntOrString::String(l.name.to_string())),
            protocol: Some("TCP".to_string()),
            ..ServicePort::default()
        });
    }
    Service {
        metadata: owner.meta(ingester_name(&owner.name)),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&owner.name)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The Ingress of `spec.endpoint.ingress`, named like the Service: only
/// `/logplex` (Logplex drains) and `/otlp` (Fir apps' OTLP/HTTP telemetry
/// drains) are routed, so the ingester's `/metrics` and health endpoints
/// stay inside the cluster.
pub(crate) fn ingress(owner: &Owner, ld: &LogDrain) -> Option<Ingress> {
    let spec = ld.spec.endpoint.ingress.as_ref()?;
    let mut metadata = owner.meta(ingester_name(&owner.name));
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: ingester_name(&owner.name),
            port: Some(ServiceBackendPort {
                name: Some("http".to_string()),
                number: None,
            }),
        }),
        resource: None,
    };
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: ["/logplex", "/otlp"]
                        .into_iter()
                        .map(|path| HTTPIngressPath {
                            path: Some(path.to_string()),
                            path_type: "Prefix".to_string(),
                            backend: backend.clone(),
                        })
                        .collect(),
                }),
            }]),
            tls: spec.tls.as_ref().map(|t| {
                vec![IngressTLS {
                    hosts: Some(vec![spec.host.clone()]),
                    secret_name: Some(t.secret_name.clone()),
                }]
            }),
            default_backend: None,
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::logdrain;

    #[test]
    fn the_ingress_routes_only_logplex_and_otlp_to_the_service_with_tls() {
        let mut ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        assert!(ingress(&owner, &ld).is_none());
        ld.spec.endpoint.url = None;
        ld.spec.endpoint.ingress = Some(
            serde_json::from_value(serde_json::json!({
                "className": "nginx",
                "host": "logs.example.com",
                "tls": {"secretName": "logs-tls"},
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
            }))
            .expect("ingress spec"),
        );
        let ing = ingress(&owner, &ld).expect("ingress");
        assert_eq!(ing.metadata.name.as_deref(), Some("prod-ingester"));
        assert_eq!(
            ing.metadata
                .annotations
                .as_ref()
                .map(|a| a["cert-manager.io/cluster-issuer"].as_str()),
            Some("letsencrypt")
        );
        let spec = ing.spec.expect("spec");
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let rule = &spec.rules.expect("rules")[0];
        assert_eq!(rule.host.as_deref(), Some("logs.example.com"));
        let paths = &rule.http.as_ref().expect("http").paths;
        let routed: Vec<&str> = paths.iter().filter_map(|p| p.path.as_deref()).collect();
        assert_eq!(routed, ["/logplex", "/otlp"]);
        let path = &paths[0];
        let svc = path.backend.service.as_ref().expect("service backend");
        assert_eq!(svc.name, "prod-ingester");
        let tls = &spec.tls.expect("tls")[0];
        assert_eq!(tls.secret_name.as_deref(), Some("logs-tls"));
        assert_eq!(
            tls.hosts.as_deref(),
            Some(&["logs.example.com".to_string()][..])
        );
    }
}
