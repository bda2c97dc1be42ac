//! Syslog over a byte stream (RFC 6587): the frames of a TCP or TLS
//! connection, decoded incrementally as reads arrive.
//!
//! - Octet counting (`MSG-LEN SP SYSLOG-MSG`), which Logplex's syslog drains
//!   use; the count is trusted, as a stream has no other boundary to check it
//!   against.
//! - Newline framing as a fallback, for a frame that does not start with a
//!   count (`<PRI>...` up to LF).
//! - A maximum frame length, so one connection holds at most that much
//!   memory: a longer frame is not dropped but cut into parts of at most the
//!   maximum, each kept raw ([`FrameKind::Oversized`]).
//! - Bytes left when the stream ends mid-frame are kept raw too
//!   ([`FrameKind::Truncated`]).
//!
//! The decoder knows nothing of sockets: it is given the unread bytes and
//! returns how many it used, lending out frames that borrow those bytes.
//! Where a read splits the stream makes no difference to the frames.
//!
//! The module also defines how a batch of decoded frames is kept in one
//! write-ahead log entry ([`push_stored`], [`stored_frames`]).

use crate::parse::logplex;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A whole message, framing removed (an octet-counted frame's content,
    /// or a line without its LF).
    Message,
    /// A part of a frame longer than the maximum frame length.
    Oversized,
    /// What was received of a frame when the stream ended.
    Truncated,
}

impl FrameKind {
    /// `parse_error` of the record that keeps such a frame raw.
    pub fn parse_error(self) -> Option<&'static str> {
        match self {
            FrameKind::Message => None,
            FrameKind::Oversized => Some("frame over the maximum frame length: kept raw, in parts"),
            FrameKind::Truncated => Some("truncated frame: the stream ended mid-frame"),
        }
    }

    fn tag(self) -> u8 {
        match self {
            FrameKind::Message => 0,
            FrameKind::Oversized => 1,
            FrameKind::Truncated => 2,
        }
    }

    fn from_tag(tag: u8) -> Option<FrameKind> {
        match tag {
            0 => Some(FrameKind::Message),
            1 => Some(FrameKind::Oversized),
            2 => Some(FrameKind::Truncated),
            _ => None,
        }
    }
}

/// One frame of the stream, borrowing the bytes given to the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: FrameKind,
    pub bytes: &'a [u8],
    /// The bytes continue an oversized frame whose first part came earlier
    /// (they have no syslog header of their own).
    pub continues: bool,
}

/// Longest `MSG-LEN SP` prefix: ten digits (as in [`logplex`]) and a space.
pub const MAX_PREFIX: usize = 11;

/// Where the decoder is between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a frame.
    Start,
    /// Inside an oversized octet-counted frame: this many bytes are left;
    /// `true` while none of it has been passed on (the next part starts
    /// with the syslog header).
    Counted(usize, bool),
    /// Inside an oversized newline-framed frame: up to the next LF.
    Line,
}

/// Incremental RFC 6587 decoder.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_frame: usize,
    state: State,
}

impl Decoder {
    /// `max_frame`: the longest frame kept whole (at least 1 byte).
    pub fn new(max_frame: usize) -> Decoder {
        Decoder {
            max_frame: max_frame.max(1),
            state: State::Start,
        }
    }

    /// The longest frame kept whole.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Decode every frame that is complete in `input` (the bytes not used by
    /// earlier calls, in order), handing each to `on_frame`; returns how many
    /// bytes were used. With `eof` the stream has ended: everything is used
    /// and a partial frame comes out as [`FrameKind::Truncated`].
    ///
    /// Unless `eof`, what is left unused is less than
    /// `max_frame + MAX_PREFIX` bytes: the caller's buffer stays bounded.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
        eof: bool,
        mut on_frame: impl FnMut(Frame<'a>),
    ) -> usize {
        let mut pos = 0;
        loop {
            match self.step(&input[pos..], eof) {
                Step::Frame(frame, used) => {
                    on_frame(frame);
                    pos += used;
                }
                Step::Skip(used) => pos += used,
                Step::NeedMore => break,
            }
        }
        if eof { input.len() } else { pos }
    }

