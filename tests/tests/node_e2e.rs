//! The whole path on the test environment's real node (issue 22): `helm install` with the built
//! images, a LogDrain close to examples/production.yaml, Logplex and OTLP traffic through the
//! Service (kube-proxy's rules), the archive in MinIO and a docs/athena.md query in Trino, a
//! routes change reaching running pods through the kubelet's Secret volume, pods deleted
//! mid-stream, `helm upgrade` to another image tag, and `helm uninstall`.
//!
//! Nothing here plays the kubelet: the scheduler places the pods, the kubelet starts them from
//! the images `scripts/image` built (imported into the node's containerd under the names the
//! chart renders), and every step asserts what a user would check with kubectl, helm, the Heroku
//! side or the archive. docs/chart.md ("Tried on a real node") lists the same commands.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drainpipe_tests::env::{Node, TestEnv};
use drainpipe_tests::heroku_fake::{FakeHeroku, FakeOptions};
use drainpipe_tests::ingester::{archived_count, archived_records};
use drainpipe_tests::node::{
    DAY, FollowedLog, LocalVolumes, Logplex, app_version, archived_ids, chart_image, import_images,
    pod_processes_except, repo_root, router_frame, run, stop_container, wait_archived,
};
use drainpipe_tests::operator::wait_for;
use drainpipe_tests::trino::Trino;
use serde_json::{Value, json};

const RELEASE: &str = "drainpipe";
const DRAIN: &str = "shop";
const CEDAR: [&str; 2] = ["shop-web", "shop-worker"];
const FIR: &str = "billing-api";
fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// Removes what the test made, also when it failed half-way (a leftover operator would reconcile
/// the next run's LogDrains too): the release, the LogDrain without waiting for its finalizer
/// (the fake Heroku is gone by then), the namespaces. Errors are ignored: on success everything
/// is gone already.
struct Cleanup {
    env: TestEnv,
    kubectl: PathBuf,
    system: String,
    ns: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let quiet = |program: &Path, args: &[&str]| {
            let _ = Command::new(program)
                .args(args)
                .env("KUBECONFIG", &self.env.kubeconfig)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(
            &self.env.helm,
            &["uninstall", RELEASE, "-n", &self.system, "--wait"],
        );
        quiet(
            &self.kubectl,
            &[
                "patch",
                "logdrain",
                DRAIN,
                "-n",
                &self.ns,
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ],
        );
        quiet(
            &self.kubectl,
            &[
                "delete",
                "namespace",
                &self.ns,
                &self.system,
                "--wait=false",
            ],
        );
    }
}

struct Cluster {
    env: TestEnv,
    node: Node,
}

impl Cluster {
    fn kubectl(&self, args: &[&str]) -> String {
        run(&self.node.kubectl, args, &self.env, None)
    }

    fn kubectl_apply(&self, ns: &str, yaml: &str) {
        run(
            &self.node.kubectl,
            &["apply", "-n", ns, "-f", "-"],
            &self.env,
            Some(yaml),
        );
    }

    /// kubectl's answer line where a "no" exits 1 (`auth can-i`).
    fn kubectl_answer(&self, args: &[&str]) -> String {
        let out = Command::new(&self.node.kubectl)
            .args(args)
            .env("KUBECONFIG", &self.env.kubeconfig)
            .output()
            .expect("run kubectl");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn kubectl_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).expect("kubectl printed JSON")
    }

    fn helm(&self, args: &[&str]) -> String {
        run(&self.env.helm, args, &self.env, None)
    }

    /// The ingester pods of the LogDrain, as `kubectl get pods -l` lists them.
    fn ingester_pods(&self, ns: &str) -> Vec<Value> {
        let list = self.kubectl_json(&[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            &format!(
                "app.kubernetes.io/name=drainpipe-ingester,app.kubernetes.io/instance={DRAIN}"
            ),
        ]);
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Ready ingester pods (not being deleted), by name.
    fn ready_ingesters(&self, ns: &str) -> BTreeMap<String, Value> {
        self.ingester_pods(ns)
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && pod_ready(p))
            .map(|p| (name_of(&p), p))
            .collect()
    }

    async fn wait_ready_ingesters(
        &self,
        ns: &str,
        n: usize,
        what: &str,
    ) -> BTreeMap<String, Value> {
        wait_for(what, Duration::from_secs(180), || async {
            let pods = self.ready_ingesters(ns);
            (pods.len() == n).then_some(pods)
        })
        .await
    }

    /// The addresses the Service's EndpointSlices list as ready.
    fn ready_endpoints(&self, ns: &str) -> BTreeSet<String> {
        let slices = self.kubectl_json(&[
            "get",
            "endpointslices",
            "-n",
            ns,
            "-l",
            &format!("kubernetes.io/service-name={DRAIN}-ingester"),
        ]);
        let mut ips = BTreeSet::new();
        for slice in slices["items"].as_array().into_iter().flatten() {
            for ep in slice["endpoints"].as_array().into_iter().flatten() {
                if ep["conditions"]["ready"] == json!(true) {
                    for a in ep["addresses"].as_array().into_iter().flatten() {
                        ips.insert(a.as_str().unwrap_or_default().to_string());
                    }
                }
            }
        }
        ips
    }

    /// Panics unless events with each of `reasons` were recorded in `ns`.
    fn assert_events(&self, ns: &str, reasons: &[&str]) {
        let events = self.kubectl(&[
            "get",
            "events",
            "-n",
            ns,
            "-o",
            "jsonpath={.items[*].reason}",
        ]);
        for reason in reasons {
            assert!(events.contains(reason), "event {reason} recorded: {events}");
        }
    }

    fn logdrain(&self, ns: &str) -> Value {
        self.kubectl_json(&["get", "logdrain", DRAIN, "-n", ns])
    }
}

fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn restart_counts(pods: &BTreeMap<String, Value>) -> BTreeMap<String, (String, i64)> {
    pods.iter()
        .map(|(name, p)| {
            let restarts = p["status"]["containerStatuses"][0]["restartCount"]
                .as_i64()
                .unwrap_or(-1);
            let uid = p["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (name.clone(), (uid, restarts))
        })
        .collect()
}

/// Sends numbered lines for `app` from `first` through the Service until `stop`, 50 a request,
/// a new connection each (so kube-proxy spreads them as it would many senders); returns the
/// acknowledged ids and how many lines were sent.
fn spawn_sender(
    logplex: &Logplex,
    base: &str,
    app: &'static str,
    first: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(BTreeSet<String>, u64)> {
    let logplex = logplex.clone();
    let base = base.to_string();
    tokio::spawn(async move {
        let mut acked = BTreeSet::new();
        let mut n = first;
        while !stop.load(Ordering::Relaxed) {
            acked.extend(logplex.send(&base, app, n, 50).await);
            n += 50;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (acked, n - first)
    })
}

/// Sends 300 log records of the Fir app with the OpenTelemetry exporter (`args`: protocol,
/// endpoint, headers), each body naming `run`, and waits until all 300 are archived.
async fn otlp_run(env: &TestEnv, prefix: &str, args: &[&str], run: &str) {
    let out = Command::new(env.otlp_client())
        .args(args)
        .args([
            "-n",
            "300",
            "-run",
            run,
            "-app",
            FIR,
            "-batch",
            "100",
            "-retry-for",
            "30s",
        ])
        .output()
        .expect("run the OTLP client");
    assert!(
        out.status.success(),
        "{run}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let what = format!("the {run} records archived");
    wait_for(&what, Duration::from_secs(120), || async {
        let n = archived_records(env, &format!("{prefix}{FIR}/"))
            .await
            .iter()
            .filter(|r| r["message"].as_str().is_some_and(|m| m.contains(run)))
            .count();
        (n == 300).then_some(())
    })
    .await;
}

/// `drainpipe_messages_total` of the ingester at `ip`, summed over its labels.
async fn messages_received(ip: &str) -> f64 {
    let Ok(res) = reqwest::get(format!("http://{ip}:8080/metrics")).await else {
        return 0.0;
    };
    let text = res.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("drainpipe_messages_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn values_yaml(env: &TestEnv, node: &Node, heroku: &str, tag: &str) -> String {
    let taint = &node.taint_key;
    format!(
        r#"operator:
  image: {{tag: "{tag}"}}
  herokuApiUrl: {heroku}
  resync: 30s
  extraEnv:
    - {{name: AWS_ENDPOINT_URL_GLUE, value: "{glue}"}}
    - {{name: AWS_REGION, value: "{region}"}}
    - name: AWS_ACCESS_KEY_ID
      valueFrom: {{secretKeyRef: {{name: glue-credentials, key: access-key}}}}
    - name: AWS_SECRET_ACCESS_KEY
      valueFrom: {{secretKeyRef: {{name: glue-credentials, key: secret-key}}}}
  tolerations: [{{key: {taint}, operator: Exists, effect: NoSchedule}}]
ingester:
  image: {{tag: "{tag}"}}
  tolerations: [{{key: {taint}, operator: Exists, effect: NoSchedule}}]
  extraEnv:
    - name: AWS_ACCESS_KEY_ID
      valueFrom: {{secretKeyRef: {{name: s3-credentials, key: access-key}}}}
    - name: AWS_SECRET_ACCESS_KEY
      valueFrom: {{secretKeyRef: {{name: s3-credentials, key: secret-key}}}}
    # Step 5: kube-proxy picks a pod per connection at random, so at the default 60 s the
    # load generator's four connections all stay on the old pod for a whole age one time in
    # sixteen; at 10 s the new pod gets some within seconds.
    - {{name: DRAINPIPE_MAX_CONNECTION_AGE, value: "10s"}}
"#,
        glue = env.glue_endpoint,
        region = env.region,
    )
}

fn credentials_secret(name: &str, env: &TestEnv) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{access-key: \"{}\", secret-key: \"{}\"}}\n",
        env.access_key, env.secret_key
    )
}

/// Close to examples/production.yaml: Cedar and Fir apps, the test bucket on MinIO, a managed
/// Glue table, two ingesters with an emptyDir buffer. No alerts: there is no Slack here.
fn logdrain(env: &TestEnv, apps: &[&str], prefix: &str, database: &str) -> Value {
    json!({
        "apiVersion": "drainpipe.dev/v1alpha1",
        "kind": "LogDrain",
        "metadata": {"name": DRAIN},
        "spec": {
            "apps": apps,
            "heroku": {"apiTokenSecretRef": {"name": "heroku-api", "key": "token"}},
            "endpoint": {"url": "https://logs.example.com"},
            "archive": {"s3": {
                "bucket": env.bucket,
                "prefix": prefix,
                "region": env.region,
                "endpoint": env.s3_endpoint,
            }},
            "catalog": {"glue": {
                "database": database,
                "table": "heroku_logs",
                "region": env.region,
                "manageTable": true,
            }},
            "ingester": {
                "replicas": 2,
                "resources": {
                    "requests": {"cpu": "50m", "memory": "64Mi"},
                    "limits": {"memory": "512Mi"},
                },
                "bufferStorage": {"sizeLimit": "1Gi"},
            },
            "deletionPolicy": "Delete",
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn helm_install_to_archived_logs_on_a_real_node() {
    let env = TestEnv::require();
    let node = env.node().clone();
    let c = Cluster {
        env: env.clone(),
        node: node.clone(),
    };
    let version = app_version();
    let upgraded = format!("{version}-node-upgrade");
    // The names the chart renders for its default repositories, at appVersion and at the tag
    // the upgrade step moves to (the same images: a new tag is what rolls the pods).
    import_images(&env, &[&version, &upgraded]);

    let id = suffix();
    let system = format!("drainpipe-{id}");
    let ns = format!("logs-{id}");
    let prefix = format!("node-{id}/");
    let database = format!("node_{id}");
    let glue = env.glue_client();
    glue.create_database()
        .database_input(
            aws_sdk_glue::types::DatabaseInput::builder()
                .name(&database)
                .build()
                .expect("database input"),
        )
        .send()
        .await
        .expect("create the Glue database");

    let heroku = FakeHeroku::start_on(node.ip, FakeOptions::default()).await;
    for app in CEDAR {
        heroku.add_app(app);
    }
    heroku.add_fir_app(FIR);

    let started = std::time::Instant::now();
    // The run takes minutes: each step says when it starts (`--nocapture` shows them).
    let progress = |step: &str| {
        eprintln!(
            "[node_e2e {:>5.0}s] {step}",
            started.elapsed().as_secs_f64()
        )
    };
    let _cleanup = Cleanup {
        env: env.clone(),
        kubectl: node.kubectl.clone(),
        system: system.clone(),
        ns: ns.clone(),
    };

    progress("1. helm install");
    // 1. helm install: the operator runs under the chart's ServiceAccount and holds the Lease.
    c.kubectl(&["create", "namespace", &system]);
    c.kubectl(&["create", "namespace", &ns]);
    c.kubectl_apply(&system, &credentials_secret("glue-credentials", &env));
    let values = tempfile::NamedTempFile::new().expect("values file");
    std::fs::write(
        values.path(),
        values_yaml(&env, &node, &heroku.base_url(), &version),
    )
    .expect("write values");
    let values_path = values.path().to_string_lossy().into_owned();
    let chart = repo_root().join("charts/drainpipe");
    let chart = chart.to_string_lossy().into_owned();
    // --take-ownership: the CRD may be kept from an earlier release (crds.keep), which
    // docs/chart.md says to adopt this way.
    c.helm(&[
        "install",
        RELEASE,
        &chart,
        "-n",
        &system,
        "-f",
        &values_path,
        "--take-ownership",
        "--wait",
        "--timeout",
        "3m",
    ]);
    let operator_pods = c.kubectl_json(&[
        "get",
        "pods",
        "-n",
        &system,
        "-l",
        "app.kubernetes.io/name=drainpipe",
    ]);
    let operator_pods = operator_pods["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        operator_pods.len(),
        1,
        "one operator pod: {operator_pods:?}"
    );
    let operator = &operator_pods[0];
    assert!(
        pod_ready(operator),
        "operator pod Running and Ready: {}",
        operator["status"]
    );
    let operator_name = name_of(operator);
    let sa = operator["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let account = c.kubectl_json(&["get", "serviceaccount", &sa, "-n", &system]);
    assert_eq!(
        account["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm",
        "the operator runs as the chart's ServiceAccount, not {sa}"
    );
    let who = format!("system:serviceaccount:{system}:{sa}");
    assert_eq!(
        c.kubectl_answer(&["auth", "can-i", "*", "*", "--as", &who]),
        "no",
        "the chart grants no admin identity"
    );
    assert_eq!(
        c.kubectl_answer(&[
            "auth",
            "can-i",
            "patch",
            "logdrains/status",
            "-n",
            &ns,
            "--as",
            &who
        ]),
        "yes"
    );
    let leases = c.kubectl_json(&["get", "leases", "-n", &system]);
    let held = leases["items"].as_array().into_iter().flatten().any(|l| {
        l["spec"]["holderIdentity"]
            .as_str()
            .is_some_and(|h| h.contains(&operator_name))
    });
    assert!(
        held,
        "the operator pod {operator_name} holds the Lease: {leases}"
    );

    progress("2. kubectl apply of the LogDrain");
    // 2. kubectl apply of the LogDrain: drains on Heroku, the Glue table, two ingesters behind
    // the Service, status and printer columns as docs/operations.md shows them.
    c.kubectl_apply(&ns, &credentials_secret("s3-credentials", &env));
    c.kubectl(&[
        "create",
        "secret",
        "generic",
        "heroku-api",
        "-n",
        &ns,
        &format!("--from-literal=token={}", heroku.token()),
    ]);
    let mut apps: Vec<&str> = CEDAR.to_vec();
    apps.push(FIR);
    let mut drain = logdrain(&env, &apps, &prefix, &database);
    c.kubectl_apply(&ns, &drain.to_string());
    let ld = wait_for("LogDrain Ready", Duration::from_secs(240), || async {
        let ld = c.logdrain(&ns);
        (condition(&ld, "Ready").is_some_and(|r| r["status"] == "True")).then_some(ld)
    })
    .await;
    for app in CEDAR {
        let drains = heroku.drains(app);
        assert_eq!(drains.len(), 1, "{app}: one log drain: {drains:?}");
        assert!(
            drains[0]
                .url
                .ends_with(&format!("@logs.example.com/logplex/{app}"))
        );
    }
    assert!(heroku.drains(FIR).is_empty(), "a Fir app gets no log drain");
    let telemetry = heroku.telemetry_drains(FIR);
    assert_eq!(
        telemetry.len(),
        1,
        "{FIR}: one telemetry drain: {telemetry:?}"
    );
    glue.get_table()
        .database_name(&database)
        .name("heroku_logs")
        .send()
        .await
        .expect("the operator created the Glue table");
    let pods = c
        .wait_ready_ingesters(&ns, 2, "two Ready ingester pods")
        .await;
    let pod_ips: BTreeSet<String> = pods
        .values()
        .map(|p| {
            p["status"]["podIP"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    wait_for(
        "both pods are endpoints of the Service",
        Duration::from_secs(60),
        || async { (c.ready_endpoints(&ns) == pod_ips).then_some(()) },
    )
    .await;
    for p in pods.values() {
        let spec = &p["spec"];
        let container = &spec["containers"][0];
        assert_eq!(spec["securityContext"]["runAsUser"], 65532);
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            container["image"],
            chart_image("drainpipe-ingester", &version)
        );
    }
    let table = c.kubectl(&["get", "logdrains", "-n", &ns]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "APPS", "READY", "REASON", "LAST", "OBJECT", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..3], [DRAIN, "3", "True"], "{table}");
    assert_eq!(
        ld["status"]["drains"].as_array().map(Vec::len),
        Some(3),
        "{}",
        ld["status"]
    );

    progress("3. Logplex and OTLP/HTTP through the Service, Trino");
    // 3. Logplex and OTLP/HTTP through the Service's ClusterIP (kube-proxy's DNAT): every
    // acknowledged line is archived, and a docs/athena.md query answers over it in Trino.
    let service = c.kubectl_json(&["get", "service", &format!("{DRAIN}-ingester"), "-n", &ns]);
    let cluster_ip = service["spec"]["clusterIP"]
        .as_str()
        .expect("a ClusterIP")
        .to_string();
    let base = format!("http://{cluster_ip}:8080");
    let password = String::from_utf8(base64_decode(&c.kubectl(&[
        "get",
        "secret",
        &format!("{DRAIN}-drain-password"),
        "-n",
        &ns,
        "-o",
        "jsonpath={.data.password}",
    ])))
    .expect("UTF-8 password");
    let tokens = CEDAR
        .iter()
        .map(|app| (app.to_string(), heroku.drains(app)[0].token.clone()))
        .collect();
    let logplex = Logplex::new(&password, tokens);
    let mut acked: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for app in CEDAR {
        let ids = logplex.send(&base, app, 0, 500).await;
        assert_eq!(
            ids.len(),
            500,
            "{app}: every request through the Service acknowledged"
        );
        acked.insert(app, ids);
    }
    let bearer = format!("Authorization=Bearer {password}");
    let otlp_http = format!("{base}/otlp/{FIR}");
    let otlp_args = [
        "-protocol",
        "http/protobuf",
        "-endpoint",
        &otlp_http,
        "-header",
        &bearer,
    ];
    otlp_run(&env, &prefix, &otlp_args, "node-otlp").await;
    for app in CEDAR {
        wait_archived(&env, &prefix, app, &acked[app]).await;
    }
    let trino = Trino::new(env.trino());
    let (_, sql) = drainpipe_tests::athena_docs::documented_queries()
        .expect("docs/athena.md")
        .into_iter()
        .find(|(name, _)| name == "5xx responses per app per hour")
        .expect("docs/athena.md has the 5xx query");
    let (y, m, d) = DAY;
    assert!(
        sql.contains(&format!("year = '{y}' AND month = '{m}' AND day = '{d}'")),
        "{sql}"
    );
    let answer = trino
        .query(&drainpipe_tests::athena_docs::on_database(&sql, &database))
        .await
        .expect("the documented query runs");
    let per_app: BTreeMap<String, u64> = answer.rows.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r[0].clone()).or_default() += r[2].parse::<u64>().unwrap_or(0);
        m
    });
    // Every fifth line of 0..500 is a 503.
    let want: BTreeMap<String, u64> = CEDAR.iter().map(|a| (a.to_string(), 100)).collect();
    assert_eq!(per_app, want, "{answer:?}");

    progress("3. OTLP/gRPC through the Service");
    // OTLP/gRPC: the Fir app's telemetry drain moves to gRPC, served by the ingesters' TLS
    // listener (ALPN h2) behind the Service's second port.
    let tls = tempfile::tempdir().expect("temp dir");
    let certified =
        rcgen::generate_simple_self_signed(vec![cluster_ip.clone(), "otlp.example.com".to_owned()])
            .expect("certificate");
    let (cert, key) = (tls.path().join("tls.crt"), tls.path().join("tls.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let (cert, key) = (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    );
    c.kubectl(&[
        "create", "secret", "tls", "otlp-tls", "-n", &ns, "--cert", &cert, "--key", &key,
    ]);
    drain["spec"]["endpoint"] = json!({
        "url": "https://logs.example.com",
        "otlpTransport": "grpc",
        "otlpGrpc": "otlp.example.com:443",
    });
    drain["spec"]["ingester"]["otlpGrpc"] = json!({"port": 4317, "tlsSecretName": "otlp-tls"});
    c.kubectl_apply(&ns, &drain.to_string());
    wait_for(
        "the telemetry drain moved to gRPC",
        Duration::from_secs(120),
        || async {
            let d = heroku.telemetry_drains(FIR);
            (d.len() == 1 && d[0].exporter_type == "otlp").then_some(())
        },
    )
    .await;
    let grpc_pods = wait_for(
        "two ingesters with the gRPC listener",
        Duration::from_secs(240),
        || async {
            let pods = c.ready_ingesters(&ns);
            let all = c.ingester_pods(&ns);
            (pods.len() == 2
                && all.len() == 2
                && pods.values().all(|p| {
                    p["spec"]["containers"][0]["args"]
                        .to_string()
                        .contains("--otlp-grpc-listen")
                }))
            .then_some(pods)
        },
    )
    .await;
    let grpc_ips: BTreeSet<String> = grpc_pods
        .values()
        .map(|p| {
            p["status"]["podIP"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    wait_for(
        "the new pods are the Service's endpoints",
        Duration::from_secs(60),
        || async { (c.ready_endpoints(&ns) == grpc_ips).then_some(()) },
    )
    .await;
    // The headers Heroku's exporter sends are the ones registered on the telemetry drain.
    let registered = heroku.telemetry_drains(FIR)[0].headers.clone();
    let headers: Vec<String> = registered.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let grpc_endpoint = format!("{cluster_ip}:4317");
    let mut grpc_args = vec![
        "-protocol",
        "grpc",
        "-endpoint",
        &grpc_endpoint,
        "-ca",
        &cert,
    ];
    grpc_args.extend(headers.iter().flat_map(|h| ["-header", h.as_str()]));
    otlp_run(&env, &prefix, &grpc_args, "node-grpc").await;

    progress("4. a new app through the Secret volume");
    // 4. A new app reaches the running pods through the kubelet's Secret volume: no restart.
    let before = restart_counts(&c.ready_ingesters(&ns));
    heroku.add_app("shop-api");
    drain["spec"]["apps"]
        .as_array_mut()
        .expect("apps")
        .push(json!("shop-api"));
    c.kubectl_apply(&ns, &drain.to_string());
    wait_for("a drain for shop-api", Duration::from_secs(120), || async {
        (heroku.drains("shop-api").len() == 1).then_some(())
    })
    .await;
    let mut logplex = logplex;
    logplex.tokens.insert(
        "shop-api".to_string(),
        heroku.drains("shop-api")[0].token.clone(),
    );
    for ip in &grpc_ips {
        let pod_base = format!("http://{ip}:8080");
        wait_for(
            &format!("pod {ip} takes shop-api"),
            Duration::from_secs(150),
            || async {
                let frame = router_frame("shop-api", 1_000_000);
                (logplex
                    .post(&pod_base, "shop-api", 1_000_000, &[frame])
                    .await
                    == 200)
                    .then_some(())
            },
        )
        .await;
    }
    assert_eq!(
        restart_counts(&c.ready_ingesters(&ns)),
        before,
        "the same pods, not restarted, took the new routes"
    );

    progress("5. scaling by load");
    // 5. Scaling by load (autoscaling.mode operator) with drainpipe-loadgen, which keeps one
    // keep-alive connection per drain as Logplex does: idle, the ingesters go down to one;
    // under load a real second pod starts, becomes an endpoint and takes traffic through the
    // Service (the senders' connections are recycled after --max-connection-age); after the
    // window it is removed again, its buffer flushed first.
    let load_apps = ["lg-1", "lg-2", "lg-3", "lg-4"];
    for app in load_apps {
        heroku.add_app(app);
        drain["spec"]["apps"]
            .as_array_mut()
            .expect("apps")
            .push(json!(app));
    }
    drain["spec"]["ingester"]["autoscaling"] = json!({
        "mode": "operator",
        "minReplicas": 1,
        "maxReplicas": 2,
        "targetMessagesPerSecond": 100,
        "scaleDownStabilization": "20s",
    });
    c.kubectl_apply(&ns, &drain.to_string());
    let one = wait_for(
        "idle: scaled down to one ingester",
        Duration::from_secs(180),
        || async {
            let pods = c.ready_ingesters(&ns);
            (pods.len() == 1
                && c.ingester_pods(&ns).len() == 1
                && load_apps.iter().all(|a| heroku.drains(a).len() == 1))
            .then_some(pods)
        },
    )
    .await;
    let load_tokens: Vec<String> = load_apps
        .iter()
        .map(|a| heroku.drains(a)[0].token.clone())
        .collect();
    for (app, token) in load_apps.iter().zip(&load_tokens) {
        logplex.tokens.insert(app.to_string(), token.clone());
    }
    // The routes reach the pod through its Secret volume: the last app is accepted there.
    let only = one
        .values()
        .next()
        .and_then(|p| p["status"]["podIP"].as_str())
        .expect("pod IP")
        .to_string();
    let probe_base = format!("http://{only}:8080");
    wait_for(
        "the pod takes the load apps",
        Duration::from_secs(150),
        || async {
            let frame = router_frame("lg-4", 6_000_000);
            (logplex.post(&probe_base, "lg-4", 6_000_000, &[frame]).await == 200).then_some(())
        },
    )
    .await;
    let load = Command::new(drainpipe_tests::ingester::workspace_binary(
        "drainpipe-loadgen",
    ))
    .args(["--url", &base, "--drains", "4", "--app-prefix", "lg"])
    .args([
        "--tokens",
        &load_tokens.join(","),
        "--body-kb",
        "4",
        "--duration",
        "120s",
    ])
    .env("DRAINPIPE_LOADGEN_PASSWORD", &password)
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("start drainpipe-loadgen");
    let two = c
        .wait_ready_ingesters(&ns, 2, "under load: a second ingester")
        .await;
    let second = two
        .iter()
        .find(|(name, _)| !one.contains_key(*name))
        .map(|(_, p)| {
            p["status"]["podIP"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .expect("a new pod");
    // Each pod's log, kept past its deletion: the one scaled down must say it stopped with
    // everything it acknowledged in the archive.
    let mut followed: BTreeMap<String, FollowedLog> = two
        .keys()
        .map(|name| (name.clone(), FollowedLog::start(&env, &ns, name)))
        .collect();
    wait_for(
        "the second pod takes traffic through the Service",
        Duration::from_secs(110),
        || async {
            let ready = c.ready_endpoints(&ns).contains(&second);
            (ready && messages_received(&second).await > 0.0).then_some(())
        },
    )
    .await;
    let report = tokio::task::spawn_blocking(move || load.wait_with_output())
        .await
        .expect("join")
        .expect("drainpipe-loadgen ran");
    let report = String::from_utf8_lossy(&report.stdout).into_owned();
    let load_acked: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("acknowledged:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!("no acknowledged count in the load generator's report:\n{report}")
        });
    assert!(load_acked > 0, "{report}");
    let last = wait_for(
        "after the window: back to one ingester",
        Duration::from_secs(180),
        || async {
            let ready = c.ready_ingesters(&ns);
            (ready.len() == 1 && c.ingester_pods(&ns).len() == 1).then_some(ready)
        },
    )
    .await;
    let removed = followed
        .keys()
        .find(|name| !last.contains_key(*name))
        .cloned()
        .expect("one of the two pods was removed");
    let mut removed_log = followed.remove(&removed).expect("followed");
    drop(followed);
    let ended = removed_log.wait_ended(Duration::from_secs(30)).await;
    let said = removed_log.text();
    assert!(
        ended && said.contains("everything is in the archive"),
        "the scaled-down pod {removed} did not stop with its buffer archived; its log:\n{said}"
    );
    // Everything acknowledged, the removed pod's buffer included, is archived: the load
    // generator's count plus the one probe line.
    // More archived than acknowledged is fine (a request whose answer was lost may still have
    // been written); fewer is a lost line.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut archived = 0;
        for app in load_apps {
            archived += archived_count(&env, &format!("{prefix}{app}/")).await;
        }
        if archived > load_acked {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            // What the pods went through, for the reader of a failure.
            let events = c.kubectl(&[
                "get",
                "events",
                "-n",
                &ns,
                "--sort-by=.lastTimestamp",
                "-o",
                "custom-columns=TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message",
            ]);
            panic!(
                "{archived} load lines archived, {} acknowledged (with the probe line); the load generator said:\n{report}\nevents:\n{events}\nthe scaled-down pod {removed} said:\n{said}",
                load_acked + 1
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    c.assert_events(&ns, &["ScaledUp", "ScaledDown"]);
    drain["spec"]["ingester"]
        .as_object_mut()
        .expect("ingester")
        .remove("autoscaling");
    c.kubectl_apply(&ns, &drain.to_string());
    c.wait_ready_ingesters(&ns, 2, "manual again: two ingesters")
        .await;

    progress("6. pods deleted mid-stream");
    // 6. Pods deleted mid-stream: a plain delete (preStop, SIGTERM, flush) and a forced one lose
    // no acknowledged line.
    for force in [false, true] {
        let stop = Arc::new(AtomicBool::new(false));
        let start = if force { 3_000_000 } else { 2_000_000 };
        let sender = spawn_sender(&logplex, &base, "shop-web", start, stop.clone());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let victim = c.ready_ingesters(&ns).into_keys().next().expect("a pod");
        let mut args = vec![
            "delete",
            "pod",
            victim.as_str(),
            "-n",
            ns.as_str(),
            "--wait=false",
        ];
        if force {
            args.extend(["--grace-period=0", "--force"]);
        }
        c.kubectl(&args);
        c.wait_ready_ingesters(&ns, 2, "a replacement pod Ready")
            .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        let (ids, sent) = sender.await.expect("sender");
        assert!(
            ids.len() as u64 * 10 >= sent * 9,
            "force={force}: most lines acknowledged while a pod went away ({} of {sent})",
            ids.len()
        );
        wait_archived(&env, &prefix, "shop-web", &ids).await;
    }

    progress("6. a claim buffer: a replacement pod on the same claim");
    // With `bufferStorage.persistentVolumeClaim` the ingesters are a StatefulSet on pre-made
    // local PersistentVolumes. A pod that hangs (its process stopped: no upload, no flush on
    // SIGTERM) and is force-deleted comes back under the same name on the same claim, and the
    // new process uploads what the old one acknowledged.
    let volumes = LocalVolumes::create(&env, &format!("node-{id}-local"), 2, "1Gi");
    drain["spec"]["ingester"]["bufferStorage"] = json!({"persistentVolumeClaim": {
        "size": "1Gi",
        "storageClassName": volumes.class,
    }});
    c.kubectl_apply(&ns, &drain.to_string());
    let ordinals = [format!("{DRAIN}-ingester-0"), format!("{DRAIN}-ingester-1")];
    let pods = wait_for(
        "two StatefulSet pods Ready on their claims",
        Duration::from_secs(240),
        || async {
            let pods = c.ready_ingesters(&ns);
            (c.ingester_pods(&ns).len() == 2 && ordinals.iter().all(|n| pods.contains_key(n)))
                .then_some(pods)
        },
    )
    .await;
    let victim = &ordinals[1];
    let claim = format!("buffer-{victim}");
    let volume_of = |claim: &str| {
        c.kubectl(&[
            "get",
            "pvc",
            claim,
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.volumeName}",
        ])
    };
    let volume = volume_of(&claim);
    assert!(volume.starts_with(&volumes.class), "{claim} on {volume}");
    let old = &pods[victim];
    let ip = old["status"]["podIP"].as_str().expect("pod IP");
    let claim_acked = logplex
        .send(&format!("http://{ip}:8080"), "shop-web", 5_000_000, 300)
        .await;
    assert_eq!(claim_acked.len(), 300, "{victim} acknowledged every line");
    assert!(
        archived_ids(&env, &prefix, "shop-web")
            .await
            .is_disjoint(&claim_acked),
        "nothing archived before the pod hung (objects are held 60 s): the lines are on the claim"
    );
    stop_container(old);
    c.kubectl(&[
        "delete",
        "pod",
        victim,
        "-n",
        &ns,
        "--grace-period=0",
        "--force",
        "--wait=false",
    ]);
    let old_uid = old["metadata"]["uid"].clone();
    wait_for(
        "the replacement pod Ready on the same claim",
        Duration::from_secs(180),
        || async {
            c.ready_ingesters(&ns)
                .get(victim)
                .is_some_and(|p| p["metadata"]["uid"] != old_uid)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        volume_of(&claim),
        volume,
        "the same claim on the same volume"
    );
    wait_archived(&env, &prefix, "shop-web", &claim_acked).await;
    let log = c.kubectl(&["logs", victim, "-n", &ns]);
    assert!(
        log.contains("write-ahead log from the previous run: uploading it first"),
        "the replacement found the old pod's log on the claim:\n{log}"
    );
    // Back to emptyDir: a Deployment again, and each released claim is emptied by a real flush
    // Job, then deleted.
    drain["spec"]["ingester"]["bufferStorage"] = json!({"sizeLimit": "1Gi"});
    c.kubectl_apply(&ns, &drain.to_string());
    wait_for(
        "a Deployment's two pods, the claims flushed and deleted",
        Duration::from_secs(240),
        || async {
            let pods = c.ready_ingesters(&ns);
            let claims = c.kubectl(&["get", "pvc", "-n", &ns, "-o", "name"]);
            (pods.len() == 2
                && c.ingester_pods(&ns).len() == 2
                && pods.keys().all(|n| !ordinals.contains(n))
                && claims.trim().is_empty())
            .then_some(())
        },
    )
    .await;
    c.assert_events(&ns, &["BufferFlushStarted", "BufferClaimDeleted"]);

    progress("7. helm upgrade, uninstall");
    // 7. helm upgrade to another tag rolls the pods without losing a line; uninstall and the
    // LogDrain's deletion leave no Heroku drain and no pod on the node.
    let values_up = tempfile::NamedTempFile::new().expect("values file");
    std::fs::write(
        values_up.path(),
        values_yaml(&env, &node, &heroku.base_url(), &upgraded),
    )
    .expect("write values");
    let values_up_path = values_up.path().to_string_lossy().into_owned();
    let old_pods: BTreeSet<String> = c.ready_ingesters(&ns).into_keys().collect();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = spawn_sender(&logplex, &base, "shop-worker", 4_000_000, stop.clone());
    c.helm(&[
        "upgrade",
        RELEASE,
        &chart,
        "-n",
        &system,
        "-f",
        &values_up_path,
        "--wait",
        "--timeout",
        "3m",
    ]);
    let rolled = wait_for(
        "the ingesters rolled to the new tag",
        Duration::from_secs(240),
        || async {
            let pods = c.ready_ingesters(&ns);
            let new_tag = chart_image("drainpipe-ingester", &upgraded);
            (pods.len() == 2
                && pods
                    .values()
                    .all(|p| p["spec"]["containers"][0]["image"] == new_tag.as_str())
                && c.ingester_pods(&ns).len() == 2)
                .then_some(pods)
        },
    )
    .await;
    assert!(rolled.keys().all(|p| !old_pods.contains(p)), "new pods");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let (upgraded_ids, _) = sender.await.expect("sender");
    assert!(
        !upgraded_ids.is_empty(),
        "lines acknowledged during the upgrade"
    );
    wait_archived(&env, &prefix, "shop-worker", &upgraded_ids).await;

    c.kubectl(&["delete", "logdrain", DRAIN, "-n", &ns, "--timeout=180s"]);
    c.helm(&[
        "uninstall",
        RELEASE,
        "-n",
        &system,
        "--wait",
        "--timeout",
        "3m",
    ]);
    assert!(
        heroku.all_drains().is_empty(),
        "no Heroku drain left: {:?}",
        heroku.all_drains()
    );
    assert!(
        heroku.all_telemetry_drains().is_empty(),
        "no telemetry drain left"
    );
    wait_for(
        "no pod left in either namespace",
        Duration::from_secs(180),
        || async {
            let left = c.kubectl(&["get", "pods", "-n", &ns, "-o", "name"])
                + &c.kubectl(&["get", "pods", "-n", &system, "-o", "name"]);
            left.trim().is_empty().then_some(())
        },
    )
    .await;
    // Other tests' pods may share the node (the in-process operator tests put theirs there):
    // every other process in the kubelet's pod cgroups must be gone, ours and any of a pod the
    // API server no longer knows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let others: BTreeSet<String> = c.kubectl_json(&["get", "pods", "-A"])["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                let of = &p["metadata"]["namespace"];
                of != ns.as_str() && of != system.as_str()
            })
            .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_string))
            .collect();
        let left = pod_processes_except(&others);
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod processes left on the node: {left:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    c.kubectl(&["delete", "namespace", &ns, &system, "--wait=false"]);
    progress("done");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .expect("base64 from kubectl")
}
