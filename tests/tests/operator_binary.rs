//! The `drainpipe-operator` binary as it is deployed: two replicas with
//! leader election through a Lease, its flags and environment, and its
//! /metrics and /readyz endpoints. The real kube-apiserver, moto's Glue and
//! the fake Heroku API stand in for the world.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use drainpipe_tests::heroku_fake::FakeOptions;
use drainpipe_tests::operator::{Harness, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

/// The operator binary next to this test executable. `cargo test` builds it
/// because the operator package has an integration test of its own
/// (`operator/tests/cli.rs`); running cargo from here instead would wait
/// forever on the build-directory lock the running `cargo test` holds.
fn operator_binary() -> PathBuf {
    // The test executable is target/<profile>/deps/<name>; the binary is
    // target/<profile>/drainpipe-operator.
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("drainpipe-operator");
    assert!(
        bin.exists(),
        "{} not built: run `cargo test --workspace` (or `cargo build -p drainpipe-operator` first)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Replica {
    name: String,
    port: u16,
    child: Child,
    log: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(bin: &PathBuf, h: &Harness, name: &str) -> Replica {
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("{}-{name}.log", h.ns));
    let log = std::fs::File::create(&log_path).expect("log file");
    let child = Command::new(bin)
        .args(["run", "--log-format", "json", "--resync", "10m"])
        .args(["--heroku-api-url", &h.heroku.base_url()])
        .args(["--namespaces", &h.ns])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--leader-election", "true"])
        .args(["--leader-election-namespace", &h.ns])
        .args(["--pod-name", name])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KUBECONFIG", &h.env.kubeconfig)
        .env("AWS_ENDPOINT_URL_GLUE", &h.env.glue_endpoint)
        .env("AWS_ACCESS_KEY_ID", &h.env.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &h.env.secret_key)
        .env("AWS_REGION", &h.env.region)
        .env("RUST_LOG", "info")
        .stderr(log.try_clone().expect("log file"))
        .stdout(log)
        .spawn()
        .expect("start drainpipe-operator");
    Replica {
        name: name.to_string(),
        port,
        child,
        log: log_path,
    }
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

async fn is_leader(r: &Replica) -> Option<bool> {
    let (_, body) = get(r.port, "/metrics").await?;
    Some(body.lines().any(|l| l == "drainpipe_operator_leader 1"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_fail_over() {
    let bin = operator_binary();
    let h = Harness::new("binary", FakeOptions::default()).await;
    for app in ["bin-one", "bin-two"] {
        h.heroku.add_app(app);
    }
    let mut replicas = vec![spawn(&bin, &h, "op-a"), spawn(&bin, &h, "op-b")];

    for r in &mut replicas {
        let port = r.port;
        let name = r.name.clone();
        wait_for(&format!("{name} /readyz"), Duration::from_secs(60), || {
            // A replica that died at start-up fails here, pointing at its log.
            if let Ok(Some(exit)) = r.child.try_wait() {
                panic!("{name} exited with {exit}: see {}", r.log.display());
            }
            async move {
                let (status, _) = get(port, "/readyz").await?;
                (status == 200).then_some(())
            }
        })
        .await;
        let (status, body) = get(r.port, "/healthz").await.expect("/healthz");
        assert_eq!((status, body.as_str()), (200, "ok\n"));
    }

    // Exactly one leads, and the Lease names it.
    let leader = wait_for("a leader", Duration::from_secs(60), || async {
        let mut leaders = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if is_leader(r).await? {
                leaders.push(i);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(h.client.clone(), &h.ns);
    let lease = leases.get("drainpipe-operator").await.expect("the Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        Some(replicas[leader].name.clone())
    );

    // The leader reconciles.
    h.apply("bin", h.spec(&["bin-one"], Some("logs"))).await;
    h.wait_drains_registered("bin", &["bin-one"]).await;
    assert_eq!(h.projected_apps("logs").await.map(|a| a.len()), Some(1));
    let (_, metrics) = get(replicas[leader].port, "/metrics")
        .await
        .expect("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("drainpipe_operator_reconciles_total ")
                && l != "drainpipe_operator_reconciles_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "drainpipe_operator_heroku_calls_total{operation=\"create\",status=\"ok\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(
            |l| l.starts_with("drainpipe_operator_heroku_ratelimit_remaining ")
                && l != "drainpipe_operator_heroku_ratelimit_remaining 0"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("drainpipe_operator_heroku_drain_changes_total{change=\"created\"} 1"),
        "{metrics}"
    );

    // The leader dies without releasing the Lease; the standby takes over
    // once it expires and carries on.
    let dead = replicas.remove(leader);
    drop(dead);
    let standby = &replicas[0];
    wait_for("the standby to lead", Duration::from_secs(60), || async {
        is_leader(standby).await?.then_some(())
    })
    .await;
    h.apply("bin", h.spec(&["bin-one", "bin-two"], Some("logs")))
        .await;
    h.wait_drains_registered("bin", &["bin-one", "bin-two"])
        .await;
    for app in ["bin-one", "bin-two"] {
        assert_eq!(h.heroku.drains(app).len(), 1, "{app}");
    }

    drop(replicas);
    h.teardown().await;
}
