//! RFC 5424 syslog messages, borrowed from the frame they arrived in.
//!
//! Two modes, because Logplex speaks two dialects:
//! - [`Mode::HerokuHttps`]: HTTPS drains omit STRUCTURED-DATA entirely (not
//!   even a NILVALUE), so everything after MSGID and one space is the
//!   message. App lines that begin with `[request-id]` or `- ` keep that text.
//! - [`Mode::Strict`]: STRUCTURED-DATA is parsed as the RFC says (Logplex's
//!   syslog drains send `- -`), for the syslog input.
//!
//! The caller strips the frame's line terminator before parsing.

use crate::parse::timestamp::parse_rfc3339_us;
use std::borrow::Cow;

/// Which dialect to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Logplex HTTPS drains: no STRUCTURED-DATA field.
    HerokuHttps,
    /// RFC 5424 as written, STRUCTURED-DATA included.
    Strict,
}

/// The TIMESTAMP field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamp {
    /// NILVALUE `-`.
    Nil,
    /// Microseconds since the Unix epoch, UTC.
    At(i64),
    /// Present but not RFC 3339: the record falls back to receipt time and
    /// says so in `parse_error`.
    Invalid,
}

/// One parsed message; strings borrow the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syslog<'a> {
    pub facility: u8,
    pub severity: u8,
    pub version: u16,
    pub timestamp: Timestamp,
    /// `None` for NILVALUE (likewise the next three).
    pub hostname: Option<&'a str>,
    pub app_name: Option<&'a str>,
    pub proc_id: Option<&'a str>,
    pub msg_id: Option<&'a str>,
    /// Strict mode only; `None` for NILVALUE and always in Heroku mode.
    pub structured_data: Option<StructuredData<'a>>,
    /// MSG, as bytes: RFC 5424 allows any octets here.
    pub msg: &'a [u8],
}

/// Why a frame is not an RFC 5424 message. The text goes into `parse_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("invalid PRI")]
    Pri,
    #[error("invalid VERSION")]
    Version,
    #[error("missing header field")]
    Truncated,
    #[error("invalid HOSTNAME")]
    Hostname,
    #[error("invalid APP-NAME")]
    AppName,
    #[error("invalid PROCID")]
    ProcId,
    #[error("invalid MSGID")]
    MsgId,
    #[error("invalid STRUCTURED-DATA")]
    StructuredData,
}

impl HeaderError {
    /// The same text as `Display`, without allocating.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderError::Pri => "invalid PRI",
            HeaderError::Version => "invalid VERSION",
            HeaderError::Truncated => "missing header field",
            HeaderError::Hostname => "invalid HOSTNAME",
            HeaderError::AppName => "invalid APP-NAME",
            HeaderError::ProcId => "invalid PROCID",
            HeaderError::MsgId => "invalid MSGID",
            HeaderError::StructuredData => "invalid STRUCTURED-DATA",
        }
    }
}

/// Parse one message (without its line terminator).
pub fn parse(input: &[u8], mode: Mode) -> Result<Syslog<'_>, HeaderError> {
    let (pri, mut pos) = parse_pri(input)?;
    let (version, p) = parse_version(input, pos)?;
    pos = p;

    let (ts, p) = token(input, pos).ok_or(HeaderError::Truncated)?;
    pos = p;
    let timestamp = if ts == b"-" {
        Timestamp::Nil
    } else {
        parse_rfc3339_us(ts).map_or(Timestamp::Invalid, Timestamp::At)
    };

    let strict = mode == Mode::Strict;
    let (hostname, p) = field(input, pos, strict, 255, HeaderError::Hostname)?;
    let (app_name, p) = field(input, p, strict, 48, HeaderError::AppName)?;
    let (proc_id, p) = field(input, p, strict, 128, HeaderError::ProcId)?;
    let (msg_id, p) = field(input, p, strict, 32, HeaderError::MsgId)?;
    pos = p;

    let mut structured_data = None;
    if strict {
        // `token` consumed the space after MSGID; STRUCTURED-DATA must follow.
        if pos > input.len() {
            return Err(HeaderError::Truncated);
        }
        let end = structured_data_end(input, pos)?;
        if &input[pos..end] != b"-" {
            structured_data = Some(StructuredData {
                raw: &input[pos..end],
            });
        }
        pos = match input.get(end) {
            None => end,
            Some(b' ') => end + 1,
            Some(_) => return Err(HeaderError::StructuredData),
        };
    }

    Ok(Syslog {
        facility: pri >> 3,
        severity: pri & 7,
        version,
        timestamp,
        hostname,
        app_name,
        proc_id,
        msg_id,
        structured_data,
        msg: input.get(pos..).unwrap_or_default(),
    })
}

