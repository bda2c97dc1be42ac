//! The secrets a Heroku call carries and how they are kept out of text:
//! the API token ([`ApiToken`]), drain URLs with the ingester's password
//! ([`DrainUrl`]), and the masking and scrubbing of URL credentials and
//! known secrets in free text such as Heroku's error messages.

use std::fmt;

use reqwest::Url;
use serde::Deserialize;

use super::MASK;
use super::error::HerokuError;

/// A Heroku API token (OAuth bearer token). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Surrounding whitespace is dropped: tokens pasted into a Secret with
    /// `--from-file` usually end with a newline, which Heroku would refuse.
    pub fn new(token: impl Into<String>) -> Self {
        let t: String = token.into();
        ApiToken(t.trim().to_owned())
    }

    /// The token itself, for the `Authorization` header only.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(****)")
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// A drain URL as Heroku stores it; it may carry credentials
/// (`https://drainpipe:PASSWORD@host/logplex/app`). `Debug` and `Display`
/// show it with the password (and any `token=` query value) masked; the full
/// URL is only reachable through [`DrainUrl::expose_secret`].
///
/// Deliberately not `Serialize`, so it cannot slip into a status by derive.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub struct DrainUrl(String);

impl DrainUrl {
    pub fn new(url: impl Into<String>) -> Self {
        DrainUrl(url.into())
    }

