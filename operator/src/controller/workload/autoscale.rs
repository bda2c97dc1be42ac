//! Load-based scaling of the ingesters (`spec.ingester.autoscaling.mode:
//! operator`): how many pods the load asks for, as a pure function of what
//! the pods' `/metrics` said. The reads come from the one GET per pod that
//! feeds `ArchiveFresh` (freshness.rs); scaling.rs applies the decision.
//!
//! Counters only mean something as a change over time, so each pod's
//! previous read is kept (in the operator's memory, per LogDrain) and a rate
//! is the difference of two reads over the time between them. A counter
//! lower than before means the ingester process started again (a restarted
//! container keeps its pod name): it counted from zero, as Prometheus'
//! `rate()` takes it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use drainpipe_contract::units::{parse_duration, parse_size};

use crate::controller::status::writable::parse_labels;
use crate::crd::IngesterAutoscaling;

/// What one ingester pod's exposition says about its load.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LoadSample {
    /// `drainpipe_messages_total`: messages parsed into archive objects.
    pub(crate) messages: f64,
    /// `drainpipe_received_bytes_total` + `drainpipe_syslog_received_bytes_total`.
    pub(crate) bytes: f64,
    /// Requests refused for want of room: HTTP 503, and gRPC `UNAVAILABLE`
    /// or `RESOURCE_EXHAUSTED` (the same refusal over OTLP/gRPC).
    pub(crate) refused: f64,
    /// `drainpipe_wal_bytes` and `drainpipe_wal_max_bytes`.
    pub(crate) wal_bytes: Option<f64>,
    pub(crate) wal_max_bytes: Option<f64>,
}

impl LoadSample {
    /// How full the write-ahead log is, 0 to 1.
    fn wal_fill(&self) -> Option<f64> {
        let (used, max) = (self.wal_bytes?, self.wal_max_bytes?);
        (max > 0.0).then(|| used / max)
    }
}

/// The load figures in a Prometheus text exposition; `None` when it is not
/// an ingester's (no `drainpipe_messages_total`).
pub(crate) fn parse_load(text: &str) -> Option<LoadSample> {
    let mut s = LoadSample::default();
    let mut seen = false;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
            None => (series, Default::default()),
        };
        let label = |k: &str| labels.get(k).map(String::as_str);
        match name {
            "drainpipe_messages_total" => {
                s.messages = value;
                seen = true;
            }
            "drainpipe_received_bytes_total" | "drainpipe_syslog_received_bytes_total" => {
                s.bytes += value;
            }
            "drainpipe_http_requests_total" if label("status") == Some("503") => {
                s.refused += value;
            }
            "drainpipe_grpc_requests_total"
                if matches!(label("code"), Some("UNAVAILABLE" | "RESOURCE_EXHAUSTED")) =>
            {
                s.refused += value;
            }
            "drainpipe_wal_bytes" => s.wal_bytes = Some(value),
            "drainpipe_wal_max_bytes" => s.wal_max_bytes = Some(value),
            _ => {}
        }
    }
    seen.then_some(s)
}

/// Per-second rates between two reads of one pod.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Rates {
    pub(crate) messages: f64,
    pub(crate) bytes: f64,
    pub(crate) refused: f64,
}

/// The rates from `prev` (read at `prev_at`) to `cur` (read at `at`);
/// `None` when no time passed.
pub(crate) fn rates(
    prev: &LoadSample,
    prev_at: Instant,
    cur: &LoadSample,
    at: Instant,
) -> Option<Rates> {
    let dt = at.checked_duration_since(prev_at)?.as_secs_f64();
    if dt <= 0.0 {
        return None;
    }
    // A counter below its last value restarted from zero.
    let per_second = |before: f64, now: f64| if now >= before { now - before } else { now } / dt;
    Some(Rates {
        messages: per_second(prev.messages, cur.messages),
        bytes: per_second(prev.bytes, cur.bytes),
        refused: per_second(prev.refused, cur.refused),
    })
}

