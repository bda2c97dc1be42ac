//! The ingester pod: the one pod template of the Deployment and the
//! StatefulSet, with the ingester's command line, environment, probes,
//! ports and volumes, and the listeners (syslog+TLS, OTLP/gRPC) it opens
//! besides HTTP.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::defaults::{IngesterDefaults, default_topology_spread, overlay};
use super::grace::{grace_period_seconds, pre_stop_sleep, wal_max_bytes};
use super::scaling::deployment_replicas;
use super::{
    BUFFER_VOLUME, DATA_DIR, INGESTER_PORT, OTLP_GRPC_TLS_DIR, Owner, ROUTES_DIR, ROUTES_KEY,
    SYSLOG_TLS_DIR, archive_url, ingester_name, labels, routes_secret_name, selector_labels,
};
use crate::crd::LogDrain;

/// A listener the ingester opens besides HTTP, for this LogDrain's drains:
/// syslog+TLS (Cedar `syslogTls`) and OTLP/gRPC (Fir over gRPC). One list
/// so the flags, the pod and Service ports and the certificate mounts
/// cannot disagree.
pub(super) struct Listener {
    /// Port name on the pod and the Service, prefix of the volume name.
    pub(super) name: &'static str,
    /// `--{flag}-listen`, `--{flag}-tls-cert`, `--{flag}-tls-key`.
    pub(super) flag: &'static str,
    pub(super) port: i32,
    pub(super) tls_secret_name: Option<String>,
    pub(super) tls_dir: &'static str,
}

pub(super) fn listeners(ld: &LogDrain) -> Vec<Listener> {
    let syslog = ld.syslog_listener().map(|l| Listener {
        name: "syslog",
        flag: "syslog",
        port: l.port,
        tls_secret_name: l.tls_secret_name,
        tls_dir: SYSLOG_TLS_DIR,
    });
    let grpc = ld.otlp_grpc_listener().map(|l| Listener {
        name: "otlp-grpc",
        flag: "otlp-grpc",
        port: l.port,
        tls_secret_name: l.tls_secret_name,
        tls_dir: OTLP_GRPC_TLS_DIR,
    });
    syslog.into_iter().chain(grpc).collect()
}
/// The ingester Deployment (emptyDir buffers).
pub(crate) fn deployment(owner: &Owner, ld: &LogDrain, defaults: &IngesterDefaults) -> Deployment {
    Deployment {
        metadata: owner.meta(ingester_name(&owner.name)),
        spec: Some(DeploymentSpec {
            replicas: deployment_replicas(ld),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&owner.name)),
                ..LabelSelector::default()
            },
            template: pod_template(owner, ld, defaults),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The one ingester pod template, of the Deployment and of the StatefulSet.
pub(super) fn pod_template(
    owner: &Owner,
    ld: &LogDrain,
    defaults: &IngesterDefaults,
) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&owner.name)),
            ..ObjectMeta::default()
        }),
        spec: Some(ingester_pod(owner, ld, defaults)),
    }
}

/// The ingester's command line.
fn ingester_args(ld: &LogDrain) -> Vec<String> {
    let mut args = vec![
        "--listen".to_string(),
        format!("0.0.0.0:{INGESTER_PORT}"),
        "--routes".to_string(),
        format!("{ROUTES_DIR}/{ROUTES_KEY}"),
        "--archive".to_string(),
        archive_url(ld),
        "--data-dir".to_string(),
        format!("{DATA_DIR}/wal"),
        "--log-format".to_string(),
        "json".to_string(),
    ];
    for l in listeners(ld) {
        args.push(format!("--{}-listen", l.flag));
        args.push(format!("0.0.0.0:{}", l.port));
        if l.tls_secret_name.is_some() {
            args.push(format!("--{}-tls-cert", l.flag));
            args.push(format!("{}/tls.crt", l.tls_dir));
            args.push(format!("--{}-tls-key", l.flag));
            args.push(format!("{}/tls.key", l.tls_dir));
        }
    }
    // The write-ahead log must refuse data (503, Heroku retries) before the
    // emptyDir hits its limit, which would get the pod evicted (or the
    // claim fills up, which would fail the writes).
    if let Some(bytes) = wal_max_bytes(ld) {
        args.push("--wal-max-bytes".to_string());
        args.push(bytes.to_string());
    }
    args
}
/// Where the archive is, for the AWS SDK in the ingester, and the format
/// its objects are written in.
fn ingester_env(ld: &LogDrain) -> Vec<EnvVar> {
    let mut env = vec![
        EnvVar {
            name: "AWS_REGION".to_string(),
            value: Some(ld.spec.archive.s3.region.clone()),
            ..EnvVar::default()
        },
        EnvVar {
            name: "DRAINPIPE_FORMAT".to_string(),
            value: Some(ld.archive_format().as_str().to_string()),
            ..EnvVar::default()
        },
    ];
    if let Some(endpoint) = &ld.spec.archive.s3.endpoint {
        env.push(EnvVar {
            name: "AWS_ENDPOINT_URL_S3".to_string(),
            value: Some(endpoint.clone()),
            ..EnvVar::default()
        });
    }
    env
}

