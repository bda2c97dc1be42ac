//! logfmt `key=value` pairs inside a message, borrowed from the message.
//!
//! Heroku's router, dyno manager and add-ons (`sample#db_size=...`) write
//! logfmt, and so do many apps. Messages are free text, so the scanner is
//! forgiving: bare words are skipped, a quoted bare string (`"GET / HTTP/1.1"`
//! in an access log) is skipped whole so its spaces do not split it into
//! fake pairs, and a quoted value whose closing quote is missing is skipped.
//! The message itself always keeps the full text; pairs are derived data.

/// A value as written in the message: either plain, or the inside of a
/// double-quoted value that still holds its backslash escapes. Kept raw so
/// the hot path never copies; the JSON writer resolves
/// escapes when there are any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Value<'a> {
    raw: &'a str,
    escaped: bool,
}

impl<'a> Value<'a> {
    /// A value with no escapes to resolve.
    pub fn plain(raw: &'a str) -> Self {
        Value {
            raw,
            escaped: false,
        }
    }

    /// The text between the quotes of a quoted value, escapes unresolved.
    pub fn quoted(raw: &'a str) -> Self {
        Value {
            raw,
            escaped: raw.as_bytes().contains(&b'\\'),
        }
    }

    /// The text as written (inside the quotes for quoted values).
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Whether [`Value::raw`] holds backslash escapes to resolve.
    pub fn has_escapes(&self) -> bool {
        self.escaped
    }

    /// The value with escapes resolved (borrowed when there are none); the
    /// tests' reference for what the JSON writer produces.
    #[cfg(test)]
    pub(crate) fn unescaped(&self) -> std::borrow::Cow<'a, str> {
        if !self.escaped {
            return std::borrow::Cow::Borrowed(self.raw);
        }
        let mut out = String::with_capacity(self.raw.len());
        for piece in Unescape::new(self.raw) {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Char(c) => out.push(c),
            }
        }
        std::borrow::Cow::Owned(out)
    }
}

/// A run of text or one resolved escape, as [`Unescape`] yields them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Char(char),
}

/// Resolves the escapes of a quoted value piecewise, without allocating:
/// `\"`, `\\`, `\n`, `\r`, `\t` and `\uXXXX` (not surrogates). Any other
/// backslash is kept as written, so nothing in the value is dropped.
pub struct Unescape<'a> {
    rest: &'a str,
}

impl<'a> Unescape<'a> {
    pub fn new(raw: &'a str) -> Self {
        Unescape { rest: raw }
    }
}

impl<'a> Iterator for Unescape<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        let bytes = self.rest.as_bytes();
        if bytes.is_empty() {
            return None;
        }
        if bytes[0] != b'\\' {
            let end = memchr::memchr(b'\\', bytes).unwrap_or(bytes.len());
            let (text, rest) = self.rest.split_at(end);
            self.rest = rest;
            return Some(Piece::Text(text));
        }
        let (c, used) = match bytes.get(1) {
            Some(b'"') => ('"', 2),
            Some(b'\\') => ('\\', 2),
            Some(b'n') => ('\n', 2),
            Some(b'r') => ('\r', 2),
            Some(b't') => ('\t', 2),
            Some(b'u') => match bytes
                .get(2..6)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32)
            {
                Some(c) => (c, 6),
                None => ('\\', 1),
            },
            _ => ('\\', 1),
        };
        self.rest = &self.rest[used..];
        Some(Piece::Char(c))
    }
}

/// Iterator over the `key=value` pairs of a message.
pub struct Pairs<'a> {
    s: &'a str,
    pos: usize,
}

/// The pairs of `message`, in order of appearance.
pub fn pairs(message: &str) -> Pairs<'_> {
    // Most free-text lines have no `=` at all: one vectorised search
    // settles them.
    let pos = match memchr::memchr(b'=', message.as_bytes()) {
        Some(_) => 0,
        None => message.len(),
    };
    Pairs { s: message, pos }
}

const SPACE: u8 = 1;
const EQUALS: u8 = 2;
const QUOTE: u8 = 4;

