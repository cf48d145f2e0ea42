//! Who may see the viewer. A viewer reachable on a network shows the camera
//! to everyone on it; with a login, every route asks for one of: a bearer
//! token (`Authorization: Bearer T`, for scripts), HTTP basic credentials
//! (`Authorization: Basic`, curl `-u`, the browser's own prompt), or the
//! cookie the page's login form sets (an `<img>` of the MJPEG stream cannot
//! send a header, but it sends cookies).
//!
//! Secrets are compared as SHA-256 digests in constant time, so neither
//! their content nor their length shows in response times. The cookie holds
//! a digest of the secret, never the secret, and no state: it stays valid
//! across restarts and stops being valid when the secret changes.

use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// The cookie the login form sets.
pub const COOKIE: &str = "dla_edge_auth";

/// The secret a viewer asks for.
#[derive(Clone, PartialEq, Eq)]
enum Secret {
    /// A bearer token (also accepted as the password of any user name).
    Token(String),
    /// A user name and password.
    User { name: String, password: String },
}

/// A viewer's login: the secret, and the routes left open (e.g. `/metrics`
/// for a Prometheus scraper on a trusted network).
#[derive(Clone, PartialEq, Eq)]
pub struct ViewerAuth {
    secret: Secret,
    open_paths: Vec<String>,
}

impl std::fmt::Debug for ViewerAuth {
    /// Never the secret: options get logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.secret {
            Secret::Token(_) => "token".to_string(),
            Secret::User { name, .. } => format!("user {name:?}"),
        };
        f.debug_struct("ViewerAuth")
            .field("secret", &kind)
            .field("open_paths", &self.open_paths)
            .finish()
    }
}

/// How a request presents itself.
pub(crate) struct Presented<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `Cookie` header.
    pub cookie: Option<&'a str>,
}

impl ViewerAuth {
    /// Reads the secret from `file`: one line, either a token or
    /// `user:password`. A file keeps it out of the command line (`ps`) and
    /// out of the config, which people paste into bug reports.
    pub fn from_file(file: &Path) -> Result<ViewerAuth> {
        let fail = |reason: String| Error::Sink {
            sink: format!("viewer login file {}", file.display()),
            reason,
        };
        let text = std::fs::read_to_string(file).map_err(|e| fail(format!("cannot read: {e}")))?;
        let line = text.lines().next().unwrap_or("").trim();
        Self::parse(line).map_err(fail)
    }

    /// A token, or `user:password`.
    pub fn parse(secret: &str) -> std::result::Result<ViewerAuth, String> {
        let secret = match secret.split_once(':') {
            Some((name, password)) if !name.is_empty() && !password.is_empty() => Secret::User {
                name: name.to_string(),
                password: password.to_string(),
            },
            Some(_) => return Err("expected a token or user:password, both non-empty".into()),
            None if secret.len() >= 8 => Secret::Token(secret.to_string()),
            None => {
                return Err(format!(
                    "a token of {} characters is too easy to guess; use at least 8",
                    secret.chars().count()
                ))
            }
        };
        Ok(ViewerAuth {
            secret,
            open_paths: Vec::new(),
        })
    }

    /// Leaves `paths` (exact routes, e.g. `/metrics`) open to anyone.
    pub fn with_open_paths(mut self, paths: Vec<String>) -> ViewerAuth {
        self.open_paths = paths;
        self
    }

    /// Whether the login asks for a user name (the browser's basic prompt).
    pub fn has_user(&self) -> bool {
        matches!(self.secret, Secret::User { .. })
    }

    /// Whether `path` is open without a login.
    pub(crate) fn is_open(&self, path: &str) -> bool {
        self.open_paths.iter().any(|p| p == path)
    }

    /// Whether the request carries the secret (or the login cookie).
    pub(crate) fn allows(&self, presented: &Presented<'_>) -> bool {
        let header = presented.authorization.map(str::trim);
        let by_header = match header.and_then(|h| h.split_once(' ')) {
            Some((scheme, value)) if scheme.eq_ignore_ascii_case("bearer") => {
                self.accepts("", value.trim())
            }
            Some((scheme, value)) if scheme.eq_ignore_ascii_case("basic") => {
                basic_credentials(value.trim()).is_some_and(|(u, p)| self.accepts(&u, &p))
            }
            _ => false,
        };
        by_header
            || presented
                .cookie
                .and_then(cookie_value)
                .is_some_and(|v| same(v.as_bytes(), self.cookie_value().as_bytes()))
    }