fn parse_pri(input: &[u8]) -> Result<(u8, usize), HeaderError> {
    if input.first() != Some(&b'<') {
        return Err(HeaderError::Pri);
    }
    let mut value: u16 = 0;
    let mut i = 1;
    while i < input.len() && i <= 4 && input[i].is_ascii_digit() {
        value = value * 10 + u16::from(input[i] - b'0');
        i += 1;
    }
    if i == 1 || i > 4 || input.get(i) != Some(&b'>') || value > 191 {
        return Err(HeaderError::Pri);
    }
    Ok((value as u8, i + 1))
}

fn parse_version(input: &[u8], mut i: usize) -> Result<(u16, usize), HeaderError> {
    let start = i;
    let mut value: u16 = 0;
    while i < input.len() && i - start < 3 && input[i].is_ascii_digit() {
        value = value * 10 + u16::from(input[i] - b'0');
        i += 1;
    }
    if i == start || input[start] == b'0' || input.get(i) != Some(&b' ') {
        return Err(HeaderError::Version);
    }
    Ok((value, i + 1))
}

/// The bytes from `pos` to the next space, and the position after that space
/// (or `len + 1` when the token ends the input, so callers can tell). `None`
/// when there is no token at `pos`.
#[inline]
fn token(input: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = input.get(pos..)?;
    let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
    if end == 0 {
        return None;
    }
    Some((&rest[..end], pos + end + 1))
}

/// HOSTNAME, APP-NAME, PROCID or MSGID: NILVALUE becomes `None`.
#[inline]
fn field(
    input: &[u8],
    pos: usize,
    strict: bool,
    max: usize,
    err: HeaderError,
) -> Result<(Option<&str>, usize), HeaderError> {
    let (tok, next) = token(input, pos).ok_or(HeaderError::Truncated)?;
    if tok == b"-" {
        return Ok((None, next));
    }
    let ok = if strict {
        tok.len() <= max && tok.iter().all(|&b| (33..=126).contains(&b))
    } else {
        // Heroku's values are ASCII; anything else is tolerated as long as
        // it is text without control characters (DEL included).
        !tok.iter().any(|&b| b < 0x20 || b == 0x7f)
    };
    if !ok {
        return Err(err);
    }
    let s = std::str::from_utf8(tok).map_err(|_| err)?;
    Ok((Some(s), next))
}

/// End of the STRUCTURED-DATA field starting at `pos` (validated).
fn structured_data_end(input: &[u8], pos: usize) -> Result<usize, HeaderError> {
    match input.get(pos) {
        Some(b'-') => return Ok(pos + 1),
        Some(b'[') => {}
        _ => return Err(HeaderError::StructuredData),
    }
    let mut i = pos;
    while input.get(i) == Some(&b'[') {
        i = sd_element_end(input, i + 1)?;
    }
    Ok(i)
}

/// Validates one SD-ELEMENT whose SD-ID starts at `i` (after `[`); returns
/// the position after its `]`.
fn sd_element_end(input: &[u8], mut i: usize) -> Result<usize, HeaderError> {
    let e = HeaderError::StructuredData;
    i = sd_name_end(input, i)?;
    loop {
        match input.get(i) {
            Some(b']') => return Ok(i + 1),
            Some(b' ') => {
                i = sd_name_end(input, i + 1)?;
                if input.get(i) != Some(&b'=') || input.get(i + 1) != Some(&b'"') {
                    return Err(e);
                }
                i += 2;
                let start = i;
                loop {
                    match input.get(i) {
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                        None => return Err(e),
                    }
                }
                std::str::from_utf8(&input[start..i]).map_err(|_| e)?;
                i += 1;
            }
            _ => return Err(e),
        }
    }
}

/// SD-NAME: 1 to 32 printable ASCII except `=`, space, `]` and `"`.
fn sd_name_end(input: &[u8], start: usize) -> Result<usize, HeaderError> {
    let mut i = start;
    while let Some(&b) = input.get(i) {
        if !(33..=126).contains(&b) || matches!(b, b'=' | b']' | b'"') {
            break;
        }
        i += 1;
    }
    if i == start || i - start > 32 {
        return Err(HeaderError::StructuredData);
    }
    Ok(i)
}