/// Byte classes, so the scanning loops test one table entry per byte.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b' ' as usize] = SPACE;
    t[b'\t' as usize] = SPACE;
    t[b'\n' as usize] = SPACE;
    t[b'\r' as usize] = SPACE;
    t[0x0b] = SPACE;
    t[0x0c] = SPACE;
    t[b'=' as usize] = EQUALS;
    t[b'"' as usize] = QUOTE;
    t
};

#[inline]
fn class(b: u8) -> u8 {
    CLASS[usize::from(b)]
}

/// First index at or after `i` holding a space (or the end).
#[inline]
fn skip_to_space(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && class(b[i]) != SPACE {
        i += 1;
    }
    i
}

/// Index of the quote closing a quoted string whose body starts at `from`,
/// skipping backslash-escaped characters.
fn closing_quote(b: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = from + memchr::memchr2(b'"', b'\\', &b[from..])?;
        if b[at] == b'"' {
            return Some(at);
        }
        from = at + 2;
        if from > b.len() {
            return None;
        }
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.s.as_bytes();
        let mut i = self.pos;
        loop {
            while i < b.len() && class(b[i]) == SPACE {
                i += 1;
            }
            if i >= b.len() {
                self.pos = i;
                return None;
            }
            if b[i] == b'"' {
                // A quoted bare string: skip it whole (or the rest, if open).
                i = closing_quote(b, i + 1).map_or(b.len(), |q| q + 1);
                continue;
            }
            let key_start = i;
            while i < b.len() && class(b[i]) == 0 {
                i += 1;
            }
            if i >= b.len() || b[i] != b'=' || i == key_start {
                // Bare word (or `=value` with no key): skip to the next space.
                i = skip_to_space(b, i);
                continue;
            }
            // Every index used to slice is at an ASCII byte or an end, so
            // the slices fall on char boundaries.
            let key = &self.s[key_start..i];
            i += 1;
            if b.get(i) == Some(&b'"') {
                match closing_quote(b, i + 1) {
                    Some(q) => {
                        let value = Value::quoted(&self.s[i + 1..q]);
                        self.pos = q + 1;
                        return Some((key, value));
                    }
                    None => {
                        // Unterminated quote: not a pair we can trust.
                        self.pos = b.len();
                        return None;
                    }
                }
            }
            let value_start = i;
            i = skip_to_space(b, i);
            self.pos = i;
            return Some((key, Value::plain(&self.s[value_start..i])));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(s: &str) -> Vec<(String, String)> {
        pairs(s)
            .map(|(k, v)| (k.to_string(), v.unescaped().into_owned()))
            .collect()
    }

    fn kv(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn heroku_router_line() {
        let line = r#"at=info method=GET path="/" host=myapp.herokuapp.com request_id=8601b555-6a83-4c12-8269-97c8e32cdb22 fwd="204.204.204.204" dyno=web.1 connect=1ms service=18ms status=200 bytes=13 protocol=https"#;
        assert_eq!(
            collect(line),
            kv(&[
                ("at", "info"),
                ("method", "GET"),
                ("path", "/"),
                ("host", "myapp.herokuapp.com"),
                ("request_id", "8601b555-6a83-4c12-8269-97c8e32cdb22"),
                ("fwd", "204.204.204.204"),
                ("dyno", "web.1"),
                ("connect", "1ms"),
                ("service", "18ms"),
                ("status", "200"),
                ("bytes", "13"),
                ("protocol", "https"),
            ])
        );
    }

    #[test]
    fn router_error_with_quoted_desc_and_empty_bytes() {
        let line = r#"at=error code=H12 desc="Request timeout" method=GET path="/" host=myapp.herokuapp.com request_id=8601b555-6a83-4c12-8269-97c8e32cdb22 fwd="204.204.204.204" dyno=web.1 connect=0ms service=30000ms status=503 bytes= protocol=https"#;
        let got = collect(line);
        assert_eq!(got[1], ("code".into(), "H12".into()));
        assert_eq!(got[2], ("desc".into(), "Request timeout".into()));
        assert!(got.contains(&("bytes".into(), "".into())));
        assert_eq!(got.len(), 14);
    }

    #[test]
    fn heroku_postgres_metrics_keys_with_hash_dash_and_dots() {
        let line = "source=DATABASE addon=postgresql-opaque-12345 sample#current_transaction=15365 sample#db_size=4347350804bytes sample#active-connections=6 sample#index-cache-hit-rate=0.97116 sample#load-avg-1m=0.05";
        assert_eq!(
            collect(line),
            kv(&[
                ("source", "DATABASE"),
                ("addon", "postgresql-opaque-12345"),
                ("sample#current_transaction", "15365"),
                ("sample#db_size", "4347350804bytes"),
                ("sample#active-connections", "6"),
                ("sample#index-cache-hit-rate", "0.97116"),
                ("sample#load-avg-1m", "0.05"),
            ])
        );
        assert_eq!(
            collect("a.b.c=1 x-y=2"),
            kv(&[("a.b.c", "1"), ("x-y", "2")])
        );
    }

    #[test]
    fn free_text_yields_no_pairs() {
        assert!(collect("State changed from starting to up").is_empty());
        assert!(
            collect(r#"10.11.241.172 - - [21/Feb/2020 16:07:34] "GET /?a=b HTTP/1.1" 200 -"#)
                .is_empty(),
            "a quoted bare string is skipped whole"
        );
        assert!(
            collect("Starting process with command `bundle exec rackup config.ru -p 24405`")
                .is_empty()
        );
        assert!(collect("").is_empty());
        assert!(collect("   ").is_empty());
    }

    #[test]
    fn pairs_mixed_with_prose_and_prefixes() {
        // An app line in the Rails style, prefixed with its request id.
        assert_eq!(
            collect("[8601b555] Completed 200 OK in 12ms user_id=42 plan=\"pro plus\""),
            kv(&[("user_id", "42"), ("plan", "pro plus")])
        );
        assert_eq!(collect("- done elapsed=1.5s"), kv(&[("elapsed", "1.5s")]));
    }

    #[test]
    fn escapes_in_quoted_values() {
        let got = collect(r#"msg="say \"hi\"\tnow\\then\n" u="caf\u00e9" odd="a\qb""#);
        assert_eq!(
            got,
            kv(&[
                ("msg", "say \"hi\"\tnow\\then\n"),
                ("u", "café"),
                ("odd", "a\\qb"),
            ])
        );
    }

    #[test]
    fn odd_shapes() {
        assert_eq!(collect("=x k=v"), kv(&[("k", "v")]), "no key: skipped");
        assert_eq!(collect("k==v"), kv(&[("k", "=v")]));
        assert_eq!(collect("url=/a?b=c"), kv(&[("url", "/a?b=c")]));
        assert_eq!(
            collect(r#"k="unterminated x=1"#),
            kv(&[]),
            "open quote ends scanning"
        );
        assert_eq!(collect(r#"k="v"x=1"#), kv(&[("k", "v"), ("x", "1")]));
        assert_eq!(collect(r#"a"b=c d=e"#), kv(&[("d", "e")]));
        assert_eq!(
            collect("k=v\tj=w\nl=x"),
            kv(&[("k", "v"), ("j", "w"), ("l", "x")])
        );
        assert_eq!(collect("ключ=значение"), kv(&[("ключ", "значение")]));
    }

    proptest! {
        #[test]
        fn never_panics_and_slices_come_from_the_input(s in ".{0,200}") {
            for (k, v) in pairs(&s) {
                prop_assert!(!k.is_empty());
                prop_assert!(s.contains(k));
                prop_assert!(s.contains(v.raw()));
                let _ = v.unescaped();
            }
        }

        #[test]
        fn written_pairs_read_back(
            items in proptest::collection::vec(("[a-z_#.-]{1,12}", "[ -~]{0,20}"), 0..8)
        ) {
            let mut line = String::new();
            for (k, v) in &items {
                let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
                line.push_str(&format!("{k}=\"{escaped}\" "));
            }
            let expected: Vec<(String, String)> = items.clone();
            prop_assert_eq!(collect(&line), expected);
        }
    }
}
