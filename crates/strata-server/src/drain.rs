//! How the server stops taking connections without resetting the ones already made.
//!
//! Closing a listening socket resets every connection the kernel has completed but the
//! server has not yet accepted (its accept queue), and hyper's graceful shutdown closes a
//! freshly accepted HTTP/1 connection whose request it has not read yet (hyperium/hyper
//! #2730, #3961). Under load both happen to clients that did nothing wrong: their request
//! was on the wire before the stop. So a stop here goes in three steps:
//!
//! 1. the accept queue is taken whole (non-blocking accepts until the kernel has none
//!    left), then the listener is closed: later clients get "connection refused", which a
//!    client or balancer knows to retry elsewhere;
//! 2. the connections just taken are served for [`FIRST_REQUEST_WINDOW`] (bounded by the
//!    grace period) as if nothing had happened, long enough for their first request to
//!    arrive;
//! 3. then hyper's graceful shutdown starts: requests in flight finish, idle connections
//!    close.
//!
//! What remains is the microseconds between the last accept and the close, where a
//! handshake completing is still reset: the kernel offers no atomic "close after draining".
//!
//! Owns: the plain TCP listener the server accepts on and the order of a stop. Must not:
//! know about routes, TLS or the engine.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long connections taken from the accept queue at a stop are served before the
/// graceful shutdown begins: a client sends its request as soon as its handshake ends, so
/// it is on the wire well within this.
pub const FIRST_REQUEST_WINDOW: Duration = Duration::from_millis(500);

/// Takes every connection waiting in `listener`'s accept queue, then closes it.
pub fn take_queue(listener: TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let mut taken = Vec::new();
    let std = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "could not take the accept queue at shutdown");
            return taken;
        }
    };
    // `into_std` leaves the socket non-blocking: `accept` answers WouldBlock once the
    // queue is empty.
    loop {
        match std.accept() {
            // An accepted socket is blocking whatever the listener is; tokio needs it not.
            Ok((stream, peer)) => match stream
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(stream))
            {
                Ok(stream) => taken.push((stream, peer)),
                Err(e) => tracing::debug!(%peer, error = %e, "could not adopt a queued connection"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    tracing::debug!(error = %e, "accept failed while taking the queue");
                }
                break;
            }
        }
    }
    if !taken.is_empty() {
        tracing::info!(
            connections = taken.len(),
            "took the accept queue before closing the listener"
        );
    }
    taken
}

/// The plain TCP listener: accepts until `stop`, then hands out what [`take_queue`] took
/// and nothing more.
pub struct Draining {
    listener: Option<TcpListener>,
    taken: VecDeque<(TcpStream, SocketAddr)>,
    stop: CancellationToken,
    local: SocketAddr,
}

impl Draining {
    /// Wraps `listener`; `stop` is the server's shutdown signal.
    pub fn new(listener: TcpListener, stop: CancellationToken) -> std::io::Result<Self> {
        Ok(Self {
            local: listener.local_addr()?,
            listener: Some(listener),
            taken: VecDeque::new(),
            stop,
        })
    }
}

impl axum::serve::Listener for Draining {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Some(conn) = self.taken.pop_front() {
                return conn;
            }
            let Some(listener) = &self.listener else {
                // Stopped and everything taken was handed out: axum stops asking once the
                // graceful shutdown begins.
                return std::future::pending().await;
            };
            let accepted = tokio::select! {
                biased;
                () = self.stop.cancelled() => None,
                accepted = listener.accept() => Some(accepted),
            };
            match accepted {
                None => {
                    if let Some(listener) = self.listener.take() {
                        self.taken = take_queue(listener).into();
                    }
                }
                Some(Ok(conn)) => return conn,
                Some(Err(e)) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Connections the kernel completed before the stop are handed out after it, and the
    /// listener is closed: a later connect is refused rather than queued and reset.
    #[tokio::test]
    async fn a_stop_hands_out_the_queue_then_refuses() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let mut draining = Draining::new(listener, stop.clone()).unwrap();
        // Three handshakes the kernel completes while nobody accepts.
        let mut clients = Vec::new();
        for i in 0..3u8 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(&[i]).await.unwrap();
            clients.push(c);
        }
        stop.cancel();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (mut conn, _) = axum::serve::Listener::accept(&mut draining).await;
            let mut b = [0u8; 1];
            conn.read_exact(&mut b).await.unwrap();
            seen.push(b[0]);
            conn.write_all(b"ok").await.unwrap();
        }
        seen.sort_unstable();
        assert_eq!(
            seen,
            vec![0, 1, 2],
            "every queued connection was handed out"
        );
        for mut c in clients {
            let mut b = [0u8; 2];
            c.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"ok");
        }
        let refused = TcpStream::connect(addr).await;
        assert!(
            refused.is_err(),
            "the listener is closed once the queue is taken"
        );
        let next = tokio::time::timeout(
            Duration::from_millis(100),
            axum::serve::Listener::accept(&mut draining),
        )
        .await;
        assert!(next.is_err(), "nothing more is handed out after the queue");
    }
}
