//! The fake Slack answers as Slack's incoming webhooks do (tests/src/slack_fake.rs): accepted
//! posts, Block Kit's limits, the refusals of a gone channel, 429 with `Retry-After`, a failing
//! and a hanging destination. No server from the test environment is needed.

use std::time::{Duration, Instant};

use drainpipe_tests::slack_fake::{SlackFake, limits};
use serde_json::{Value, json};

async fn post(url: &str, body: &Value) -> (u16, String, Option<String>, Option<String>) {
    post_raw(url, body.to_string()).await
}

/// Status, body, `Content-Type` and `Retry-After` of one POST.
async fn post_raw(url: &str, body: String) -> (u16, String, Option<String>, Option<String>) {
    let res = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the fake Slack answers");
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (content_type, retry_after) = (header("content-type"), header("retry-after"));
    let status = res.status().as_u16();
    let text = res.text().await.expect("answer body");
    (status, text, content_type, retry_after)
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

#[tokio::test]
async fn an_accepted_post_is_ok_and_recorded() {
    let slack = SlackFake::start().await;
    let url = slack.webhook_url();
    let message = json!({
        "text": "3 lines matched rule h12 on app billing",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "h12 on billing"}},
            section("`at=error code=H12 desc=\"Request timeout\"`"),
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "and 2 more lines"}]},
        ],
    });
    let before = Instant::now();
    let (status, body, content_type, _) = post(&url, &message).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(content_type.as_deref(), Some("text/html"));

    let posts = slack.posts();
    assert_eq!(posts.len(), 1);
    let p = &posts[0];
    assert_eq!(format!("{}{}", slack.base_url(), p.path), url);
    assert!(p.path.starts_with("/services/T"), "{}", p.path);
    assert!(p.at >= before);
    assert_eq!(p.payload, message);
    assert_eq!(p.text(), Some("3 lines matched rule h12 on app billing"));
    assert_eq!(p.blocks().len(), 3);
    assert_eq!(
        p.block_texts(),
        [
            "h12 on billing",
            "`at=error code=H12 desc=\"Request timeout\"`",
            "and 2 more lines"
        ]
    );
    assert!(slack.refusals().is_empty());

    // Text alone is a message too.
    let (status, _, _, _) = post(&url, &json!({"text": "plain"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        slack.wait_for_posts(2, Duration::from_secs(1)).await.len(),
        2
    );
}

#[tokio::test]
async fn block_kit_limits_are_refused_as_slack_refuses_them() {
    let slack = SlackFake::start().await;
    let url = slack.webhook_url();
    let blocks = |n: usize| json!({"blocks": vec![section("line"); n]});
    // Characters, not bytes: 3,000 two-byte characters fit.
    let wide = "é".repeat(limits::SECTION_TEXT);
    let header = |n: usize| json!({"text": "t", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h".repeat(n)}}]});
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("50 blocks", blocks(50).to_string(), 200, "ok"),
        ("51 blocks", blocks(51).to_string(), 400, "invalid_blocks"),
        (
            "a 3,000-character section",
            json!({"blocks": [section(&wide)]}).to_string(),
            200,
            "ok",
        ),
        (
            "a 3,001-character section",
            json!({"blocks": [section(&format!("{wide}x"))]}).to_string(),
            400,
            "invalid_blocks",
        ),
        ("an empty section", json!({"blocks": [section("")]}).to_string(), 400, "invalid_blocks"),
        ("a 150-character header", header(150).to_string(), 200, "ok"),
        ("a 151-character header", header(151).to_string(), 400, "invalid_blocks"),
        (
            "a mrkdwn header",
            json!({"blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}]})
                .to_string(),
            400,
            "invalid_blocks",
        ),
        (
            "11 section fields",
            json!({"blocks": [{"type": "section", "fields": vec![json!({"type": "mrkdwn", "text": "f"}); 11]}]})
                .to_string(),
            400,
            "invalid_blocks",
        ),
        (
            "an unknown block type",
            json!({"blocks": [{"type": "paragraph", "text": "x"}]}).to_string(),
            400,
            "invalid_blocks",
        ),
        ("blocks not an array", json!({"blocks": {"type": "divider"}}).to_string(), 400, "invalid_blocks_format"),
        ("neither text nor blocks", json!({"username": "drainpipe"}).to_string(), 400, "no_text"),
        ("empty text, no blocks", json!({"text": "  "}).to_string(), 400, "no_text"),
        ("not JSON", "text=hello".to_owned(), 400, "invalid_payload"),
        ("a JSON array", "[]".to_owned(), 400, "invalid_payload"),
    ];
    for (name, body, want_status, want_body) in &cases {
        let (status, answer, content_type, _) = post_raw(&url, body.clone()).await;
        assert_eq!(
            (status, answer.as_str()),
            (*want_status, *want_body),
            "{name}"
        );
        assert_eq!(content_type.as_deref(), Some("text/html"), "{name}");
    }
    let refused: Vec<(u16, String)> = slack
        .refusals()
        .into_iter()
        .map(|r| (r.status, r.error))
        .collect();
    let want: Vec<(u16, String)> = cases
        .iter()
        .filter(|c| c.2 != 200)
        .map(|c| (c.2, c.3.to_owned()))
        .collect();
    assert_eq!(refused, want, "every refusal is recorded, in order");
    assert_eq!(slack.posts().len(), 3);

    let (status, answer, _, _) = post(
        &format!("{}/hooks/elsewhere", slack.base_url()),
        &json!({"text": "x"}),
    )
    .await;
    assert_eq!((status, answer.as_str()), (404, "no_service"));
}

#[tokio::test]
async fn posts_faster_than_the_pace_get_429_with_retry_after() {
    let slack = SlackFake::start().await;
    slack.rate_limit(Duration::from_millis(500), 1);
    let (url, other) = (slack.webhook_url(), slack.webhook_url());
    let msg = json!({"text": "paced"});

    assert_eq!(post(&url, &msg).await.0, 200);
    // Another webhook has its own allowance.
    assert_eq!(post(&other, &msg).await.0, 200);
    let (status, body, content_type, retry_after) = post(&url, &msg).await;
    assert_eq!(status, 429);
    assert_eq!(retry_after.as_deref(), Some("1"));
    let body: Value = serde_json::from_str(&body).expect("429 body is JSON");
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["ok"], false);
    assert!(content_type.is_some_and(|c| c.starts_with("application/json")));
    // Not waiting: 429 again, while the Retry-After runs.
    assert_eq!(post(&url, &msg).await.0, 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(post(&url, &msg).await.0, 200);

    let limited = slack.rate_limited();
    assert_eq!(limited.len(), 2);
    assert!(limited.iter().all(|r| r.path == limited[0].path));
    assert_eq!(limited[0].retry_after, Duration::from_secs(1));
    assert_eq!(
        limited[0].honoured(),
        Some(false),
        "the client posted again at once"
    );
    assert_eq!(limited[1].honoured(), Some(true), "the client waited 1.1 s");
    assert!(!slack.retry_after_honoured());
    assert_eq!(slack.posts().len(), 3);
    assert_eq!(
        slack.refusals().iter().filter(|r| r.status == 429).count(),
        2
    );

    // Bursts: three at once pass, the fourth is paced.
    slack.clear();
    slack.rate_limit_with_burst(Duration::from_secs(1), 3, 2);
    let statuses = [
        post(&url, &msg).await.0,
        post(&url, &msg).await.0,
        post(&url, &msg).await.0,
        post(&url, &msg).await.0,
    ];
    assert_eq!(statuses, [200, 200, 200, 429]);
    assert_eq!(slack.rate_limited()[0].retry_after, Duration::from_secs(2));
    assert_eq!(slack.rate_limited()[0].honoured(), None, "no next post yet");
    assert!(slack.retry_after_honoured());
}

#[tokio::test]
async fn a_gone_failing_or_hanging_destination_answers_as_slack_would() {
    let slack = SlackFake::start().await;
    let url = slack.webhook_url();
    let msg = json!({"text": "x"});
    for (status, body) in [
        (403, "action_prohibited"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
    ] {
        slack.gone(status);
        assert_eq!(post(&url, &msg).await.0, status);
        let (got, answer, content_type, _) = post(&url, &msg).await;
        assert_eq!((got, answer.as_str()), (status, body));
        assert_eq!(content_type.as_deref(), Some("text/html"));
    }
    slack.refuse(404, "no_service");
    assert_eq!(post(&url, &msg).await.1, "no_service");
    slack.fail(500);
    let (status, answer, _, _) = post(&url, &msg).await;
    assert_eq!((status, answer.as_str()), (500, "rollup_error"));
    slack.fail(503);
    assert_eq!(post(&url, &msg).await.0, 503);
    assert!(slack.posts().is_empty());
    assert_eq!(slack.refusals().len(), 9);

    slack.hang();
    let started = Instant::now();
    let err = reqwest::Client::new()
        .post(&url)
        .json(&msg)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .expect_err("a hanging Slack never answers");
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(slack.hung(), 1);
    assert_eq!(slack.requests().last().and_then(|r| r.status), None);

    slack.heal();
    assert_eq!(post(&url, &msg).await.0, 200);
    assert_eq!(slack.posts().len(), 1);
}