    fn step<'a>(&mut self, b: &'a [u8], eof: bool) -> Step<'a> {
        let max = self.max_frame;
        match self.state {
            State::Counted(left, first) => {
                let part = left.min(max);
                if b.len() >= part {
                    self.state = match left - part {
                        0 => State::Start,
                        rest => State::Counted(rest, false),
                    };
                    return Step::Frame(frame(FrameKind::Oversized, &b[..part], !first), part);
                }
                if eof && !b.is_empty() {
                    self.state = State::Start;
                    return Step::Frame(frame(FrameKind::Truncated, b, !first), b.len());
                }
                Step::NeedMore
            }
            State::Line => {
                // As at a frame start: a part ends at LF or after `max`
                // bytes not followed by LF, so no part is empty.
                let window = &b[..b.len().min(max.saturating_add(1))];
                if let Some(nl) = memchr::memchr(b'\n', window) {
                    self.state = State::Start;
                    return Step::Frame(frame(FrameKind::Oversized, &b[..nl], true), nl + 1);
                }
                if b.len() > max {
                    return Step::Frame(frame(FrameKind::Oversized, &b[..max], true), max);
                }
                if eof && !b.is_empty() {
                    self.state = State::Start;
                    return Step::Frame(frame(FrameKind::Oversized, b, true), b.len());
                }
                Step::NeedMore
            }
            State::Start => self.frame_start(b, eof),
        }
    }

    fn frame_start<'a>(&mut self, b: &'a [u8], eof: bool) -> Step<'a> {
        // Line terminators between frames are separators (a sender that
        // puts LF after counted frames, blank lines), not messages.
        let blank = b.iter().take_while(|c| matches!(c, b'\n' | b'\r')).count();
        if blank > 0 {
            return Step::Skip(blank);
        }
        if b.is_empty() {
            return Step::NeedMore;
        }
        let max = self.max_frame;
        if b[0].is_ascii_digit() {
            let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == b.len() && digits < MAX_PREFIX && !eof {
                // `12` at the end of a read: the rest of the count may follow.
                return Step::NeedMore;
            }
            if let Some((count, content)) = logplex::count_at(b, 0) {
                if count > max {
                    // Known too long from its header: pass it on in parts as
                    // it arrives instead of holding all of it.
                    self.state = State::Counted(count, true);
                    return Step::Skip(content);
                }
                if let Some(end) = content.checked_add(count).filter(|&e| e <= b.len()) {
                    return Step::Frame(frame(FrameKind::Message, &b[content..end], false), end);
                }
                if eof {
                    return Step::Frame(frame(FrameKind::Truncated, &b[content..], false), b.len());
                }
                return Step::NeedMore;
            }
            // Digits that are not a count: a line like any other.
        }
        let window = &b[..b.len().min(max.saturating_add(1))];
        if let Some(nl) = memchr::memchr(b'\n', window)
            && nl <= max
        {
            return Step::Frame(frame(FrameKind::Message, &b[..nl], false), nl + 1);
        }
        if b.len() > max {
            self.state = State::Line;
            return Step::Frame(frame(FrameKind::Oversized, &b[..max], false), max);
        }
        if eof {
            // The last line of a stream may lack its LF; it is still a line.
            return Step::Frame(frame(FrameKind::Message, b, false), b.len());
        }
        Step::NeedMore
    }
}

enum Step<'a> {
    Frame(Frame<'a>, usize),
    Skip(usize),
    NeedMore,
}

fn frame(kind: FrameKind, bytes: &[u8], continues: bool) -> Frame<'_> {
    Frame {
        kind,
        bytes,
        continues,
    }
}

/// HOSTNAME of a syslog message (`<PRI>VERSION SP TIMESTAMP SP HOSTNAME SP
/// ...`), found without parsing the rest: on syslog drains it is the drain
/// token, which decides where the message goes. `None` for NILVALUE or when
/// the bytes do not start like a syslog message.
pub fn hostname(message: &[u8]) -> Option<&[u8]> {
    if message.first() != Some(&b'<') {
        return None;
    }
    let mut rest = message;
    for _ in 0..2 {
        let sp = memchr::memchr(b' ', rest)?;
        rest = &rest[sp + 1..];
    }
    let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
    let host = logplex::strip_newline(&rest[..end]);
    (!host.is_empty() && host != b"-").then_some(host)
}

