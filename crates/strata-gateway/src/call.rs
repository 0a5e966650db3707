//! A leader's upstream call: opens the upstreams, feeds the flight (and, across instances,
//! its mirror), or follows another instance's call; then stores the answer, settles the
//! reservation and meters the call.
//!
//! Must not import: HTTP types, SQL.

use super::*;
/// A leader's upstream call, run in a task of its own.
pub(crate) struct Call {
    pub(crate) gateway: Gateway,
    pub(crate) flight: Arc<Flight>,
    pub(crate) key: [u8; 32],
    pub(crate) tenant: TenantId,
    /// Where to store a complete answer, if it may be stored.
    pub(crate) read: Option<Read>,
    pub(crate) reservation: Option<String>,
    /// The request's part in the semantic cache, if it takes part.
    pub(crate) semantic: Option<Pending>,
    /// Leading the call across instances: what to mirror into the shared log.
    pub(crate) mirror: Option<remote::Mirror>,
    /// Another instance leads the call: its log, to follow instead of calling.
    pub(crate) follow: Option<strata_cache::shared_log::LogReader>,
    pub(crate) stream: bool,
    pub(crate) asked: String,
    pub(crate) body: serde_json::Map<String, Value>,
}

impl Call {
    pub(crate) async fn run(mut self) {
        let gateway = self.gateway.clone();
        let inner = &gateway.inner;
        // Following another instance; if it went away before its answer began, this call
        // goes on to the upstream itself.
        if let Some(reader) = self.follow.take()
            && self.follow_remote(reader).await
        {
            return;
        }
        let flight = self.flight.clone();
        let outcome = {
            let relay = self.relay();
            tokio::pin!(relay);
            let mut watching = true;
            loop {
                tokio::select! {
                    () = flight.cancelled().cancelled(), if watching => {
                        // Every client here left; another instance may still read the call.
                        match &self.mirror {
                            Some(m) if m.read_elsewhere().await => watching = false,
                            _ => break None,
                        }
                    }
                    r = &mut relay => break Some(r),
                }
            }
        };
        let budgets = inner.engine.budgets();
        let cancelled = outcome.is_none();
        let Some((answer, opened_model, price)) = outcome.flatten() else {
            if cancelled {
                inner.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                let end = End::Broken("cancelled: every client went away".into());
                if let Some(m) = &self.mirror {
                    m.end(&end).await;
                }
                flight.end(end);
            }
            self.finish().await;
            inner.flights.remove(&self.key, &self.flight);
            if let Some(id) = self.reservation.take() {
                budgets.settle(&self.tenant, id, Spend::default());
            }
            return;
        };
        let usage = answer
            .usage()
            .unwrap_or_else(|| estimate_usage(&self.body, &answer));
        let mut stored = None;
        if let Some(read) = &self.read {
            let policy = inner.engine.cache_policy();
            match policy.put(read, wrap(&answer, usage)).await {
                Ok(()) => stored = Some(Bytes::from(read.material.clone())),
                Err(e) => warn!(error = %e, "storing a gateway answer failed"),
            }
        }
        if let Some(p) = self.semantic.take() {
            inner.semantic.complete(&inner.engine, p, stored, &answer);
        }
        self.finish().await;
        inner.flights.remove(&self.key, &self.flight);
        let cost = price.micros(usage.prompt, usage.completion);
        if let Some(id) = self.reservation.take() {
            budgets.settle(
                &self.tenant,
                id,
                Spend {
                    tokens: usage.prompt + usage.completion,
                    cost_micros: cost,
                },
            );
        }
        budgets.record(
            &self.tenant,
            UsageEntry {
                model: opened_model,
                prompt_tokens: usage.prompt,
                completion_tokens: usage.completion,
                cost_micros: cost,
                cached: false,
            },
        );
    }

    /// Gives up the lead of the shared log, if this call holds one.
    async fn finish(&mut self) {
        if let Some(m) = self.mirror.take() {
            m.finish().await;
        }
    }

    /// Follows another instance's call into this flight; `false` when that instance went
    /// away before its answer began (the caller then calls the upstream itself). The other
    /// instance stores the answer and meters the call: this one spends nothing.
    async fn follow_remote(&mut self, reader: strata_cache::shared_log::LogReader) -> bool {
        let inner = &self.gateway.inner;
        let flight = self.flight.clone();
        let wait = inner.upstreams.first_byte_budget() + remote::LEASE;
        let followed = tokio::select! {
            () = flight.cancelled().cancelled() => {
                inner.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                flight.end(End::Broken("cancelled: every client went away".into()));
                None
            }
            f = remote::follow(reader, &flight, wait, inner.upstreams.idle_timeout()) => Some(f),
        };
        if matches!(followed, Some(remote::Followed::Lost)) {
            return false;
        }
        inner.flights.remove(&self.key, &self.flight);
        if let Some(id) = self.reservation.take() {
            inner
                .engine
                .budgets()
                .settle(&self.tenant, id, Spend::default());
        }
        true
    }

