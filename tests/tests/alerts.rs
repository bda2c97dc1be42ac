//! Alert rules end to end: the real ingester (in-process, archiving to MinIO) with rules in its
//! routes file, posting to the fake Slack (`drainpipe_tests::slack_fake`) and to the test
//! environment's real Alertmanager.
//!
//! What a user checks: the channel shows exactly the lines the rule describes (counted against
//! the archive, which holds every line), grouped and paced as configured, within Slack's limits;
//! Slack's 429 and its refusals are respected; rules reload without a restart; Alertmanager shows
//! the alerts with their labels and resolves them once the lines stop.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use drainpipe_ingester::samples::LogplexGen;
use drainpipe_tests::env::TestEnv;
use drainpipe_tests::ingester::{InProcessIngester, archived_records};
use drainpipe_tests::slack_fake::{SlackFake, SlackPost};
use serde_json::Value;

const TOKEN: &str = "d.01234567-89ab-cdef-0123-456789abcdef";
const PASSWORD: &str = "alerts-test-password";

/// A routes file for `apps` with `alerts` (YAML list items, already indented for the key).
fn routes(apps: &[&str], alerts: &str) -> String {
    let mut text = String::from("apps:\n");
    for app in apps {
        text.push_str(&format!("  {app}:\n    password: {PASSWORD}\n"));
    }
    if !alerts.is_empty() {
        text.push_str("alerts:\n");
        text.push_str(alerts);
    }
    text
}

async fn start(env: &TestEnv, prefix: &str, routes_file: &Path) -> InProcessIngester {
    InProcessIngester::start_s3_as(
        env,
        prefix,
        env.root_credentials(),
        &[
            "--routes".to_owned(),
            routes_file.display().to_string(),
            "--flush-interval".to_owned(),
            "1s".to_owned(),
        ],
    )
    .await
}

async fn post(ingester: &InProcessIngester, app: &str, lines: &[String]) {
    for chunk in lines.chunks(100) {
        let frames: Vec<Vec<u8>> = chunk.iter().map(|l| l.as_bytes().to_vec()).collect();
        let status = ingester
            .post_logplex_as(app, ("drainpipe", PASSWORD), TOKEN, &frames)
            .await;
        assert_eq!(status, 200, "the ingester refused a Logplex body");
    }
}

/// `n` messages of the realistic mix (router, app, dyno, postgres lines), without the newline.
fn corpus(seed: u64, app: &str, n: usize) -> Vec<String> {
    let mut generator = LogplexGen::new(seed, app, 1_781_697_600_000_000);
    (0..n)
        .map(|_| {
            let mut out = Vec::new();
            generator.message(&mut out);
            String::from_utf8(out).expect("UTF-8").trim_end().to_owned()
        })
        .collect()
}

fn line(pri: u8, source: &str, proc_id: &str, msg: &str) -> String {
    format!("<{pri}>1 2026-06-17T12:00:00.000000+00:00 host {source} {proc_id} - {msg}")
}

/// The count a post announces: `rule: 1,234 matching lines from app`.
fn announced(post: &SlackPost) -> (String, u64) {
    let text = post.text().expect("a post has a text");
    let (rule, rest) = text.split_once(": ").expect("rule: count");
    let count = rest
        .split(' ')
        .next()
        .expect("count")
        .replace(',', "")
        .parse()
        .expect("a number");
    (rule.to_owned(), count)
}

fn field<'p>(post: &'p SlackPost, name: &str) -> Option<&'p str> {
    post.block_texts()
        .into_iter()
        .find_map(|t| t.strip_prefix(&format!("*{name}*\n")))
}

/// Waits until the archive holds `n` records under `prefix`, and returns them.
async fn archived(env: &TestEnv, prefix: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = archived_records(env, prefix).await;
        if records.len() >= n {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} records archived after 30s",
            records.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Sums of announced counts per (rule, app) over the posts so far.
fn totals(fake: &SlackFake) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for post in fake.posts() {
        let (rule, n) = announced(&post);
        let app = field(&post, "app").unwrap_or("-").to_owned();
        *out.entry((rule, app)).or_default() += n;
    }
    out
}

/// A fake Slack, one webhook on it, and an ingester whose routes file holds `apps` and the rules
/// `alerts` writes for that webhook's URL.
struct Setup {
    env: TestEnv,
    fake: SlackFake,
    url: String,
    routes_file: std::path::PathBuf,
    /// Where its objects are in the test bucket.
    prefix: String,
    ingester: InProcessIngester,
    /// Holds the routes file: bind it (`_dir`) where a test destructures a `Setup`, or the file
    /// goes at once.
    _dir: tempfile::TempDir,
}