/// One read of one ready ingester pod.
#[derive(Clone, Debug)]
pub(crate) struct PodRead {
    pub(crate) pod: String,
    /// The pod's uid: a pod of the same name with another uid is another
    /// pod (a StatefulSet's), whose counters started afresh.
    pub(crate) uid: String,
    pub(crate) at: Instant,
    pub(crate) load: LoadSample,
}

/// What the operator remembers of one pod between reconciles.
#[derive(Clone, Debug)]
pub(crate) struct PodMemory {
    uid: String,
    read: LoadSample,
    at: Instant,
    rates: Option<Rates>,
}

/// One pod as the decision sees it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PodLoad {
    pub(crate) pod: String,
    /// `None` until the pod was read twice.
    pub(crate) rates: Option<Rates>,
    pub(crate) wal_fill: Option<f64>,
}

/// Folds this reconcile's reads into each pod's memory and returns the
/// pods' loads. A read less than `min_gap` after the one remembered keeps
/// the remembered read and rates (reconciles can come in quick succession,
/// and a rate over milliseconds is noise); pods not read are forgotten.
pub(crate) fn update_loads(
    memory: &mut HashMap<String, PodMemory>,
    reads: &[PodRead],
    min_gap: Duration,
) -> Vec<PodLoad> {
    memory.retain(|pod, _| reads.iter().any(|r| &r.pod == pod));
    let mut loads = Vec::with_capacity(reads.len());
    for read in reads {
        let remembered = memory.get(&read.pod).filter(|m| m.uid == read.uid);
        let entry = match remembered {
            Some(m) if read.at.saturating_duration_since(m.at) < min_gap => m.clone(),
            Some(m) => PodMemory {
                uid: read.uid.clone(),
                read: read.load.clone(),
                at: read.at,
                rates: rates(&m.read, m.at, &read.load, read.at),
            },
            None => PodMemory {
                uid: read.uid.clone(),
                read: read.load.clone(),
                at: read.at,
                rates: None,
            },
        };
        loads.push(PodLoad {
            pod: read.pod.clone(),
            rates: entry.rates,
            // The gauge is the newest figure whatever the gap.
            wal_fill: read.load.wal_fill(),
        });
        memory.insert(read.pod.clone(), entry);
    }
    loads
}

/// `spec.ingester.autoscaling` in the decision's terms.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Policy {
    pub(crate) min: i32,
    pub(crate) max: i32,
    pub(crate) target_messages: Option<f64>,
    pub(crate) target_bytes: Option<f64>,
    /// 0 to 1.
    pub(crate) wal_fill: f64,
    pub(crate) refused_per_second: f64,
    pub(crate) scale_down_window: Duration,
}

impl Policy {
    /// The policy of a spec. The CRD's patterns admit only values these
    /// parsers take; an overflowing one falls back to the default window or
    /// no byte target, with a warning.
    pub(crate) fn of(a: &IngesterAutoscaling) -> Policy {
        let window = parse_duration(&a.scale_down_stabilization).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "autoscaling.scaleDownStabilization: using 5m");
            Duration::from_secs(300)
        });
        let bytes = a.target_bytes_per_second.as_deref().and_then(|t| {
            parse_size(t)
                .map_err(|e| tracing::warn!(error = %e, "autoscaling.targetBytesPerSecond ignored"))
                .ok()
        });
        Policy {
            min: a.min_replicas.max(1),
            max: a.max_replicas.max(a.min_replicas.max(1)),
            target_messages: a
                .target_messages_per_second
                .filter(|t| *t > 0)
                .map(|t| t as f64),
            target_bytes: bytes.filter(|b| *b > 0).map(|b| b as f64),
            wal_fill: f64::from(a.wal_fill_percent.clamp(1, 100)) / 100.0,
            refused_per_second: a.http503_per_second.max(0.0),
            scale_down_window: window,
        }
    }
}

