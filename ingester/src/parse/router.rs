//! Heroku router lines (`source=heroku`, `proc_id=router`): the logfmt pairs
//! that become typed record columns.
//!
//! Format (Heroku's HTTP routing article): `at=info method=GET path="/"
//! host=myapp.herokuapp.com request_id=... fwd="1.2.3.4" dyno=web.1
//! connect=0ms service=22ms status=200 bytes=1234 protocol=https`, and for
//! errors `at=error code=H12 desc="Request timeout" ...`. Pairs that are not
//! columns (`sock`, `tls_version`, ...) stay in `kv`, and so does a number the
//! router wrote in a shape we do not understand, so no value is hidden.

use crate::parse::logfmt::Value;

/// Whether a message comes from the Heroku router.
pub fn is_router_line(source: Option<&str>, proc_id: Option<&str>) -> bool {
    source == Some("heroku") && proc_id == Some("router")
}

/// The typed router columns of one line; `None` where the line has no such
/// pair.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouterFields<'a> {
    pub at: Option<Value<'a>>,
    pub code: Option<Value<'a>>,
    pub desc: Option<Value<'a>>,
    pub method: Option<Value<'a>>,
    pub path: Option<Value<'a>>,
    pub host: Option<Value<'a>>,
    pub request_id: Option<Value<'a>>,
    pub fwd: Option<Value<'a>>,
    pub dyno: Option<Value<'a>>,
    pub protocol: Option<Value<'a>>,
    /// `connect=0ms`, in milliseconds.
    pub connect_ms: Option<i32>,
    /// `service=22ms`, in milliseconds.
    pub service_ms: Option<i32>,
    pub status: Option<i32>,
    pub bytes: Option<i64>,
}

impl<'a> RouterFields<'a> {
    /// Take `key=value` into its column. `false` when the pair is not a
    /// router column (or its number does not parse): the caller keeps it in
    /// `kv` then.
    pub fn take(&mut self, key: &str, value: Value<'a>) -> bool {
        let slot = match key {
            "at" => &mut self.at,
            "code" => &mut self.code,
            "desc" => &mut self.desc,
            "method" => &mut self.method,
            "path" => &mut self.path,
            "host" => &mut self.host,
            "request_id" => &mut self.request_id,
            "fwd" => &mut self.fwd,
            "dyno" => &mut self.dyno,
            "protocol" => &mut self.protocol,
            "connect" => return put(&mut self.connect_ms, millis(value)),
            "service" => return put(&mut self.service_ms, millis(value)),
            "status" => return put(&mut self.status, int(value.raw()).and_then(to_i32)),
            "bytes" => return put(&mut self.bytes, int(value.raw()).and_then(to_i64)),
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

fn put<T>(slot: &mut Option<T>, v: Option<T>) -> bool {
    match v {
        Some(v) => {
            *slot = Some(v);
            true
        }
        None => false,
    }
}

/// `22ms` (or a bare `22`) as milliseconds.
fn millis(v: Value<'_>) -> Option<i32> {
    let raw = v.raw();
    int(raw.strip_suffix("ms").unwrap_or(raw)).and_then(to_i32)
}

/// A non-negative decimal integer; `None` for anything else (including
/// empty, as in `bytes=` on some error lines, and overflow).
pub fn int(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s.as_bytes() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u64::from(d);
    }
    Some(n)
}

// The Glue columns are Hive `int` (signed 32-bit) and `bigint`: a value that
// does not fit would make Athena fail the row, so it stays text in `kv`.
fn to_i32(n: u64) -> Option<i32> {
    i32::try_from(n).ok()
}

fn to_i64(n: u64) -> Option<i64> {
    i64::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::logfmt::pairs;

    /// Router fields plus the pairs that stayed for `kv`.
    fn split(line: &str) -> (RouterFields<'_>, Vec<(&str, String)>) {
        let mut f = RouterFields::default();
        let mut rest = Vec::new();
        for (k, v) in pairs(line) {
            if !f.take(k, v) {
                rest.push((k, v.unescaped().into_owned()));
            }
        }
        (f, rest)
    }

    fn s<'a>(v: Option<Value<'a>>) -> Option<&'a str> {
        v.map(|v| v.raw())
    }

