//! The operator's Heroku drains across the everyday GitOps situations that
//! used to leave a second, never-authenticating drain behind: a LogDrain
//! deleted with `deletionPolicy: Retain` and re-created, an app renamed on
//! Heroku, a create that loses a race, and an app whose calls keep failing
//! while watch events keep triggering reconciles. Against the real
//! kube-apiserver and the Heroku fake (which models app ids, renames, the
//! 404 bodies, "Url has already been taken" and `Range` paging as Heroku
//! does, see tests/src/heroku_fake.rs).

use std::time::{Duration, Instant};

use drainpipe_operator::crd::LogDrain;
use drainpipe_tests::heroku_fake::{FakeDrain, FakeOptions, RecordedRequest};
use drainpipe_tests::operator::{
    ENDPOINT, Harness, condition, condition_is, routes_accept, status_drains, wait_for,
};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use reqwest::Method;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

async fn harness(prefix: &str, apps: &[&str]) -> Harness {
    let h = Harness::new(
        prefix,
        FakeOptions {
            // Small pages: every list follows Next-Range.
            page_size: 2,
            ..FakeOptions::default()
        },
    )
    .await;
    for app in apps {
        h.heroku.add_app(app);
    }
    h
}

/// The one drain app `app` has, to `endpoint`'s URL for it.
fn only_drain(h: &Harness, app: &str, endpoint: &str) -> FakeDrain {
    let drains = h.heroku.drains(app);
    assert_eq!(drains.len(), 1, "app {app} drains: {drains:?}");
    let host = endpoint.trim_start_matches("https://");
    assert!(
        drains[0].url.ends_with(&format!("@{host}/logplex/{app}")),
        "{}",
        drains[0].url
    );
    drains[0].clone()
}

/// Waits until the ingester's routes accept `app`'s drain, token pinned.
async fn wait_authenticates(h: &Harness, name: &str, app: &str, drain: &FakeDrain) {
    wait_for(
        &format!("the routes of {name} to accept {app}'s drain"),
        MINUTE,
        || async move {
            let routes = h.routes(name).await?;
            let pinned = routes.apps.get(app)?.drain_tokens == vec![drain.token.clone()];
            (pinned && routes_accept(&routes, app, &drain.url, &drain.token)).then_some(())
        },
    )
    .await;
}

