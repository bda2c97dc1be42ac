//! What the tests on the real node share: the project's images imported
//! under the chart's names, kubectl, pre-made local PersistentVolumes, a
//! Logplex sender, and a look into the kubelet's pod cgroups.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::env::{Node, TestEnv};

/// The day every Logplex line of [`router_frame`] is stamped with: the day
/// docs/athena.md's queries name.
pub const DAY: (&str, &str, &str) = ("2026", "11", "21");

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The chart's appVersion, the tag its images default to.
pub fn app_version() -> String {
    let chart = std::fs::read_to_string(repo_root().join("charts/drainpipe/Chart.yaml"))
        .expect("read Chart.yaml");
    let chart: serde_json::Value = serde_yaml::from_str(&chart).expect("Chart.yaml is YAML");
    chart["appVersion"]
        .as_str()
        .expect("Chart.yaml has an appVersion")
        .to_string()
}

/// The name the chart renders for `program`'s image (its default repository) at `tag`.
pub fn chart_image(program: &str, tag: &str) -> String {
    format!("ghcr.io/drainpipe/{program}:{tag}")
}

/// Imports the project's two images (built by `scripts/image`) into the node's containerd under
/// the chart's names at each of `tags`, so the kubelet never pulls.
pub fn import_images(env: &TestEnv, tags: &[&str]) {
    let testenv = repo_root().join("scripts/testenv");
    let images = repo_root().join("target/images");
    for program in ["drainpipe-operator", "drainpipe-ingester"] {
        let archive = images.join(format!("{program}-amd64.tar"));
        assert!(
            archive.is_file(),
            "{} is missing: build the images first with `scripts/image --profile image-check` (scripts/test does, before the tests)",
            archive.display()
        );
        let archive = archive.to_string_lossy().into_owned();
        for tag in tags {
            let name = chart_image(program, tag);
            run(&testenv, &["import-image", &archive, &name], env, None);
        }
    }
}

/// Runs a command of the node's tools (kubectl, helm, scripts/testenv) with the test kubeconfig
/// and returns its stdout; panics with both outputs when it fails.
pub fn run(program: &Path, args: &[&str], env: &TestEnv, stdin: Option<&str>) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("KUBECONFIG", &env.kubeconfig)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    if let Some(text) = stdin {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for the command");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n{stdout}\n{}",
        program.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A pod's log from its container's start, followed until the container exits (`kubectl logs
/// -f`) into a file, so what a pod said while it stopped can still be read after the pod is gone.
pub struct FollowedLog {
    child: std::process::Child,
    file: tempfile::NamedTempFile,
}

impl FollowedLog {
    pub fn start(env: &TestEnv, ns: &str, pod: &str) -> FollowedLog {
        let node = env.node();
        let file = tempfile::NamedTempFile::new().expect("a file for the pod's log");
        let out = file.reopen().expect("reopen the log file");
        let child = Command::new(&node.kubectl)
            .args(["logs", "--follow", "-n", ns, pod])
            .env("KUBECONFIG", &env.kubeconfig)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("run kubectl logs --follow");
        FollowedLog { child, file }
    }

    /// What the pod has logged so far.
    pub fn text(&self) -> String {
        std::fs::read_to_string(self.file.path()).unwrap_or_default()
    }

    /// Waits (up to `limit`) until the container has exited and its log stream ended.
    pub async fn wait_ended(&mut self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        false
    }
}

impl Drop for FollowedLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pre-made `local` PersistentVolumes on the node, one directory each, of a storage class only
/// this test's claims name (no StorageClass object: the binder matches PVs by class name). Drop
/// deletes the volumes and their directories.
pub struct LocalVolumes {
    env: TestEnv,
    kubectl: PathBuf,
    pub class: String,
    names: Vec<String>,
    dirs: tempfile::TempDir,
}

impl LocalVolumes {
    /// `count` volumes of `size` (e.g. "1Gi") in class `class`.
    pub fn create(env: &TestEnv, class: &str, count: usize, size: &str) -> LocalVolumes {
        let node = env.node();
        let dirs = tempfile::tempdir().expect("a directory for the volumes");
        let hostname = node_name(env, node);
        let mut names = Vec::new();
        for i in 0..count {
            let name = format!("{class}-{i}");
            let dir = dirs.path().join(&name);
            std::fs::create_dir(&dir).expect("volume directory");
            // The ingester runs as 65532; a local volume gets no fsGroup chown from the kubelet.
            std::os::unix::fs::chown(&dir, Some(65532), Some(65532)).expect("chown the volume");
            let pv = serde_json::json!({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": class,
                    "local": {"path": dir.to_string_lossy()},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [hostname]},
                    ]}]}},
                },
            });
            run(
                &node.kubectl,
                &["apply", "-f", "-"],
                env,
                Some(&pv.to_string()),
            );
            names.push(name);
        }
        LocalVolumes {
            env: env.clone(),
            kubectl: node.kubectl.clone(),
            class: class.to_string(),
            names,
            dirs,
        }
    }

    /// The directory behind volume `pv` (a claim's `spec.volumeName`).
    pub fn path(&self, pv: &str) -> PathBuf {
        self.dirs.path().join(pv)
    }
}