/// A validated STRUCTURED-DATA field (one or more SD-ELEMENTs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StructuredData<'a> {
    raw: &'a [u8],
}

/// One SD-ELEMENT: `[id name="value" ...]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdElement<'a> {
    pub id: &'a str,
    params: &'a [u8],
}

impl<'a> StructuredData<'a> {
    /// The field as received.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The elements, in order. The field was validated by [`parse`], so
    /// iteration cannot fail.
    pub fn elements(&self) -> impl Iterator<Item = SdElement<'a>> + 'a {
        let raw = self.raw;
        let mut i = 0;
        std::iter::from_fn(move || {
            if raw.get(i) != Some(&b'[') {
                return None;
            }
            let end = sd_element_end(raw, i + 1).ok()?;
            let inner = &raw[i + 1..end - 1];
            i = end;
            let id_end = memchr::memchr(b' ', inner).unwrap_or(inner.len());
            Some(SdElement {
                id: std::str::from_utf8(&inner[..id_end]).ok()?,
                params: &inner[id_end..],
            })
        })
    }
}

impl<'a> SdElement<'a> {
    /// `(PARAM-NAME, PARAM-VALUE)` pairs with `\"`, `\\` and `\]` resolved.
    pub fn params(&self) -> impl Iterator<Item = (&'a str, Cow<'a, str>)> + 'a {
        let p = self.params;
        let mut i = 0;
        std::iter::from_fn(move || {
            // Shape was validated: ` name="value"` repeated.
            if p.get(i) != Some(&b' ') {
                return None;
            }
            let name_start = i + 1;
            let eq = name_start + memchr::memchr(b'=', &p[name_start..])?;
            let name = std::str::from_utf8(&p[name_start..eq]).ok()?;
            let start = eq + 2;
            let mut j = start;
            let mut escaped = false;
            while let Some(&b) = p.get(j) {
                match b {
                    b'\\' => {
                        escaped = true;
                        j += 2;
                    }
                    b'"' => break,
                    _ => j += 1,
                }
            }
            let raw = std::str::from_utf8(p.get(start..j)?).ok()?;
            i = j + 1;
            let value = if escaped {
                Cow::Owned(unescape_sd(raw))
            } else {
                Cow::Borrowed(raw)
            };
            Some((name, value))
        })
    }
}