fn message(ld: &LogDrain, type_: &str) -> String {
    condition(ld, type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_then_recreate_leaves_one_authenticating_drain_per_app() {
    let apps = ["keep-web", "keep-worker"];
    let mut h = harness("retain", &apps).await;
    h.start();
    let mut spec = h.spec(&apps, None);
    spec["deletionPolicy"] = json!("Retain");
    h.apply("keep", spec.clone()).await;
    h.wait_drains_registered("keep", &apps).await;
    let before: Vec<FakeDrain> = apps.iter().map(|a| only_drain(&h, a, ENDPOINT)).collect();
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), &h.ns);
    let owners = |s: &Secret| {
        s.owner_references()
            .iter()
            .filter(|o| o.kind == "LogDrain")
            .map(|o| o.uid.clone())
            .collect::<Vec<_>>()
    };
    let pw = secrets.get("keep-drain-password").await.expect("Secret");
    assert!(
        owners(&pw).is_empty(),
        "a Retain LogDrain does not own its password"
    );

    // A GitOps prune: the LogDrain goes, its drains stay, and so does the
    // password they carry.
    h.delete_and_wait("keep").await;
    for (app, d) in apps.iter().zip(&before) {
        assert_eq!(
            &only_drain(&h, app, ENDPOINT),
            d,
            "Retain kept {app}'s drain"
        );
    }
    assert!(
        secrets
            .get_opt("keep-drain-password")
            .await
            .expect("get")
            .is_some(),
        "the password of the retained drains outlives the LogDrain"
    );

    // The re-sync: the same LogDrain again adopts the retained drains.
    h.heroku.reset_counts();
    let recreated = h.apply("keep", spec.clone()).await;
    let ld = h.wait_drains_registered("keep", &apps).await;
    assert_eq!(h.heroku.counts().create, 0, "{:?}", h.heroku.requests());
    for (app, d) in apps.iter().zip(&before) {
        let now = only_drain(&h, app, ENDPOINT);
        assert_eq!(&now, d, "{app} has exactly its retained drain");
        let recorded = status_drains(&ld);
        let rec = recorded.iter().find(|r| r.app == *app).expect("recorded");
        assert_eq!(rec.id, d.id);
        assert_eq!(rec.app_id, h.heroku.app_id(app), "status shows the app id");
        wait_authenticates(&h, "keep", app, &now).await;
    }

    // Switched to Delete: the LogDrain owns its password again, and its
    // deletion takes the drains.
    spec["deletionPolicy"] = json!("Delete");
    h.apply("keep", spec).await;
    let uid = recreated.uid().expect("uid");
    wait_for("the password Secret to be owned", MINUTE, || {
        let secrets = secrets.clone();
        let uid = uid.clone();
        async move {
            let s = secrets.get("keep-drain-password").await.ok()?;
            (owners(&s) == vec![uid]).then_some(())
        }
    })
    .await;
    h.delete_and_wait("keep").await;
    assert!(apps.iter().all(|a| h.heroku.drains(a).is_empty()));
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_app_keeps_one_drain_under_either_policy() {
    let mut h = harness("rename", &["del-old", "ret-old", "gone-old"]).await;
    h.settings.resync = Duration::from_secs(4);
    h.start();
    let endpoint = |policy: &str| format!("https://logs-{policy}.example.com");
    for (name, app, policy) in [
        ("del", "del-old", "Delete"),
        ("ret", "ret-old", "Retain"),
        ("gone", "gone-old", "Delete"),
    ] {
        let mut spec = h.spec(&[app], None);
        spec["deletionPolicy"] = json!(policy);
        spec["endpoint"]["url"] = json!(endpoint(name));
        h.apply(name, spec).await;
    }
    for (name, app) in [("del", "del-old"), ("ret", "ret-old"), ("gone", "gone-old")] {
        let ld = h.wait_drains_registered(name, &[app]).await;
        assert_eq!(status_drains(&ld)[0].app_id, h.heroku.app_id(app));
    }

    // `heroku apps:rename` on all three: the old names now answer 404.
    for (old, new) in [
        ("del-old", "del-new"),
        ("ret-old", "ret-new"),
        ("gone-old", "gone-new"),
    ] {
        h.heroku.rename_app(old, new);
    }
    // The drift check still finds each drain, by app id, and changes nothing.
    h.heroku.reset_counts();
    let gone_id = h.heroku.app_id("gone-new").expect("id");
    wait_for("a resync by app id", MINUTE, || {
        let h = &h;
        let gone_id = &gone_id;
        async move {
            h.heroku
                .requests()
                .iter()
                .any(|r| r.method == Method::GET && r.for_app(gone_id) && r.status == 200)
                .then_some(())
        }
    })
    .await;
    assert_eq!(h.heroku.counts().create, 0, "{:?}", h.heroku.requests());
    assert!(condition_is(
        &h.get("gone").await,
        "DrainsRegistered",
        "True"
    ));

    // Deleting a LogDrain (Delete) whose app was renamed on Heroku only:
    // its drain goes, found by the app id.
    h.delete_and_wait("gone").await;
    assert!(h.heroku.drains("gone-new").is_empty(), "no orphan");

    // The user follows the rename in spec.apps: one drain on the renamed
    // app, to its new URL, none left behind.
    for (name, new, policy) in [("del", "del-new", "Delete"), ("ret", "ret-new", "Retain")] {
        let mut spec = h.spec(&[new], None);
        spec["deletionPolicy"] = json!(policy);
        spec["endpoint"]["url"] = json!(endpoint(name));
        h.apply(name, spec).await;
    }
    for (name, new) in [("del", "del-new"), ("ret", "ret-new")] {
        let ld = h.wait_drains_registered(name, &[new]).await;
        let d = only_drain(&h, new, &endpoint(name));
        let rec = &status_drains(&ld)[0];
        assert_eq!((&rec.app, &rec.id), (&new.to_string(), &d.id));
        assert_eq!(rec.app_id, h.heroku.app_id(new));
        wait_authenticates(&h, name, new, &d).await;
        let reasons = h.event_reasons(name).await;
        assert!(reasons.iter().any(|r| r == "AppRenamed"), "{reasons:?}");
    }
    let all = h.heroku.all_drains();
    assert_eq!(
        all.len(),
        2,
        "one drain per renamed app, nothing else: {all:?}"
    );

    // And the policies still hold for the renamed apps.
    h.delete_and_wait("del").await;
    h.delete_and_wait("ret").await;
    assert!(h.heroku.drains("del-new").is_empty(), "Delete removed it");
    only_drain(&h, "ret-new", &endpoint("ret"));
    h.teardown().await;
}

/// Whether `r` addressed `app`, by name or by id.
fn about(h: &Harness, r: &RecordedRequest, app: &str) -> bool {
    r.for_app(app) || h.heroku.app_id(app).is_some_and(|id| r.for_app(&id))
}

/// The failed requests for `app` since `since`.
fn failed_calls(h: &Harness, app: &str, since: Instant) -> Vec<Instant> {
    h.heroku
        .requests()
        .iter()
        .filter(|r| about(h, r, app) && r.status >= 400 && r.at >= since)
        .map(|r| r.at)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_app_waits_its_backoff_whatever_triggers_reconciles() {
    let mut h = harness("backoff", &["calm-app", "flaky-app"]).await;
    h.settings.retry_base = Duration::from_secs(1);
    h.settings.retry_max = Duration::from_secs(30);
    // One request per attempt, so requests count attempts.
    h.heroku_options.max_retries = 0;
    h.heroku.fail_app("flaky-app", Some(503));
    h.start();
    let started = Instant::now();
    h.apply("bo", h.spec(&["calm-app", "flaky-app"], None))
        .await;
    let ld = h
        .wait_status(
            "bo",
            "calm-app registered, flaky-app failing",
            MINUTE,
            |ld| condition_is(ld, "DrainsRegistered", "False") && status_drains(ld).len() == 1,
        )
        .await;
    let settled = Instant::now();
    let msg = message(&ld, "DrainsRegistered");
    assert!(
        msg.contains("flaky-app: Heroku API error 503")
            && msg.contains("backing off 1 s after 1 failure"),
        "{msg}"
    );

    // Watch events every 150 ms for 6.5 s after the first failure.
    let first = failed_calls(&h, "flaky-app", started)[0];
    let window = Duration::from_millis(6500);
    let mut i = 0;
    while first.elapsed() < window {
        h.poke("bo", i).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(i >= 20, "only {i} pokes");
    let calls: Vec<Instant> = failed_calls(&h, "flaky-app", started)
        .into_iter()
        .filter(|at| *at <= first + window)
        .collect();
    // The waits double from 1 s: calls at 0, then no sooner than 1 and 3 s
    // (the fourth, at 7 s or later, falls outside the window).
    assert!((2..=3).contains(&calls.len()), "{calls:?}");
    for (k, pair) in calls.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let wait = Duration::from_secs(1 << k);
        assert!(
            gap >= wait,
            "call {} came {gap:?} after the previous, before its {wait:?}",
            k + 2
        );
    }
    let calm = h
        .heroku
        .requests()
        .iter()
        .filter(|r| about(&h, r, "calm-app") && r.at > settled)
        .count();
    assert_eq!(calm, 0, "calm-app was verified and is not called again");
    let ld = h.get("bo").await;
    let msg = message(&ld, "DrainsRegistered");
    assert!(
        msg.contains("backing off") && msg.contains(" failures"),
        "{msg}"
    );

    // Heroku asks for a wait: the message says it is Heroku's.
    h.heroku.set_retry_after(Some(2));
    h.heroku.fail_app("flaky-app", Some(429));
    let ld = h
        .wait_status("bo", "Heroku's Retry-After reported", MINUTE, |ld| {
            message(ld, "DrainsRegistered").contains("Heroku sent Retry-After: 2 s")
        })
        .await;
    assert!(!message(&ld, "DrainsRegistered").contains("backing off"));

    // Fixed: the next check after the wait registers the drain.
    h.heroku.fail_app("flaky-app", None);
    h.heroku.set_retry_after(None);
    h.wait_drains_registered("bo", &["calm-app", "flaky-app"])
        .await;
    only_drain(&h, "flaky-app", ENDPOINT);
    h.teardown().await;
}

/// One app failing for a long while does not stretch the LogDrain's
/// resync: its other apps are still checked every `--resync`, so a drain
/// deleted on Heroku by hand is put back within one resync although the
/// failing app's own retry is minutes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resync_checks_healthy_apps_while_another_app_backs_off() {
    let mut h = harness("resync", &["sound-app", "broken-app"]).await;
    let resync = Duration::from_secs(6);
    h.settings.resync = resync;
    // The failing app's first wait (60 s) is ten resyncs long.
    h.settings.retry_base = Duration::from_secs(60);
    h.heroku_options.max_retries = 0;
    h.heroku.fail_app("broken-app", Some(503));
    h.start();
    h.apply("rs", h.spec(&["sound-app", "broken-app"], None))
        .await;
    let ld = h
        .wait_status(
            "rs",
            "sound-app registered, broken-app failing",
            MINUTE,
            |ld| condition_is(ld, "DrainsRegistered", "False") && status_drains(ld).len() == 1,
        )
        .await;
    assert!(
        message(&ld, "DrainsRegistered").contains("backing off 60 s"),
        "{}",
        message(&ld, "DrainsRegistered")
    );
    let sound = only_drain(&h, "sound-app", ENDPOINT);

    // Removed by hand on Heroku: noticed and repaired at the next resync.
    assert!(h.heroku.remove_drain("sound-app", &sound.id));
    let removed = Instant::now();
    // One resync (+10% jitter) plus the half-resync freshness window at
    // worst; far less than the failing app's 60 s.
    let within = resync * 2 + Duration::from_secs(3);
    let again =
        wait_for("sound-app's drain put back", within, || {
            let h = &h;
            async move {
                (h.heroku.drains("sound-app").len() == 1).then(|| h.heroku.drains("sound-app"))
            }
        })
        .await;
    assert_ne!(again[0].id, sound.id, "a new drain");
    let took = removed.elapsed();
    let broken_calls = failed_calls(&h, "broken-app", removed);
    assert!(
        broken_calls.is_empty(),
        "broken-app waits its own 60 s: {broken_calls:?} (noticed after {took:?})"
    );
    let reasons = h.event_reasons("rs").await;
    assert!(reasons.iter().any(|r| r == "DrainDrifted"), "{reasons:?}");
    // Heroku answers again, so the deletion can remove broken-app's drain.
    h.heroku.fail_app("broken-app", None);
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_not_retried_on_every_watch_event() {
    let mut h = harness("token", &["tok-app"]).await;
    h.settings.retry_max = Duration::from_secs(30);
    h.start();
    h.put_token_secret("heroku", "revoked-token-0001").await;
    let started = Instant::now();
    h.apply("tok", h.spec(&["tok-app"], None)).await;
    let ld = h
        .wait_status("tok", "unauthorized", MINUTE, |ld| {
            condition_is(ld, "DrainsRegistered", "False")
        })
        .await;
    let msg = message(&ld, "DrainsRegistered");
    assert!(msg.contains("backing off 30 s after 1 failure"), "{msg}");
    for i in 0..15 {
        h.poke("tok", i).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = failed_calls(&h, "tok-app", started);
    assert_eq!(calls.len(), 1, "{calls:?}");
    // The fix (a new token in the Secret) ends the wait at once.
    h.put_token_secret("heroku", &h.heroku.token()).await;
    h.wait_drains_registered("tok", &["tok-app"]).await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_loses_a_race_adopts_the_drain() {
    let mut h = harness("race", &["race-app"]).await;
    h.heroku.race_next_create("race-app");
    h.start();
    h.apply("race", h.spec(&["race-app"], None)).await;
    let ld = h.wait_drains_registered("race", &["race-app"]).await;
    let d = only_drain(&h, "race-app", ENDPOINT);
    assert_eq!(
        status_drains(&ld)[0].id,
        d.id,
        "the drain that won is adopted"
    );
    let requests = h.heroku.requests();
    // The app is addressed by the id App Info gave from the first call on.
    let id = h.heroku.app_id("race-app").expect("id");
    let taken = requests
        .iter()
        .position(|r| r.method == Method::POST && r.status == 422 && r.for_app(&id))
        .expect("a create answered 422");
    // Heroku's first 422 is the "log channel" one; the last create is the
    // one that found its URL taken, and a list found the drain.
    let last_post = requests
        .iter()
        .rposition(|r| r.method == Method::POST)
        .expect("creates");
    assert!(
        taken <= last_post && requests[last_post].status == 422,
        "{requests:?}"
    );
    assert!(
        requests[last_post + 1..]
            .iter()
            .any(|r| r.method == Method::GET && r.path.ends_with("/log-drains")),
        "{requests:?}"
    );
    assert!(condition_is(&ld, "DrainsRegistered", "True"));
    wait_authenticates(&h, "race", "race-app", &d).await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lists_use_herokus_largest_page_and_follow_next_range() {
    // Heroku's own page sizes: 200 unless asked, at most 1000.
    let mut h = Harness::new("pages", FakeOptions::default()).await;
    h.heroku.add_app("crowded-app");
    for i in 0..1200 {
        h.heroku.insert_drain(
            "crowded-app",
            &format!("https://elsewhere.example.com/{i}"),
            None,
        );
    }
    let http = reqwest::Client::new();
    let get = |range: Option<&str>| {
        let mut req = http
            .get(format!(
                "{}/apps/crowded-app/log-drains",
                h.heroku.base_url()
            ))
            .bearer_auth(h.heroku.token())
            .header("Accept", "application/vnd.heroku+json; version=3");
        if let Some(r) = range {
            req = req.header("Range", r);
        }
        req.send()
    };
    for (range, page) in [(None, 200), (Some("id ..; max=5000"), 1000)] {
        let resp = get(range).await.expect("list");
        assert_eq!(resp.status(), 206);
        assert!(resp.headers().contains_key("next-range"));
        let body: Vec<serde_json::Value> = resp.json().await.expect("JSON");
        assert_eq!(body.len(), page, "Range {range:?}");
    }

    h.heroku.reset_counts();
    h.start();
    h.apply("crowd", h.spec(&["crowded-app"], None)).await;
    h.wait_drains_registered("crowd", &["crowded-app"]).await;
    let lists: Vec<RecordedRequest> = h
        .heroku
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::GET && r.path.ends_with("/log-drains"))
        .collect();
    // One list of 1,200 drains: two pages of up to 1,000.
    assert_eq!(lists.len(), 2, "{lists:?}");
    assert_eq!(lists[0].range.as_deref(), Some("id ..; max=1000"));
    assert!(
        lists[1]
            .range
            .as_deref()
            .is_some_and(|r| r.starts_with("id ]") && r.ends_with("; max=1000")),
        "{lists:?}"
    );
    assert_eq!(
        h.heroku.drains("crowded-app").len(),
        1201,
        "foreign drains untouched"
    );
    h.teardown().await;
}