impl Drop for LocalVolumes {
    fn drop(&mut self) {
        let mut args = vec!["delete", "pv", "--wait=false", "--ignore-not-found"];
        args.extend(self.names.iter().map(String::as_str));
        let _ = Command::new(&self.kubectl)
            .args(&args)
            .env("KUBECONFIG", &self.env.kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The node's name, as the kubelet registered it (its `kubernetes.io/hostname` label).
fn node_name(env: &TestEnv, node: &Node) -> String {
    run(
        &node.kubectl,
        &["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"],
        env,
        None,
    )
}

/// Stops (SIGSTOP) every process of the pod's first container, found in the kubelet's pod cgroup
/// by pod UID and container ID: a hung process that can no longer upload what it acknowledged,
/// and that the kubelet can still kill. Panics if the container has no process.
pub fn stop_container(pod: &serde_json::Value) {
    let uid = pod["metadata"]["uid"].as_str().expect("pod uid");
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .and_then(|c| c.rsplit("://").next())
        .expect("the container's ID");
    let pids: Vec<String> = cgroup_procs()
        .into_iter()
        .filter(|(dir, _)| {
            dir.ends_with(id)
                && dir
                    .parent()
                    .and_then(Path::file_name)
                    .is_some_and(|p| p.to_string_lossy() == format!("pod{uid}"))
        })
        .map(|(_, pid)| pid)
        .collect();
    assert!(
        !pids.is_empty(),
        "no process of container {id} of pod {uid} in the pod cgroups"
    );
    for pid in pids {
        let ok = Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -STOP {pid}");
    }
}

/// Each process in the kubelet's pod cgroups with its cgroup directory (cgroup v1: one tree per
/// controller, the memory one holds every pod; v2: one tree).
fn cgroup_procs() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().is_some_and(|n| n == "cgroup.procs") {
                let procs = std::fs::read_to_string(&path).unwrap_or_default();
                out.extend(
                    procs
                        .split_whitespace()
                        .map(|p| (dir.to_path_buf(), p.to_string())),
                );
            }
        }
    }
    let mut out = Vec::new();
    for root in ["/sys/fs/cgroup/memory/kubepods", "/sys/fs/cgroup/kubepods"] {
        walk(Path::new(root), &mut out);
    }
    out
}

/// The processes in the kubelet's pod cgroups, as "PID in DIR", but for those of the pods whose
/// UIDs are in `others` (pods of other tests, which share the node).
pub fn pod_processes_except(others: &BTreeSet<String>) -> Vec<String> {
    cgroup_procs()
        .into_iter()
        .filter(|(dir, _)| {
            !dir.components().any(|c| {
                c.as_os_str()
                    .to_str()
                    .and_then(|name| name.strip_prefix("pod"))
                    .is_some_and(|uid| others.contains(uid))
            })
        })
        .map(|(dir, pid)| format!("{pid} in {}", dir.display()))
        .collect()
}

