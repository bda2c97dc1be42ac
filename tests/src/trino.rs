//! A small client for Trino's HTTP protocol (`POST /v1/statement`, then follow `nextUri`), enough
//! to run the documented Athena queries against the Trino that `scripts/testenv up` starts.

use std::time::Duration;

use serde_json::Value;

/// A finished query: column names and rows, every cell rendered as text (`NULL` for null).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// What a finished query cost, from the final `stats` of Trino's client protocol
/// (`StatementStats`, sent with the last page, once the query info is final).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// `FINISHED` for a query that ran to completion.
    pub state: String,
    /// Bytes read from storage (S3): compressed objects, or the Parquet column chunks read, with
    /// their footers. What Athena bills as "data scanned".
    pub physical_input_bytes: u64,
    /// Bytes of the rows the table scans produced (decoded), and the rows themselves.
    pub processed_bytes: u64,
    pub processed_rows: u64,
    pub elapsed_ms: u64,
    pub cpu_ms: u64,
    pub peak_memory_bytes: u64,
}

impl QueryStats {
    fn from_protocol(stats: &Value) -> QueryStats {
        let n = |key: &str| stats[key].as_u64().unwrap_or(0);
        QueryStats {
            state: stats["state"].as_str().unwrap_or("").to_owned(),
            physical_input_bytes: n("physicalInputBytes"),
            processed_bytes: n("processedBytes"),
            processed_rows: n("processedRows"),
            elapsed_ms: n("elapsedTimeMillis"),
            cpu_ms: n("cpuTimeMillis"),
            peak_memory_bytes: n("peakMemoryBytes"),
        }
    }
}

/// Trino at `base` (`http://127.0.0.1:PORT`), catalog `hive`, session time zone UTC as Athena.
pub struct Trino {
    base: String,
    http: reqwest::Client,
}

impl Trino {
    pub fn new(base: &str) -> Self {
        Trino {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Runs `sql` to completion; `Err` carries Trino's error name and message.
    pub async fn query(&self, sql: &str) -> Result<Answer, String> {
        self.query_with_stats(sql).await.map(|(answer, _)| answer)
    }

    /// Like [`Trino::query`], with what the query read and cost: the stats of its last page.
    pub async fn query_with_stats(&self, sql: &str) -> Result<(Answer, QueryStats), String> {
        let mut page: Value = self
            .http
            .post(format!("{}/v1/statement", self.base))
            .header("X-Trino-User", "drainpipe-test")
            .header("X-Trino-Catalog", "hive")
            .header("X-Trino-Time-Zone", "UTC")
            .body(sql.to_owned())
            .send()
            .await
            .map_err(|e| format!("POST /v1/statement: {e}"))?
            .json()
            .await
            .map_err(|e| format!("POST /v1/statement answer: {e}"))?;
        let mut answer = Answer {
            columns: Vec::new(),
            rows: Vec::new(),
        };
        loop {
            if let Some(error) = page.get("error") {
                return Err(format!(
                    "{}: {}",
                    error["errorName"].as_str().unwrap_or("?"),
                    error["message"].as_str().unwrap_or("?")
                ));
            }
            if answer.columns.is_empty()
                && let Some(columns) = page["columns"].as_array()
            {
                answer.columns = columns
                    .iter()
                    .map(|c| c["name"].as_str().unwrap_or("").to_owned())
                    .collect();
            }
            if let Some(rows) = page["data"].as_array() {
                for row in rows {
                    let cells = row.as_array().map(Vec::as_slice).unwrap_or_default();
                    answer.rows.push(cells.iter().map(cell).collect());
                }
            }
            let Some(next) = page["nextUri"].as_str().map(str::to_owned) else {
                return Ok((answer, QueryStats::from_protocol(&page["stats"])));
            };
            page = self
                .http
                .get(&next)
                .send()
                .await
                .map_err(|e| format!("GET {next}: {e}"))?
                .json()
                .await
                .map_err(|e| format!("GET {next} answer: {e}"))?;
        }
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
