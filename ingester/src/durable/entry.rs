//! One logged request on disk: the record `[len u32 LE][crc32 u32 LE][payload]`
//! and the payload's fields, encoded, checked and decoded.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};

use crate::parse::BodyFormat;

pub(super) const RECORD_HEADER: usize = 8;
const PAYLOAD_VERSION: u8 = 1;
/// Anything longer is corruption: bodies are capped far below this.
pub(super) const MAX_RECORD: u32 = 1 << 30;

const FLAG_TOKEN: u8 = 1;
const FLAG_FRAME: u8 = 2;
const FLAG_COUNT: u8 = 4;
/// The body holds syslog-drain frames (`BodyFormat::SyslogFrames`).
const FLAG_SYSLOG: u8 = 8;
/// The body is an OTLP logs request in protobuf (`BodyFormat::OtlpProtobuf`).
const FLAG_OTLP_PROTOBUF: u8 = 16;
/// The body is an OTLP logs request in JSON (`BodyFormat::OtlpJson`).
const FLAG_OTLP_JSON: u8 = 32;

/// One received request, as logged and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub app: String,
    pub drain_token: Option<String>,
    pub frame_id: Option<String>,
    pub msg_count: Option<u64>,
    pub received_at_us: i64,
    /// How `body` is framed.
    pub format: BodyFormat,
    pub body: Bytes,
}

impl Entry {
    pub(super) fn encoded_len(&self) -> usize {
        RECORD_HEADER + self.payload_len()
    }

    fn payload_len(&self) -> usize {
        2 + 8
            + 8
            + 4
            + 4
            + 4
            + self.app.len()
            + self.drain_token.as_ref().map_or(0, String::len)
            + self.frame_id.as_ref().map_or(0, String::len)
            + self.body.len()
    }

    /// Append `[len][crc][payload]` to `out`.
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; RECORD_HEADER]);
        let mut flags = 0;
        if self.drain_token.is_some() {
            flags |= FLAG_TOKEN;
        }
        if self.frame_id.is_some() {
            flags |= FLAG_FRAME;
        }
        if self.msg_count.is_some() {
            flags |= FLAG_COUNT;
        }
        flags |= match self.format {
            BodyFormat::LogplexHttps => 0,
            BodyFormat::SyslogFrames => FLAG_SYSLOG,
            BodyFormat::OtlpProtobuf => FLAG_OTLP_PROTOBUF,
            BodyFormat::OtlpJson => FLAG_OTLP_JSON,
        };
        let token = self.drain_token.as_deref().unwrap_or("");
        let frame = self.frame_id.as_deref().unwrap_or("");
        out.push(PAYLOAD_VERSION);
        out.push(flags);
        out.extend_from_slice(&self.received_at_us.to_le_bytes());
        out.extend_from_slice(&self.msg_count.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&len32(self.app.len()).to_le_bytes());
        out.extend_from_slice(&len32(token.len()).to_le_bytes());
        out.extend_from_slice(&len32(frame.len()).to_le_bytes());
        out.extend_from_slice(self.app.as_bytes());
        out.extend_from_slice(token.as_bytes());
        out.extend_from_slice(frame.as_bytes());
        out.extend_from_slice(&self.body);
        let payload = &out[start + RECORD_HEADER..];
        let len = len32(payload.len());
        let crc = crc32fast::hash(payload);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decode a payload whose CRC was checked; `payload` is a slice of a
    /// shared buffer, so the body is not copied.
    pub(super) fn decode(payload: Bytes) -> Option<Entry> {
        let p = &payload[..];
        if p.len() < 30 || p[0] != PAYLOAD_VERSION {
            return None;
        }
        let flags = p[1];
        let received_at_us = i64::from_le_bytes(p[2..10].try_into().ok()?);
        let msg_count = u64::from_le_bytes(p[10..18].try_into().ok()?);
        let app_len = u32::from_le_bytes(p[18..22].try_into().ok()?) as usize;
        let token_len = u32::from_le_bytes(p[22..26].try_into().ok()?) as usize;
        let frame_len = u32::from_le_bytes(p[26..30].try_into().ok()?) as usize;
        let mut at = 30usize;
        let mut take = |n: usize| -> Option<std::ops::Range<usize>> {
            let end = at.checked_add(n)?;
            (end <= p.len()).then(|| {
                let r = at..end;
                at = end;
                r
            })
        };
        let app = take(app_len)?;
        let token = take(token_len)?;
        let frame = take(frame_len)?;
        let text = |r: std::ops::Range<usize>| String::from_utf8(p[r].to_vec()).ok();
        Some(Entry {
            app: text(app)?,
            drain_token: if flags & FLAG_TOKEN != 0 {
                Some(text(token)?)
            } else {
                None
            },
            frame_id: if flags & FLAG_FRAME != 0 {
                Some(text(frame)?)
            } else {
                None
            },
            msg_count: (flags & FLAG_COUNT != 0).then_some(msg_count),
            received_at_us,
            format: format_of(flags)?,
            body: payload.slice(at..),
        })
    }
}

