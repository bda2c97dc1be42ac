//! The real servers started by `scripts/testenv up`, as seen from Rust tests.
//!
//! `scripts/testenv up` writes an env file (`export KEY='value'` lines) into its state dir:
//! `$DRAINPIPE_TESTENV_DIR`, else `$XDG_RUNTIME_DIR/drainpipe-testenv`, else
//! `/tmp/drainpipe-testenv-$UID`. `scripts/test` and `eval "$(scripts/testenv env)"` export the
//! same values. The process environment wins only when `DRAINPIPE_TEST_BUCKET` is set: a
//! developer's own `KUBECONFIG` or `AWS_*` must never point the tests at a real cluster or account.
//!
//! Tests never skip when the servers are missing: [`TestEnv::require`] panics with a message that
//! says how to start them.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The one message every environment-dependent test fails with; tooling and people grep for it.
pub const NOT_RUNNING: &str =
    "test environment not running: run `scripts/testenv up` (or `scripts/test`)";

/// Servers only some tests need: their accessors fail when absent.
const OPTIONAL_VARS: [&str; 6] = [
    "DRAINPIPE_TESTENV_TRINO",
    "DRAINPIPE_TESTENV_OTLP_CLIENT",
    "DRAINPIPE_ALERTMANAGER_URL",
    "DRAINPIPE_TESTENV_KUBECTL",
    "DRAINPIPE_TESTENV_NODE_IP",
    "DRAINPIPE_TESTENV_NODE_TAINT",
];

const VARS: [&str; 8] = [
    "KUBECONFIG",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_GLUE",
    "DRAINPIPE_TEST_BUCKET",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "DRAINPIPE_TESTENV_HELM",
];

/// Connection details of the running test environment.
#[derive(Clone, Debug)]
pub struct TestEnv {
    pub kubeconfig: PathBuf,
    pub s3_endpoint: String,
    pub glue_endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// The Helm binary `scripts/testenv install` built.
    pub helm: PathBuf,
    /// Trino's HTTP address (`DRAINPIPE_TESTENV_TRINO`); read through [`TestEnv::trino`].
    trino: Option<String>,
    /// The OTLP client (`DRAINPIPE_TESTENV_OTLP_CLIENT`); read through [`TestEnv::otlp_client`].
    otlp_client: Option<PathBuf>,
    /// Alertmanager's HTTP address (`DRAINPIPE_ALERTMANAGER_URL`); read through
    /// [`TestEnv::alertmanager`].
    alertmanager: Option<String>,
    /// The real node (`DRAINPIPE_TESTENV_KUBECTL`, `_NODE_IP`, `_NODE_TAINT`); read through
    /// [`TestEnv::node`].
    node: Option<Node>,
}

/// The single real node `scripts/testenv up` runs (kubelet, containerd, kube-proxy).
#[derive(Clone, Debug)]
pub struct Node {
    /// The kubectl built with the cluster, same release.
    pub kubectl: PathBuf,
    /// The node's address: where pods reach the servers (MinIO, moto, a test's own fakes).
    pub ip: std::net::IpAddr,
    /// The taint only the node tests' pods tolerate (`NoSchedule`).
    pub taint_key: String,
}

impl TestEnv {
    /// Reads the environment written by `scripts/testenv up` (env vars if set, else the env file at
    /// the well-known state dir) and checks that every server accepts connections.
    ///
    /// Panics with [`NOT_RUNNING`] followed by what is missing, so a test without its servers fails
    /// loudly instead of passing vacuously.
    #[track_caller]
    pub fn require() -> TestEnv {
        match Self::load().and_then(|env| env.check_reachable().map(|()| env)) {
            Ok(env) => env,
            Err(missing) => panic!("{NOT_RUNNING}\n{missing}"),
        }
    }

