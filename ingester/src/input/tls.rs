//! TLS for the syslog and OTLP/gRPC listeners: rustls with the ring
//! provider, TLS 1.2 and 1.3 only, certificate and key re-read when their
//! files change.
//!
//! The files are checked (two `stat` calls) before each handshake rather
//! than by a background watcher: a new certificate is needed exactly when a
//! connection arrives, and a mounted Secret updated in place (a symlink swap)
//! changes what `stat` sees. A pair that does not load (the key written
//! before the certificate, a bad file) is logged and counted once per
//! change; the previous configuration stays until a good pair appears.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::telemetry::metrics::{Metrics, ResultLabel};

/// Which listener a certificate serves: its log lines, its reload metric
/// and the application protocols it offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsListener {
    Syslog,
    /// gRPC clients (grpc-go among them) refuse a TLS server that does not
    /// select `h2` by ALPN.
    OtlpGrpc,
}

impl TlsListener {
    fn name(self) -> &'static str {
        match self {
            TlsListener::Syslog => "syslog",
            TlsListener::OtlpGrpc => "OTLP/gRPC",
        }
    }

    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            TlsListener::Syslog => Vec::new(),
            TlsListener::OtlpGrpc => vec![b"h2".to_vec()],
        }
    }

    fn reloads(self, metrics: &Metrics) -> &Family<ResultLabel, Counter> {
        match self {
            TlsListener::Syslog => &metrics.syslog_tls_reloads,
            TlsListener::OtlpGrpc => &metrics.otlp_grpc_tls_reloads,
        }
    }
}

/// Why a certificate/key pair cannot be used. Never quotes file contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM certificate chain")]
    BadCertificate { path: PathBuf },
    #[error("{path}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    BadKey { path: PathBuf },
    #[error("certificate {cert} and key {key} do not make a TLS configuration: {reason}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// What `stat` says about a file: a change in any of these is a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

struct Current {
    /// Stamps of the files last tried, loaded or not.
    tried: (Option<Stamp>, Option<Stamp>),
    config: Arc<ServerConfig>,
}

/// The TLS configuration of a listener, following its files.
pub struct ReloadingTls {
    cert: PathBuf,
    key: PathBuf,
    listener: TlsListener,
    current: Mutex<Current>,
    metrics: Arc<Metrics>,
}

impl ReloadingTls {
    /// Load the pair once; fails at start-up when it is not usable.
    pub fn load(
        cert: &Path,
        key: &Path,
        listener: TlsListener,
        metrics: Arc<Metrics>,
    ) -> Result<ReloadingTls, TlsError> {
        let tried = (stamp(cert), stamp(key));
        let config = server_config(cert, key, listener.alpn())?;
        Ok(ReloadingTls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            listener,
            current: Mutex::new(Current { tried, config }),
            metrics,
        })
    }

    /// The configuration for the next handshake, after re-reading the files
    /// if they changed since they were last tried.
    pub fn config(&self) -> Arc<ServerConfig> {
        let now = (stamp(&self.cert), stamp(&self.key));
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if now != current.tried {
            current.tried = now;
            let listener = self.listener.name();
            match server_config(&self.cert, &self.key, self.listener.alpn()) {
                Ok(config) => {
                    current.config = config;
                    self.count("ok");
                    tracing::info!(cert = %self.cert.display(), "{listener} TLS certificate reloaded");
                }
                Err(e) => {
                    self.count("error");
                    tracing::warn!(error = %e, "{listener} TLS certificate changed but cannot be loaded; keeping the previous one");
                }
            }
        }
        Arc::clone(&current.config)
    }

    fn count(&self, result: &'static str) {
        self.listener
            .reloads(&self.metrics)
            .get_or_create(&ResultLabel { result })
            .inc();
    }
}

/// A rustls server configuration from PEM files: ring provider (chosen
/// explicitly: the AWS SDK brings aws-lc-rs too, so there is no process
/// default), TLS 1.3 and 1.2, no client certificates, offering `alpn`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::BadCertificate {
            path: cert.to_owned(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::BadKey {
        path: key.to_owned(),
    })?;
    let config_err = |reason: String| TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| config_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| config_err(e.to_string()))?;
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}