    /// The drain URL an ingester endpoint gets for `app`:
    /// `{endpoint}/logplex/{app}` with `username:password` as userinfo.
    /// `endpoint` must be an http(s) URL without credentials of its own.
    pub fn for_app(
        endpoint: &str,
        app: &str,
        username: &str,
        password: &str,
    ) -> Result<DrainUrl, HerokuError> {
        let mut url = Url::parse(endpoint).map_err(|e| {
            HerokuError::InvalidDrainUrl(format!("endpoint {}: {e}", mask_url_text(endpoint)))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HerokuError::InvalidDrainUrl(format!(
                "endpoint {} must be http or https",
                mask_url_text(endpoint)
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(HerokuError::InvalidDrainUrl(format!(
                "endpoint {} must not carry credentials",
                mask_url_text(endpoint)
            )));
        }
        url.set_query(None);
        url.set_fragment(None);
        {
            let mut segs = url.path_segments_mut().map_err(|()| {
                HerokuError::InvalidDrainUrl(format!(
                    "endpoint {} cannot take a path",
                    mask_url_text(endpoint)
                ))
            })?;
            segs.pop_if_empty();
            segs.push("logplex");
            segs.push(app);
        }
        let bad = |what: &str| {
            HerokuError::InvalidDrainUrl(format!(
                "endpoint {} cannot take a {what}",
                mask_url_text(endpoint)
            ))
        };
        url.set_username(username).map_err(|()| bad("username"))?;
        url.set_password(Some(password))
            .map_err(|()| bad("password"))?;
        Ok(DrainUrl(url.into()))
    }

    /// The syslog+tls drain URL for an ingester syslog listener at
    /// `address` (`host:port`): `syslog+tls://host:port`, the same for every
    /// app and without credentials (Logplex identifies the drain by the token
    /// it sends as the syslog HOSTNAME).
    pub(crate) fn syslog_tls(address: &str) -> Result<DrainUrl, HerokuError> {
        let bad = |why: &str| {
            HerokuError::InvalidDrainUrl(format!(
                "syslog address {}: {why}",
                mask_url_text(address)
            ))
        };
        if address.contains(['/', '@', '?', '#']) || address.chars().any(char::is_whitespace) {
            return Err(bad(
                "must be host:port, without scheme, path or credentials",
            ));
        }
        let url =
            Url::parse(&format!("syslog+tls://{address}")).map_err(|e| bad(&e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("has no host"));
        }
        if url.port().is_none_or(|p| p == 0) {
            return Err(bad("needs a port, e.g. logs.example.com:6514"));
        }
        Ok(DrainUrl(format!("syslog+tls://{address}")))
    }

    /// The full URL, credentials included. Only for Heroku requests and the
    /// comparison of drains; never for logs, events, status or errors.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The URL with the password and `token=` query values masked.
    pub(crate) fn masked(&self) -> String {
        mask_url_text(&self.0)
    }

    /// The URL with userinfo and query removed: what identifies the endpoint
    /// regardless of the credentials (which change when a password rotates).
    pub(crate) fn without_credentials(&self) -> String {
        match Url::parse(&self.0) {
            Ok(mut u) => {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.set_query(None);
                u.set_fragment(None);
                u.into()
            }
            Err(_) => strip_userinfo(&self.0),
        }
    }

    /// The password in the URL's userinfo, if any (to scrub it from text).
    pub(super) fn password(&self) -> Option<String> {
        Url::parse(&self.0)
            .ok()
            .and_then(|u| u.password().map(|p| p.to_owned()))
            .filter(|p| !p.is_empty())
    }

    /// Same drain target: equal after URL normalisation (scheme and host case,
    /// default port), credentials included.
    pub fn same_as(&self, other: &DrainUrl) -> bool {
        if self.0 == other.0 {
            return true;
        }
        match (Url::parse(&self.0), Url::parse(&other.0)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Debug for DrainUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DrainUrl({:?})", self.masked())
    }
}

impl fmt::Display for DrainUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Masks credentials in every URL found in `text`: the password part of a
/// `scheme://user:password@host` and the value of `token=` query parameters.
/// Works on free text (Heroku error messages), not only on a lone URL.
pub(crate) fn mask_url_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(tail.len());
        let (url, after) = tail.split_at(end);
        out.push_str(&mask_one_url(url));
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `url` is everything after `scheme://` up to the end of the URL.
fn mask_one_url(url: &str) -> String {
    let auth_end = url.find(['/', '?', '#']).unwrap_or(url.len());
    let (authority, path) = url.split_at(auth_end);
    let mut out = String::with_capacity(url.len());
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    match path.find('?') {
        Some(q) => {
            out.push_str(&path[..=q]);
            let query = &path[q + 1..];
            let (query, fragment) = match query.find('#') {
                Some(h) => query.split_at(h),
                None => (query, ""),
            };
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if is_secret_param(k) => format!("{k}={MASK}"),
                    _ => pair.to_owned(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
            out.push_str(fragment);
        }
        None => out.push_str(path),
    }
    out
}

fn is_secret_param(key: &str) -> bool {
    matches!(
        key.to_ascii_lowercase().as_str(),
        "token" | "password" | "secret" | "access_token" | "api_key"
    )
}

fn strip_userinfo(url: &str) -> String {
    let Some(pos) = url.find("://") else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(pos + 3);
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let rest = match rest[..auth_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    format!("{scheme}{rest}")
}

/// Masks URL credentials and replaces each known secret verbatim.
pub(super) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut s = mask_url_text(text);
    for secret in secrets {
        // Short strings would mask innocent text and are not real secrets.
        if secret.len() >= 4 {
            s = s.replace(secret, MASK);
        }
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PW: &str = "s3cr3t-Pa55word";

    fn url() -> DrainUrl {
        DrainUrl::new(format!(
            "https://drainpipe:{PW}@logs.example.com/logplex/my-app"
        ))
    }

    #[test]
    fn drain_url_debug_and_display_mask_the_password() {
        let u = url();
        assert_eq!(
            u.to_string(),
            "https://drainpipe:****@logs.example.com/logplex/my-app"
        );
        let dbg = format!("{u:?}");
        assert!(!dbg.contains(PW), "{dbg}");
        assert!(dbg.contains("drainpipe:****@logs.example.com"), "{dbg}");
        assert_eq!(
            u.expose_secret(),
            format!("https://drainpipe:{PW}@logs.example.com/logplex/my-app")
        );
    }

    #[test]
    fn drain_url_masks_token_query_values() {
        let u = DrainUrl::new(format!(
            "https://logs.example.com/logplex/app?token={PW}&x=1#frag"
        ));
        assert_eq!(
            u.masked(),
            "https://logs.example.com/logplex/app?token=****&x=1#frag"
        );
    }

    #[test]
    fn syslog_tls_urls_carry_no_credentials() {
        let url = DrainUrl::syslog_tls("logs.example.com:6514").expect("valid");
        assert_eq!(url.expose_secret(), "syslog+tls://logs.example.com:6514");
        assert_eq!(
            url.without_credentials(),
            "syslog+tls://logs.example.com:6514"
        );
        assert!(url.same_as(&DrainUrl::new("syslog+tls://logs.example.com:6514")));
        assert!(!url.same_as(&DrainUrl::new("syslog+tls://logs.example.com:6515")));
        for bad in [
            "logs.example.com",
            "logs.example.com:0",
            "logs.example.com:99999",
            "u:p@logs.example.com:6514",
            "logs.example.com:6514/x",
            ":6514",
        ] {
            assert!(DrainUrl::syslog_tls(bad).is_err(), "{bad}");
        }
    }

    /// The drain URL docs/architecture.md gives (the name is from when it
    /// pointed at the design document).
    #[test]
    fn for_app_builds_the_design_url() {
        let u =
            DrainUrl::for_app("https://logs.example.com/base/", "my-app", "drainpipe", PW).unwrap();
        assert_eq!(
            u.expose_secret(),
            format!("https://drainpipe:{PW}@logs.example.com/base/logplex/my-app")
        );
        assert_eq!(
            u.without_credentials(),
            "https://logs.example.com/base/logplex/my-app"
        );
        let e = DrainUrl::for_app("https://u:p@host/", "a", "drainpipe", PW).unwrap_err();
        assert!(!e.to_string().contains(":p@"), "{e}");
        assert!(DrainUrl::for_app("ftp://host/", "a", "drainpipe", PW).is_err());
    }

    #[test]
    fn passwords_with_reserved_characters_round_trip() {
        let u = DrainUrl::for_app("https://h", "a", "drainpipe", "p@ss:w/rd").unwrap();
        assert!(!u.to_string().contains("p@ss"), "{u}");
        assert_eq!(
            Url::parse(u.expose_secret()).unwrap().password(),
            Some("p%40ss%3Aw%2Frd")
        );
    }

    #[test]
    fn same_as_normalises_but_keeps_credentials() {
        let a = DrainUrl::new(format!(
            "HTTPS://drainpipe:{PW}@Logs.Example.com:443/logplex/my-app"
        ));
        assert!(a.same_as(&url()));
        let other_pw = DrainUrl::new("https://drainpipe:other@logs.example.com/logplex/my-app");
        assert!(!other_pw.same_as(&url()));
        assert_eq!(other_pw.without_credentials(), url().without_credentials());
    }

    #[test]
    fn mask_url_text_finds_urls_inside_prose() {
        let text = format!(
            "Url https://drainpipe:{PW}@h.example/logplex/a is invalid; see 'syslog+tls://x:{PW}@h:6514' and http://plain/"
        );
        let masked = mask_url_text(&text);
        assert!(!masked.contains(PW), "{masked}");
        assert!(
            masked.contains("https://drainpipe:****@h.example/logplex/a is invalid"),
            "{masked}"
        );
        assert!(masked.contains("syslog+tls://x:****@h:6514'"), "{masked}");
        assert!(masked.ends_with("http://plain/"), "{masked}");
    }

    #[test]
    fn api_token_is_never_printed_and_is_trimmed() {
        let t = ApiToken::new("HRKU-abcdef0123456789\n");
        assert_eq!(t.expose_secret(), "HRKU-abcdef0123456789");
        assert!(!format!("{t:?}").contains("abcdef"));
        assert!(!t.to_string().contains("abcdef"));
    }

    #[test]
    fn scrub_removes_token_and_password_from_heroku_messages() {
        let msg = format!(
            "Url https://drainpipe:{PW}@h/logplex/a is taken; token HRKU-abcdef0123456789 and {PW}"
        );
        let s = scrub(&msg, &["HRKU-abcdef0123456789", PW]);
        assert!(!s.contains(PW) && !s.contains("HRKU-abcdef"), "{s}");
    }
}