    /// Checks a login form's fields; the cookie value to set if they match.
    pub(crate) fn login(&self, user: &str, secret: &str) -> Option<String> {
        self.accepts(user, secret).then(|| self.cookie_value())
    }

    /// Whether `user` and `secret` match: a token needs no user name.
    fn accepts(&self, user: &str, secret: &str) -> bool {
        match &self.secret {
            Secret::Token(token) => same(secret.as_bytes(), token.as_bytes()),
            Secret::User { name, password } => {
                // Both compared, always: which one was wrong takes no longer.
                let name_ok = same(user.as_bytes(), name.as_bytes());
                let password_ok = same(secret.as_bytes(), password.as_bytes());
                name_ok & password_ok
            }
        }
    }

    /// The cookie value: a digest of the secret, not the secret.
    fn cookie_value(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"dla-edge viewer login\0");
        match &self.secret {
            Secret::Token(t) => h.update(t.as_bytes()),
            Secret::User { name, password } => {
                h.update(name.as_bytes());
                h.update(b"\0");
                h.update(password.as_bytes());
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Equal, compared as SHA-256 digests in constant time.
fn same(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// `user:password` from a basic `Authorization` value.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Our cookie's value in a `Cookie` header.
fn cookie_value(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presented<'a>(authorization: Option<&'a str>, cookie: Option<&'a str>) -> Presented<'a> {
        Presented {
            authorization,
            cookie,
        }
    }

    #[test]
    fn a_token_is_accepted_as_bearer_basic_password_or_cookie_and_nothing_else() {
        let auth = ViewerAuth::parse("s3cret-token").unwrap();
        assert!(auth.allows(&presented(Some("Bearer s3cret-token"), None)));
        assert!(auth.allows(&presented(Some("bearer  s3cret-token "), None)));
        // curl -u anyone:s3cret-token
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("anyone:s3cret-token")
        );
        assert!(auth.allows(&presented(Some(&basic), None)));
        let cookie = auth.login("", "s3cret-token").unwrap();
        assert!(!cookie.contains("s3cret"), "the cookie is a digest");
        let header = format!("theme=dark; {COOKIE}={cookie}");
        assert!(auth.allows(&presented(None, Some(&header))));

        for wrong in [
            "Bearer s3cret-tokeN",
            "Bearer ",
            "Basic !!!",
            "Token s3cret-token",
            "",
        ] {
            assert!(!auth.allows(&presented(Some(wrong), None)), "{wrong:?}");
        }
        assert!(!auth.allows(&presented(None, Some(&format!("{COOKIE}=00")))));
        assert!(!auth.allows(&presented(None, None)));
        assert_eq!(auth.login("", "nope"), None);
    }

    #[test]
    fn a_user_needs_both_name_and_password() {
        let auth = ViewerAuth::parse("ada:correct horse").unwrap();
        assert!(auth.has_user());
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(auth.allows(&presented(Some(&basic("ada:correct horse")), None)));
        assert!(!auth.allows(&presented(Some(&basic("bob:correct horse")), None)));
        assert!(!auth.allows(&presented(Some(&basic("ada:wrong")), None)));
        assert!(!auth.allows(&presented(Some("Bearer correct horse"), None)));
        assert!(auth.login("ada", "correct horse").is_some());
        assert!(auth.login("", "correct horse").is_none());
    }

    #[test]
    fn weak_or_malformed_secrets_are_refused_and_never_printed() {
        assert!(ViewerAuth::parse("short")
            .unwrap_err()
            .contains("at least 8"));
        assert!(ViewerAuth::parse(":pw").is_err());
        assert!(ViewerAuth::parse("user:").is_err());
        let auth = ViewerAuth::parse("ada:hunter22")
            .unwrap()
            .with_open_paths(vec!["/metrics".into()]);
        let shown = format!("{auth:?}");
        assert!(!shown.contains("hunter22"), "{shown}");
        assert!(auth.is_open("/metrics") && !auth.is_open("/stats.json"));
    }
}