/// One router line per request, numbered, stamped within [`DAY`]; `status` 503 for every fifth.
pub fn router_frame(app: &str, n: u64) -> Vec<u8> {
    let (y, m, d) = DAY;
    let status = if n.is_multiple_of(5) { 503 } else { 200 };
    format!(
        "<158>1 {y}-{m}-{d}T10:{:02}:{:02}.{:06}+00:00 host heroku router - at=info method=GET path=\"/orders/{n}\" host={app}.herokuapp.com request_id=node-{n} fwd=\"198.51.100.7\" dyno=web.1 connect=1ms service=12ms status={status} bytes=512 protocol=https",
        n / 60 % 60,
        n % 60,
        n % 1_000_000
    )
    .into_bytes()
}

/// Posts Logplex requests as Logplex does: basic auth from the drain URL, the drain token.
#[derive(Clone)]
pub struct Logplex {
    pub http: reqwest::Client,
    pub password: String,
    pub tokens: BTreeMap<String, String>,
}

impl Logplex {
    /// A sender with a new connection per request (so a Service spreads them as it would many
    /// senders).
    pub fn new(password: &str, tokens: BTreeMap<String, String>) -> Logplex {
        Logplex {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .pool_max_idle_per_host(0)
                .build()
                .expect("HTTP client"),
            password: password.to_string(),
            tokens,
        }
    }

    /// POSTs `frames` for `app` to `base` (`http://IP:PORT`); returns the HTTP status (0 when
    /// the connection failed: not acknowledged).
    pub async fn post(&self, base: &str, app: &str, first: u64, frames: &[Vec<u8>]) -> u16 {
        let body = crate::ingester::logplex_body(frames);
        let res = self
            .http
            .post(format!("{base}/logplex/{app}"))
            .basic_auth("drainpipe", Some(&self.password))
            .header("Content-Type", "application/logplex-1")
            .header("Logplex-Msg-Count", frames.len().to_string())
            .header("Logplex-Frame-Id", format!("{first:032X}"))
            .header(
                "Logplex-Drain-Token",
                self.tokens.get(app).map(String::as_str).unwrap_or_default(),
            )
            .body(body)
            .send()
            .await;
        res.map(|r| r.status().as_u16()).unwrap_or(0)
    }

    /// Sends `count` numbered lines from `first` for `app`, 50 per request, and returns the
    /// request ids of the acknowledged ones (200).
    pub async fn send(&self, base: &str, app: &str, first: u64, count: u64) -> BTreeSet<String> {
        let mut acked = BTreeSet::new();
        let batch = 50;
        let mut n = first;
        while n < first + count {
            let end = (n + batch).min(first + count);
            let frames: Vec<Vec<u8>> = (n..end).map(|i| router_frame(app, i)).collect();
            if self.post(base, app, n, &frames).await == 200 {
                acked.extend((n..end).map(|i| format!("node-{i}")));
            }
            n = end;
        }
        acked
    }
}

/// The request ids of the archived router lines of `app` under `prefix`.
pub async fn archived_ids(env: &TestEnv, prefix: &str, app: &str) -> BTreeSet<String> {
    crate::ingester::archived_records(env, &format!("{prefix}{app}/"))
        .await
        .into_iter()
        .filter(|r| r["app"] == app)
        .filter_map(|r| r["request_id"].as_str().map(str::to_string))
        .collect()
}

/// Waits until every acknowledged id is archived; panics naming what is missing.
pub async fn wait_archived(env: &TestEnv, prefix: &str, app: &str, acked: &BTreeSet<String>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let archived = archived_ids(env, prefix, app).await;
        let missing: Vec<&String> = acked.difference(&archived).collect();
        if missing.is_empty() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{app}: {} of {} acknowledged lines never reached the archive, e.g. {:?}",
                missing.len(),
                acked.len(),
                &missing[..missing.len().min(5)]
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
