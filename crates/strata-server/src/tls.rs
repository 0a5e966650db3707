//! TLS: HTTP/1.1 and HTTP/2 (chosen by ALPN) over rustls, when a certificate chain and a
//! key are configured; both files are re-read when either changes (checked every two
//! seconds), so a renewed certificate is served without a restart.
//!
//! Handshakes run in tasks of their own (a slow or silent client cannot hold up the
//! others) with a time limit, and the finished connections reach axum's server through a
//! channel, as a [`axum::serve::Listener`].
//!
//! Owns: loading certificates and keys, the handshake, the reload. Must not: reach the
//! engine, or log key material.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where the certificate chain and its key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the certificate or key cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the chain and key into a server configuration offering h2 and http/1.1.
pub fn load(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let fail = |path: &Path, why: String| TlsError(format!("{}: {why}", path.display()));
    let certs = CertificateDer::pem_file_iter(&settings.cert)
        .map_err(|e| fail(&settings.cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(&settings.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(fail(&settings.cert, "holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .map_err(|e| fail(&settings.key, format!("no usable private key ({e})")))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("the certificate and key do not go together: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener handing out connections whose TLS handshake has finished.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` (and watching the files) until `shutdown`, in `tasks`.
    pub fn start(
        tcp: TcpListener,
        settings: TlsSettings,
        config: Arc<ServerConfig>,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let current = Arc::new(ArcSwap::new(config));
        let (tx, ready) = mpsc::channel(256);
        tasks.spawn(accept_loop(tcp, current.clone(), tx, shutdown.clone()));
        tasks.spawn(watch(settings, current, shutdown));
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ended (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    config: Arc<ArcSwap<ServerConfig>>,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let handshake = |stream: TcpStream, peer: SocketAddr| {
        let _ = stream.set_nodelay(true);
        let acceptor = TlsAcceptor::from(config.load_full());
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    };
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => None,
            accepted = tcp.accept() => Some(accepted),
        };
        match accepted {
            None => {
                // Connections already completed by the kernel are taken and shaken hands
                // with, not reset by the close (see `crate::drain`).
                for (stream, peer) in crate::drain::take_queue(tcp) {
                    handshake(stream, peer);
                }
                return;
            }
            Some(Ok((stream, peer))) => handshake(stream, peer),
            Some(Err(e)) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Re-reads the certificate and key when either file changes; a pair that cannot be used
/// is logged once and the one in use stays.
async fn watch(
    settings: TlsSettings,
    current: Arc<ArcSwap<ServerConfig>>,
    shutdown: CancellationToken,
) {
    let paths = vec![settings.cert.clone(), settings.key.clone()];
    let seen = paths.iter().map(|p| crate::watch::stamp(p)).collect();
    crate::watch::on_change(paths, seen, false, shutdown, move || {
        match load(&settings) {
            Ok(config) => {
                current.store(config);
                tracing::info!(cert = %settings.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays")
            }
        }
    })
    .await;
}
