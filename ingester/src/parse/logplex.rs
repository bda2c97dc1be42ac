//! Logplex HTTPS-drain bodies: RFC 6587 octet-counted frames
//! (`MSG-LEN SP SYSLOG-MSG`, where Logplex's count includes the message's
//! trailing newline), and Logplex's own `Error L10` drop notices.
//!
//! Framing never fails and never drops a byte. Bytes that cannot be framed
//! come out as [`Frame::Broken`] holding the raw text (count included), and
//! scanning resumes at the next line that starts like a frame (or like a
//! bare `<PRI>` syslog message). The only bytes
//! not inside some frame's content or raw text are the framing itself: the
//! `MSG-LEN SP` prefix of a good frame, one newline after a frame whose count
//! left it out, and blank lines between frames.

use std::ops::Range;

/// One frame of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A frame whose count checks out; `content` is exactly the counted
    /// bytes (usually ending in the newline Logplex appends).
    Counted {
        content: &'a [u8],
        span: Range<usize>,
    },
    /// Bytes that could not be framed, kept whole.
    Broken {
        raw: &'a [u8],
        error: FrameError,
        span: Range<usize>,
    },
}

impl Frame<'_> {
    /// Where the frame sits in the body, framing and separators included.
    /// Consecutive spans tile the body exactly.
    pub fn span(&self) -> Range<usize> {
        match self {
            Frame::Counted { span, .. } | Frame::Broken { span, .. } => span.clone(),
        }
    }
}

/// Why bytes could not be framed. The text goes into `parse_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No `MSG-LEN SP` where a frame should start.
    #[error("not octet-counted")]
    NotOctetCounted,
    /// The count runs past the end of the body.
    #[error("truncated frame: count exceeds the bytes left")]
    Truncated,
    /// The count does not end on a frame boundary.
    #[error("frame count does not match its content")]
    CountMismatch,
}

impl FrameError {
    /// The same text as `Display`, without allocating.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameError::NotOctetCounted => "not octet-counted",
            FrameError::Truncated => "truncated frame: count exceeds the bytes left",
            FrameError::CountMismatch => "frame count does not match its content",
        }
    }
}

/// The frames of a body, in order.
pub fn frames(body: &[u8]) -> Frames<'_> {
    Frames { body, pos: 0 }
}

/// Iterator returned by [`frames`].
pub struct Frames<'a> {
    body: &'a [u8],
    pos: usize,
}

/// Counts longer than this many digits are not counts (and 10 digits already
/// exceed any body the server accepts).
const MAX_COUNT_DIGITS: usize = 10;

/// `MSG-LEN SP` at `p`: (count, position of the first content byte).
/// MSG-LEN is `NONZERO-DIGIT *DIGIT` (RFC 6587).
#[inline]
pub(crate) fn count_at(b: &[u8], p: usize) -> Option<(usize, usize)> {
    if b.get(p) == Some(&b'0') {
        return None;
    }
    let mut i = p;
    let mut n: usize = 0;
    while i < b.len() && i - p < MAX_COUNT_DIGITS && b[i].is_ascii_digit() {
        n = n * 10 + usize::from(b[i] - b'0');
        i += 1;
    }
    if i == p || n == 0 || b.get(i) != Some(&b' ') {
        return None;
    }
    Some((n, i + 1))
}

