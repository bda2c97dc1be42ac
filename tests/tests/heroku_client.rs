//! The operator's Heroku client against the in-repo fake Platform API.
// A failed unwrap is how a test reports an unexpected error.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use drainpipe_operator::heroku::{
    ApiToken, DrainUrl, ExporterHeaders, ExporterType, Generation, HerokuClient, HerokuError,
    HerokuOptions, RateLimitConfig, WantedExporter,
};
use drainpipe_tests::heroku_fake::{
    FakeHeroku, FakeOptions, LOG_CHANNEL_MESSAGE, SDK_ACCEPT, V3_ACCEPT, herokus_clients_accept,
};

const PASSWORD: &str = "pw-9f8e7d6c5b4a";

fn fast_options() -> HerokuOptions {
    HerokuOptions {
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        log_channel_backoff: Duration::from_millis(10),
        ..HerokuOptions::default()
    }
}

fn client(fake: &FakeHeroku) -> HerokuClient {
    HerokuClient::with_options(&fake.base_url(), fast_options()).unwrap()
}

fn drain_url(app: &str) -> DrainUrl {
    DrainUrl::for_app("https://logs.example.com", app, "drainpipe", PASSWORD).unwrap()
}

fn token(fake: &FakeHeroku) -> ApiToken {
    ApiToken::new(fake.token())
}

#[tokio::test]
async fn list_follows_next_range_across_pages() {
    let fake = FakeHeroku::start(FakeOptions {
        page_size: 2,
        ..FakeOptions::default()
    })
    .await;
    fake.add_app("paged-app");
    for i in 0..5 {
        fake.insert_drain(
            "paged-app",
            &format!("https://other{i}.example.com/drain"),
            None,
        );
    }
    let c = client(&fake);
    let drains = c.list_drains(&token(&fake), "paged-app").await.unwrap();

    let mut got: Vec<_> = drains.iter().map(|d| d.id.clone()).collect();
    got.sort();
    let want: Vec<_> = fake.drains("paged-app").into_iter().map(|d| d.id).collect();
    assert_eq!(got, want, "every drain exactly once");
    assert_eq!(fake.counts().list, 3, "pages of 2, 2 and 1");
    let ranges: Vec<_> = fake
        .requests()
        .into_iter()
        .filter_map(|r| r.range)
        .collect();
    assert!(ranges[0].starts_with("id ..; max="), "{ranges:?}");
    assert!(
        ranges[1].starts_with("id ]"),
        "the client sends Next-Range back: {ranges:?}"
    );
}

#[tokio::test]
async fn list_of_an_app_without_drains_is_empty_and_unknown_app_is_not_found() {
    let fake = FakeHeroku::start(FakeOptions::default()).await;
    fake.add_app("empty-app");
    let c = client(&fake);
    assert!(
        c.list_drains(&token(&fake), "empty-app")
            .await
            .unwrap()
            .is_empty()
    );
    let err = c
        .list_drains(&token(&fake), "no-such-app")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        HerokuError::AppNotFound {
            app: "no-such-app".into()
        }
    );
    assert_eq!(err.metric_label(), "app_not_found");
}

#[tokio::test]
async fn ensure_drain_is_idempotent_and_retries_the_log_channel_422() {
    let fake = FakeHeroku::start(FakeOptions::default()).await;
    fake.add_app("new-app");
    let c = client(&fake);
    let url = drain_url("new-app");

    // What the controller does for an app: list, and create when no drain
    // of ours is there.
    let t = token(&fake);
    assert!(c.list_drains(&t, "new-app").await.unwrap().is_empty());
    let first = c.create_drain(&t, "new-app", &url).await.unwrap();
    assert!(first.created);
    assert!(first.drain.token.starts_with("d."), "{}", first.drain.token);
    assert!(first.drain.url.same_as(&url));
    assert!(first.drain.addon.is_none());
    let counts = fake.counts();
    assert_eq!(counts.list, 1);
    assert_eq!(
        counts.create, 2,
        "the log-channel 422, then the real create"
    );
    assert!(
        fake.requests().iter().any(|r| r.status == 422),
        "the fake answered `{LOG_CHANNEL_MESSAGE}` once"
    );

    fake.reset_counts();
    let listed = c.list_drains(&t, "new-app").await.unwrap();
    let second = listed.iter().find(|d| d.targets(&url)).unwrap();
    assert_eq!(second.id, first.drain.id);
    assert_eq!(
        fake.counts().create,
        0,
        "a present drain costs one list and no write"
    );
    assert_eq!(fake.counts().list, 1);
    assert_eq!(fake.drains("new-app").len(), 1);
}