    #[test]
    fn info_line() {
        let line = r#"at=info method=GET path="/" host=quiet-lake-27894.herokuapp.com request_id=d7c85cc2-b289-4443-8c1d-2327066d6a3e fwd="37.73.223.49" dyno=web.1 connect=641ms service=3629ms status=200 bytes=153 protocol=https"#;
        let (f, rest) = split(line);
        assert_eq!(s(f.at), Some("info"));
        assert_eq!(s(f.method), Some("GET"));
        assert_eq!(s(f.path), Some("/"));
        assert_eq!(s(f.host), Some("quiet-lake-27894.herokuapp.com"));
        assert_eq!(
            s(f.request_id),
            Some("d7c85cc2-b289-4443-8c1d-2327066d6a3e")
        );
        assert_eq!(s(f.fwd), Some("37.73.223.49"));
        assert_eq!(s(f.dyno), Some("web.1"));
        assert_eq!(s(f.protocol), Some("https"));
        assert_eq!(f.connect_ms, Some(641));
        assert_eq!(f.service_ms, Some(3629));
        assert_eq!(f.status, Some(200));
        assert_eq!(f.bytes, Some(153));
        assert_eq!(f.code, None);
        assert_eq!(f.desc, None);
        assert!(rest.is_empty(), "every pair is a column: {rest:?}");
    }

    #[test]
    fn h12_timeout_line() {
        let line = r#"at=error code=H12 desc="Request timeout" method=GET path="/" host=myapp.herokuapp.com request_id=8601b555-6a83-4c12-8269-97c8e32cdb22 fwd="204.204.204.204" dyno=web.1 connect=0ms service=30000ms status=503 bytes=0 protocol=https"#;
        let (f, rest) = split(line);
        assert_eq!(s(f.at), Some("error"));
        assert_eq!(s(f.code), Some("H12"));
        assert_eq!(s(f.desc), Some("Request timeout"));
        assert_eq!(f.connect_ms, Some(0));
        assert_eq!(f.service_ms, Some(30000));
        assert_eq!(f.status, Some(503));
        assert_eq!(f.bytes, Some(0));
        assert!(rest.is_empty());
    }

    #[test]
    fn h13_without_dyno_times_and_extra_pairs_stay_in_kv() {
        // H13 and H18 lines carry `sock=`, and some carry empty numbers.
        let line = r#"sock=backend at=error code=H18 desc="Server Request Interrupted" method=POST path="/upload" host=myapp.herokuapp.com request_id=abc fwd="10.0.0.1, 10.0.0.2" dyno=web.2 connect=1ms service= status=503 bytes= protocol=http tls_version=tls1.3"#;
        let (f, rest) = split(line);
        assert_eq!(s(f.code), Some("H18"));
        assert_eq!(s(f.fwd), Some("10.0.0.1, 10.0.0.2"));
        assert_eq!(f.service_ms, None);
        assert_eq!(f.bytes, None);
        assert_eq!(f.status, Some(503));
        assert_eq!(
            rest,
            vec![
                ("sock", "backend".to_string()),
                ("service", String::new()),
                ("bytes", String::new()),
                ("tls_version", "tls1.3".to_string()),
            ]
        );
    }

    #[test]
    fn numbers_out_of_column_range_stay_in_kv() {
        let (f, rest) = split("status=99999999999 bytes=12345678901234 connect=-1ms service=12s");
        assert_eq!(f.status, None);
        assert_eq!(f.bytes, Some(12_345_678_901_234));
        assert_eq!(f.connect_ms, None);
        assert_eq!(f.service_ms, None);
        assert_eq!(rest.len(), 3);
    }

    #[test]
    fn only_heroku_router_is_a_router_line() {
        assert!(is_router_line(Some("heroku"), Some("router")));
        assert!(!is_router_line(Some("app"), Some("router")));
        assert!(!is_router_line(Some("heroku"), Some("web.1")));
        assert!(!is_router_line(None, Some("router")));
    }

    #[test]
    fn int_parsing() {
        assert_eq!(int("0"), Some(0));
        assert_eq!(int("18446744073709551615"), None, "20 digits are refused");
        assert_eq!(int("1234567890123456789"), Some(1_234_567_890_123_456_789));
        assert_eq!(int(""), None);
        assert_eq!(int("+1"), None);
        assert_eq!(int("1.5"), None);
    }
}