/// The operator's environment, then the administrator's names it does not
/// set itself (the LogDrain's archive settings win).
fn with_extra_env(mut env: Vec<EnvVar>, extra: Option<&[EnvVar]>) -> Vec<EnvVar> {
    for e in extra.unwrap_or_default() {
        if !env.iter().any(|own| own.name == e.name) {
            env.push(e.clone());
        }
    }
    env
}

fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn ingester_ports(ld: &LogDrain) -> Vec<ContainerPort> {
    let mut ports = vec![ContainerPort {
        name: Some("http".to_string()),
        container_port: INGESTER_PORT,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }];
    for l in listeners(ld) {
        ports.push(ContainerPort {
            name: Some(l.name.to_string()),
            container_port: l.port,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        });
    }
    ports
}

/// The pod's volumes and the container's mounts of them: the routes
/// Secret, the write-ahead log's emptyDir (or, with a claim, only its
/// mount) and, for syslog+TLS, the certificate Secret.
fn ingester_volumes(owner: &Owner, ld: &LogDrain) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut mounts = vec![
        VolumeMount {
            name: "routes".to_string(),
            mount_path: ROUTES_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: BUFFER_VOLUME.to_string(),
            mount_path: DATA_DIR.to_string(),
            ..VolumeMount::default()
        },
    ];
    let mut volumes = vec![Volume {
        name: "routes".to_string(),
        // A whole-directory mount (not subPath) so Secret updates
        // reach the running ingester, which re-reads the file.
        secret: Some(SecretVolumeSource {
            secret_name: Some(routes_secret_name(&owner.name)),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }];
    // With a claim the StatefulSet's claim template supplies the volume.
    if ld
        .spec
        .ingester
        .buffer_storage
        .persistent_volume_claim
        .is_none()
    {
        volumes.push(Volume {
            name: BUFFER_VOLUME.to_string(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(ld.spec.ingester.buffer_storage.size_limit.clone()),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    for (l, tls_secret) in listeners(ld)
        .into_iter()
        .filter_map(|l| l.tls_secret_name.clone().map(|s| (l, s)))
    {
        mounts.push(VolumeMount {
            name: format!("{}-tls", l.name),
            mount_path: l.tls_dir.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        // Whole directory again: a renewed certificate reaches the
        // ingester, which re-reads the files when they change.
        volumes.push(Volume {
            name: format!("{}-tls", l.name),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls_secret),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    (volumes, mounts)
}

pub(super) fn ingester_pod(owner: &Owner, ld: &LogDrain, defaults: &IngesterDefaults) -> PodSpec {
    let spec = &ld.spec.ingester;
    let pod = &defaults.pod;
    let (volumes, mounts) = ingester_volumes(owner, ld);
    let hardened = SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    };
    let container = Container {
        name: "ingester".to_string(),
        image: Some(spec.image.clone().unwrap_or_else(|| defaults.image.clone())),
        image_pull_policy: pod.image_pull_policy.map(|p| p.as_str().to_string()),
        args: Some(ingester_args(ld)),
        env: Some(with_extra_env(ingester_env(ld), pod.env.as_deref())),
        ports: Some(ingester_ports(ld)),
        readiness_probe: Some(http_probe("/readyz", 5)),
        liveness_probe: Some(http_probe("/healthz", 10)),
        resources: spec.resources.clone().or_else(|| pod.resources.clone()),
        volume_mounts: Some(mounts),
        security_context: Some(overlay(hardened, pod.security_context.as_ref())),
        lifecycle: Some(pre_stop_sleep()),
        ..Container::default()
    };
    let hardened_pod = PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        fs_group: Some(65532),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    };
    PodSpec {
        containers: vec![container],
        service_account_name: spec.service_account_name.clone(),
        termination_grace_period_seconds: Some(grace_period_seconds(wal_max_bytes(ld))),
        security_context: Some(overlay(hardened_pod, pod.pod_security_context.as_ref())),
        volumes: Some(volumes),
        image_pull_secrets: pod.image_pull_secrets.clone(),
        node_selector: pod.node_selector.clone(),
        tolerations: pod.tolerations.clone(),
        affinity: pod.affinity.clone(),
        topology_spread_constraints: Some(
            pod.topology_spread_constraints
                .clone()
                .unwrap_or_else(|| default_topology_spread(&owner.name)),
        ),
        priority_class_name: pod.priority_class_name.clone(),
        ..PodSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use serde_json::json;

    use super::*;
    use crate::resources::fixtures::{defaults, logdrain};
    use crate::resources::networking::service;

    #[test]
    fn deployment_runs_the_ingester_against_the_archive() {
        let ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        let d = deployment(&owner, &ld, &defaults());
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        let template_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .expect("template labels");
        for (k, v) in spec.selector.match_labels.as_ref().expect("selector") {
            assert_eq!(
                template_labels.get(k),
                Some(v),
                "template lacks selector label {k}"
            );
        }
        let pod = spec.template.spec.expect("pod");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("ghcr.io/drainpipe/ingester:0.1.0"));
        let args = c.args.clone().expect("args").join(" ");
        assert!(args.contains("--listen 0.0.0.0:8080"), "{args}");
        assert!(
            args.contains("--routes /etc/drainpipe/routes.yaml"),
            "{args}"
        );
        assert!(args.contains("--archive s3://logs-bucket/logs/"), "{args}");
        assert!(args.contains(&format!("--wal-max-bytes {}", (1u64 << 30) / 10 * 8)));
        let env = c.env.clone().expect("env");
        assert!(
            env.iter().any(|e| e.name == "AWS_ENDPOINT_URL_S3"
                && e.value.as_deref() == Some("http://minio:9000"))
        );
        let format = |env: &[EnvVar]| {
            env.iter()
                .find(|e| e.name == "DRAINPIPE_FORMAT")
                .and_then(|e| e.value.clone())
        };
        assert_eq!(format(&env).as_deref(), Some("json"), "the default");
        let readiness = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref());
        assert_eq!(readiness.and_then(|h| h.path.as_deref()), Some("/readyz"));
        let volumes = pod.volumes.expect("volumes");
        assert_eq!(
            volumes[0]
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some("prod-routes")
        );

        let mut parquet = logdrain();
        parquet.spec.archive.format = crate::crd::Format::Parquet;
        let pod = deployment(&owner, &parquet, &defaults())
            .spec
            .and_then(|s| s.template.spec)
            .expect("pod");
        let env = pod.containers[0].env.clone().expect("env");
        assert_eq!(format(&env).as_deref(), Some("parquet"));
    }

    #[test]
    fn the_defaults_extra_env_follows_the_operators_own() {
        let ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        let mut d = defaults();
        d.pod = crate::resources::defaults::IngesterPodDefaults::parse(
            r#"{"env": [
                {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}},
                {"name": "AWS_ENDPOINT_URL_S3", "value": "http://elsewhere:9000"}
            ]}"#,
        )
        .expect("defaults");
        let pod = deployment(&owner, &ld, &d)
            .spec
            .and_then(|s| s.template.spec)
            .expect("pod");
        let env = pod.containers[0].env.clone().expect("env");
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "AWS_REGION",
                "DRAINPIPE_FORMAT",
                "AWS_ENDPOINT_URL_S3",
                "AWS_ACCESS_KEY_ID"
            ]
        );
        let endpoint = env.iter().find(|e| e.name == "AWS_ENDPOINT_URL_S3");
        assert_eq!(
            endpoint.and_then(|e| e.value.as_deref()),
            Some("http://minio:9000"),
            "the LogDrain's endpoint wins"
        );
        let key = env.iter().find(|e| e.name == "AWS_ACCESS_KEY_ID");
        let secret = key
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref());
        assert_eq!(secret.map(|s| s.name.as_str()), Some("s3"));
    }

    #[test]
    fn grpc_telemetry_drains_open_the_otlp_grpc_port_with_the_tls_secret() {
        let mut ld = logdrain();
        let args_of = |ld: &LogDrain| {
            let owner = Owner::of(ld).expect("owner");
            let d = deployment(&owner, ld, &defaults());
            let pod = d.spec.and_then(|s| s.template.spec).expect("pod");
            (pod.containers[0].args.clone().expect("args").join(" "), pod)
        };
        // OTLP/HTTP (the default) shares port 8080: no extra listener.
        assert!(!args_of(&ld).0.contains("otlp-grpc"));

        ld.spec.endpoint = serde_json::from_value(json!({
            "url": "https://logs.example.com",
            "otlpTransport": "grpc",
            "otlpGrpc": "otlp.example.com:443",
        }))
        .expect("endpoint");
        ld.spec.ingester.otlp_grpc = Some(crate::crd::IngesterOtlpGrpc {
            port: 4317,
            tls_secret_name: Some("otlp-tls".to_string()),
        });
        let (args, pod) = args_of(&ld);
        assert!(args.contains("--otlp-grpc-listen 0.0.0.0:4317 --otlp-grpc-tls-cert /etc/drainpipe-otlp-grpc-tls/tls.crt --otlp-grpc-tls-key /etc/drainpipe-otlp-grpc-tls/tls.key"), "{args}");
        assert!(!args.contains("--syslog"), "{args}");
        let ports = pod.containers[0].ports.clone().expect("ports");
        assert!(
            ports
                .iter()
                .any(|p| p.name.as_deref() == Some("otlp-grpc") && p.container_port == 4317)
        );
        let mounted = pod.containers[0]
            .volume_mounts
            .clone()
            .expect("mounts")
            .iter()
            .any(|m| m.name == "otlp-grpc-tls" && m.mount_path == OTLP_GRPC_TLS_DIR);
        assert!(mounted);
        let tls = pod
            .volumes
            .expect("volumes")
            .iter()
            .find(|v| v.name == "otlp-grpc-tls")
            .and_then(|v| v.secret.as_ref())
            .and_then(|s| s.secret_name.clone());
        assert_eq!(tls.as_deref(), Some("otlp-tls"));
        let owner = Owner::of(&ld).expect("owner");
        let svc_ports = service(&owner, &ld)
            .spec
            .and_then(|s| s.ports)
            .expect("service ports");
        assert!(svc_ports.iter().any(|p| p.port == 4317
            && p.target_port == Some(IntOrString::String("otlp-grpc".to_string()))));
    }

    #[test]
    fn syslog_drains_open_the_syslog_port_with_the_tls_secret() {
        let mut ld = logdrain();
        ld.spec.endpoint = serde_json::from_value(json!({"syslogTls": "logs.example.com:6514"}))
            .expect("endpoint");
        ld.spec.ingester.syslog = Some(crate::crd::IngesterSyslog {
            port: 6514,
            tls_secret_name: Some("logs-tls".to_string()),
        });
        let owner = Owner::of(&ld).expect("owner");
        let d = deployment(&owner, &ld, &defaults());
        let pod = d.spec.and_then(|s| s.template.spec).expect("pod");
        let c = &pod.containers[0];
        let args = c.args.clone().expect("args").join(" ");
        assert!(args.contains("--syslog-listen 0.0.0.0:6514"), "{args}");
        assert!(
            args.contains("--syslog-tls-cert /etc/drainpipe-syslog-tls/tls.crt --syslog-tls-key /etc/drainpipe-syslog-tls/tls.key"),
            "{args}"
        );
        let ports = c.ports.clone().expect("ports");
        assert!(
            ports
                .iter()
                .any(|p| p.name.as_deref() == Some("syslog") && p.container_port == 6514)
        );
        let volumes = pod.volumes.expect("volumes");
        let tls = volumes
            .iter()
            .find(|v| v.name == "syslog-tls")
            .and_then(|v| v.secret.as_ref())
            .and_then(|s| s.secret_name.as_deref());
        assert_eq!(tls, Some("logs-tls"));
        let svc_ports = service(&owner, &ld)
            .spec
            .and_then(|s| s.ports)
            .expect("service ports");
        assert!(
            svc_ports.iter().any(|p| p.port == 6514
                && p.target_port == Some(IntOrString::String("syslog".to_string())))
        );

        // TLS terminated in front: plain TCP, no certificate flags.
        ld.spec.ingester.syslog = None;
        let d = deployment(&owner, &ld, &defaults());
        let args = d
            .spec
            .and_then(|s| s.template.spec)
            .expect("pod")
            .containers[0]
            .args
            .clone()
            .expect("args")
            .join(" ");
        assert!(args.contains("--syslog-listen 0.0.0.0:6514"), "{args}");
        assert!(!args.contains("--syslog-tls"), "{args}");
    }

    #[test]
    fn https_drains_run_no_syslog_listener() {
        let ld = logdrain();
        let owner = Owner::of(&ld).expect("owner");
        let d = deployment(&owner, &ld, &defaults());
        let c = &d
            .spec
            .and_then(|s| s.template.spec)
            .expect("pod")
            .containers[0];
        assert!(!c.args.clone().expect("args").join(" ").contains("syslog"));
        assert_eq!(c.ports.as_ref().map(Vec::len), Some(1));
        let svc_ports = service(&owner, &ld)
            .spec
            .and_then(|s| s.ports)
            .expect("ports");
        assert_eq!(svc_ports.len(), 1);
    }
}