    /// A client for the test kube-apiserver, authenticated as the admin identity of the kubeconfig.
    pub async fn kube_client(&self) -> kube::Client {
        // Both ring (kube) and aws-lc-rs (AWS SDK) are linked in, so rustls needs to be told;
        // an error only means another caller already chose.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap_or_else(|e| {
                panic!(
                    "{NOT_RUNNING}\ncannot read kubeconfig {}: {e}",
                    self.kubeconfig.display()
                )
            });
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("invalid kubeconfig {}: {e}", self.kubeconfig.display()));
        kube::Client::try_from(config).unwrap_or_else(|e| {
            panic!(
                "cannot build a kube client from {}: {e}",
                self.kubeconfig.display()
            )
        })
    }

    /// The static keys of the test environment (MinIO's root user; moto takes any).
    pub fn root_credentials(&self) -> aws_sdk_s3::config::Credentials {
        aws_sdk_s3::config::Credentials::new(
            &self.access_key,
            &self.secret_key,
            None,
            None,
            "drainpipe-testenv",
        )
    }

    /// An S3 client for the test MinIO: path-style addressing, static credentials.
    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        use aws_sdk_s3::config::{BehaviorVersion, Region};
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.s3_endpoint)
            .credentials_provider(self.root_credentials())
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Temporary credentials for the test MinIO, as AWS STS `AssumeRole` hands them to a role
    /// with a session `policy` (IAM policy JSON): MinIO grants the root user's rights cut down to
    /// what the policy allows. Tests use it for an identity that may read the bucket but not
    /// write it, the way a real writer role with a wrong policy behaves.
    pub async fn minio_session_credentials(&self, policy: &str) -> aws_sdk_s3::config::Credentials {
        use aws_sdk_sts::config::{BehaviorVersion, Region};
        let config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.s3_endpoint)
            .credentials_provider(self.root_credentials())
            .build();
        let out = aws_sdk_sts::Client::from_conf(config)
            .assume_role()
            // MinIO derives the role from the signing user; the ARN is required by the API only.
            .role_arn("arn:minio:iam:::role/drainpipe-test")
            .role_session_name("drainpipe-test")
            .policy(policy)
            .duration_seconds(3600)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "MinIO STS AssumeRole at {}: {}",
                    self.s3_endpoint,
                    aws_sdk_sts::error::DisplayErrorContext(&e)
                )
            });
        let c = out.credentials().unwrap_or_else(|| {
            panic!(
                "MinIO STS AssumeRole at {} returned no credentials",
                self.s3_endpoint
            )
        });
        aws_sdk_s3::config::Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            None,
            "minio-sts",
        )
    }

    /// A Glue client for the test moto server.
    pub fn glue_client(&self) -> aws_sdk_glue::Client {
        use aws_sdk_glue::config::{BehaviorVersion, Region};
        let config = aws_sdk_glue::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.glue_endpoint)
            .credentials_provider(self.root_credentials())
            .build();
        aws_sdk_glue::Client::from_conf(config)
    }

    /// Trino's base URL (`http://127.0.0.1:PORT`), checked to accept connections. Only the query
    /// tests need Trino, so an environment from before it was added still serves the others; these
    /// fail with [`NOT_RUNNING`] instead of skipping.
    #[track_caller]
    pub fn trino(&self) -> &str {
        let Some(url) = self.trino.as_deref() else {
            panic!(
                "{NOT_RUNNING}\nDRAINPIPE_TESTENV_TRINO is not set: the environment has no Trino"
            );
        };
        if let Err(e) = connect(url) {
            panic!("{NOT_RUNNING}\nTrino at {url}: {e}");
        }
        url
    }

    /// Alertmanager's base URL (`http://127.0.0.1:PORT`, API under `/api/v2/`), checked to accept
    /// connections. An environment started before Alertmanager was added lacks it: these tests
    /// then fail with [`NOT_RUNNING`] and how to add it, instead of skipping.
    #[track_caller]
    pub fn alertmanager(&self) -> &str {
        let Some(url) = self.alertmanager.as_deref() else {
            panic!(
                "{NOT_RUNNING}\nDRAINPIPE_ALERTMANAGER_URL is not set: the environment has no Alertmanager; `scripts/testenv install alertmanager && scripts/testenv up` adds it to the running environment"
            );
        };
        if let Err(e) = connect(url) {
            panic!("{NOT_RUNNING}\nAlertmanager at {url}: {e}");
        }
        url
    }

    /// The OpenTelemetry Go SDK client `scripts/testenv install` built (scripts/otlp-client).
    #[track_caller]
    pub fn otlp_client(&self) -> &Path {
        match self.otlp_client.as_deref() {
            Some(bin) if bin.is_file() => bin,
            Some(bin) => panic!(
                "{NOT_RUNNING}\nthe OTLP client {} is missing: run `scripts/testenv install otlp-client`",
                bin.display()
            ),
            None => panic!(
                "{NOT_RUNNING}\nDRAINPIPE_TESTENV_OTLP_CLIENT is not set: restart the environment (`scripts/testenv down && scripts/testenv up`)"
            ),
        }
    }

    /// The real node, checked to be Ready enough to answer (its address accepts connections to the
    /// API server). An environment started before the node was added lacks it: the node tests
    /// then fail with [`NOT_RUNNING`] instead of skipping.
    #[track_caller]
    pub fn node(&self) -> &Node {
        match &self.node {
            Some(node) if node.kubectl.is_file() => node,
            Some(node) => panic!(
                "{NOT_RUNNING}\nkubectl {} is missing: run `scripts/testenv install kubernetes`",
                node.kubectl.display()
            ),
            None => panic!(
                "{NOT_RUNNING}\nthe environment has no node (DRAINPIPE_TESTENV_NODE_IP is not set): restart it as root (`scripts/testenv down && scripts/testenv up`)"
            ),
        }
    }

    /// The state dir `scripts/testenv` uses; must match `state_dir()` in that script.
    pub fn state_dir() -> PathBuf {
        if let Some(dir) = non_empty_var("DRAINPIPE_TESTENV_DIR") {
            return PathBuf::from(dir);
        }
        if let Some(dir) = non_empty_var("XDG_RUNTIME_DIR") {
            return Path::new(&dir).join("drainpipe-testenv");
        }
        PathBuf::from(format!("/tmp/drainpipe-testenv-{}", current_uid()))
    }

    fn load() -> Result<TestEnv, String> {
        let (values, origin) = if non_empty_var("DRAINPIPE_TEST_BUCKET").is_some() {
            let values = VARS
                .iter()
                .chain(&OPTIONAL_VARS)
                .filter_map(|k| non_empty_var(k).map(|v| (k.to_string(), v)))
                .collect();
            (values, "the process environment".to_string())
        } else {
            let file = Self::state_dir().join("env");
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read env file {}: {e}", file.display()))?;
            (
                parse_env_file(&text),
                format!("env file {}", file.display()),
            )
        };
        let missing: Vec<&str> = VARS
            .iter()
            .copied()
            .filter(|k| !values.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            return Err(format!("{origin} lacks {}", missing.join(", ")));
        }
        let get = |k: &str| values.get(k).cloned().unwrap_or_default();
        Ok(TestEnv {
            kubeconfig: PathBuf::from(get("KUBECONFIG")),
            s3_endpoint: get("AWS_ENDPOINT_URL_S3"),
            glue_endpoint: get("AWS_ENDPOINT_URL_GLUE"),
            bucket: get("DRAINPIPE_TEST_BUCKET"),
            region: get("AWS_REGION"),
            access_key: get("AWS_ACCESS_KEY_ID"),
            secret_key: get("AWS_SECRET_ACCESS_KEY"),
            helm: PathBuf::from(get("DRAINPIPE_TESTENV_HELM")),
            trino: values.get("DRAINPIPE_TESTENV_TRINO").cloned(),
            otlp_client: values
                .get("DRAINPIPE_TESTENV_OTLP_CLIENT")
                .map(PathBuf::from),
            alertmanager: values.get("DRAINPIPE_ALERTMANAGER_URL").cloned(),
            node: match (
                values.get("DRAINPIPE_TESTENV_KUBECTL"),
                values
                    .get("DRAINPIPE_TESTENV_NODE_IP")
                    .and_then(|ip| ip.parse().ok()),
                values.get("DRAINPIPE_TESTENV_NODE_TAINT"),
            ) {
                (Some(kubectl), Some(ip), Some(taint)) => Some(Node {
                    kubectl: PathBuf::from(kubectl),
                    ip,
                    taint_key: taint.clone(),
                }),
                _ => None,
            },
        })
    }

    /// A stale env file (servers stopped, machine rebooted) must fail as clearly as a missing one.
    fn check_reachable(&self) -> Result<(), String> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| format!("cannot read kubeconfig {}: {e}", self.kubeconfig.display()))?;
        let api_server = kubeconfig
            .clusters
            .iter()
            .find_map(|c| c.cluster.as_ref().and_then(|c| c.server.clone()))
            .ok_or_else(|| format!("kubeconfig {} names no server", self.kubeconfig.display()))?;
        let unreachable: Vec<String> = [
            ("kube-apiserver", api_server.as_str()),
            ("MinIO (S3)", self.s3_endpoint.as_str()),
            ("moto (Glue)", self.glue_endpoint.as_str()),
        ]
        .into_iter()
        .filter_map(|(name, url)| connect(url).err().map(|e| format!("{name} at {url}: {e}")))
        .collect();
        if unreachable.is_empty() {
            Ok(())
        } else {
            Err(format!("not reachable: {}", unreachable.join("; ")))
        }
    }
}

