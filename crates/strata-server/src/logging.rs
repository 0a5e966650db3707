//! Which request a log line belongs to, without a tracing span per request.
//!
//! A span per request costs a cache hit about a tenth of its work in the shipped binary
//! (measured with callgrind: about 8,000 of the 72,000 instructions of an L1-hit search go
//! to creating the span, formatting its fields into a string, and entering and leaving it
//! on every poll), and almost no request logs anything. So the request's id, method and
//! route ride in a task-local ([`RequestContextLayer`]: a few pointer copies per request),
//! and the log formatter ([`WithRequest`]) reads them only when a line is actually written
//! inside a request, appending them to the line. The per-request span is still there at
//! `debug` level (`STRATA_LOG=debug`), with the request/response events tower-http logs.
//!
//! Must not import: the engine; this is HTTP plumbing and log formatting only.

use std::fmt;
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use axum::http::{HeaderValue, Method, Request};
use tokio::task::futures::TaskLocalFuture;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

tokio::task_local! {
    static REQUEST: RequestInfo;
}

/// The request a task is serving, for log lines written while it does.
#[derive(Clone)]
pub(crate) struct RequestInfo {
    id: Option<HeaderValue>,
    method: Method,
    route: Option<MatchedPath>,
}

/// Runs each request's handling with its [`RequestInfo`] in a task-local. Sits inside the
/// request-id layer (so the id is set) and after routing (so the route is known).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RequestContextLayer;

impl<S> tower::Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext { inner }
    }
}

/// See [`RequestContextLayer`].
#[derive(Clone, Debug)]
pub(crate) struct RequestContext<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for RequestContext<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<RequestInfo, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let info = RequestInfo {
            id: req.headers().get(crate::middleware::REQUEST_ID).cloned(),
            method: req.method().clone(),
            route: req.extensions().get::<MatchedPath>().cloned(),
        };
        REQUEST.scope(info, self.inner.call(req))
    }
}

/// A log line format that appends the request a line was written in (`request_id`,
/// `method`, `route`) to what the wrapped format writes: as `key=value` pairs after a text
/// line, as three more members of a JSON line. Lines written outside a request are the
/// wrapped format's own.
#[derive(Debug)]
pub struct WithRequest<F> {
    inner: F,
    json: bool,
}

impl<F> WithRequest<F> {
    /// Wraps a text format (`tracing_subscriber::fmt::format()`, ANSI set on it explicitly:
    /// the line is written to a buffer first).
    pub fn text(inner: F) -> Self {
        Self { inner, json: false }
    }

    /// Wraps a JSON format (`tracing_subscriber::fmt::format().json()`).
    pub fn json(inner: F) -> Self {
        Self { inner, json: true }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithRequest<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Ok(info) = REQUEST.try_with(RequestInfo::clone) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.strip_suffix('\n').unwrap_or(&line);
        let id = info
            .id
            .as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let route = info.route.as_ref().map_or("-", |r| r.as_str());
        if self.json
            && let Some(open) = body.strip_suffix('}')
        {
            let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
            writeln!(
                writer,
                "{open},\"request_id\":{},\"method\":{},\"route\":{}}}",
                quote(&id),
                quote(info.method.as_str()),
                quote(route)
            )
        } else {
            // A client's own id may hold spaces or quotes: quoted then, so the pairs parse.
            let plain = !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
            let method = info.method.as_str();
            if plain {
                writeln!(
                    writer,
                    "{body} request_id={id} method={method} route={route}"
                )
            } else {
                writeln!(
                    writer,
                    "{body} request_id={id:?} method={method} route={route}"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::format;

    use super::*;

    /// Collects what the formatter writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn info(id: &str) -> RequestInfo {
        RequestInfo {
            id: Some(HeaderValue::from_str(id).unwrap()),
            method: Method::POST,
            route: None,
        }
    }

    /// Logs one line outside a request and one inside, through `layer`'s subscriber.
    fn lines<L>(layer: L, sink: &Sink, id: &str) -> Vec<String>
    where
        L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
    {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(n = 1, "outside");
            REQUEST.sync_scope(info(id), || tracing::warn!(n = 2, "inside"));
        });
        String::from_utf8(sink.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn text_lines_inside_a_request_name_it() {
        let sink = Sink::default();
        let layer = tracing_subscriber::fmt::layer()
            .event_format(WithRequest::text(format().with_ansi(false)))
            .with_ansi(false)
            .with_writer(sink.clone());
        let got = lines(layer, &sink, "abc123");
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(!got[0].contains("request_id"), "{}", got[0]);
        assert!(
            got[1].ends_with("inside n=2 request_id=abc123 method=POST route=-"),
            "{}",
            got[1]
        );
        // A client's id with a space is quoted, so the pairs still parse.
        let sink = Sink::default();
        let layer = tracing_subscriber::fmt::layer()
            .event_format(WithRequest::text(format().with_ansi(false)))
            .with_writer(sink.clone());
        let got = lines(layer, &sink, "a b");
        assert!(
            got[1].contains("request_id=\"a b\" method=POST"),
            "{}",
            got[1]
        );
    }

    #[test]
    fn json_lines_inside_a_request_carry_it_as_members() {
        let sink = Sink::default();
        let layer = tracing_subscriber::fmt::layer()
            .fmt_fields(format::JsonFields::new())
            .event_format(WithRequest::json(format().json()))
            .with_writer(sink.clone());
        let got = lines(layer, &sink, "q\"uote");
        let outside: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
        assert!(outside.get("request_id").is_none(), "{outside}");
        let inside: serde_json::Value = serde_json::from_str(&got[1]).unwrap();
        assert_eq!(inside["request_id"], "q\"uote", "{inside}");
        assert_eq!(inside["method"], "POST");
        assert_eq!(inside["route"], "-");
        assert_eq!(inside["fields"]["message"], "inside");
    }
}