/// RFC 5424 6.3.3: only `"`, `\` and `]` are escaped; any other backslash is
/// kept as written.
fn unescape_sd(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&n @ ('"' | '\\' | ']')) = chars.peek()
        {
            out.push(n);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::timestamp::format_utc_us;
    use proptest::prelude::*;

    fn heroku(s: &str) -> Syslog<'_> {
        parse(s.as_bytes(), Mode::HerokuHttps).expect("valid Heroku message")
    }

    fn ts(t: Timestamp) -> String {
        match t {
            Timestamp::At(us) => String::from_utf8(format_utc_us(us).to_vec()).expect("ascii"),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn heroku_platform_line() {
        let m = heroku(
            "<40>1 2012-11-30T06:45:29+00:00 host app web.3 - State changed from starting to up",
        );
        assert_eq!((m.facility, m.severity, m.version), (5, 0, 1));
        assert_eq!(ts(m.timestamp), "2012-11-30T06:45:29.000000Z");
        assert_eq!(m.hostname, Some("host"));
        assert_eq!(m.app_name, Some("app"));
        assert_eq!(m.proc_id, Some("web.3"));
        assert_eq!(m.msg_id, None);
        assert_eq!(m.structured_data, None);
        assert_eq!(m.msg, b"State changed from starting to up");
    }

    #[test]
    fn heroku_router_line() {
        let m = heroku(
            r#"<158>1 2020-02-21T16:07:34.515030+00:00 host heroku router - at=info method=GET path="/" host=quiet-lake-27894.herokuapp.com request_id=d7c85cc2-b289-4443-8c1d-2327066d6a3e fwd="37.73.223.49" dyno=web.1 connect=641ms service=3629ms status=200 bytes=153 protocol=https"#,
        );
        assert_eq!((m.facility, m.severity), (19, 6));
        assert_eq!(ts(m.timestamp), "2020-02-21T16:07:34.515030Z");
        assert_eq!(m.app_name, Some("heroku"));
        assert_eq!(m.proc_id, Some("router"));
        assert!(m.msg.starts_with(b"at=info method=GET"));
    }

    #[test]
    fn heroku_mode_keeps_leading_brackets_and_dashes() {
        // No STRUCTURED-DATA on HTTPS drains: these are message text.
        let m = heroku(
            "<190>1 2020-08-15T04:01:35.727127+00:00 host app web.1 - [heroku-exec] Starting",
        );
        assert_eq!(m.msg, b"[heroku-exec] Starting");
        let m = heroku(
            "<190>1 2020-08-15T04:01:35.727127+00:00 host app web.1 - [8601b555-6a83-4c12-8269-97c8e32cdb22] Started GET \"/\"",
        );
        assert_eq!(
            m.msg,
            b"[8601b555-6a83-4c12-8269-97c8e32cdb22] Started GET \"/\""
        );
        let m = heroku("<190>1 2020-08-15T04:01:35.727127+00:00 host app web.1 - - - hyphen led");
        assert_eq!(m.msg, b"- - hyphen led");
        let m = heroku("<190>1 2020-08-15T04:01:35.727127+00:00 host app web.1 - ");
        assert_eq!(m.msg, b"");
        let m = heroku("<190>1 2020-08-15T04:01:35.727127+00:00 host app web.1 -");
        assert_eq!(m.msg, b"", "nothing after MSGID is an empty message");
        let m = heroku("<190>1 2020-08-15T04:01:35.727127+00:00 host app web.1 -   two spaces");
        assert_eq!(m.msg, b"  two spaces", "only one space is a separator");
    }

    #[test]
    fn heroku_postgres_and_logplex_lines() {
        let m = heroku(
            "<134>1 2016-02-13T21:20:25+00:00 host app heroku-postgres - source=DATABASE sample#current_transaction=15365 sample#db_size=4347350804bytes sample#tables=43",
        );
        assert_eq!(m.app_name, Some("app"));
        assert_eq!(m.proc_id, Some("heroku-postgres"));
        assert_eq!((m.facility, m.severity), (16, 6));
        let m = heroku(
            "<172>1 2016-10-11T09:44:49+00:00 host heroku logplex - Error L10 (output buffer overflow): 13 messages dropped since 2016-10-11T09:43:26+00:00.",
        );
        assert_eq!((m.app_name, m.proc_id), (Some("heroku"), Some("logplex")));
        assert_eq!((m.facility, m.severity), (21, 4));
    }

    #[test]
    fn nil_and_invalid_timestamps_are_not_errors() {
        assert_eq!(
            heroku("<13>1 - host app web.1 - hi").timestamp,
            Timestamp::Nil
        );
        assert_eq!(
            heroku("<13>1 yesterday host app web.1 - hi").timestamp,
            Timestamp::Invalid
        );
    }

    #[test]
    fn header_errors() {
        let cases: &[(&str, HeaderError)] = &[
            ("", HeaderError::Pri),
            ("hello world", HeaderError::Pri),
            ("<>1 - h a p - m", HeaderError::Pri),
            ("<192>1 - h a p - m", HeaderError::Pri),
            ("<1234>1 - h a p - m", HeaderError::Pri),
            ("<13 - h a p - m", HeaderError::Pri),
            ("<13> - h a p - m", HeaderError::Version),
            ("<13>0 - h a p - m", HeaderError::Version),
            ("<13>1234 - h a p - m", HeaderError::Version),
            ("<13>1", HeaderError::Version),
            ("<13>1 ", HeaderError::Truncated),
            ("<13>1 - host app", HeaderError::Truncated),
            ("<13>1 -  app web.1 - m", HeaderError::Truncated),
            ("<13>1 - h\x01 a p - m", HeaderError::Hostname),
            ("<13>1 - h a\x7f p - m", HeaderError::AppName),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input.as_bytes(), Mode::HerokuHttps).err(),
                Some(*want),
                "{input:?}"
            );
        }
        assert_eq!(
            parse(b"<13>1 - host \xff\xfe web.1 - m", Mode::HerokuHttps).err(),
            Some(HeaderError::AppName),
            "header fields must be text"
        );
        assert_eq!(HeaderError::MsgId.as_str(), HeaderError::MsgId.to_string());
    }

    #[test]
    fn message_bytes_need_not_be_utf8() {
        let m = parse(b"<13>1 - host app web.1 - caf\xe9", Mode::HerokuHttps).expect("valid");
        assert_eq!(m.msg, b"caf\xe9");
    }

    #[test]
    fn strict_mode_logplex_syslog_drain() {
        // Logplex syslog drains send NILVALUE MSGID and NILVALUE SD.
        let m = parse(
            b"<40>1 2012-11-30T06:45:29+00:00 d.73ea7440-270a-435a-a0ea-adf50b4e5f5a app web.3 - - State changed from starting to up",
            Mode::Strict,
        )
        .expect("valid");
        assert_eq!(m.hostname, Some("d.73ea7440-270a-435a-a0ea-adf50b4e5f5a"));
        assert_eq!(m.structured_data, None);
        assert_eq!(m.msg, b"State changed from starting to up");
        let m = parse(b"<40>1 - host app web.3 - -", Mode::Strict).expect("no MSG");
        assert_eq!(m.msg, b"");
    }

    #[test]
    fn strict_mode_rfc_examples() {
        // RFC 5424 section 6.5, examples 1, 3 and 4.
        let m = parse(
            b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8",
            Mode::Strict,
        )
        .expect("example 1");
        assert_eq!((m.facility, m.severity), (4, 2));
        assert_eq!(m.msg_id, Some("ID47"));
        assert_eq!(ts(m.timestamp), "2003-10-11T22:14:15.003000Z");
        assert!(m.msg.starts_with(b"\xef\xbb\xbf'su root'"));

        let m = parse(
            br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event log entry..."#,
            Mode::Strict,
        )
        .expect("example 3");
        let sd = m.structured_data.expect("has SD");
        let els: Vec<_> = sd.elements().collect();
        assert_eq!(els.len(), 1);
        assert_eq!(els[0].id, "exampleSDID@32473");
        let params: Vec<_> = els[0].params().map(|(k, v)| (k, v.into_owned())).collect();
        assert_eq!(
            params,
            vec![
                ("iut", "3".to_string()),
                ("eventSource", "Application".to_string()),
                ("eventID", "1011".to_string())
            ]
        );
        assert_eq!(m.msg, b"An application event log entry...");

        let m = parse(
            br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]"#,
            Mode::Strict,
        )
        .expect("example 4");
        let ids: Vec<_> = m
            .structured_data
            .expect("has SD")
            .elements()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, ["exampleSDID@32473", "examplePriority@32473"]);
        assert_eq!(m.msg, b"");
    }

    #[test]
    fn strict_mode_escapes_and_errors() {
        let m = parse(
            br#"<13>1 - h a p - [x@1 v="a\"b\]c\\d\e"] msg"#,
            Mode::Strict,
        )
        .expect("escaped SD");
        let el = m
            .structured_data
            .expect("SD")
            .elements()
            .next()
            .expect("one");
        let (_, v) = el.params().next().expect("one param");
        assert_eq!(v, r#"a"b]c\d\e"#);
        assert_eq!(m.msg, b"msg");

        for bad in [
            &b"<13>1 - h a p -"[..],
            b"<13>1 - h a p - x msg",
            b"<13>1 - h a p - [x@1 msg",
            b"<13>1 - h a p - [x@1 v=\"open] msg",
            b"<13>1 - h a p - [x@1 v=1] msg",
            b"<13>1 - h a p - [] msg",
            b"<13>1 - h a p - [x@1]msg",
            b"<13>1 - h a p - -msg",
        ] {
            assert!(
                parse(bad, Mode::Strict).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Heroku mode reads the same text as message.
        let m = parse(b"<13>1 - h a p - x msg", Mode::HerokuHttps).expect("ok");
        assert_eq!(m.msg, b"x msg");
        // Strict mode enforces the RFC's field lengths.
        let long_app = format!("<13>1 - h {} p - - m", "a".repeat(49));
        assert_eq!(
            parse(long_app.as_bytes(), Mode::Strict).err(),
            Some(HeaderError::AppName)
        );
        assert!(parse(long_app.as_bytes(), Mode::HerokuHttps).is_ok());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120), strict in any::<bool>()) {
            let mode = if strict { Mode::Strict } else { Mode::HerokuHttps };
            if let Ok(m) = parse(&bytes, mode)
                && let Some(sd) = m.structured_data
            {
                for el in sd.elements() {
                    for _ in el.params() {}
                }
            }
        }

        #[test]
        fn heroku_message_is_everything_after_msgid(msg in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut frame = b"<190>1 2026-06-17T12:00:00.123456+00:00 host app web.1 - ".to_vec();
            frame.extend_from_slice(&msg);
            let m = parse(&frame, Mode::HerokuHttps).expect("valid header");
            prop_assert_eq!(m.msg, &msg[..]);
        }
    }
}
