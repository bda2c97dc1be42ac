//! The intent manifest: what a merge is about to do, stored before it does
//! anything, so a run killed at any point is finished by the next one.
//!
//! 1. `planned`: the inputs and the output key are written down. Nothing
//!    else has changed yet. A run that finds this redoes the merge from the
//!    same inputs into the same key (overwriting an output a killed run may
//!    have stored), so the records end up once.
//! 2. `committed`: the output is stored and its records counted equal to
//!    the inputs'. From here only deletes remain: a run that finds this
//!    checks the output is there and deletes whatever inputs are left.
//! 3. The manifest is deleted last.

use serde::{Deserialize, Serialize};

use drainpipe_contract::schema::ArchiveFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum State {
    Planned,
    Committed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Input {
    pub(crate) key: String,
    pub(crate) size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Manifest {
    pub(crate) version: u32,
    pub(crate) state: State,
    /// RFC 3339 UTC time the merge was planned.
    pub(crate) planned_at: String,
    pub(crate) from: ArchiveFormat,
    pub(crate) to: ArchiveFormat,
    pub(crate) inputs: Vec<Input>,
    pub(crate) output: String,
    /// Set once committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) output_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) records: Option<u64>,
}

pub(crate) const VERSION: u32 = 1;

impl Manifest {
    pub(crate) fn to_json(&self) -> Vec<u8> {
        // A struct of strings and numbers always serializes.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    pub(crate) fn from_json(body: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if m.version != VERSION {
            return Err(format!(
                "manifest version {} (this compactor writes {VERSION}); run the drainpipe version that wrote it",
                m.version
            ));
        }
        Ok(m)
    }

    pub(crate) fn input_keys(&self) -> Vec<String> {
        self.inputs.iter().map(|i| i.key.clone()).collect()
    }

    pub(crate) fn input_bytes(&self) -> u64 {
        self.inputs.iter().map(|i| i.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_back_and_a_newer_one_is_refused() {
        let m = Manifest {
            version: VERSION,
            state: State::Committed,
            planned_at: "2026-12-07T03:17:00.000000Z".into(),
            from: ArchiveFormat::Json,
            to: ArchiveFormat::Parquet,
            inputs: vec![Input {
                key: "logs/shop/2026/11/05/1-a.json.gz".into(),
                size: 10,
            }],
            output: "logs/format=parquet/shop/2026/11/05/1-c.parquet".into(),
            output_size: Some(9),
            records: Some(3),
        };
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        let newer = String::from_utf8(m.to_json())
            .unwrap()
            .replace("\"version\": 1", "\"version\": 2");
        assert!(
            Manifest::from_json(newer.as_bytes())
                .unwrap_err()
                .contains("version 2")
        );
    }
}