    /// Begins the flight (and its mirror).
    async fn begin(&self, head: Head) {
        if let Some(m) = &self.mirror {
            m.head(&head).await;
        }
        self.flight.begin(head);
    }

    /// Ends the flight (and its mirror, giving up the lead): before any client here or
    /// elsewhere sees the end, so a request it sends next leads a call of its own.
    async fn end(&self, end: End) {
        if let Some(m) = &self.mirror {
            m.end(&end).await;
        }
        self.flight.end(end);
    }

    /// Mirrors frames already pushed to the flight.
    async fn mirror(&self, frames: &[Bytes]) {
        if let Some(m) = &self.mirror {
            m.frames(frames).await;
        }
    }

    /// Opens the upstream and feeds the flight; the complete answer, or `None` when it
    /// failed or broke off (the flight says how).
    async fn relay(&self) -> Option<(Answer, String, Price)> {
        let inner = &self.gateway.inner;
        inner
            .counters
            .upstream_calls
            .fetch_add(1, Ordering::Relaxed);
        let mut body = self.body.clone();
        body.insert("stream".into(), Value::Bool(self.stream));
        let opened = match inner.upstreams.open(&self.asked, &body).await {
            Ok(o) => o,
            Err(f) => {
                inner
                    .counters
                    .upstream_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.begin(Head::Failed(f)).await;
                self.end(End::Broken("no upstream answered".into())).await;
                return None;
            }
        };
        let Opened {
            model,
            price,
            response,
            ..
        } = opened;
        let idle = inner.upstreams.idle_timeout();
        self.begin(if self.stream {
            Head::Stream
        } else {
            Head::Json
        })
        .await;
        let mut bytes = response.bytes_stream();
        let mut parser = sse::Parser::default();
        let mut json = Vec::new();
        let broken = loop {
            let next = match tokio::time::timeout(idle, bytes.next()).await {
                Err(_) => break format!("the upstream sent nothing for {idle:?}"),
                Ok(None) => {
                    if !self.stream {
                        let body = Bytes::from(std::mem::take(&mut json));
                        self.flight.push(body.clone());
                        self.mirror(&[body]).await;
                        self.end(End::Complete).await;
                        return Some((Answer::Json(self.flight.frames().remove(0)), model, price));
                    }
                    if let Some(last) = parser.finish()
                        && last.as_ref() != sse::DONE
                    {
                        self.flight.push(last.clone());
                        self.mirror(&[last]).await;
                    }
                    break "the upstream closed the stream before [DONE]".to_owned();
                }
                Ok(Some(Err(_))) => break "the upstream connection broke".to_owned(),
                Ok(Some(Ok(b))) => b,
            };
            if !self.stream {
                json.extend_from_slice(&next);
                continue;
            }
            let mut batch = Vec::new();
            for data in parser.feed(&next) {
                if data.as_ref() == sse::DONE {
                    self.mirror(&batch).await;
                    self.end(End::Complete).await;
                    return Some((Answer::Stream(self.flight.frames()), model, price));
                }
                let error = is_error(&data);
                self.flight.push(data.clone());
                batch.push(data);
                if error {
                    inner
                        .counters
                        .broken_streams
                        .fetch_add(1, Ordering::Relaxed);
                    self.mirror(&batch).await;
                    self.end(End::Broken("the upstream sent an error mid-stream".into()))
                        .await;
                    return None;
                }
            }
            self.mirror(&batch).await;
        };
        inner
            .counters
            .broken_streams
            .fetch_add(1, Ordering::Relaxed);
        self.end(End::Broken(broken)).await;
        None
    }
}

/// Usage of an answer whose upstream reported none: about 4 characters a token.
fn estimate_usage(body: &serde_json::Map<String, Value>, answer: &Answer) -> Usage {
    let prompt = body
        .get("messages")
        .map_or(0, |m| m.to_string().len())
        .div_ceil(4) as i64;
    let text = answer.to_json();
    let completion = serde_json::from_slice::<Value>(&text)
        .ok()
        .and_then(|v| {
            Some(
                v.get("choices")?
                    .as_array()?
                    .iter()
                    .map(|c| c.get("message").map_or(0, |m| m.to_string().len()))
                    .sum::<usize>(),
            )
        })
        .unwrap_or(0);
    Usage {
        prompt,
        completion: completion.div_ceil(4) as i64,
    }
}