/// Whether a frame of a syslog stream plausibly starts at `p`: `MSG-LEN SP <`.
#[inline]
fn frame_starts_at(b: &[u8], p: usize) -> bool {
    match count_at(b, p) {
        Some((_, c)) => b.get(c) == Some(&b'<'),
        None => false,
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        let b = self.body;
        let start = self.pos;
        // Blank lines between frames are separators, not messages.
        let mut p = start;
        while p < b.len() && matches!(b[p], b'\n' | b'\r') {
            p += 1;
        }
        if p >= b.len() {
            self.pos = b.len();
            return None;
        }

        let error = match count_at(b, p) {
            None => FrameError::NotOctetCounted,
            Some((n, c)) => match c.checked_add(n).filter(|&end| end <= b.len()) {
                None => FrameError::Truncated,
                Some(end) => {
                    let content = &b[c..end];
                    let boundary = if content.last() == Some(&b'\n') {
                        // Logplex always ends a message with a newline; a
                        // count that lands right after one is trusted.
                        Some(end)
                    } else if end == b.len() || frame_starts_at(b, end) {
                        // Plain RFC 6587: no newline.
                        Some(end)
                    } else if b[end] == b'\n' && (end + 1 == b.len() || frame_starts_at(b, end + 1))
                    {
                        // A count that left out the newline that follows.
                        Some(end + 1)
                    } else {
                        None
                    };
                    match boundary {
                        Some(next) => {
                            self.pos = next;
                            return Some(Frame::Counted {
                                content,
                                span: start..next,
                            });
                        }
                        None => FrameError::CountMismatch,
                    }
                }
            },
        };

        // Resynchronise: the broken text runs up to and including the first
        // newline that is followed by the end, by something frame-shaped, or
        // by a bare syslog message (`<PRI>`: a newline-framed body then
        // yields one record per line).
        let mut end = b.len();
        let mut from = p;
        while let Some(nl) = memchr::memchr(b'\n', &b[from..]) {
            let after = from + nl + 1;
            if after == b.len() || b[after] == b'<' || frame_starts_at(b, after) {
                end = after;
                break;
            }
            from = after;
        }
        self.pos = end;
        Some(Frame::Broken {
            raw: &b[p..end],
            error,
            span: start..end,
        })
    }
}

/// The content of a counted frame without its line terminator (one `\n`):
/// the syslog message proper.
#[inline]
pub fn strip_newline(content: &[u8]) -> &[u8] {
    content.strip_suffix(b"\n").unwrap_or(content)
}

const L10_PREFIX: &str = "Error L10 (output buffer overflow): ";