/// Append one frame to a write-ahead log body of syslog frames:
/// `[kind u8][len u32 LE][bytes]`.
pub fn push_stored(out: &mut Vec<u8>, kind: FrameKind, bytes: &[u8]) {
    // Frames are at most the maximum frame length, far below 4 GiB.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.push(kind.tag());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[..len as usize]);
}

/// The frames of a body written with [`push_stored`]. The log's CRC makes
/// a damaged body unlikely; if one is found anyway, what cannot be read
/// comes out whole as one `Err` (kept raw by the caller, never dropped).
pub fn stored_frames(body: &[u8]) -> impl Iterator<Item = Result<(FrameKind, &[u8]), &[u8]>> {
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parsed = rest.split_first().and_then(|(&tag, after)| {
            let kind = FrameKind::from_tag(tag)?;
            let len = u32::from_le_bytes(after.get(..4)?.try_into().ok()?) as usize;
            let bytes = after.get(4..4usize.checked_add(len)?)?;
            Some((kind, bytes, 5 + len))
        });
        match parsed {
            Some((kind, bytes, used)) => {
                rest = &rest[used..];
                Some(Ok((kind, bytes)))
            }
            None => {
                let broken = rest;
                rest = &[];
                Some(Err(broken))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Logplex syslog-drain messages: HOSTNAME is the drain token, MSGID and
    /// STRUCTURED-DATA are NILVALUEs.
    const ROUTER: &[u8] = br#"<158>1 2026-06-17T12:00:00.515030+00:00 d.73ea7440-270a-435a-a0ea-adf50b4e5f5a heroku router - - at=info method=GET path="/" host=quiet-lake-27894.herokuapp.com request_id=d7c85cc2-b289-4443-8c1d-2327066d6a3e fwd="37.73.223.49" dyno=web.1 connect=1ms service=18ms status=200 bytes=153 protocol=https"#;
    const APP: &[u8] = b"<190>1 2026-06-17T12:00:00.511485+00:00 d.73ea7440-270a-435a-a0ea-adf50b4e5f5a app web.1 - - [8601b555-6a83-4c12-8269-97c8e32cdb22] Completed 200 OK in 12ms";
    const L10: &[u8] = b"<172>1 2026-06-17T12:00:01+00:00 d.73ea7440-270a-435a-a0ea-adf50b4e5f5a heroku logplex - - Error L10 (output buffer overflow): 13 messages dropped since 2026-06-17T11:59:26+00:00.";

    fn counted(msg: &[u8]) -> Vec<u8> {
        let mut v = format!("{} ", msg.len()).into_bytes();
        v.extend_from_slice(msg);
        v
    }

    type Got = Vec<(FrameKind, Vec<u8>, bool)>;

    /// Feed `stream` in reads of the given sizes (cycled), as a connection
    /// would, keeping unused bytes like a socket buffer does.
    fn decode_in_reads(stream: &[u8], reads: &[usize], max: usize) -> Got {
        let mut d = Decoder::new(max);
        let mut buf: Vec<u8> = Vec::new();
        let mut got = Got::new();
        let mut at = 0;
        let mut i = 0;
        while at < stream.len() {
            let n = reads[i % reads.len()].max(1).min(stream.len() - at);
            i += 1;
            buf.extend_from_slice(&stream[at..at + n]);
            at += n;
            let used = d.decode(&buf, false, |f| {
                got.push((f.kind, f.bytes.to_vec(), f.continues))
            });
            buf.drain(..used);
            assert!(
                buf.len() < max + MAX_PREFIX,
                "unused bytes stay under the bound: {} >= {}",
                buf.len(),
                max + MAX_PREFIX
            );
        }
        let used = d.decode(&buf, true, |f| {
            got.push((f.kind, f.bytes.to_vec(), f.continues))
        });
        assert_eq!(used, buf.len(), "eof uses everything");
        got
    }

    fn messages(got: &Got) -> Vec<&[u8]> {
        got.iter()
            .map(|(k, b, _)| {
                assert_eq!(*k, FrameKind::Message);
                &b[..]
            })
            .collect()
    }

    #[test]
    fn logplex_stream_in_one_read_and_split_everywhere() {
        let stream: Vec<u8> = [ROUTER, APP, L10].iter().flat_map(|m| counted(m)).collect();
        let one = decode_in_reads(&stream, &[stream.len()], 64 << 10);
        assert_eq!(messages(&one), vec![ROUTER, APP, L10]);
        for size in [1, 2, 3, 7, 100, 333] {
            assert_eq!(
                decode_in_reads(&stream, &[size], 64 << 10),
                one,
                "reads of {size}"
            );
        }
    }

    #[test]
    fn counts_that_include_a_trailing_newline_and_lf_after_frames() {
        // The HTTPS-drain habit (count includes LF) and the opposite (LF
        // after the counted bytes) both decode to the same messages once
        // the encoder strips one LF.
        let mut with_nl = ROUTER.to_vec();
        with_nl.push(b'\n');
        let mut stream = counted(&with_nl);
        stream.extend(counted(APP));
        stream.extend_from_slice(b"\n\r\n");
        stream.extend(counted(L10));
        let got = decode_in_reads(&stream, &[5], 4096);
        assert_eq!(messages(&got), vec![&with_nl[..], APP, L10]);
    }

    #[test]
    fn newline_framing_when_a_frame_does_not_start_with_a_digit() {
        let mut stream = Vec::new();
        for m in [ROUTER, APP] {
            stream.extend_from_slice(m);
            stream.push(b'\n');
        }
        // Counted frames may follow newline-framed ones, and the last line
        // may lack its LF.
        stream.extend(counted(L10));
        stream.extend_from_slice(b"<13>1 - host app web.1 - - last");
        let got = decode_in_reads(&stream, &[9], 4096);
        assert_eq!(
            messages(&got),
            vec![ROUTER, APP, L10, &b"<13>1 - host app web.1 - - last"[..]]
        );
        // Digits that are not a count are a line too.
        let got = decode_in_reads(b"2026-06-17 was a day\n0 <1>1\n007 x\n", &[1], 4096);
        assert_eq!(
            messages(&got),
            vec![&b"2026-06-17 was a day"[..], b"0 <1>1", b"007 x"]
        );
        let got = decode_in_reads(b"12345678901 <1>1 -\n", &[3], 4096);
        assert_eq!(messages(&got), vec![&b"12345678901 <1>1 -"[..]]);
    }

    #[test]
    fn a_stream_cut_mid_frame_keeps_complete_frames_and_the_rest_raw() {
        let mut stream: Vec<u8> = counted(ROUTER);
        let app = counted(APP);
        stream.extend_from_slice(&app[..40]);
        let got = decode_in_reads(&stream, &[17], 4096);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0, &got[0].1[..]), (FrameKind::Message, ROUTER));
        assert_eq!(got[1].0, FrameKind::Truncated);
        assert_eq!(got[1].1, &app[4..40], "content without the count");
        // Cut inside the count itself: the digits are all there is.
        let got = decode_in_reads(b"15", &[1], 4096);
        assert_eq!(got, vec![(FrameKind::Message, b"15".to_vec(), false)]);
    }

    #[test]
    fn oversized_frames_are_kept_in_parts() {
        let max = 64;
        let long = [b"<13>1 - d.tok app web.1 - - ".to_vec(), vec![b'x'; 150]].concat();
        let short = b"<13>1 - d.tok app web.1 - - ok";
        let mut stream = counted(&long);
        stream.extend(counted(short));
        for reads in [&[1][..], &[10, 3], &[1000]] {
            let got = decode_in_reads(&stream, reads, max);
            let parts: Vec<_> = got.iter().take(3).collect();
            assert!(parts.iter().all(|(k, _, _)| *k == FrameKind::Oversized));
            assert_eq!(
                parts.iter().map(|p| p.1.len()).collect::<Vec<_>>(),
                [64, 64, long.len() - 128]
            );
            assert_eq!(
                parts.iter().map(|p| p.2).collect::<Vec<_>>(),
                [false, true, true]
            );
            assert_eq!(
                parts.iter().flat_map(|p| p.1.clone()).collect::<Vec<_>>(),
                long
            );
            assert_eq!((got[3].0, &got[3].1[..]), (FrameKind::Message, &short[..]));
            assert_eq!(got.len(), 4);
        }
        // Newline-framed: the first part carries the header.
        let mut stream = long.clone();
        stream.push(b'\n');
        stream.extend_from_slice(b"<13>1 - h a p - - short\n");
        let got = decode_in_reads(&stream, &[7], max);
        let kinds: Vec<_> = got.iter().map(|g| (g.0, g.2)).collect();
        assert_eq!(
            kinds,
            [
                (FrameKind::Oversized, false),
                (FrameKind::Oversized, true),
                (FrameKind::Oversized, true),
                (FrameKind::Message, false)
            ]
        );
        assert_eq!(
            got[..3]
                .iter()
                .flat_map(|p| p.1.clone())
                .collect::<Vec<_>>(),
            long
        );
        assert_eq!(hostname(&got[0].1), Some(&b"d.tok"[..]));
        // An oversized counted frame cut short ends as truncated.
        let got = decode_in_reads(&counted(&long)[..100], &[30], max);
        assert_eq!(got.last().map(|g| g.0), Some(FrameKind::Truncated));
    }

    #[test]
    fn hostnames() {
        assert_eq!(
            hostname(ROUTER),
            Some(&b"d.73ea7440-270a-435a-a0ea-adf50b4e5f5a"[..])
        );
        assert_eq!(hostname(b"<13>1 - - app web.1 - - x"), None);
        assert_eq!(hostname(b"<13>1 - myapp"), Some(&b"myapp"[..]));
        assert_eq!(hostname(b"<13>1 - myapp\n"), Some(&b"myapp"[..]));
        assert_eq!(hostname(b"<13>1 -  app"), None);
        assert_eq!(hostname(b"hello world and more"), None);
        assert_eq!(hostname(b"<13>1"), None);
    }

    #[test]
    fn stored_frames_round_trip_and_damage_is_kept() {
        let mut body = Vec::new();
        push_stored(&mut body, FrameKind::Message, ROUTER);
        push_stored(&mut body, FrameKind::Oversized, b"");
        push_stored(&mut body, FrameKind::Truncated, APP);
        let got: Vec<_> = stored_frames(&body).collect();
        assert_eq!(
            got,
            vec![
                Ok((FrameKind::Message, ROUTER)),
                Ok((FrameKind::Oversized, &b""[..])),
                Ok((FrameKind::Truncated, APP))
            ]
        );
        let cut = &body[..body.len() - 3];
        let got: Vec<_> = stored_frames(cut).collect();
        assert_eq!(got.len(), 3);
        assert!(matches!(got[2], Err(raw) if raw.len() == 5 + APP.len() - 3));
        assert_eq!(
            stored_frames(b"\x09abc").collect::<Vec<_>>(),
            vec![Err(&b"\x09abc"[..])]
        );
    }

    fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                any::<u8>(),
                Just(b'\n'),
                Just(b' '),
                Just(b'<'),
                (b'0'..=b'9'),
                (b'0'..=b'9')
            ],
            0..600,
        )
    }

    proptest! {
        #[test]
        fn reads_do_not_change_the_frames(
            stream in stream_bytes(),
            reads in proptest::collection::vec(1usize..50, 1..8),
            max in 1usize..80,
        ) {
            let whole = decode_in_reads(&stream, &[stream.len().max(1)], max);
            let split = decode_in_reads(&stream, &reads, max);
            prop_assert_eq!(&split, &whole);
            for (kind, bytes, _) in &whole {
                prop_assert!(bytes.len() <= max, "{:?} of {} > {}", kind, bytes.len(), max);
                if *kind == FrameKind::Oversized {
                    prop_assert!(!bytes.is_empty(), "no empty parts");
                }
            }
        }

        #[test]
        fn any_concatenation_of_counted_frames_round_trips(
            msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..120), 0..12),
            reads in proptest::collection::vec(1usize..64, 1..6),
        ) {
            let stream: Vec<u8> = msgs.iter().flat_map(|m| counted(m)).collect();
            let got = decode_in_reads(&stream, &reads, 200);
            let want: Got = msgs.iter().map(|m| (FrameKind::Message, m.clone(), false)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
