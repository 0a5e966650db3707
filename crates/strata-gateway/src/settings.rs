//! What the gateway is configured with: its upstreams (in fallback order) and how long and
//! how often it waits for them.

use std::collections::BTreeMap;
use std::time::Duration;

/// Dollars per million tokens of one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt tokens.
    pub input: f64,
    /// Per million completion tokens.
    pub output: f64,
}

impl Price {
    /// The cost of `prompt` and `completion` tokens, in micro-dollars (rounded up).
    pub fn micros(&self, prompt: i64, completion: i64) -> i64 {
        // $/Mtok x tokens = micro-dollars.
        (self.input * prompt as f64 + self.output * completion as f64).ceil() as i64
    }
}

/// One OpenAI-compatible upstream.
#[derive(Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// Its name in logs, metrics and headers.
    pub name: String,
    /// Base URL up to and including `/v1` (`https://api.example.com/v1`).
    pub base_url: String,
    /// Sent as `Authorization: Bearer ...`; never logged.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Models it serves, as clients name them; empty: any model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Names clients may use for its models: alias -> the upstream's model name.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// Prices of its models (by the upstream's model name), for cost accounting and budgets.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
}

impl std::fmt::Debug for UpstreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSettings")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("models", &self.models)
            .field("aliases", &self.aliases)
            .field("prices", &self.prices)
            .finish()
    }
}

impl UpstreamSettings {
    /// The upstream's name for the model a client asked for, if it serves it.
    pub fn resolve(&self, asked: &str) -> Option<String> {
        if let Some(m) = self.aliases.get(asked) {
            return Some(m.clone());
        }
        (self.models.is_empty() || self.models.iter().any(|m| m == asked)).then(|| asked.to_owned())
    }
}

/// The default least similarity of the semantic cache (see `BENCHMARKS.md`, "Semantic
/// cache", for the false hits and the matches it gives on labelled question pairs).
pub const DEFAULT_SEMANTIC_THRESHOLD: f32 = 0.96;

/// The gateway's settings.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Upstreams in fallback order: a request goes to the first that serves its model and
    /// is not failing, then to the next.
    pub upstreams: Vec<UpstreamSettings>,
    /// Most time to open a connection.
    pub connect_timeout: Duration,
    /// Most time from sending a request to the upstream's response headers.
    pub first_byte_timeout: Duration,
    /// Most time between two chunks of a response body.
    pub idle_timeout: Duration,
    /// Retries per upstream before its first byte (connection errors, timeouts, 429, 5xx).
    pub retries: u32,
    /// The first retry's backoff; doubled each time.
    pub backoff: Duration,
    /// Consecutive failures that open an upstream's breaker.
    pub breaker_failures: u32,
    /// How long an open breaker skips its upstream before letting a probe through.
    pub breaker_cooldown: Duration,
    /// Completion tokens reserved for a request that sets no `max_tokens`.
    pub default_completion_estimate: i64,
    /// The semantic cache on chat completions, unless a request says otherwise.
    pub semantic: SemanticMode,
    /// The least cosine similarity of two prompts for the semantic cache to answer one with
    /// the other's answer.
    pub semantic_threshold: f32,
    /// Whether the guard (numbers, negation, opposites, named entities) checks semantic
    /// matches; off only to measure what it does.
    pub semantic_guard: bool,
}

/// How a request uses the semantic cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SemanticMode {
    /// Not at all: no embedding, no lookup, no entry.
    #[default]
    Off,
    /// Look up and record what would have been served, and how well it agreed with the
    /// upstream's answer; always answer from the upstream.
    Shadow,
    /// Answer from the nearest earlier prompt's answer when it matches.
    On,
}

impl SemanticMode {
    /// Parses `off`, `shadow` or `on`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "shadow" => Some(Self::Shadow),
            "on" => Some(Self::On),
            _ => None,
        }
    }
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            retries: 2,
            backoff: Duration::from_millis(200),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            default_completion_estimate: 1024,
            semantic: SemanticMode::Off,
            semantic_threshold: DEFAULT_SEMANTIC_THRESHOLD,
            semantic_guard: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_resolve_through_aliases_and_lists() {
        let mut u = UpstreamSettings {
            models: vec!["gpt-4o-mini".into()],
            ..Default::default()
        };
        u.aliases.insert("fast".into(), "gpt-4o-mini".into());
        assert_eq!(u.resolve("fast").as_deref(), Some("gpt-4o-mini"));
        assert_eq!(u.resolve("gpt-4o-mini").as_deref(), Some("gpt-4o-mini"));
        assert_eq!(u.resolve("other"), None);
        u.models.clear();
        assert_eq!(u.resolve("other").as_deref(), Some("other"));
        assert!(!format!("{u:?}").contains("sk-"));
        assert_eq!(
            Price {
                input: 0.15,
                output: 0.6
            }
            .micros(1000, 1000),
            750
        );
    }
}
