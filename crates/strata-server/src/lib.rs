//! strata's HTTP layer: routes, middleware, problem+json errors, and the [`App`] that binds
//! a listener and runs the server and the job workers until shutdown.
//!
//! Owns: HTTP concerns only (status codes, headers, body limits, streaming). Handlers are
//! thin: parse, call [`strata_engine::Engine`], shape the response. Must not import: SQL
//! drivers or storage types; everything goes through the engine.

pub mod admission;
pub mod alerts;
pub mod auth;
mod cached;
pub mod caller;
mod drain;
pub mod error;
pub mod extract;
pub mod logging;
mod memo;
pub mod metrics;
mod middleware;
pub mod openai;
pub mod openapi;
pub mod process;
pub mod routes;
mod stream_gzip;
pub mod summary;
pub mod tls;
pub mod warm;
mod watch;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use strata_engine::Engine;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::{info, warn};

use crate::error::{ApiError, Code};

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Largest JSON body of non-upload endpoints.
    pub json_body_limit: usize,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// How callers are identified: the single local admin tenant (development), a request
    /// header set by an authenticating proxy (with a list of admin tenants), or bearer
    /// credentials (JWTs and the operator key).
    pub identity: caller::Identity,
    /// Cache warming of frequent searches.
    pub warm: warm::WarmSettings,
    /// Origins browsers may call from (`*` for any); empty turns CORS off.
    pub cors_origins: Vec<String>,
    /// Load shedding, rate limits, deadlines.
    pub admission: admission::AdmissionSettings,
    /// Responses from this many bytes on are compressed for clients that ask (gzip, br,
    /// zstd); `None` compresses nothing.
    pub compress_min_bytes: Option<usize>,
    /// Serve HTTPS (HTTP/1.1 and h2 by ALPN) with this certificate and key.
    pub tls: Option<tls::TlsSettings>,
    /// Requests slower than this are logged at warn; `None` logs none.
    pub slow_request: Option<Duration>,
    /// The LLM gateway's upstreams and timeouts.
    pub gateway: strata_gateway::GatewaySettings,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7733)),
            json_body_limit: 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            identity: caller::Identity::Local,
            warm: warm::WarmSettings::default(),
            cors_origins: Vec::new(),
            admission: admission::AdmissionSettings::default(),
            compress_min_bytes: Some(cached::GZIP_MIN),
            tls: None,
            slow_request: Some(Duration::from_secs(1)),
            gateway: strata_gateway::GatewaySettings::default(),
        }
    }
}

/// One upstream of the gateway, as configured.
pub use strata_gateway::{
    GatewaySettings, Price as GatewayPrice, SemanticMode, UpstreamSettings as GatewayUpstream,
};

/// The header type of [`caller::Identity::Header`].
pub use axum::http::HeaderName;

/// Shared, immutable state of the handlers.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

/// What [`AppState`] holds.
pub struct AppInner {
    /// The domain.
    pub engine: Engine,
    /// Fired when the server shuts down; long-lived streams end on it.
    pub shutdown: CancellationToken,
    /// Hot-query tracking and cache warming.
    pub warmer: Arc<warm::Warmer>,
    /// The metrics registry `/metrics` reads.
    pub metrics: metrics::Metrics,
    /// Load shedding, rate limits, deadlines.
    pub admission: Arc<admission::Admission>,
    /// The OpenAPI document `GET /openapi.json` serves.
    pub openapi: openapi::Served,
    /// The LLM gateway.
    pub gateway: strata_gateway::Gateway,
    /// Samples of the counters, for the summary's sliding windows.
    pub windows: summary::Windows,
    /// When the state was built (the summary's uptime).
    pub started: std::time::Instant,
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// The handlers' shared state.
pub fn state(engine: Engine, settings: &ServerSettings, shutdown: CancellationToken) -> AppState {
    let hot_list = engine.data_dir().join("hot-queries.json");
    let warmer = Arc::new(warm::Warmer::new(settings.warm.clone(), Some(hot_list)));
    let engine_cache = engine.cache_policy().cache().clone();
    let gateway = strata_gateway::Gateway::new(engine.clone(), settings.gateway.clone())
        .unwrap_or_else(|e| {
            // App::build refuses such settings; a router built directly gets no upstreams.
            tracing::error!(error = %e, "gateway settings refused; the gateway has no upstreams");
            strata_gateway::Gateway::new(engine.clone(), Default::default())
                .expect("a gateway without upstreams always builds")
        });
    if gateway.is_configured() {
        engine.summaries().set_completer(Arc::new(gateway.clone()));
    }
    let metrics = metrics::Metrics::new(Some(metrics::Snapshots {
        engine: engine.clone(),
        warmer: warmer.clone(),
        gateway: gateway.clone(),
        queue: Default::default(),
    }));
    metrics.http.log_slower_than(settings.slow_request);
    AppState(Arc::new(AppInner {
        gateway,
        engine,
        shutdown,
        warmer,
        metrics,
        admission: Arc::new(admission::Admission::new(
            settings.admission.clone(),
            Some(engine_cache),
        )),
        openapi: openapi::Served::default(),
        windows: summary::Windows::default(),
        started: std::time::Instant::now(),
    }))
}

/// The complete router: API routes, fallbacks and middleware.
pub fn router(engine: Engine, settings: &ServerSettings, shutdown: CancellationToken) -> Router {
    router_with(state(engine, settings, shutdown), settings)
}

/// The complete router over existing state.
pub fn router_with(state: AppState, settings: &ServerSettings) -> Router {
    // Multipart framing adds a little to the file itself.
    let http_metrics = state.metrics.layer();
    let upload_limit = usize::try_from(state.engine.documents().max_upload_bytes())
        .unwrap_or(usize::MAX)
        .saturating_add(64 * 1024);
    let (api, doc) = routes::api(upload_limit).split_for_parts();
    state.openapi.set(&openapi::finish(doc));
    let api = api
        .fallback(|| async { ApiError::new(Code::RouteNotFound, "no endpoint at this path") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "this endpoint does not accept that method",
            )
        });
    // One layer made of the four (five with CORS; outermost first): `Router::layer` boxes
    // every layer it is given around every route, and a request clones each box, so four
    // layers cost four allocations a request where one stack costs one. Admission sits
    // inside the caller, so it sees the caller; all run after routing, so they see the
    // matched route.
    let stack = tower::ServiceBuilder::new()
        .layer(openai::OpenAiErrorsLayer)
        .layer(caller::CallerLayer::new(settings.identity.clone()))
        .layer(state.admission.layer())
        .layer(DefaultBodyLimit::max(settings.json_body_limit));
    // CORS joins the stack only when configured: left in as an `Option`, its unused
    // configuration (a few hundred bytes) was still copied with every request's clone of
    // the route.
    let api = match middleware::cors(&settings.cors_origins) {
        Some(cors) => api.layer(tower::ServiceBuilder::new().layer(cors).layer(stack)),
        None => api.layer(stack),
    };
    with_middleware(
        api.with_state(state),
        http_metrics,
        settings.compress_min_bytes,
    )
}