/// N from Logplex's `Error L10 (output buffer overflow): N messages dropped
/// since ...` (HTTPS drains) or `... drain 'd.…' dropped N messages since ...`
/// (the form `heroku logs` shows), sent as source `heroku`, proc_id `logplex`.
pub fn l10_dropped(source: Option<&str>, proc_id: Option<&str>, message: &str) -> Option<u64> {
    if source != Some("heroku") || proc_id != Some("logplex") {
        return None;
    }
    let rest = message.strip_prefix(L10_PREFIX)?;
    // The number is the digit run right before the first " messages".
    let at = memchr::memmem::find(rest.as_bytes(), b" messages")?;
    let digits = rest[..at].rsplit(' ').next()?;
    crate::parse::router::int(digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEROKU_DOCS_BODY: &[u8] = b"83 <40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed from starting to up\n119 <40>1 2012-11-30T06:45:26+00:00 host app web.3 - Starting process with command `bundle exec rackup config.ru -p 24405`\n";

    type Kept<'a> = Result<&'a [u8], (FrameError, &'a [u8])>;

    fn contents(body: &[u8]) -> Vec<Kept<'_>> {
        frames(body)
            .map(|f| match f {
                Frame::Counted { content, .. } => Ok(content),
                Frame::Broken { raw, error, .. } => Err((error, raw)),
            })
            .collect()
    }

    #[test]
    fn heroku_documentation_body() {
        let got = contents(HEROKU_DOCS_BODY);
        assert_eq!(
            got,
            vec![
                Ok(&b"<40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed from starting to up\n"[..]),
                Ok(&b"<40>1 2012-11-30T06:45:26+00:00 host app web.3 - Starting process with command `bundle exec rackup config.ru -p 24405`\n"[..]),
            ]
        );
        let spans: Vec<_> = frames(HEROKU_DOCS_BODY).map(|f| f.span()).collect();
        assert_eq!(spans, vec![0..86, 86..HEROKU_DOCS_BODY.len()]);
    }

    #[test]
    fn empty_and_blank_bodies_have_no_frames() {
        assert!(contents(b"").is_empty());
        assert!(contents(b"\n\r\n").is_empty());
    }

    #[test]
    fn count_without_the_newline_is_accepted() {
        // Some senders (and many test fixtures) count without the newline.
        let body = b"143 <172>1 2016-10-11T09:44:49+00:00 host heroku logplex - Error L10 (output buffer overflow): 13 messages dropped since 2016-10-11T09:43:26+00:00.\n6 <1>1 x";
        let got = contents(body);
        assert_eq!(got.len(), 2);
        assert!(matches!(got[0], Ok(c) if c.ends_with(b"00:00.")));
        assert_eq!(got[1], Ok(&b"<1>1 x"[..]));
    }

    #[test]
    fn truncated_last_frame_is_kept_raw() {
        let body = b"83 <40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed from starting to up\n119 <40>1 2012-11-30T06:45:26+00:00 host app web.3 - Starting process";
        let got = contents(body);
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert_eq!(
            got[1],
            Err((
                FrameError::Truncated,
                &b"119 <40>1 2012-11-30T06:45:26+00:00 host app web.3 - Starting process"[..]
            ))
        );
    }

    #[test]
    fn wrong_count_resynchronises_on_the_next_frame() {
        // First count is 3 too small, the second is right.
        let body = b"80 <40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed from starting to up\n83 <40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed from starting to up\n";
        let got = contents(body);
        assert_eq!(
            got,
            vec![
                Err((FrameError::CountMismatch, &body[..86])),
                Ok(&body[89..]),
            ]
        );
        // Count too large: swallows into the next frame, which is then lost
        // as a frame but not as bytes.
        let body = b"90 <40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed from starting to up\n83 <40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed from starting to up\n";
        let got = contents(body);
        assert_eq!(
            got,
            vec![
                Err((FrameError::CountMismatch, &body[..86])),
                Ok(&body[89..])
            ]
        );
    }

    #[test]
    fn newline_framed_body_is_kept_line_by_line() {
        let body = b"<40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed from starting to up\n<40>1 2012-11-30T06:45:26+00:00 host app web.3 - Starting process\n";
        let got = contents(body);
        assert_eq!(
            got,
            vec![
                Err((FrameError::NotOctetCounted, &body[..83])),
                Err((FrameError::NotOctetCounted, &body[83..])),
            ]
        );
        let body = b"hello\n83 <40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed from starting to up\n";
        let got = contents(body);
        assert_eq!(
            got,
            vec![
                Err((FrameError::NotOctetCounted, &b"hello\n"[..])),
                Ok(&body[9..])
            ]
        );
    }

    #[test]
    fn zero_and_huge_counts_are_not_counts() {
        assert_eq!(
            contents(b"0 <1>1 x"),
            vec![Err((FrameError::NotOctetCounted, &b"0 <1>1 x"[..]))]
        );
        assert_eq!(
            contents(b"06 <1>1 x"),
            vec![Err((FrameError::NotOctetCounted, &b"06 <1>1 x"[..]))]
        );
        let body = b"99999999999 <1>1 x";
        assert_eq!(
            contents(body),
            vec![Err((FrameError::NotOctetCounted, &body[..]))]
        );
        let body = b"9999999999 <1>1 x";
        assert_eq!(
            contents(body),
            vec![Err((FrameError::Truncated, &body[..]))]
        );
    }

    #[test]
    fn message_with_embedded_newline_is_one_frame() {
        let msg = b"<190>1 2026-06-17T12:00:00+00:00 host app web.1 - line one\nline two\n";
        let mut body = format!("{} ", msg.len()).into_bytes();
        body.extend_from_slice(msg);
        assert_eq!(contents(&body), vec![Ok(&msg[..])]);
    }

    #[test]
    fn l10_forms() {
        let h = Some("heroku");
        let l = Some("logplex");
        assert_eq!(
            l10_dropped(
                h,
                l,
                "Error L10 (output buffer overflow): 13 messages dropped since 2016-10-11T09:43:26+00:00."
            ),
            Some(13)
        );
        assert_eq!(
            l10_dropped(
                h,
                l,
                "Error L10 (output buffer overflow): drain 'd.efe51fd5-8fdb-4153-b094-f5e9f7df3058' dropped 12 messages since 2025-10-22T14:24:27.798935+00:00."
            ),
            Some(12)
        );
        assert_eq!(
            l10_dropped(
                Some("app"),
                l,
                "Error L10 (output buffer overflow): 13 messages dropped"
            ),
            None
        );
        assert_eq!(
            l10_dropped(
                h,
                Some("router"),
                "Error L10 (output buffer overflow): 13 messages dropped"
            ),
            None
        );
        assert_eq!(
            l10_dropped(
                h,
                l,
                "Error L12: 222 messages dropped since 2016-10-11T09:43:26+00:00."
            ),
            None
        );
        assert_eq!(
            l10_dropped(
                h,
                l,
                "Error L10 (output buffer overflow): many messages dropped"
            ),
            None
        );
    }

    fn frame_bytes(content: &[u8]) -> Vec<u8> {
        let mut v = format!("{} ", content.len()).into_bytes();
        v.extend_from_slice(content);
        v
    }

    fn syslog_like() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec(any::<u8>(), 0..200),
            any::<bool>(),
        )
            .prop_map(|(tail, nl)| {
                let mut c = b"<".to_vec();
                c.extend_from_slice(&tail);
                if nl {
                    c.push(b'\n');
                }
                c
            })
    }

    proptest! {
        #[test]
        fn any_concatenation_of_frames_round_trips(msgs in proptest::collection::vec(syslog_like(), 0..20)) {
            let body: Vec<u8> = msgs.iter().flat_map(|m| frame_bytes(m)).collect();
            let got: Vec<Vec<u8>> = frames(&body)
                .map(|f| match f {
                    Frame::Counted { content, .. } => Ok(content.to_vec()),
                    Frame::Broken { raw, error, .. } => Err(format!("{error}: {raw:?}")),
                })
                .collect::<Result<_, _>>()
                .map_err(TestCaseError::fail)?;
            prop_assert_eq!(got, msgs);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_every_byte_is_accounted_for(
            body in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'\n'), Just(b' '), Just(b'<'), (b'0'..=b'9')], 0..400)
        ) {
            let mut at = 0;
            for f in frames(&body) {
                let span = f.span();
                prop_assert_eq!(span.start, at, "spans tile the body");
                prop_assert!(span.end > span.start);
                let kept = match &f {
                    Frame::Counted { content, .. } => *content,
                    Frame::Broken { raw, .. } => *raw,
                };
                // The kept bytes sit inside the span; what is left over is
                // only framing: leading blank lines, `MSG-LEN SP`, one newline.
                let inner = kept.as_ptr() as usize - body.as_ptr() as usize;
                prop_assert!(inner >= span.start && inner + kept.len() <= span.end);
                let before = &body[span.start..inner];
                let after = &body[inner + kept.len()..span.end];
                let blank = before.iter().take_while(|b| matches!(b, b'\n' | b'\r')).count();
                let prefix = &before[blank..];
                match &f {
                    Frame::Counted { content, .. } => {
                        let expect = format!("{} ", content.len());
                        prop_assert_eq!(prefix, expect.as_bytes());
                        prop_assert!(after.is_empty() || after == b"\n");
                    }
                    Frame::Broken { .. } => {
                        prop_assert!(prefix.is_empty());
                        prop_assert!(after.is_empty());
                    }
                }
                at = span.end;
            }
            let rest = &body[at..];
            prop_assert!(rest.iter().all(|b| matches!(b, b'\n' | b'\r')), "only blank lines left");
        }
    }
}
