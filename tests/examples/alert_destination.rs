//! A Slack-compatible webhook for benchmarks (`scripts/bench-alerts`): the test suite's fake
//! Slack, answering as told, until its standard input closes.
//!
//! ```sh
//! cargo run --release -p drainpipe-tests --example alert_destination -- hang
//! ```
//!
//! Modes: `ok` (Slack's pace, 429 with `Retry-After: 1` when posted to faster), `500` (every
//! post answered 500), `hang` (every post read and never answered). Prints the webhook URL on
//! the first line of standard output; on exit, what it received on standard error.

use std::io::Read as _;
use std::time::Duration;

use drainpipe_tests::slack_fake::SlackFake;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "ok".to_owned());
    let fake = SlackFake::start().await;
    match mode.as_str() {
        "ok" => fake.rate_limit(Duration::from_secs(1), 1),
        "500" => fake.fail(500),
        "hang" => fake.hang(),
        other => anyhow::bail!("mode must be ok, 500 or hang, not {other:?}"),
    }
    println!("{}", fake.webhook_url());
    // Until the caller closes our standard input.
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    let requests = fake.requests();
    let answered = |s: u16| requests.iter().filter(|r| r.status == Some(s)).count();
    eprintln!(
        "alert destination ({mode}): {} requests: {} answered 200, {} 429, {} 500, {} never answered",
        requests.len(),
        answered(200),
        answered(429),
        answered(500),
        fake.hung(),
    );
    Ok(())
}
