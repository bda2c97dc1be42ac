//! `drainpipe-operator`: `crd` prints the LogDrain CRD, `run` runs the
//! controller (with leader election, metrics and health endpoints).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use drainpipe_contract::units::parse_duration;
use drainpipe_operator::controller::{self, Catalogs, Context, Settings};
use drainpipe_operator::crd::LogDrain;
use drainpipe_operator::heroku::{HerokuClient, HerokuOptions};
use drainpipe_operator::http::{self, Readiness};
use drainpipe_operator::leader::{self, LeaseConfig};
use drainpipe_operator::metrics::Metrics;
use drainpipe_operator::resources::{IngesterDefaults, IngesterPodDefaults};
use drainpipe_operator::telemetry::{self, LogFormat};
use drainpipe_operator::{crd, heroku};
use kube::api::{Api, ListParams};

#[derive(Parser)]
#[command(
    name = "drainpipe-operator",
    version,
    about = "Kubernetes operator for drainpipe LogDrains"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the LogDrain CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller.
    Run(Box<RunArgs>),
}

#[derive(Args)]
struct RunArgs {
    /// Heroku Platform API base URL.
    #[arg(long, env = "DRAINPIPE_HEROKU_API_URL", default_value = heroku::DEFAULT_BASE_URL)]
    heroku_api_url: String,

    /// Drift-check period: each LogDrain is re-verified against Heroku and
    /// Glue about this often (±10%).
    #[arg(long, env = "DRAINPIPE_RESYNC", default_value = "10m", value_parser = parse_duration)]
    resync: Duration,

    /// Share of Heroku's 4,500 requests an hour that the periodic drift
    /// checks may spend, in percent (`50` or `50%`): the time between two
    /// checks of one app stretches to fit the number of apps, and checks
    /// wait while Heroku's RateLimit-Remaining is below the rest, which is
    /// left to the account's other clients. New apps, spec changes and
    /// repairs are never paced.
    #[arg(long, env = "DRAINPIPE_HEROKU_BUDGET_SHARE", default_value = "50%", value_parser = parse_share)]
    heroku_budget_share: f64,

    /// How often a LogDrain with `autoscaling.mode: operator` is
    /// reconciled, its ingester pods' load read and its replicas decided.
    #[arg(long, env = "DRAINPIPE_AUTOSCALE_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    autoscale_interval: Duration,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "DRAINPIPE_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,

    #[arg(long, env = "DRAINPIPE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,

    /// Namespaces to watch, comma separated; all when empty.
    #[arg(
        long,
        env = "DRAINPIPE_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    namespaces: Vec<String>,

    /// Ingester image for LogDrains that name none.
    #[arg(long, env = "DRAINPIPE_INGESTER_IMAGE", default_value_t = controller::default_ingester_image())]
    ingester_image: String,

    /// Pod settings for every ingester, as JSON or YAML: imagePullPolicy,
    /// imagePullSecrets, resources, securityContext, podSecurityContext,
    /// nodeSelector, tolerations, affinity, topologySpreadConstraints,
    /// priorityClassName (the chart's `ingester.defaults`).
    #[arg(long, env = "DRAINPIPE_INGESTER_POD_DEFAULTS", default_value = "", value_parser = parse_pod_defaults)]
    ingester_pod_defaults: IngesterPodDefaults,

    /// LogDrains reconciled at once.
    #[arg(long, env = "DRAINPIPE_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,

    /// Elect a leader through a Lease so several replicas can run.
    #[arg(long, env = "DRAINPIPE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,

    /// Namespace of the leader Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "DRAINPIPE_LEADER_ELECTION_ID",
        default_value = "drainpipe-operator"
    )]
    leader_election_id: String,

    /// How long a leader's Lease is valid without renewal: a standby takes
    /// over this long after the leader stopped renewing.
    #[arg(long, env = "DRAINPIPE_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    leader_election_lease_duration: Duration,

    /// How often the leader renews its Lease (shorter than the lease duration).
    #[arg(long, env = "DRAINPIPE_LEADER_ELECTION_RENEW_PERIOD", default_value = "5s", value_parser = parse_duration)]
    leader_election_renew_period: Duration,

    /// How often a standby tries to take the Lease.
    #[arg(long, env = "DRAINPIPE_LEADER_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    leader_election_retry_period: Duration,

    /// This replica's identity in the Lease and in events (the pod name).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
}