/// The body format a record's flags name; `None` when they name two (corruption
/// that slipped past the CRC is the only way).
fn format_of(flags: u8) -> Option<BodyFormat> {
    match flags & (FLAG_SYSLOG | FLAG_OTLP_PROTOBUF | FLAG_OTLP_JSON) {
        0 => Some(BodyFormat::LogplexHttps),
        FLAG_SYSLOG => Some(BodyFormat::SyslogFrames),
        FLAG_OTLP_PROTOBUF => Some(BodyFormat::OtlpProtobuf),
        FLAG_OTLP_JSON => Some(BodyFormat::OtlpJson),
        _ => None,
    }
}

fn len32(n: usize) -> u32 {
    // Callers keep headers and bodies far below 4 GiB (max body, header limits).
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One checked record at `offset`, or None if what is there is not a
/// complete, valid record.
pub(super) fn read_record(file: &File, offset: u64, end: u64) -> io::Result<Option<(Bytes, u64)>> {
    if end < offset + RECORD_HEADER as u64 {
        return Ok(None);
    }
    let mut header = [0u8; RECORD_HEADER];
    file.read_exact_at(&mut header, offset)?;
    let (len, crc) = split_header(&header);
    if len > MAX_RECORD || offset + RECORD_HEADER as u64 + u64::from(len) > end {
        return Ok(None);
    }
    let mut payload = BytesMut::zeroed(len as usize);
    file.read_exact_at(&mut payload, offset + RECORD_HEADER as u64)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(None);
    }
    Ok(Some((
        payload.freeze(),
        offset + RECORD_HEADER as u64 + u64::from(len),
    )))
}

pub(super) fn split_header(h: &[u8; RECORD_HEADER]) -> (u32, u32) {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    (len, crc)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry(i: u64, body: &str) -> Entry {
        Entry {
            app: "shop".into(),
            drain_token: Some("d.11111111-2222-3333-4444-555555555555".into()),
            frame_id: i.is_multiple_of(2).then(|| format!("F{i:030X}")),
            msg_count: (!i.is_multiple_of(3)).then_some(i),
            received_at_us: 1_781_000_000_000_000 + i as i64,
            format: match i % 5 {
                0 => BodyFormat::SyslogFrames,
                1 => BodyFormat::OtlpProtobuf,
                2 => BodyFormat::OtlpJson,
                _ => BodyFormat::LogplexHttps,
            },
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn entries_round_trip() {
        for i in 0..6 {
            let e = entry(
                i,
                "83 <40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed\n",
            );
            let mut buf = Vec::new();
            e.encode_into(&mut buf);
            assert_eq!(buf.len(), e.encoded_len());
            let payload = Bytes::from(buf).slice(RECORD_HEADER..);
            assert_eq!(Entry::decode(payload), Some(e));
        }
    }
}
