//! The syslog-drain stream path: incremental RFC 6587 decoding (octet
//! counting, newline fallback, maximum frame length) at arbitrary read
//! boundaries, then the stored-frames body through the strict RFC 5424
//! encoder. The first input bytes choose the maximum frame length and the
//! read sizes; the rest is the stream.
//!
//! Checked: no panic; the frames do not depend on where reads split the
//! stream; no frame is longer than the maximum and the decoder never keeps
//! more than `max + MAX_PREFIX` bytes unread; every stored frame comes back
//! as written; one JSON line with the schema's keys per frame.

#![no_main]

use drainpipe_contract::schema::FIELDS;
use drainpipe_ingester::archive::objects::DaySink;
use drainpipe_ingester::encode::batch::{RequestMeta, encode_body};
use drainpipe_ingester::parse::BodyFormat;
use drainpipe_ingester::parse::syslog_stream::{self, Decoder, FrameKind, MAX_PREFIX};
use libfuzzer_sys::fuzz_target;

type Frames = Vec<(FrameKind, Vec<u8>, bool)>;

fn decode(stream: &[u8], reads: &[usize], max: usize) -> Frames {
    let mut d = Decoder::new(max);
    let mut buf = Vec::new();
    let mut out = Frames::new();
    let mut at = 0;
    let mut i = 0;
    while at < stream.len() {
        let n = reads[i % reads.len()].clamp(1, stream.len() - at);
        i += 1;
        buf.extend_from_slice(&stream[at..at + n]);
        at += n;
        let used = d.decode(&buf, false, |f| {
            out.push((f.kind, f.bytes.to_vec(), f.continues))
        });
        buf.drain(..used);
        assert!(buf.len() < max + MAX_PREFIX, "unread bytes over the bound");
    }
    let used = d.decode(&buf, true, |f| {
        out.push((f.kind, f.bytes.to_vec(), f.continues))
    });
    assert_eq!(used, buf.len());
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let max = 1 + usize::from(data[0]) * 4;
    let reads = [usize::from(data[1] % 64) + 1, usize::from(data[2] % 7) + 1];
    let stream = &data[3..];
    let whole = decode(stream, &[stream.len().max(1)], max);
    let split = decode(stream, &reads, max);
    assert_eq!(whole, split, "frames depend on read boundaries");

    let mut body = Vec::new();
    for (kind, bytes, _) in &whole {
        assert!(bytes.len() <= max, "frame over the maximum");
        syslog_stream::push_stored(&mut body, *kind, bytes);
    }
    let back: Vec<(FrameKind, &[u8])> = syslog_stream::stored_frames(&body)
        .map(|f| f.expect("stored frames read back"))
        .collect();
    assert_eq!(back.len(), whole.len());
    for ((k, b), (kind, bytes, _)) in back.iter().zip(&whole) {
        assert_eq!((k, *b), (kind, &bytes[..]));
    }

    let meta = RequestMeta {
        app: "myapp",
        drain_token: Some("d.73ea7440-270a-435a-a0ea-adf50b4e5f5a"),
        frame_id: None,
        msg_count: None,
        received_at_us: 1_781_697_600_000_000,
    };
    let mut sink = DaySink::default();
    let stats = encode_body(&meta, BodyFormat::SyslogFrames, &body, &mut sink);
    let mut lines = 0u64;
    for (_, buf) in &sink.days {
        assert_eq!(buf.last(), Some(&b'\n'));
        for line in buf[..buf.len() - 1].split(|&b| b == b'\n') {
            let v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(line).expect("each line is a JSON object");
            assert_eq!(v.len(), FIELDS.len());
            lines += 1;
        }
    }
    assert_eq!(lines, stats.messages);
    assert_eq!(lines as usize, whole.len());
});