/// Everything a decision depends on.
#[derive(Debug)]
pub(crate) struct Inputs<'a> {
    pub(crate) policy: &'a Policy,
    /// The Deployment's replicas now.
    pub(crate) current: i32,
    /// The ready pods read this reconcile (terminating ones left out).
    pub(crate) pods: &'a [PodLoad],
    /// Pods being deleted, still flushing their log to the archive.
    pub(crate) flushing: usize,
    /// Earlier recommendations, when they were made.
    pub(crate) history: &'a [(Instant, i32)],
    pub(crate) now: Instant,
}

/// The replicas to run, and why, with the numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) desired: i32,
    /// What the load alone asks for now (after min, max and flushing),
    /// before the scale-down window: what the history keeps.
    pub(crate) recommendation: i32,
    pub(crate) reason: String,
}

/// A usage this close to the target (10 %, as the HorizontalPodAutoscaler
/// takes it) keeps the replicas, so a load near a boundary does not flap.
const TOLERANCE: f64 = 0.1;

/// How many pods the load asks for.
pub(crate) fn decide(i: &Inputs<'_>) -> Decision {
    let p = i.policy;
    let rated: Vec<&Rates> = i.pods.iter().filter_map(|l| l.rates.as_ref()).collect();
    let n = rated.len();
    let mut notes: Vec<String> = Vec::new();
    let mut raw = i.current;
    if n > 0 {
        let total = |f: fn(&Rates) -> f64| rated.iter().map(|r| f(r)).sum::<f64>();
        let mut wanted: Option<i32> = None;
        let mut figure = |total: f64, target: f64, what: String| {
            let ratio = if i.current > 0 {
                total / (f64::from(i.current) * target)
            } else {
                f64::INFINITY
            };
            let want = if (ratio - 1.0).abs() <= TOLERANCE {
                i.current
            } else {
                (total / target).ceil().min(f64::from(i32::MAX)) as i32
            };
            wanted = Some(wanted.map_or(want, |w| w.max(want)));
            notes.push(what);
        };
        if let Some(t) = p.target_messages {
            let m = total(|r| r.messages);
            figure(
                m,
                t,
                format!(
                    "{} msg/s over {n} {}, target {} per pod",
                    thousands(m),
                    pods(n),
                    thousands(t)
                ),
            );
        }
        if let Some(t) = p.target_bytes {
            let b = total(|r| r.bytes);
            figure(
                b,
                t,
                format!(
                    "{}/s over {n} {}, target {}/s per pod",
                    size(b),
                    pods(n),
                    size(t)
                ),
            );
        }
        if let Some(w) = wanted {
            raw = w;
        }
        if n < i.pods.len() {
            // A pod read once has no rate yet: its share is unknown, so
            // this read cannot tell that fewer pods would do.
            raw = raw.max(i.current);
            notes.push(format!(
                "{} of {} pods not read twice yet",
                i.pods.len() - n,
                i.pods.len()
            ));
        }
    } else {
        notes.push(if i.pods.is_empty() {
            "no ingester pod answered on /metrics".to_string()
        } else {
            "no rates yet (each pod is read twice first)".to_string()
        });
    }

    // Pressure: more pods take the load off a pod that cannot keep up.
    let mut pressure = Vec::new();
    for l in i.pods {
        if let Some(fill) = l.wal_fill.filter(|f| *f > p.wal_fill) {
            pressure.push(format!(
                "write-ahead log of {} at {:.0}% of its bound (over {:.0}%)",
                l.pod,
                fill * 100.0,
                p.wal_fill * 100.0
            ));
        }
        if let Some(r) = l.rates.filter(|r| r.refused > p.refused_per_second) {
            pressure.push(format!(
                "{} refused {:.2} requests/s with 503 (over {})",
                l.pod, r.refused, p.refused_per_second
            ));
        }
    }
    if !pressure.is_empty() {
        raw = raw.max(i.current.saturating_add(1));
        notes.extend(pressure);
    }

    let lower = p
        .min
        .max(i32::try_from(i.flushing).unwrap_or(i32::MAX))
        .min(p.max);
    let recommendation = raw.clamp(lower, p.max);
    if raw > p.max {
        notes.push(format!("capped at maxReplicas {}", p.max));
    } else if raw < lower {
        if lower > p.min {
            notes.push(format!("{} pods still flushing", i.flushing));
        } else {
            notes.push(format!("minReplicas {}", p.min));
        }
    }

    let desired = if recommendation >= i.current {
        recommendation
    } else {
        let since = i.now.checked_sub(p.scale_down_window);
        let highest = i
            .history
            .iter()
            .filter(|(at, _)| since.is_none_or(|s| *at >= s))
            .map(|(_, r)| *r)
            .chain([recommendation])
            .max()
            .unwrap_or(recommendation);
        let held = highest.min(i.current).min(p.max);
        if held > recommendation {
            notes.push(format!(
                "held at {held} by the highest recommendation within {}s",
                p.scale_down_window.as_secs()
            ));
        }
        held.max(recommendation)
    };
    Decision {
        desired,
        recommendation,
        reason: format!("{} -> {desired}: {}", i.current, notes.join("; ")),
    }
}

