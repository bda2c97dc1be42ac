//! Helpers for the integration tests: run the real `drainpipe-ingester`
//! binary on a free loopback port, post Logplex bodies, read the archive.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use drainpipe_testenv::TestEnv;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "d.01234567-89ab-cdef-0123-456789abcdef";

/// A running ingester process.
pub struct Ingester {
    child: Child,
    pub addr: SocketAddr,
    pub base: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Ingester {
    /// Start with `args` (plus `--listen 127.0.0.1:0`); panics with the
    /// process output when it does not come up.
    pub fn start(args: &[String], envs: &[(&str, &str)]) -> Ingester {
        match Self::try_start(args, envs) {
            Ok(i) => i,
            Err(out) => panic!("ingester did not start:\n{out}"),
        }
    }

    /// Start, or return everything the process printed when it exits first.
    pub fn try_start(args: &[String], envs: &[(&str, &str)]) -> Result<Ingester, String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_drainpipe-ingester"));
        if !args.iter().any(|a| a == "--listen") {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        cmd.args(args);
        // Never let the developer's environment configure the process under test.
        for (k, _) in std::env::vars() {
            if k.starts_with("DRAINPIPE_") || k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("DRAINPIPE_LOG", "info,drainpipe_ingester=debug");
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn drainpipe-ingester");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for (stream, tx) in [
            (Box::new(stdout) as Box<dyn Read + Send>, Some(tx)),
            (Box::new(stderr) as Box<dyn Read + Send>, None),
        ] {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    logs.lock().expect("logs").push(line.clone());
                    if let Some(tx) = &tx
                        && let Some(rest) = line.split("listening on http://").nth(1)
                    {
                        let addr = rest.split(',').next().unwrap_or("");
                        if let Ok(addr) = addr.parse() {
                            let _ = tx.send(addr);
                        }
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(50)) {
                return Ok(Ingester {
                    child,
                    addr,
                    base: format!("http://{addr}"),
                    logs,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                let out = logs.lock().expect("logs").join("\n");
                return Err(format!("exited with {status}\n{out}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = logs.lock().expect("logs").join("\n");
                return Err(format!("no listening line within 30 s\n{out}"));
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// The address the ingester logged right after `marker`, e.g. a
    /// second listener's (`"syslog drains on tcp://"`).
    pub async fn logged_addr(&self, marker: &str) -> SocketAddr {
        eventually(Duration::from_secs(10), marker, || {
            self.logs().lines().find_map(|l| {
                let rest = l.split(marker).nth(1)?;
                rest.split(' ').next()?.parse().ok()
            })
        })
        .await
    }

    /// SIGTERM, then wait for the exit (at most `within`).
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        sigterm(self.child.id());
        self.wait(within)
    }

    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "ingester did not exit within {within:?}; logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

/// `kill -TERM pid`: what the kubelet sends a container it stops.
pub fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid} failed");
}

impl Drop for Ingester {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A temp dir with `archive/` and `data/`, and the flags that use them.
pub struct Dirs {
    pub root: tempfile::TempDir,
}

impl Dirs {
    pub fn new() -> Dirs {
        Dirs {
            root: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn archive(&self) -> PathBuf {
        self.root.path().join("archive")
    }
    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }
    /// A folder archive "outage": its directory replaced by a plain file,
    /// so every object write fails (even for root) and the log must hold all.
    ///
    /// The running ingester may re-create the directory between the removal
    /// and the write (an upload or probe calls `create_dir_all`), or write
    /// into it while it is being removed, so this tries again until the
    /// plain file is in place.
    pub fn block_archive(&self) {
        let path = self.archive();
        for _ in 0..100 {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // An object or probe written into the folder while it was
                // being emptied: empty it again.
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => continue,
                Err(e) => panic!("rm archive: {e}"),
            }
            match std::fs::write(&path, "not a directory") {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => continue,
                Err(e) => panic!("block archive: {e}"),
            }
        }
        panic!(
            "block archive: the ingester kept re-creating {}",
            path.display()
        );
    }
    /// End the outage of [`Dirs::block_archive`].
    pub fn unblock_archive(&self) {
        std::fs::remove_file(self.archive()).expect("unblock archive");
        // The ingester may already have re-created it: that is fine too.
        std::fs::create_dir_all(self.archive()).expect("mkdir archive");
    }
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "--archive".to_owned(),
            format!("file://{}", self.archive().display()),
            "--data-dir".to_owned(),
            self.data().display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }
    pub fn wal_bytes(&self) -> u64 {
        std::fs::read_dir(self.data())
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// One octet-counted frame: the count includes the trailing newline.
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = format!("{} ", msg.len() + 1).into_bytes();
    out.extend_from_slice(msg);
    out.push(b'\n');
    out
}

pub fn body(msgs: &[Vec<u8>]) -> Vec<u8> {
    msgs.iter().flat_map(|m| frame(m)).collect()
}

/// An app line as Heroku sends it on HTTPS drains (no STRUCTURED-DATA).
pub fn app_line(text: &str) -> Vec<u8> {
    format!("<190>1 2026-06-17T12:00:00.123456+00:00 host app web.1 - {text}").into_bytes()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// POST a Logplex body the way Logplex does.
pub async fn post(
    client: &reqwest::Client,
    base: &str,
    app: &str,
    password: Option<&str>,
    frame_id: Option<&str>,
    msgs: &[Vec<u8>],
) -> reqwest::Response {
    let mut req = client
        .post(format!("{base}/logplex/{app}"))
        .header("Content-Type", "application/logplex-1")
        .header("Logplex-Msg-Count", msgs.len().to_string())
        .header("Logplex-Drain-Token", TOKEN)
        .body(body(msgs));
    if let Some(f) = frame_id {
        req = req.header("Logplex-Frame-Id", f);
    }
    if let Some(p) = password {
        req = req.basic_auth("user", Some(p));
    }
    req.send().await.expect("request")
}

/// Every record in a folder archive, by object key.
pub fn read_archive(root: &Path) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd {
            let path = e.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".json.gz") {
                let key = path
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                out.insert(
                    key,
                    gunzip_lines(&std::fs::read(&path).expect("read object")),
                );
            }
        }
    }
    out
}

pub fn gunzip_lines(gz: &[u8]) -> Vec<serde_json::Value> {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(gz)
        .read_to_string(&mut text)
        .expect("valid gzip of UTF-8 JSON lines");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

pub fn all_records(root: &Path) -> Vec<serde_json::Value> {
    read_archive(root).into_values().flatten().collect()
}

/// Poll `f` until it returns Some, for at most `within`.
pub async fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A metric's value from the `/metrics` text.
pub async fn metric(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// The S3 side of the test environment, from the one loader every crate's
/// tests use (`drainpipe-testenv`): it fails, never skips, when the servers
/// `scripts/testenv up` starts are not there.
#[derive(Debug, Clone)]
pub struct S3Env {
    pub endpoint: String,
    pub bucket: String,
    env: TestEnv,
}

impl S3Env {
    pub fn require() -> S3Env {
        let env = TestEnv::require();
        S3Env {
            endpoint: env.s3_endpoint.clone(),
            bucket: env.bucket.clone(),
            env,
        }
    }

    /// The environment variables the ingester needs, with `endpoint`.
    pub fn ingester_env<'a>(&'a self, endpoint: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("AWS_ENDPOINT_URL_S3", endpoint),
            ("AWS_REGION", &self.env.region),
            ("AWS_ACCESS_KEY_ID", &self.env.access_key),
            ("AWS_SECRET_ACCESS_KEY", &self.env.secret_key),
        ]
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        self.env.s3_client()
    }

    /// Every record under `prefix`, by key.
    pub async fn read(&self, prefix: &str) -> BTreeMap<String, Vec<serde_json::Value>> {
        let s3 = self.client();
        let mut out = BTreeMap::new();
        let mut pages = s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.expect("list objects");
            for obj in page.contents() {
                let key = obj.key().expect("key").to_owned();
                // The write probe (`_drainpipe-probe/`) is no archive object.
                if !key.ends_with(".json.gz") {
                    continue;
                }
                let body = s3
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                    .expect("get object")
                    .body
                    .collect()
                    .await
                    .expect("object body")
                    .into_bytes();
                out.insert(key, gunzip_lines(&body));
            }
        }
        out
    }
}