fn non_empty_var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// The owner of `/proc/self` is this process's uid; avoids `unsafe` libc calls.
fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// Parses the lines `scripts/testenv` writes: `export KEY='value'` (quotes and `export` optional).
fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// `scheme://host:port/...` to a socket address; the default port follows the scheme.
fn socket_addr(url: &str) -> Result<SocketAddr, String> {
    let (scheme, rest) = url.split_once("://").ok_or("not a URL")?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let host_port = if has_port {
        authority.to_string()
    } else {
        let port = if scheme == "https" { 443 } else { 80 };
        format!("{authority}:{port}")
    };
    host_port
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{host_port} resolves to nothing"))
}

fn connect(url: &str) -> Result<(), String> {
    let addr = socket_addr(url)?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_env_file_testenv_writes() {
        let text = "# written by scripts/testenv up\n\
                    export KUBECONFIG='/tmp/drainpipe-testenv-0/kubeconfig'\n\
                    export AWS_ENDPOINT_URL_S3='http://127.0.0.1:40123'\n\
                    AWS_REGION=us-east-1\n";
        let values = parse_env_file(text);
        assert_eq!(values["KUBECONFIG"], "/tmp/drainpipe-testenv-0/kubeconfig");
        assert_eq!(values["AWS_ENDPOINT_URL_S3"], "http://127.0.0.1:40123");
        assert_eq!(values["AWS_REGION"], "us-east-1");
        assert_eq!(values.len(), 3);
    }

    #[test]
    fn socket_addr_uses_explicit_or_scheme_port() {
        assert_eq!(
            socket_addr("https://127.0.0.1:6443").ok(),
            Some(SocketAddr::from(([127, 0, 0, 1], 6443)))
        );
        assert_eq!(
            socket_addr("http://127.0.0.1/minio/health").ok(),
            Some(SocketAddr::from(([127, 0, 0, 1], 80)))
        );
        assert!(socket_addr("127.0.0.1:80").is_err());
    }

    #[test]
    fn closed_port_is_reported_unreachable() {
        // Bind then drop to find a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        assert!(connect(&format!("http://127.0.0.1:{port}")).is_err());
    }
}
