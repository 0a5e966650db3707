//! An OpenAI-compatible embeddings endpoint as the embedder (`STRATA_EMBED_URL`): one pooled
//! HTTP client, a timeout per request, retries with exponential backoff for transient
//! failures (timeouts, connection errors, 429, 5xx), and a circuit breaker that fails fast
//! while the endpoint is down and probes it again after a cool-down.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use crate::{EmbedError, Embedder, TextTokenizer};

/// How to reach the endpoint.
#[derive(Clone)]
pub struct HttpSettings {
    /// Base URL, e.g. `https://api.openai.com/v1` (`/embeddings` is appended).
    pub url: String,
    /// Model name sent with every request.
    pub model: String,
    /// Bearer token, if the endpoint wants one.
    pub api_key: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries of a transient failure.
    pub max_retries: u32,
    /// First retry delay; doubles per retry.
    pub backoff: Duration,
    /// Most inputs per request.
    pub max_inputs: usize,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe is let through.
    pub breaker_cooldown: Duration,
}

impl std::fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSettings")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "****"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpSettings {
    /// The model asked for when the configuration names none.
    pub const DEFAULT_MODEL: &'static str = "text-embedding-3-small";

    /// Defaults for `url` and `model`.
    pub fn new(url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(30),
            max_retries: 3,
            backoff: Duration::from_millis(200),
            max_inputs: 256,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

/// Circuit breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Failing fast until the cool-down ends.
    Open,
    /// One probe is allowed through.
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// The HTTP embedder.
pub struct HttpEmbedder {
    client: reqwest::Client,
    settings: HttpSettings,
    endpoint: String,
    dims: usize,
    breaker: Mutex<Breaker>,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

enum Failure {
    Transient(String),
    Permanent(String),
}

impl HttpEmbedder {
    /// Builds the client and learns the model's dimensions with one probe request.
    pub async fn connect(settings: HttpSettings) -> Result<Self, EmbedError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| EmbedError::Runtime(format!("HTTP client: {e}")))?;
        let endpoint = format!("{}/embeddings", settings.url.trim_end_matches('/'));
        let mut this = Self {
            client,
            settings,
            endpoint,
            dims: 0,
            breaker: Mutex::new(Breaker {
                failures: 0,
                open_until: None,
                probing: false,
            }),
        };
        let probe = this.embed(vec!["dimension probe".to_owned()]).await?;
        this.dims = probe.first().map_or(0, Vec::len);
        if this.dims == 0 {
            return Err(EmbedError::Runtime(
                "the endpoint returned an empty vector".into(),
            ));
        }
        Ok(this)
    }

    /// The breaker's current state.
    pub fn breaker_state(&self) -> BreakerState {
        let b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        match b.open_until {
            None => BreakerState::Closed,
            Some(t) if Instant::now() < t => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    fn admit(&self) -> Result<(), EmbedError> {
        let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        match b.open_until {
            None => Ok(()),
            Some(t) if Instant::now() < t => Err(EmbedError::Unavailable(
                "embedding endpoint circuit open".into(),
            )),
            Some(_) if b.probing => Err(EmbedError::Unavailable(
                "embedding endpoint circuit half-open".into(),
            )),
            Some(_) => {
                b.probing = true;
                Ok(())
            }
        }
    }

    fn record(&self, ok: bool) {
        let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        b.probing = false;
        if ok {
            b.failures = 0;
            b.open_until = None;
        } else {
            b.failures += 1;
            if b.failures >= self.settings.breaker_failures || b.open_until.is_some() {
                b.open_until = Some(Instant::now() + self.settings.breaker_cooldown);
            }
        }
    }

    async fn request(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Failure> {
        let mut req = self.client.post(&self.endpoint).json(
            &json!({"input": texts, "model": self.settings.model, "encoding_format": "float"}),
        );
        if let Some(key) = &self.settings.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        let status = resp.status();
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(Failure::Transient(format!("endpoint answered {status}")));
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            return Err(Failure::Permanent(format!(
                "endpoint answered {status}: {body}"
            )));
        }
        let mut parsed: Response = resp
            .json()
            .await
            .map_err(|e| Failure::Permanent(format!("unreadable response: {e}")))?;
        if parsed.data.len() != texts.len() {
            return Err(Failure::Permanent(format!(
                "asked for {} vectors, got {}",
                texts.len(),
                parsed.data.len()
            )));
        }
        parsed.data.sort_by_key(|d| d.index);
        Ok(parsed
            .data
            .into_iter()
            .map(|d| normalise(d.embedding))
            .collect())
    }

    async fn embed_part(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut delay = self.settings.backoff;
        let mut attempt = 0;
        loop {
            self.admit()?;
            match self.request(texts).await {
                Ok(v) => {
                    self.record(true);
                    if self.dims != 0 && v.iter().any(|x| x.len() != self.dims) {
                        return Err(EmbedError::Runtime(
                            "the endpoint changed its vector size".into(),
                        ));
                    }
                    return Ok(v);
                }
                Err(Failure::Permanent(e)) => {
                    self.record(true);
                    return Err(EmbedError::Runtime(e));
                }
                Err(Failure::Transient(e)) => {
                    self.record(false);
                    if attempt >= self.settings.max_retries
                        || self.breaker_state() == BreakerState::Open
                    {
                        return Err(EmbedError::Unavailable(format!("embedding endpoint: {e}")));
                    }
                    tracing::warn!(error = %e, attempt, "embedding request failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
            }
        }
    }
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

#[async_trait]
impl Embedder for HttpEmbedder {
    fn model(&self) -> &str {
        &self.settings.model
    }

    fn dims(&self) -> usize {
        self.dims
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for part in texts.chunks(self.settings.max_inputs.max(1)) {
            out.extend(self.embed_part(part).await?);
        }
        Ok(out)
    }

    fn tokenizer(&self) -> Option<std::sync::Arc<TextTokenizer>> {
        None
    }
}
