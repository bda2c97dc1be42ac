//! Heroku app names.

/// Heroku's own app-name pattern (Platform API schema, `app/definitions/name`).
/// The CRD validates `spec.apps` with it; [`valid_app_name`] is the same rule.
pub const APP_NAME_PATTERN: &str = "^[a-z][a-z0-9-]{1,28}[a-z0-9]$";

/// Whether `app` follows [`APP_NAME_PATTERN`]. Anything else cannot be a drain
/// of ours, and the name becomes part of URLs, object keys and paths.
pub fn valid_app_name(app: &str) -> bool {
    let b = app.as_bytes();
    (3..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_follow_heroku() {
        for ok in [
            "shop",
            "my-app-123",
            "abc",
            "a23456789012345678901234567890",
        ] {
            assert!(valid_app_name(ok), "{ok}");
        }
        for bad in [
            "ab",
            "Shop",
            "1app",
            "app-",
            "../etc",
            "a/b",
            "",
            "a234567890123456789012345678901",
            "app_x",
        ] {
            assert!(!valid_app_name(bad), "{bad}");
        }
    }
}
