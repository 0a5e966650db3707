//! [`SecretUrl`]: a connection URL whose password never prints.
//!
//! It lives in the lowest crate that holds one (Redis's URL here, the database URL in the
//! engine) so every settings struct can derive `Debug` without leaking credentials into
//! logs, panics or `--help` output.

/// A connection URL (`scheme://user:password@host/...`). `Debug` and `Display` show it with
/// the password replaced by `****`; [`SecretUrl::expose`] gives the real text to the one
/// place that connects with it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password: for the connection only, never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password masked.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }

    /// The scheme (`postgres`, `sqlite`, `redis`), or "" when there is none.
    pub fn scheme(&self) -> &str {
        self.0.split_once(':').map_or("", |(s, _)| s)
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        Self(url.to_owned())
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `scheme://user:****@host/...` for a URL with credentials; other text unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((auth, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = auth.split(':').next().unwrap_or("");
    format!("{scheme}://{user}:****@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        let u = SecretUrl::new("postgres://app:hunter2@db:5432/strata");
        for shown in [format!("{u:?}"), format!("{u}"), u.redacted()] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("app:****@db:5432/strata"), "{shown}");
        }
        assert_eq!(u.expose(), "postgres://app:hunter2@db:5432/strata");
        assert_eq!(u.scheme(), "postgres");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://:****@h:6379/0");
    }
}