/// The middleware every strata response passes through (Server-Timing and security headers,
/// compression, panic to 500 problem, HTTP metrics, tracing, the request's log context,
/// request ids). Public so benchmarks can build a ceiling server with the same stack and
/// none of strata's work.
pub fn with_middleware(
    router: Router,
    http_metrics: metrics::HttpMetricsLayer,
    compress_min_bytes: Option<usize>,
) -> Router {
    use axum::response::IntoResponse as _;
    // One stack, outermost first, given to `Router::layer` once (see `router_with`): eight
    // layers one by one were eight boxes cloned and dropped on every request.
    let compression = compress_min_bytes.map(|min| {
        tower::ServiceBuilder::new()
            .map_response(axum::response::Response::into_response)
            .layer(middleware::compression(min))
    });
    router.layer(
        tower::ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(
                middleware::REQUEST_ID,
                middleware::MakeRequestId,
            ))
            .layer(PropagateRequestIdLayer::new(middleware::REQUEST_ID))
            .layer(logging::RequestContextLayer)
            .layer(middleware::trace_layer())
            .layer(http_metrics)
            .layer(CatchPanicLayer::custom(middleware::panic_response))
            .option_layer(compression)
            .layer(middleware::ServerTimingLayer),
    )
}

/// Serves `app` on `listener` until `shutdown`, then drains in-flight requests for up to
/// `grace`. The listener takes its accept queue and closes at `shutdown`; hyper's graceful
/// shutdown begins [`drain::FIRST_REQUEST_WINDOW`] later (at most `grace`), so connections
/// made just before the stop get their first request read (see [`drain`]).
async fn serve_until<L>(
    listener: L,
    app: Router,
    shutdown: &CancellationToken,
    grace: std::time::Duration,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let window = drain::FIRST_REQUEST_WINDOW.min(grace);
    let graceful = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(window).await;
        }
    };
    let serve = axum::serve(listener, app)
        .with_graceful_shutdown(graceful)
        .into_future();
    tokio::pin!(serve);
    tokio::select! {
        r = &mut serve => r?,
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!(?grace, "in-flight requests did not finish within the grace period; closing them");
        }
    }
    Ok(())
}

/// A bound, ready-to-run server with its job workers.
pub struct App {
    listener: TcpListener,
    engine: Engine,
    settings: ServerSettings,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl App {
    /// Binds the listener (and reads the TLS certificate and key, when configured); the
    /// server does not accept connections until [`App::run`].
    pub async fn build(engine: Engine, settings: ServerSettings) -> std::io::Result<Self> {
        let tls = match &settings.tls {
            Some(t) => Some(tls::load(t).map_err(std::io::Error::other)?),
            None => None,
        };
        strata_gateway::Gateway::new(engine.clone(), settings.gateway.clone())
            .map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(settings.listen).await?;
        Ok(Self {
            listener,
            engine,
            settings,
            tls,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves HTTP and runs the job workers until `shutdown` fires, then stops accepting,
    /// drains in-flight requests (up to the grace period), lets workers finish or requeue
    /// their jobs, joins every task and closes the store.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let tasks = TaskTracker::new();
        self.engine.spawn_workers(&tasks, &shutdown);
        let state = state(self.engine.clone(), &self.settings, shutdown.clone());
        tasks.spawn(warm::run(state.clone(), shutdown.clone()));
        tasks.spawn(summary::run(state.clone(), shutdown.clone()));
        if let caller::Identity::Token(auth) = &self.settings.identity {
            tasks.spawn(auth::watch(auth.clone(), shutdown.clone()));
        }
        let app = router_with(state, &self.settings);
        let addr = self.listener.local_addr()?;
        let grace = self.settings.shutdown_grace;
        match (self.tls, &self.settings.tls) {
            (Some(config), Some(files)) => {
                info!(%addr, "listening (HTTPS: HTTP/1.1 and h2 by ALPN)");
                let listener = tls::TlsListener::start(
                    self.listener,
                    files.clone(),
                    config,
                    shutdown.clone(),
                    &tasks,
                )?;
                serve_until(listener, app, &shutdown, grace).await?;
            }
            _ => {
                info!(%addr, "listening");
                let listener = drain::Draining::new(self.listener, shutdown.clone())?;
                serve_until(listener, app, &shutdown, grace).await?;
            }
        }
        tasks.close();
        tasks.wait().await;
        self.engine.close().await;
        info!("shutdown complete");
        Ok(())
    }
}
