//! The whole body path: framing, RFC 5424, logfmt, router fields, JSON.
//! Every output line must be a JSON object with the schema's keys, one line
//! per frame, and the stats must agree with the lines.

#![no_main]

use drainpipe_contract::schema::FIELDS;
use drainpipe_ingester::archive::objects::DaySink;
use drainpipe_ingester::encode::batch::{RequestMeta, encode_logplex_body};
use drainpipe_ingester::parse::logplex;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let meta = RequestMeta {
        app: "myapp",
        drain_token: Some("d.73ea7440-270a-435a-a0ea-adf50b4e5f5a"),
        frame_id: Some("09C557EAFCFB6CF2740EE62F62971098"),
        msg_count: Some(3),
        received_at_us: 1_781_697_600_000_000,
    };
    let mut sink = DaySink::default();
    let stats = encode_logplex_body(&meta, body, &mut sink);
    let mut lines = 0u64;
    for (_, buf) in &sink.days {
        assert_eq!(buf.last(), Some(&b'\n'));
        for line in buf[..buf.len() - 1].split(|&b| b == b'\n') {
            let v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(line).expect("each line is a JSON object");
            assert_eq!(v.len(), FIELDS.len());
            for f in FIELDS {
                assert!(v.contains_key(f.name), "missing {}", f.name);
            }
            lines += 1;
        }
    }
    assert_eq!(lines, stats.messages);
    assert_eq!(lines as usize, logplex::frames(body).count());
    assert_eq!(stats.count_mismatch, stats.messages != 3);
});