fn parse_pod_defaults(text: &str) -> Result<IngesterPodDefaults, String> {
    IngesterPodDefaults::parse(text).map_err(|e| format!("invalid ingester pod defaults: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", crd::crd_yaml().context("serializing the CRD")?);
            Ok(())
        }
        Command::Run(args) => run(*args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    // kube links ring and the AWS SDK aws-lc-rs: rustls cannot pick a
    // process default by itself. Err only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Metrics::new();
    let ready = Readiness::default();
    let server = tokio::spawn(http::serve(
        args.metrics_addr,
        metrics.clone(),
        ready.clone(),
    ));

    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    Api::<LogDrain>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .context("listing LogDrains: is the CRD installed (drainpipe-operator crd | kubectl apply -f -) and may the operator list them?")?;
    ready.set(true);

    let heroku = HerokuClient::with_options(&args.heroku_api_url, HerokuOptions::default())
        .context("configuring the Heroku client")?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let identity = args
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("drainpipe-operator-{}", std::process::id()));
    let settings = Settings {
        resync: args.resync,
        namespaces: args
            .namespaces
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect(),
        ingester: IngesterDefaults {
            image: args.ingester_image,
            pod: args.ingester_pod_defaults,
        },
        concurrency: args.concurrency,
        instance: Some(identity.clone()),
        autoscale_interval: args.autoscale_interval,
        heroku_budget_share: args.heroku_budget_share,
        ..Settings::default()
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        heroku,
        Catalogs::per_region(aws),
        metrics.clone(),
        settings,
    ));

    let lease = if args.leader_election {
        Some(
            LeaseConfig::new(
                args.leader_election_namespace,
                args.leader_election_id,
                identity,
            )
            .with_timing(
                args.leader_election_lease_duration,
                args.leader_election_renew_period,
                args.leader_election_retry_period,
            )?,
        )
    } else {
        None
    };
    if let Some(lease) = &lease {
        leader::acquire(&client, lease).await;
        metrics.leader.set(1);
    }

    let shutdown = async {
        // Kubernetes stops pods with SIGTERM; a person at a terminal uses ^C.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let result = match &lease {
        Some(lease) => {
            tokio::select! {
                () = controller::run(ctx, shutdown) => Ok(()),
                lost = leader::hold(&client, lease) => Err(anyhow::Error::new(lost)),
                r = server => Err(anyhow::anyhow!("metrics server stopped: {r:?}")),
            }
        }
        None => {
            tokio::select! {
                () = controller::run(ctx, shutdown) => Ok(()),
                r = server => Err(anyhow::anyhow!("metrics server stopped: {r:?}")),
            }
        }
    };
    if let Some(lease) = &lease {
        metrics.leader.set(0);
        if result.is_ok() {
            leader::release(&client, lease).await;
        }
    }
    result
}

/// A share in percent, `50` or `50%`, as a fraction: more than 0, at most
/// 100.
fn parse_share(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%').trim();
    let percent: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage: write e.g. 50 or 50%"))?;
    if !(percent > 0.0 && percent <= 100.0) {
        return Err(format!(
            "{text:?} is out of range: the share is more than 0% and at most 100%"
        ));
    }
    Ok(percent / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_share_is_a_percentage() {
        assert_eq!(parse_share("50%"), Ok(0.5));
        assert_eq!(parse_share("25"), Ok(0.25));
        assert_eq!(parse_share("100%"), Ok(1.0));
        assert!(parse_share("0").unwrap_err().contains("more than 0%"));
        assert!(parse_share("150%").is_err());
        assert!(parse_share("half").unwrap_err().contains("50%"));
        let cli = Cli::try_parse_from(["drainpipe-operator", "run"]).expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        assert_eq!(args.heroku_budget_share, 0.5);
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "drainpipe-operator",
            "run",
            "--namespaces",
            "a,b",
            "--resync",
            "5m",
            "--leader-election",
            "false",
        ])
        .expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        assert_eq!(args.namespaces, ["a", "b"]);
        assert_eq!(args.resync, Duration::from_secs(300));
        assert!(!args.leader_election);
        assert_eq!(args.leader_election_lease_duration, Duration::from_secs(15));
        assert_eq!(args.ingester_pod_defaults, IngesterPodDefaults::default());
    }

    #[test]
    fn leader_timing_and_pod_defaults_parse() {
        let cli = Cli::try_parse_from([
            "drainpipe-operator",
            "run",
            "--leader-election-lease-duration",
            "30s",
            "--leader-election-renew-period",
            "10s",
            "--leader-election-retry-period",
            "3s",
            "--ingester-pod-defaults",
            r#"{"imagePullPolicy": "Always", "priorityClassName": "logs"}"#,
        ])
        .expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        assert_eq!(args.leader_election_renew_period, Duration::from_secs(10));
        assert_eq!(args.leader_election_retry_period, Duration::from_secs(3));
        assert_eq!(
            args.ingester_pod_defaults.priority_class_name.as_deref(),
            Some("logs")
        );

        let err = Cli::try_parse_from([
            "drainpipe-operator",
            "run",
            "--ingester-pod-defaults",
            r#"{"nodeSelecter": {}}"#,
        ])
        .err()
        .expect("a typo is refused")
        .to_string();
        assert!(err.contains("unknown field `nodeSelecter`"), "{err}");
    }
}
