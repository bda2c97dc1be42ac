//! The periodic drift checks stay within `--heroku-budget-share` of the
//! account's request budget: the time between two checks of one app
//! stretches to fit the number of apps, the checks give way while Heroku
//! reports the bucket below the part kept for other clients, and none of
//! this delays a spec change. Against the real kube-apiserver and the Heroku
//! fake (tests/src/heroku_fake.rs).

use std::time::{Duration, Instant};

use drainpipe_tests::heroku_fake::FakeOptions;
use drainpipe_tests::operator::{Harness, wait_for};
use reqwest::Method;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// Drain lists (the drift check's one request) since `since`.
fn lists_since(h: &Harness, since: Instant) -> usize {
    h.heroku
        .requests()
        .iter()
        .filter(|r| r.method == Method::GET && r.path.ends_with("/log-drains") && r.at >= since)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_stretch_to_the_budget_share_and_spec_changes_are_not_delayed() {
    let apps: Vec<String> = (0..10).map(|i| format!("paced-{i}")).collect();
    let refs: Vec<&str> = apps.iter().map(String::as_str).collect();
    let mut h = Harness::new(
        "pace",
        FakeOptions {
            log_channel_pending: false,
            ..FakeOptions::default()
        },
    )
    .await;
    for app in &refs {
        h.heroku.add_app(app);
    }
    // A resync of 2 s would check each app every 2 s (300 lists a minute
    // for 10 apps). With 3,600 requests an hour and half of them for
    // checks, 10 apps fit once every 20 s each.
    let resync = Duration::from_secs(2);
    h.settings.resync = resync;
    h.settings.heroku_budget_share = 0.5;
    h.heroku_options.rate_limit.refill_per_hour = 3600;
    h.start();
    let mut spec = h.spec(&refs, None);
    h.apply("paced", spec.clone()).await;
    h.wait_drains_registered("paced", &refs).await;
    let ctx = h.ctx.clone().expect("context");
    assert_eq!(
        ctx.metrics.check_interval.get(),
        20,
        "seconds between checks"
    );

    // A spec change (a new endpoint) right after every app was verified is
    // not paced: every app moves at once, not when its next check (20 s
    // after the last) is due.
    let writes = h.heroku.counts().writes();
    spec["endpoint"]["url"] = json!("https://elsewhere.example.com");
    h.apply("paced", spec.clone()).await;
    wait_for("every drain moved to the new endpoint", resync * 5, || {
        let h = &h;
        let refs = &refs;
        async move {
            refs.iter()
                .all(|app| {
                    let d = h.heroku.drains(app);
                    d.len() == 1 && d[0].url.contains("@elsewhere.example.com/")
                })
                .then_some(())
        }
    })
    .await;
    assert!(h.heroku.counts().writes() > writes);

    // Steady state: over 16 s (8 resyncs) each app is checked at most once.
    let settled = Instant::now();
    tokio::time::sleep(Duration::from_secs(16)).await;
    let lists = lists_since(&h, settled);
    assert!(
        lists <= apps.len(),
        "{lists} lists in 16 s for 10 apps every 20 s"
    );

    // Another client spends the bucket: once Heroku has reported less left
    // than the half kept for others, the periodic checks wait.
    h.heroku.set_budget(1000);
    h.heroku.set_refill_per_hour(0);
    let spent = Instant::now();
    wait_for("a check that learns the budget is low", MINUTE, || {
        let h = &h;
        async move { (lists_since(h, spent) > 0).then_some(()) }
    })
    .await;
    // That reconcile's other checks were already planned; after it, none.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = Instant::now();
    tokio::time::sleep(Duration::from_secs(24)).await;
    assert_eq!(
        lists_since(&h, held),
        0,
        "a check while Heroku reports 1,000 left"
    );
    // ...but a new app is registered at once.
    h.heroku.add_app("paced-new");
    let mut with_new = refs.clone();
    with_new.push("paced-new");
    spec["apps"] = json!(with_new);
    h.apply("paced", spec).await;
    h.wait_drains_registered("paced", &with_new).await;
    assert_eq!(h.heroku.drains("paced-new").len(), 1);
    h.heroku.set_budget(4500);
    h.heroku.set_refill_per_hour(4500);
    h.teardown().await;
}