async fn setup(
    name: &str,
    apps: &[&str],
    configure: impl FnOnce(&SlackFake),
    alerts: impl FnOnce(&str) -> String,
) -> Setup {
    let env = TestEnv::require();
    let fake = SlackFake::start().await;
    configure(&fake);
    let url = fake.webhook_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let routes_file = dir.path().join("routes.yaml");
    std::fs::write(&routes_file, routes(apps, &alerts(&url))).expect("routes");
    let prefix = format!("alerts-{name}-{}/", uuid::Uuid::new_v4().simple());
    let ingester = start(&env, &prefix, &routes_file).await;
    Setup {
        env,
        fake,
        url,
        routes_file,
        prefix,
        ingester,
        _dir: dir,
    }
}

/// Sample lines a post quotes (the lines of its code sections).
fn samples_shown(post: &SlackPost) -> usize {
    post.block_texts()
        .iter()
        .filter(|t| t.starts_with("```"))
        .map(|t| t.lines().count() - 2)
        .sum()
}

#[tokio::test]
async fn rules_match_exactly_the_archived_lines_they_describe() {
    let alerts = |url: &str| {
        let rule = |name: &str, matches: &str| {
            format!(
                "- name: {name}\n  match: {matches}\n  destination: {{slack: {{webhookUrl: '{url}'}}}}\n  groupBy: [app]\n  firstWait: 1s\n  minInterval: 1s\n  maxSamples: 3\n"
            )
        };
        [
            rule(
                "router-5xx",
                "{source: heroku, procId: router, status: {min: 500, max: 599}}",
            ),
            rule("h12", "{code: [H12]}"),
            rule("app-errors", "{source: app, severityAtMost: 3}"),
            rule(
                "payments",
                "{procId: 'web.*', message: 'payment (failed|declined)'}",
            ),
            rule("memory", "{source: heroku, message: 'Error R1[45] '}"),
        ]
        .concat()
    };
    // Slack's pace, per webhook: the five rules share one, so they must share its pace too.
    let pace = |fake: &SlackFake| fake.rate_limit(Duration::from_secs(1), 1);
    let Setup {
        env,
        fake,
        ingester,
        prefix,
        _dir,
        ..
    } = setup("match", &["shop", "blog"], pace, alerts).await;

    let mut sent = 0;
    for (seed, app) in [(1, "shop"), (2, "blog")] {
        let mut lines = corpus(seed, app, 1500);
        lines.extend(
            (0..5).map(|i| line(187, "app", "web.1", &format!("payment failed order={i}"))),
        );
        lines.extend(
            (0..4).map(|i| line(190, "app", "web.2", &format!("payment declined order={i}"))),
        );
        lines.extend(
            (0..3).map(|_| line(45, "heroku", "web.2", "Error R14 (Memory quota exceeded)")),
        );
        lines.push(line(45, "heroku", "web.2", "Error R10 (Boot timeout)"));
        lines.push(line(
            187,
            "app",
            "worker.1",
            "ActiveRecord::ConnectionTimeoutError",
        ));
        sent += lines.len();
        post(&ingester, app, &lines).await;
    }

    // The oracle: every line is in the archive; count there what each rule describes.
    let records = archived(&env, &prefix, sent).await;
    assert_eq!(records.len(), sent, "every acknowledged line archived once");
    let s = |r: &Value, k: &str| r[k].as_str().unwrap_or_default().to_owned();
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &records {
        let (source, proc_id, msg) = (s(r, "source"), s(r, "proc_id"), s(r, "message"));
        let status = r["status"].as_i64().unwrap_or(0);
        let severity = r["severity"].as_i64().unwrap_or(7);
        let hits = [
            (
                "router-5xx",
                source == "heroku" && proc_id == "router" && (500..=599).contains(&status),
            ),
            ("h12", r["code"] == "H12"),
            ("app-errors", source == "app" && severity <= 3),
            (
                "payments",
                proc_id.starts_with("web.")
                    && (msg.contains("payment failed") || msg.contains("payment declined")),
            ),
            (
                "memory",
                source == "heroku" && (msg.contains("Error R14 ") || msg.contains("Error R15 ")),
            ),
        ];
        for (rule, hit) in hits {
            if hit {
                *expected.entry((rule.to_owned(), s(r, "app"))).or_default() += 1;
            }
        }
    }
    for rule in ["router-5xx", "h12", "app-errors", "payments", "memory"] {
        for app in ["shop", "blog"] {
            assert!(
                expected
                    .get(&(rule.to_owned(), app.to_owned()))
                    .copied()
                    .unwrap_or(0)
                    > 0,
                "the corpus has lines for {rule} in {app}: {expected:?}"
            );
        }
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    while totals(&fake) != expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        totals(&fake),
        expected,
        "Slack announces exactly the matching lines"
    );
    // A little longer: nothing more arrives (no line counted twice).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(totals(&fake), expected);
    assert!(
        fake.refusals().is_empty(),
        "no 429: rules posting to one webhook are paced together: {:?}",
        fake.refusals()
    );
    for post in fake.posts() {
        let shown = samples_shown(&post);
        assert!(
            (1..=3).contains(&shown),
            "1 to maxSamples sample lines: {post:?}"
        );
    }
    let metrics = ingester.metrics().await;
    let matched: u64 = expected.values().sum();
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("drainpipe_alert_lines_matched_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(counted as u64, matched, "{metrics}");
    ingester.stop().await;
}

#[tokio::test]
async fn grouping_pacing_and_truncation_shape_the_posts() {
    let Setup {
        fake,
        ingester,
        _dir,
        ..
    } = setup(
        "shape",
        &["shop", "blog"],
        |fake| fake.rate_limit(Duration::from_secs(1), 1),
        |url| format!(
            "- name: boom\n  match: {{source: app, message: '^boom'}}\n  destination: {{slack: {{webhookUrl: '{url}'}}}}\n  groupBy: [app]\n  firstWait: 2s\n  minInterval: 3s\n  maxSamples: 4\n"
        ),
    )
    .await;

    let long = format!("boom {}", "x".repeat(5_000));
    let started = Instant::now();
    let mut sent: BTreeMap<&str, u64> = BTreeMap::new();
    for round in 0..14 {
        for app in ["shop", "blog"] {
            let mut lines: Vec<String> = (0..if round == 0 { 50 } else { 10 })
                .map(|i| line(190, "app", "web.1", &format!("boom {round}-{i}")))
                .collect();
            if round == 0 && app == "shop" {
                lines.insert(0, line(190, "app", "web.1", &long));
            }
            lines.push(line(190, "app", "web.1", "no match"));
            *sent.entry(app).or_default() += lines.len() as u64 - 1;
            post(&ingester, app, &lines).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = totals(&fake);
        let done = ["shop", "blog"]
            .iter()
            .all(|app| t.get(&("boom".to_owned(), (*app).to_owned())) == sent.get(app));
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "totals {t:?}, sent {sent:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let posts = fake.posts();
    for app in ["shop", "blog"] {
        let mine: Vec<&SlackPost> = posts
            .iter()
            .filter(|p| field(p, "app") == Some(app))
            .collect();
        // ~7 s of lines: the first message after 2 s, then one per 3 s.
        assert!((2..=4).contains(&mine.len()), "{app}: {} posts", mine.len());
        assert!(mine[0].at.duration_since(started) >= Duration::from_secs(2));
        for pair in mine.windows(2) {
            let gap = pair[1].at.duration_since(pair[0].at);
            assert!(
                gap >= Duration::from_millis(2_900),
                "{app}: posts {gap:?} apart"
            );
        }
        for p in &mine {
            let (_, count) = announced(p);
            let samples = samples_shown(p);
            assert!(samples <= 4, "at most maxSamples lines");
            if count > samples as u64 {
                let more = format!("and {} more lines", count - samples as u64);
                assert!(
                    p.block_texts().contains(&more.as_str()),
                    "{more}: {:?}",
                    p.block_texts()
                );
            }
        }
    }
    let first_shop = posts
        .iter()
        .find(|p| field(p, "app") == Some("shop"))
        .expect("a shop post");
    assert!(
        first_shop
            .block_texts()
            .iter()
            .any(|t| t.contains("…[truncated]")),
        "the 5,000-character line is cut with a marker"
    );
    assert!(
        fake.refusals().is_empty(),
        "within Slack's limits and pace: {:?}",
        fake.refusals()
    );
    ingester.stop().await;
}

#[tokio::test]
async fn slack_429_retry_after_is_honoured_and_nothing_is_lost() {
    let Setup {
        fake,
        ingester,
        _dir,
        ..
    } = setup(
        "429",
        &["app-one", "app-two", "app-three"],
        // Stricter than Slack: one post per 4 s, Retry-After 3.
        |fake| fake.rate_limit(Duration::from_secs(4), 3),
        |url| format!(
            "- name: errs\n  match: {{severityAtMost: 3}}\n  destination: {{slack: {{webhookUrl: '{url}'}}}}\n  groupBy: [app]\n  firstWait: 1s\n"
        ),
    )
    .await;
    for app in ["app-one", "app-two", "app-three"] {
        post(&ingester, app, &[line(187, "app", "web.1", "failed")]).await;
    }
    let posts = fake.wait_for_posts(3, Duration::from_secs(40)).await;
    assert_eq!(posts.len(), 3, "three groups, three messages");
    assert!(!fake.rate_limited().is_empty(), "the pace provoked 429s");
    assert!(fake.retry_after_honoured(), "{:?}", fake.rate_limited());
    let metrics = ingester.metrics().await;
    assert!(
        metrics.contains("drainpipe_alert_destination_errors_total{rule=\"errs\",code=\"429\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("drainpipe_alert_lines_dropped_total"),
        "{metrics}"
    );
    ingester.stop().await;
}

#[tokio::test]
async fn rules_reload_and_a_gone_webhook_stays_off_until_its_secret_changes() {
    let Setup {
        fake,
        url,
        routes_file,
        ingester,
        _dir,
        ..
    } = setup("reload", &["shop"], |_| {}, |_| String::new()).await;
    let error = || vec![line(187, "app", "web.1", "failed")];

    post(&ingester, "shop", &error()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(fake.requests().is_empty(), "no rule, no post");

    let with_rule = |version: &str| {
        routes(
            &["shop"],
            &format!(
                "- name: errs\n  match: {{severityAtMost: 3}}\n  destination: {{slack: {{webhookUrl: '{url}', secretVersion: '{version}'}}}}\n  firstWait: 500ms\n  minInterval: 500ms\n"
            ),
        )
    };
    std::fs::write(&routes_file, with_rule("1")).expect("routes");
    // The file is polled every second; lines posted before the reload are not alerted on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.posts().is_empty() {
        assert!(Instant::now() < deadline, "the new rule never posted");
        post(&ingester, "shop", &error()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    fake.gone(404);
    let before = fake.requests().len();
    post(&ingester, "shop", &error()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let disabled =
        "drainpipe_alert_destination_disabled{rule=\"errs\",reason=\"channel_not_found\"} 1";
    while !ingester.metrics().await.contains(disabled) {
        assert!(Instant::now() < deadline, "{}", ingester.metrics().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = fake.requests().len();
    assert_eq!(refused, before + 1, "one request, answered 404");
    for _ in 0..4 {
        post(&ingester, "shop", &error()).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_eq!(
        fake.requests().len(),
        refused,
        "a gone webhook is not tried again"
    );
    let metrics = ingester.metrics().await;
    assert!(
        metrics.contains(
            "drainpipe_alert_lines_dropped_total{rule=\"errs\",reason=\"destination_disabled\"}"
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains(url.as_str()),
        "the webhook URL is a secret"
    );

    // The Secret changed (a new resourceVersion): tried again.
    fake.heal();
    std::fs::write(&routes_file, with_rule("2")).expect("routes");
    let posted = fake.posts().len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.posts().len() == posted {
        assert!(
            Instant::now() < deadline,
            "not re-enabled by the Secret change"
        );
        post(&ingester, "shop", &error()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        !ingester
            .metrics()
            .await
            .contains("drainpipe_alert_destination_disabled{")
    );
    ingester.stop().await;
}

/// The alerts Alertmanager lists for `alertname` (resolved ones are not listed).
async fn listed(http: &reqwest::Client, am: &str, alertname: &str) -> Vec<Value> {
    http.get(format!("{am}/api/v2/alerts"))
        .query(&[("filter", format!("alertname=\"{alertname}\""))])
        .send()
        .await
        .expect("GET /api/v2/alerts")
        .error_for_status()
        .expect("Alertmanager answers")
        .json::<Vec<Value>>()
        .await
        .expect("a list of alerts")
}

#[tokio::test]
async fn alertmanager_shows_labelled_alerts_that_resolve_after_the_lines_stop() {
    let env = TestEnv::require();
    let am = env.alertmanager().to_owned();
    let http = reqwest::Client::new();
    let rule = format!("h12-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let dir = tempfile::tempdir().expect("tempdir");
    let routes_file = dir.path().join("routes.yaml");
    let alerts = format!(
        "- name: {rule}\n  match: {{code: [H12]}}\n  destination: {{alertmanager: {{url: '{am}', resolveAfter: 4s}}}}\n  firstWait: 500ms\n  minInterval: 1s\n"
    );
    std::fs::write(&routes_file, routes(&["shop", "blog"], &alerts)).expect("routes");
    let prefix = format!("alerts-am-{}/", uuid::Uuid::new_v4().simple());
    let ingester = start(&env, &prefix, &routes_file).await;
    let h12 = |app: &str| {
        line(
            158,
            "heroku",
            "router",
            &format!(
                "at=error code=H12 desc=\"Request timeout\" method=POST path=\"/api/v1/reports\" host={app}.herokuapp.com request_id=8601b555 fwd=\"203.0.113.42\" dyno=web.1 connect=0ms service=30000ms status=503 bytes=0 protocol=https"
            ),
        )
    };
    post(&ingester, "shop", &[h12("shop"), h12("shop")]).await;
    post(&ingester, "blog", &[h12("blog")]).await;
    post(
        &ingester,
        "blog",
        &[line(158, "heroku", "router", "at=info status=200")],
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let alerts = loop {
        let alerts = listed(&http, &am, &rule).await;
        if alerts.len() == 2 {
            break alerts;
        }
        assert!(
            Instant::now() < deadline,
            "alerts in Alertmanager: {alerts:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut labels: Vec<Value> = alerts.iter().map(|a| a["labels"].clone()).collect();
    labels.sort_by_key(|l| l["app"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        labels,
        vec![
            serde_json::json!({"alertname": rule, "app": "blog", "source": "heroku", "severity": "info"}),
            serde_json::json!({"alertname": rule, "app": "shop", "source": "heroku", "severity": "info"}),
        ]
    );
    for a in &alerts {
        assert_eq!(a["status"]["state"], "active", "{a:#}");
        let samples = a["annotations"]["samples"].as_str().expect("samples");
        assert!(samples.contains("code=H12"), "{samples}");
        assert!(
            !samples.contains("status=200"),
            "only matching lines: {samples}"
        );
    }

    // shop keeps matching, blog stopped: blog's alert resolves (after resolveAfter), shop's
    // is re-sent and stays.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        post(&ingester, "shop", &[h12("shop")]).await;
        let apps: Vec<String> = listed(&http, &am, &rule)
            .await
            .iter()
            .map(|a| a["labels"]["app"].as_str().unwrap_or_default().to_owned())
            .collect();
        if apps == ["shop"] {
            break;
        }
        assert!(Instant::now() < deadline, "still listed: {apps:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Six more seconds of shop's lines: longer than resolveAfter, so only re-sending keeps it.
    for _ in 0..12 {
        post(&ingester, "shop", &[h12("shop")]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        listed(&http, &am, &rule).await.len(),
        1,
        "re-sent while matching"
    );

    // The lines stop: the alert resolves by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !listed(&http, &am, &rule).await.is_empty() {
        assert!(Instant::now() < deadline, "the alert did not resolve");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let metrics = ingester.metrics().await;
    assert!(
        metrics.contains(&format!(
            "drainpipe_alert_messages_sent_total{{rule=\"{rule}\"}}"
        )),
        "{metrics}"
    );
    ingester.stop().await;
}

#[tokio::test]
async fn a_stopping_ingester_sends_what_its_groups_still_hold() {
    // The default firstWait (30 s) is longer than the test: only the shutdown flush can post.
    let Setup {
        fake,
        ingester,
        _dir,
        ..
    } = setup(
        "stop",
        &["shop"],
        |_| {},
        |url| {
            format!(
                "- name: errs\n  match: {{severityAtMost: 3}}\n  destination: {{slack: {{webhookUrl: '{url}'}}}}\n"
            )
        },
    )
    .await;
    let lines: Vec<String> = (0..7)
        .map(|i| line(187, "app", "web.1", &format!("failed {i}")))
        .collect();
    post(&ingester, "shop", &lines).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(fake.posts().is_empty(), "nothing before firstWait");
    ingester.stop().await;
    let posts = fake.posts();
    assert_eq!(posts.len(), 1, "the pending message went out on shutdown");
    assert_eq!(announced(&posts[0]), ("errs".to_owned(), 7));
}