#[tokio::test]
async fn create_after_someone_else_created_the_same_url_is_a_lookup() {
    let fake = FakeHeroku::start(FakeOptions {
        log_channel_pending: false,
        ..FakeOptions::default()
    })
    .await;
    fake.add_app("race-app");
    let url = drain_url("race-app");
    let existing = fake.insert_drain("race-app", url.expose_secret(), None);
    let c = client(&fake);

    let got = c
        .create_drain(&token(&fake), "race-app", &url)
        .await
        .unwrap();
    assert!(
        !got.created,
        "the 422 'already taken' is answered by a lookup"
    );
    assert_eq!(got.drain.id, existing.id);
    assert_eq!(fake.drains("race-app").len(), 1);
}

#[tokio::test]
async fn log_channel_that_never_comes_gives_a_transient_error() {
    let fake = FakeHeroku::start(FakeOptions::default()).await;
    fake.add_app("slow-app");
    let c = HerokuClient::with_options(
        &fake.base_url(),
        HerokuOptions {
            log_channel_retries: 0,
            ..fast_options()
        },
    )
    .unwrap();
    let err = c
        .create_drain(&token(&fake), "slow-app", &drain_url("slow-app"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, HerokuError::LogChannelPending { .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn rate_limited_then_success() {
    let fake = FakeHeroku::start(FakeOptions::default()).await;
    fake.add_app("busy-app");
    fake.fail_next(3, 429);
    let c = client(&fake);
    let drains = c.list_drains(&token(&fake), "busy-app").await.unwrap();
    assert!(drains.is_empty());
    let counts = fake.counts();
    assert_eq!(counts.injected, 3);
    assert_eq!(counts.list, 1, "the fourth attempt got through");
}

#[tokio::test]
async fn retry_after_is_honoured_and_shared_by_clones() {
    let fake = FakeHeroku::start(FakeOptions {
        retry_after: Some(1),
        ..FakeOptions::default()
    })
    .await;
    fake.add_app("ra-app");
    fake.fail_next(1, 429);
    let c = client(&fake);
    let clone = c.clone();
    let t = token(&fake);
    let started = std::time::Instant::now();
    c.list_drains(&t, "ra-app").await.unwrap();
    // The 429 paused the shared limiter: the clone saw the same budget.
    assert_eq!(
        clone.rate_limit().server_remaining,
        c.rate_limit().server_remaining
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited out Retry-After"
    );
}

#[tokio::test]
async fn a_retry_after_longer_than_allowed_fails_fast_for_a_requeue() {
    let fake = FakeHeroku::start(FakeOptions {
        retry_after: Some(3600),
        ..FakeOptions::default()
    })
    .await;
    fake.add_app("ra-app");
    fake.fail_next(1, 429);
    let c = client(&fake);
    let err = c.list_drains(&token(&fake), "ra-app").await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(err.metric_label(), "rate_limited");
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn spent_budget_paces_the_client_instead_of_drawing_429s() {
    // Budget 3, refilled at 4 per second on both sides.
    let fake = FakeHeroku::start(FakeOptions {
        budget: 3,
        refill_per_hour: 4 * 3600,
        ..FakeOptions::default()
    })
    .await;
    fake.add_app("paced-app");
    let c = HerokuClient::with_options(
        &fake.base_url(),
        HerokuOptions {
            rate_limit: RateLimitConfig {
                capacity: 4500,
                refill_per_hour: 4 * 3600,
            },
            ..fast_options()
        },
    )
    .unwrap();
    let t = token(&fake);
    for _ in 0..8 {
        c.list_drains(&t, "paced-app").await.unwrap();
    }
    let counts = fake.counts();
    assert_eq!(counts.list, 8);
    assert_eq!(
        counts.throttled, 0,
        "RateLimit-Remaining: 0 made the client wait for refill"
    );
    assert_eq!(c.rate_limit().server_remaining, Some(0));
}

#[tokio::test]
async fn budget_spent_by_someone_else_then_refilled() {
    let fake = FakeHeroku::start(FakeOptions {
        refill_per_hour: 20 * 3600,
        ..FakeOptions::default()
    })
    .await;
    fake.add_app("shared-app");
    // Another client of the same account spent everything.
    fake.set_budget(0);
    let c = client(&fake);
    c.list_drains(&token(&fake), "shared-app").await.unwrap();
    assert!(fake.counts().throttled >= 1);
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let fake = FakeHeroku::start(FakeOptions::default()).await;
    fake.add_app("flaky-app");
    let c = client(&fake);
    let t = token(&fake);

    fake.fail_next(2, 503);
    assert!(c.list_drains(&t, "flaky-app").await.unwrap().is_empty());
    assert_eq!(fake.counts().injected, 2);

    fake.reset_counts();
    fake.fail_next(100, 500);
    let err = c.list_drains(&t, "flaky-app").await.unwrap_err();
    assert!(
        matches!(err, HerokuError::Api { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(err.metric_label(), "server_error");
    assert!(err.is_transient());
    assert_eq!(
        fake.request_count(),
        u64::from(fast_options().max_retries) + 1
    );
}

#[tokio::test]
async fn create_during_an_outage_does_not_duplicate() {
    let fake = FakeHeroku::start(FakeOptions {
        log_channel_pending: false,
        ..FakeOptions::default()
    })
    .await;
    fake.add_app("outage-app");
    let c = client(&fake);
    let url = drain_url("outage-app");
    // POST fails, the lookup list fails and is retried, then POST succeeds.
    fake.fail_next(2, 502);
    let got = c
        .create_drain(&token(&fake), "outage-app", &url)
        .await
        .unwrap();
    assert!(got.created);
    assert_eq!(fake.drains("outage-app").len(), 1);
}

#[tokio::test]
async fn wrong_token_is_unauthorized_without_the_token_in_the_error() {
    let fake = FakeHeroku::start(FakeOptions::default()).await;
    fake.add_app("auth-app");
    let c = client(&fake);
    let wrong = "HRKU-wrong-token-0123456789abcdef";
    let err = c
        .list_drains(&ApiToken::new(wrong), "auth-app")
        .await
        .unwrap_err();
    assert_eq!(err, HerokuError::Unauthorized);
    assert_eq!(err.metric_label(), "unauthorized");
    assert!(!err.is_transient());
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(wrong), "{text}");
        assert!(!text.contains(&fake.token()), "{text}");
    }
}

#[tokio::test]
async fn a_rotated_token_is_used_by_the_next_call() {
    let fake = FakeHeroku::start(FakeOptions::default()).await;
    fake.add_app("rot-app");
    let c = client(&fake);
    let old = token(&fake);
    c.list_drains(&old, "rot-app").await.unwrap();
    fake.set_token("HRKU-rotated-token-abcdef");
    assert_eq!(
        c.list_drains(&old, "rot-app").await.unwrap_err(),
        HerokuError::Unauthorized
    );
    c.list_drains(&ApiToken::new("HRKU-rotated-token-abcdef"), "rot-app")
        .await
        .unwrap();
}

#[tokio::test]
async fn requests_carry_herokus_accept_variants_and_a_user_agent() {
    let fake = FakeHeroku::start(FakeOptions {
        log_channel_pending: false,
        ..FakeOptions::default()
    })
    .await;
    let cedar = fake.add_app("ua-app");
    let fir = fake.add_fir_app("ua-fir");
    let c = client(&fake);
    let t = token(&fake);
    // The fake answers 400 without a v3 media type, so success proves it.
    c.list_drains(&t, "ua-app").await.unwrap();
    c.app_info(&t, "ua-fir").await.unwrap();
    let d = c
        .create_drain(&t, &cedar, &drain_url("ua-app"))
        .await
        .unwrap();
    c.get_drain(&t, &cedar, &d.drain.id).await.unwrap();
    c.delete_drain(&t, &cedar, &d.drain.id).await.unwrap();
    let want = exporter("https://logs.example.com/otlp/ua-fir", "pw-0123456789");
    let made = c
        .create_telemetry_drain(&t, "ua-fir", &fir, &want)
        .await
        .unwrap();
    c.list_telemetry_drains(&t, &fir).await.unwrap();
    c.update_telemetry_drain(&t, "ua-fir", &made.id, &want)
        .await
        .unwrap();
    c.delete_telemetry_drain(&t, "ua-fir", &made.id)
        .await
        .unwrap();
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 9, "{reqs:?}");
    for r in &reqs {
        assert!(
            r.as_herokus_clients_send(),
            "{} {} sent Accept {:?}, Heroku's clients send {:?}",
            r.method,
            r.path,
            r.accept,
            herokus_clients_accept(&r.method, &r.path)
        );
        let ua = r.user_agent.clone().unwrap_or_default();
        assert!(ua.starts_with("drainpipe-operator/"), "{ua}");
    }
}

/// Heroku names an app's generation only in answers to the `version=3.sdk`
/// variant. A client asking with plain `version=3` (as the operator once
/// did) gets no generation and used to take the Fir app for Cedar.
#[tokio::test]
async fn app_info_names_a_fir_app_fir_only_when_asked_as_herokus_cli_asks() {
    let fake = FakeHeroku::start(FakeOptions::default()).await;
    fake.add_fir_app("gen-fir");
    fake.add_app("gen-cedar");
    let c = client(&fake);
    let t = token(&fake);
    let info = c.app_info(&t, "gen-fir").await.unwrap();
    assert_eq!(info.generation(), Ok(Generation::Fir));
    let info = c.app_info(&t, "gen-cedar").await.unwrap();
    assert_eq!(info.generation(), Ok(Generation::Cedar));
    for r in fake.requests() {
        assert_eq!(r.accept.as_deref(), Some(SDK_ACCEPT), "{r:?}");
    }

    // What the old client asked for: the answer has no generation at all,
    // which the client now refuses to read as Cedar.
    let http = reqwest::Client::new();
    for (accept, has_generation) in [(V3_ACCEPT, false), (SDK_ACCEPT, true)] {
        let body: serde_json::Value = http
            .get(format!("{}/apps/gen-fir", fake.base_url()))
            .header("Accept", accept)
            .bearer_auth(fake.token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            body.get("generation").is_some(),
            has_generation,
            "{accept}: {body}"
        );
        let info: drainpipe_operator::heroku::AppInfo = serde_json::from_value(body).unwrap();
        if has_generation {
            assert_eq!(info.generation(), Ok(Generation::Fir));
        } else {
            let e = info.generation().unwrap_err();
            assert_eq!(
                e,
                HerokuError::GenerationUnknown {
                    app: "gen-fir".into()
                }
            );
            assert!(e.to_string().contains("gen-fir"), "{e}");
        }
    }
}

#[tokio::test]
async fn delete_removes_and_a_second_delete_is_fine() {
    let fake = FakeHeroku::start(FakeOptions {
        log_channel_pending: false,
        ..FakeOptions::default()
    })
    .await;
    fake.add_app("del-app");
    let c = client(&fake);
    let t = token(&fake);
    let d = c
        .create_drain(&t, "del-app", &drain_url("del-app"))
        .await
        .unwrap()
        .drain;
    assert!(c.get_drain(&t, "del-app", &d.id).await.unwrap().is_some());
    assert!(
        c.get_drain(&t, "del-app", &d.token)
            .await
            .unwrap()
            .is_some()
    );
    assert!(c.delete_drain(&t, "del-app", &d.id).await.unwrap());
    assert!(fake.drains("del-app").is_empty());
    assert!(
        !c.delete_drain(&t, "del-app", &d.id).await.unwrap(),
        "404 = already gone"
    );
    assert!(c.get_drain(&t, "del-app", &d.id).await.unwrap().is_none());
}

#[tokio::test]
async fn addon_drains_are_listed_with_their_addon_and_cannot_be_deleted() {
    let fake = FakeHeroku::start(FakeOptions::default()).await;
    fake.add_app("addon-app");
    let addon = fake.insert_drain(
        "addon-app",
        "syslog://logs.papertrailapp.com:1234",
        Some("papertrail-rigid-1234"),
    );
    let c = client(&fake);
    let t = token(&fake);
    let drains = c.list_drains(&t, "addon-app").await.unwrap();
    assert_eq!(
        drains[0].addon.as_ref().map(|a| a.name.as_str()),
        Some("papertrail-rigid-1234")
    );
    let err = c
        .delete_drain(&t, "addon-app", &addon.id)
        .await
        .unwrap_err();
    assert!(
        matches!(err, HerokuError::Api { status: 422, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn drain_password_never_appears_in_results_or_errors() {
    let fake = FakeHeroku::start(FakeOptions {
        log_channel_pending: false,
        ..FakeOptions::default()
    })
    .await;
    fake.add_app("secret-app");
    let c = client(&fake);
    let t = token(&fake);
    let url = drain_url("secret-app");
    let ok = c.create_drain(&t, "secret-app", &url).await.unwrap();
    let shown = format!("{ok:?} {} {:?}", ok.drain.url, ok.drain);
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(shown.contains("drainpipe:****@logs.example.com"), "{shown}");

    let err = c.create_drain(&t, "missing-app", &url).await.unwrap_err();
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(PASSWORD), "{text}");
    }
}

/// A server that echoes the request's secrets back in its error message,
/// the worst case for what ends up in a status condition.
#[tokio::test]
async fn secrets_echoed_by_the_server_are_scrubbed() {
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().fallback(|headers: HeaderMap, body: String| async move {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let msg = format!("Url rejected: {body} (you sent {auth})");
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            [("ratelimit-remaining", "100")],
            serde_json::json!({"id": "invalid_params", "message": msg}).to_string(),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let c = HerokuClient::with_options(&format!("http://{addr}"), fast_options()).unwrap();
    let t = ApiToken::new("HRKU-echoed-token-0123456789");
    let url = drain_url("echo-app");
    let err = c.create_drain(&t, "echo-app", &url).await.unwrap_err();
    server.abort();
    assert!(
        matches!(err, HerokuError::Api { status: 422, .. }),
        "{err:?}"
    );
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(!text.contains("HRKU-echoed-token"), "{text}");
        assert!(text.contains("Url rejected"), "{text}");
    }
}

/// Two reconciles (or two operators) creating the same drain at once: the
/// loser's "already taken" 422 ends in a lookup, not a second drain.
#[tokio::test]
async fn concurrent_ensures_of_one_url_make_one_drain() {
    let fake = FakeHeroku::start(FakeOptions::default()).await;
    fake.add_app("twin-app");
    let c = client(&fake);
    let t = token(&fake);
    let url = drain_url("twin-app");
    let (a, b) = tokio::join!(
        c.create_drain(&t, "twin-app", &url),
        c.create_drain(&t, "twin-app", &url)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.drain.id, b.drain.id);
    assert_eq!(
        u8::from(a.created) + u8::from(b.created),
        1,
        "one of them made it"
    );
    assert_eq!(fake.drains("twin-app").len(), 1);
}

#[tokio::test]
async fn a_renamed_app_is_found_by_id_and_its_old_name_is_not_a_missing_drain() {
    let fake = FakeHeroku::start(FakeOptions {
        log_channel_pending: false,
        ..FakeOptions::default()
    })
    .await;
    let id = fake.add_app("old-name");
    let c = client(&fake);
    let t = token(&fake);
    let d = c
        .create_drain(&t, "old-name", &drain_url("old-name"))
        .await
        .unwrap()
        .drain;
    assert_eq!(d.app.as_ref().map(|a| a.id.as_str()), Some(id.as_str()));
    fake.rename_app("old-name", "new-name");

    // App Info by id gives the new name; by the old name, no app.
    let info = c.app_info(&t, &id).await.unwrap();
    assert_eq!(
        (info.id.as_str(), info.name.as_str()),
        (id.as_str(), "new-name")
    );
    assert_eq!(
        c.app_info(&t, "old-name").await.unwrap_err(),
        HerokuError::AppNotFound {
            app: "old-name".into()
        }
    );
    // A delete under the old name is about the app, not the drain: the
    // drain is still there, and the id reaches it.
    assert_eq!(
        c.delete_drain(&t, "old-name", &d.id).await.unwrap_err(),
        HerokuError::AppNotFound {
            app: "old-name".into()
        }
    );
    assert!(c.get_drain(&t, "old-name", &d.id).await.is_err());
    assert_eq!(fake.drains("new-name").len(), 1);
    assert!(c.get_drain(&t, &id, &d.id).await.unwrap().is_some());
    assert!(c.delete_drain(&t, &id, &d.id).await.unwrap());
    // And a drain the app no longer has is just gone.
    assert!(!c.delete_drain(&t, &id, &d.id).await.unwrap());
}

#[tokio::test]
async fn only_a_taken_url_makes_a_create_look_for_the_drain() {
    let fake = FakeHeroku::start(FakeOptions {
        log_channel_pending: false,
        ..FakeOptions::default()
    })
    .await;
    fake.add_app("taken-app");
    let c = client(&fake);
    let t = token(&fake);
    let other = fake.insert_drain("taken-app", drain_url("taken-app").expose_secret(), None);
    let ensured = c
        .create_drain(&t, "taken-app", &drain_url("taken-app"))
        .await
        .unwrap();
    assert!(!ensured.created);
    assert_eq!(ensured.drain.id, other.id);
    // "Url is invalid" is an answer, not a reason to list.
    fake.reset_counts();
    let err = c
        .create_drain(&t, "taken-app", &DrainUrl::new("ftp://nowhere"))
        .await
        .unwrap_err();
    assert!(matches!(err, HerokuError::Api { status: 422, .. }), "{err}");
    assert_eq!(fake.counts().list, 0, "{:?}", fake.requests());
}

#[tokio::test]
async fn a_429_without_retry_after_is_not_reported_as_herokus_wait() {
    let fake = FakeHeroku::start(FakeOptions::default()).await;
    fake.add_app("busy-app");
    fake.fail_next(10, 429);
    let c = HerokuClient::with_options(
        &fake.base_url(),
        HerokuOptions {
            max_retries: 1,
            ..fast_options()
        },
    )
    .unwrap();
    let err = c.list_drains(&token(&fake), "busy-app").await.unwrap_err();
    assert_eq!(err.retry_after(), None);
    assert_eq!(
        err.to_string(),
        "Heroku rate limit exhausted after 2 attempts"
    );
}

fn exporter(endpoint: &str, password: &str) -> WantedExporter {
    WantedExporter {
        exporter_type: ExporterType::OtlpHttp,
        endpoint: endpoint.to_string(),
        headers: ExporterHeaders::new(
            [("Authorization".to_string(), format!("Bearer {password}"))].into(),
        ),
    }
}

#[tokio::test]
async fn telemetry_drains_of_a_fir_app_round_trip_and_errors_keep_the_header_secret() {
    let fake = FakeHeroku::start(FakeOptions {
        page_size: 1,
        ..FakeOptions::default()
    })
    .await;
    let cedar = fake.add_app("cedar-app");
    let fir = fake.add_fir_app("fir-app");
    let c = client(&fake);
    let t = token(&fake);

    // App Info names the generation.
    let info = c.app_info(&t, "fir-app").await.unwrap();
    assert_eq!(info.generation().unwrap(), Generation::Fir);
    let info = c.app_info(&t, "cedar-app").await.unwrap();
    assert_eq!(info.generation().unwrap(), Generation::Cedar);

    let want = exporter("https://logs.example.com/otlp/fir-app", "s3cr3t-Pa55word");
    let made = c
        .create_telemetry_drain(&t, "fir-app", &fir, &want)
        .await
        .unwrap();
    assert_eq!(made.owner.id, fir);
    assert_eq!(made.signals, ["logs"]);
    assert!(want.satisfied_by(&made), "{made:?}");
    assert!(!format!("{made:?}").contains("s3cr3t"), "{made:?}");
    fake.insert_telemetry_drain("fir-app", "otlp", "collector.example.com:4317", &[]);

    // Two pages of one, by name or by id.
    for ident in ["fir-app", fir.as_str()] {
        let listed = c.list_telemetry_drains(&t, ident).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(
            listed
                .iter()
                .any(|d| d.id == made.id && want.satisfied_by(d))
        );
    }

    // Update in place: same id, new header.
    let rotated = exporter("https://logs.example.com/otlp/fir-app", "rotated-Pa55word");
    let updated = c
        .update_telemetry_drain(&t, "fir-app", &made.id, &rotated)
        .await
        .unwrap()
        .expect("still there");
    assert_eq!(updated.id, made.id);
    assert!(rotated.satisfied_by(&updated));
    assert_eq!(
        fake.telemetry_drains("fir-app")
            .iter()
            .find(|d| d.id == made.id)
            .map(|d| d.headers["Authorization"].clone()),
        Some("Bearer rotated-Pa55word".to_string())
    );

    // Refused: a Cedar app, too many headers. The header value never shows.
    let e = c
        .create_telemetry_drain(&t, "cedar-app", &cedar, &want)
        .await
        .unwrap_err();
    assert!(matches!(e, HerokuError::Api { status: 422, .. }), "{e:?}");
    let mut many = exporter("https://logs.example.com/otlp/fir-app", "s3cr3t-Pa55word");
    many.headers = ExporterHeaders::new(
        (0..21)
            .map(|i| (format!("X-H{i}"), "s3cr3t-Pa55word".to_string()))
            .collect(),
    );
    let e = c
        .create_telemetry_drain(&t, "fir-app", &fir, &many)
        .await
        .unwrap_err();
    assert!(matches!(e, HerokuError::Api { status: 422, .. }), "{e:?}");
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
    // An unknown owner is an unknown app.
    assert!(matches!(
        c.create_telemetry_drain(&t, "gone", "ffffffff-89ab-cdef-0123-456789abcdef", &want)
            .await
            .unwrap_err(),
        HerokuError::AppNotFound { .. }
    ));

    // Delete: true, then false once gone; an update of a gone drain is None.
    assert!(
        c.delete_telemetry_drain(&t, "fir-app", &made.id)
            .await
            .unwrap()
    );
    assert!(
        !c.delete_telemetry_drain(&t, "fir-app", &made.id)
            .await
            .unwrap()
    );
    assert!(
        c.update_telemetry_drain(&t, "fir-app", &made.id, &want)
            .await
            .unwrap()
            .is_none()
    );
    let counts = fake.counts();
    assert_eq!(counts.telemetry_delete, 2);
    assert_eq!(counts.telemetry_update, 2);
    assert_eq!(fake.telemetry_drains("fir-app").len(), 1);
}

#[tokio::test]
async fn a_telemetry_create_answered_503_looks_first_and_then_creates_once() {
    let fake = FakeHeroku::start(FakeOptions::default()).await;
    let fir = fake.add_fir_app("fir-app");
    let c = client(&fake);
    let t = token(&fake);
    let want = exporter("https://logs.example.com/otlp/fir-app", "pw-0123456789");
    // The first create answers 503 before reaching the API; the retry's
    // look finds nothing, so it creates once.
    fake.fail_next(1, 503);
    let made = c
        .create_telemetry_drain(&t, "fir-app", &fir, &want)
        .await
        .unwrap();
    assert_eq!(fake.telemetry_drains("fir-app").len(), 1);
    assert_eq!(fake.telemetry_drains("fir-app")[0].id, made.id);
}
