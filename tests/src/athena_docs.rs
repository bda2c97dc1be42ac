//! The queries of docs/athena.md, as the docs show them, for the tests and benchmarks that run
//! them (`tests/athena_queries.rs`, `examples/archive_bytes.rs`): docs and code cannot drift.

use std::path::Path;

/// docs/athena.md in this checkout.
pub const ATHENA_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/athena.md");

/// The `##` sections whose ```sql blocks are the documented, ready-to-run queries.
pub const QUERY_SECTIONS: [&str; 2] = [
    "Ready-to-run queries",
    "From runbook greps to typed columns",
];

/// The table every documented query names.
pub const DOCUMENTED_TABLE: &str = "drainpipe.heroku_logs";

/// Every documented query of [`ATHENA_MD`] as (name, SQL); see [`queries_in`].
pub fn documented_queries() -> Result<Vec<(String, String)>, String> {
    let path = Path::new(ATHENA_MD);
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok(queries_in(&text))
}

/// Every ```sql block under the [`QUERY_SECTIONS`] of `markdown`, named by its `###` heading (a
/// second block under one heading gets " (2)"), its text as written (`;` included).
pub fn queries_in(markdown: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let (mut in_section, mut heading, mut n, mut sql) = (false, String::new(), 0, None::<String>);
    for line in markdown.lines() {
        if let Some(block) = sql.as_mut() {
            if line.trim_start().starts_with("```") {
                n += 1;
                let name = if n == 1 {
                    heading.clone()
                } else {
                    format!("{heading} ({n})")
                };
                out.push((name, std::mem::take(block)));
                sql = None;
            } else {
                block.push_str(line);
                block.push('\n');
            }
        } else if let Some(h) = line.strip_prefix("## ") {
            in_section = QUERY_SECTIONS.contains(&h.trim());
        } else if let Some(h) = line.strip_prefix("### ") {
            (heading, n) = (h.trim().to_owned(), 0);
        } else if in_section && line.trim() == "```sql" {
            sql = Some(String::new());
        }
    }
    out
}

/// A documented query made runnable in Trino over `database`'s `heroku_logs`: the table renamed
/// (quoted, as test databases have generated names), the final `;` dropped.
pub fn on_database(sql: &str, database: &str) -> String {
    sql.replace(DOCUMENTED_TABLE, &format!("\"{database}\".heroku_logs"))
        .trim()
        .trim_end_matches(';')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_named_by_heading_and_only_taken_from_the_query_sections() {
        let md = "## The table\n\n### DDL\n\n```sql\nCREATE TABLE x;\n```\n\n\
                  ## Ready-to-run queries\n\n### Errors\n\n```sql\nSELECT 1\nFROM drainpipe.heroku_logs;\n```\n\n\
                  text\n\n```sql\nSELECT 2;\n```\n\n```text\nnot sql\n```\n\n\
                  ## From runbook greps to typed columns\n\n### Paths\n\n```sql\nSELECT 3;\n```\n\n\
                  ## Elsewhere\n\n```sql\nSELECT 4;\n```\n";
        let got = queries_in(md);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Errors", "Errors (2)", "Paths"]);
        assert_eq!(got[0].1, "SELECT 1\nFROM drainpipe.heroku_logs;\n");
        assert_eq!(
            on_database(&got[0].1, "dp_x"),
            "SELECT 1\nFROM \"dp_x\".heroku_logs"
        );
    }

    #[test]
    fn the_docs_have_their_queries() {
        let queries = documented_queries().expect("docs/athena.md");
        assert!(queries.len() >= 13, "{queries:?}");
        assert!(
            queries
                .iter()
                .all(|(_, sql)| sql.contains(DOCUMENTED_TABLE))
        );
    }
}