fn pods(n: usize) -> &'static str {
    if n == 1 { "pod" } else { "pods" }
}

/// `41200.4` as `41,200`.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in binary units, one decimal.
fn size(v: f64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if v < 1024.0 {
        return format!("{v:.0} B");
    }
    let mut v = v / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: &str = include_str!("../../../testdata/ingester-metrics/idle.prom");
    const BUSY: &str = include_str!("../../../testdata/ingester-metrics/busy.prom");
    const AFTER: &str = include_str!("../../../testdata/ingester-metrics/after-load.prom");
    const SMALL_BUSY: &str = include_str!("../../../testdata/ingester-metrics/small-wal-busy.prom");
    const SMALL_503: &str = include_str!("../../../testdata/ingester-metrics/small-wal-503.prom");

    fn load(text: &str) -> LoadSample {
        parse_load(text).expect("an ingester's exposition")
    }

    fn policy() -> Policy {
        Policy {
            min: 1,
            max: 10,
            target_messages: Some(2_000.0),
            target_bytes: None,
            wal_fill: 0.5,
            refused_per_second: 0.05,
            scale_down_window: Duration::from_secs(300),
        }
    }

    fn read(pod: &str, at: Instant, text: &str) -> PodRead {
        PodRead {
            pod: pod.to_string(),
            uid: format!("uid-{pod}"),
            at,
            load: load(text),
        }
    }

    /// Two reads `gap` apart of the same pod, as loads.
    fn loads_between(first: &str, second: &str, gap: Duration) -> Vec<PodLoad> {
        let t0 = Instant::now();
        let mut memory = HashMap::new();
        let first = update_loads(
            &mut memory,
            &[read("ing-a", t0, first)],
            Duration::from_secs(1),
        );
        assert_eq!(first[0].rates, None, "one read gives no rate");
        update_loads(
            &mut memory,
            &[read("ing-a", t0 + gap, second)],
            Duration::from_secs(1),
        )
    }

    fn decide_with(
        p: &Policy,
        current: i32,
        pods: &[PodLoad],
        history: &[(Instant, i32)],
        now: Instant,
    ) -> Decision {
        decide(&Inputs {
            policy: p,
            current,
            pods,
            flushing: 0,
            history,
            now,
        })
    }

    #[test]
    fn the_load_figures_are_read_from_a_real_exposition() {
        let idle = load(IDLE);
        assert_eq!(idle.messages, 0.0);
        assert_eq!(idle.wal_max_bytes, Some(1_073_741_824.0));
        let busy = load(BUSY);
        assert_eq!(busy.messages, 25_558.0);
        assert_eq!(busy.bytes, 9_306_486.0);
        assert_eq!(busy.refused, 0.0);
        assert_eq!(busy.wal_bytes, Some(9_437_300.0));
        let refused = load(SMALL_503);
        assert_eq!(refused.refused, 4.0);
        assert!((refused.wal_fill().expect("fill") - 2_380_632.0 / 4_194_304.0).abs() < 1e-9);
        assert_eq!(parse_load("# HELP x\nprocess_cpu_seconds_total 3\n"), None);
    }

    #[test]
    fn rates_are_counter_deltas_over_time_and_a_restart_counts_from_zero() {
        let t0 = Instant::now();
        let r = rates(&load(IDLE), t0, &load(BUSY), t0 + Duration::from_secs(3)).expect("rates");
        assert!((r.messages - 25_558.0 / 3.0).abs() < 1e-6, "{r:?}");
        assert!((r.bytes - 9_306_486.0 / 3.0).abs() < 1e-6);
        // The pod's process restarted between the reads: its counters are
        // back near zero, which is what it counted since.
        let r = rates(&load(AFTER), t0, &load(BUSY), t0 + Duration::from_secs(2)).expect("rates");
        assert!((r.messages - 25_558.0 / 2.0).abs() < 1e-6, "{r:?}");
        assert_eq!(rates(&load(IDLE), t0, &load(BUSY), t0), None);
    }

    #[test]
    fn memory_keeps_one_read_per_pod_and_forgets_pods_gone() {
        let t0 = Instant::now();
        let gap = Duration::from_secs(1);
        let mut memory = HashMap::new();
        update_loads(
            &mut memory,
            &[read("a", t0, IDLE), read("b", t0, IDLE)],
            gap,
        );
        // Read again too soon: no rate from milliseconds.
        let soon = update_loads(
            &mut memory,
            &[read("a", t0 + Duration::from_millis(10), BUSY)],
            gap,
        );
        assert_eq!(soon[0].rates, None);
        assert!(!memory.contains_key("b"), "b is gone");
        let later = update_loads(
            &mut memory,
            &[read("a", t0 + Duration::from_secs(3), BUSY)],
            gap,
        );
        assert!(later[0].rates.is_some_and(|r| r.messages > 8_000.0));
        // Same name, another pod (a StatefulSet's new pod): starts afresh.
        let mut other = read("a", t0 + Duration::from_secs(6), AFTER);
        other.uid = "uid-new".to_string();
        assert_eq!(update_loads(&mut memory, &[other], gap)[0].rates, None);
    }

    #[test]
    fn load_over_the_target_scales_up_at_once_with_the_numbers() {
        let pods = loads_between(IDLE, BUSY, Duration::from_secs(3));
        // 25,558 messages in 3 s: 8,519 msg/s; 2,000 per pod wants 5.
        let d = decide_with(&policy(), 1, &pods, &[], Instant::now());
        assert_eq!(d.desired, 5, "{d:?}");
        assert_eq!(
            d.reason,
            "1 -> 5: 8,519 msg/s over 1 pod, target 2,000 per pod"
        );

        let mut capped = policy();
        capped.max = 3;
        let d = decide_with(&capped, 1, &pods, &[], Instant::now());
        assert_eq!(d.desired, 3);
        assert!(
            d.reason.ends_with("capped at maxReplicas 3"),
            "{}",
            d.reason
        );

        let mut by_bytes = policy();
        by_bytes.target_messages = Some(100_000.0);
        by_bytes.target_bytes = Some(1024.0 * 1024.0);
        let d = decide_with(&by_bytes, 1, &pods, &[], Instant::now());
        // 3.0 MiB/s over a 1 MiB/s target: 3 pods, the larger figure wins.
        assert_eq!(d.desired, 3, "{d:?}");
        assert!(
            d.reason
                .contains("3.0 MiB/s over 1 pod, target 1.0 MiB/s per pod"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn near_the_target_nothing_changes() {
        let pods = loads_between(IDLE, BUSY, Duration::from_secs(3));
        let mut p = policy();
        // 8,519 msg/s on 4 pods of 2,200: 97 % of capacity.
        p.target_messages = Some(2_200.0);
        assert_eq!(decide_with(&p, 4, &pods, &[], Instant::now()).desired, 4);
    }

    #[test]
    fn scale_down_waits_for_the_window_and_never_goes_below_min() {
        let now = Instant::now();
        let idle = loads_between(BUSY, AFTER, Duration::from_secs(2));
        let mut p = policy();
        p.min = 2;
        // 10,566 messages parsed in those 2 s after the load stopped: 5,283
        // msg/s, 3 pods; a recommendation of 5 a minute ago holds 5.
        let history = [(now - Duration::from_secs(60), 5)];
        let d = decide_with(&p, 5, &idle, &history, now);
        assert_eq!((d.desired, d.recommendation), (5, 3), "{d:?}");
        // The window passed: down to what the load asks.
        let d = decide_with(&p, 5, &idle, &history, now + Duration::from_secs(300));
        assert_eq!(d.desired, 3, "{d:?}");
        assert_eq!(
            d.reason,
            "5 -> 3: 5,283 msg/s over 1 pod, target 2,000 per pod"
        );
        // No load at all: minReplicas.
        let t0 = Instant::now();
        let mut memory = HashMap::new();
        update_loads(&mut memory, &[read("a", t0, AFTER)], Duration::ZERO);
        let quiet = update_loads(
            &mut memory,
            &[read("a", t0 + Duration::from_secs(5), AFTER)],
            Duration::ZERO,
        );
        let d = decide_with(&p, 5, &quiet, &[], now);
        assert_eq!(d.desired, 2);
        assert!(
            d.reason.starts_with("5 -> 2: 0 msg/s over 1 pod"),
            "{}",
            d.reason
        );
        assert!(d.reason.ends_with("minReplicas 2"), "{}", d.reason);
    }

    #[test]
    fn never_below_the_pods_still_flushing() {
        let t0 = Instant::now();
        let mut memory = HashMap::new();
        update_loads(&mut memory, &[read("a", t0, AFTER)], Duration::ZERO);
        let quiet = update_loads(
            &mut memory,
            &[read("a", t0 + Duration::from_secs(5), AFTER)],
            Duration::ZERO,
        );
        let d = decide(&Inputs {
            policy: &policy(),
            current: 6,
            pods: &quiet,
            flushing: 4,
            history: &[],
            now: t0,
        });
        assert_eq!(d.desired, 4, "{d:?}");
        assert!(d.reason.ends_with("4 pods still flushing"), "{}", d.reason);
    }

    #[test]
    fn a_filling_log_or_503s_ask_for_one_more_pod() {
        // The small log's ingester, 2 s between the reads: 4 requests
        // refused with 503 and its log at 57 % of the bound.
        let pods = loads_between(SMALL_BUSY, SMALL_503, Duration::from_secs(2));
        let mut p = policy();
        p.target_messages = Some(1_000_000.0);
        let d = decide_with(&p, 2, &pods, &[], Instant::now());
        assert_eq!(d.desired, 3, "{d:?}");
        assert!(
            d.reason
                .contains("write-ahead log of ing-a at 57% of its bound (over 50%)"),
            "{}",
            d.reason
        );
        assert!(
            d.reason
                .contains("ing-a refused 2.00 requests/s with 503 (over 0.05)"),
            "{}",
            d.reason
        );
        // Under both thresholds: the load decides alone (1 pod).
        p.wal_fill = 0.6;
        p.refused_per_second = 5.0;
        assert_eq!(
            decide_with(&p, 2, &pods, &[], Instant::now()).recommendation,
            1
        );
    }

    #[test]
    fn without_rates_the_replicas_only_move_into_min_and_max() {
        let t0 = Instant::now();
        let mut memory = HashMap::new();
        let once = update_loads(&mut memory, &[read("a", t0, BUSY)], Duration::ZERO);
        let mut p = policy();
        p.min = 2;
        let d = decide_with(&p, 1, &once, &[], t0);
        assert_eq!(d.desired, 2);
        assert_eq!(
            d.reason,
            "1 -> 2: no rates yet (each pod is read twice first); minReplicas 2"
        );
        assert_eq!(decide_with(&p, 4, &[], &[], t0).desired, 4);
        assert_eq!(decide_with(&p, 12, &[], &[], t0).desired, 10);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(41_200.4), "41,200");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
        assert_eq!(size(512.0), "512 B");
        assert_eq!(size(5.0 * 1024.0 * 1024.0), "5.0 MiB");
    }
}
