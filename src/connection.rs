//! Serving one accepted connection: protocol detection, hyper, graceful and hard shutdown; and
//! the service that turns each hyper request into an [`Exchange`] for the host.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::endpoint::Protocols;
use crate::exchange::{Exchange, ResponseBody, Shared};
use crate::log::log_at;
use crate::request::ConnectionInfo;
use crate::server::{Phase, ServerContext};
use crate::tls::acceptor::TlsAcceptor;
use crate::transport::{Listener, Stream};

/// How long a connection may take to write its last responses once the stop timeout passed.
const ABORT_FLUSH: std::time::Duration = std::time::Duration::from_millis(250);

/// Accepts connections until the server leaves the running phase; dropping the listener at the
/// end closes the socket (and removes a Unix socket file).
pub(crate) async fn accept_loop(
    listener: Listener,
    protocols: Protocols,
    tls: Option<Arc<TlsAcceptor>>,
    ctx: Arc<ServerContext>,
) {
    let mut phase = ctx.subscribe();
    loop {
        tokio::select! {
            biased;
            _ = async { phase.wait_for(|p| *p != Phase::Running).await.map(|_| ()) } => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote, local)) => {
                    let id = ctx.connection_opened();
                    let guard = ConnectionGuard(ctx.clone());
                    match &tls {
                        None => {
                            let info = Arc::new(ConnectionInfo::new(id, remote, local, None));
                            tokio::spawn(serve_connection(stream, info, protocols, guard));
                        }
                        Some(tls) => {
                            tokio::spawn(serve_tls(stream, (id, remote, local), tls.clone(), guard));
                        }
                    }
                }
                Err(e) => {
                    log_at!(ctx.logger, Warn, "kestrel.connections", "accept on {} failed: {}", listener.url(), e);
                    // Out of descriptors or memory: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    }
    log_at!(
        ctx.logger,
        Debug,
        "kestrel.connections",
        "stopped accepting on {}",
        listener.url()
    );
}

/// Decrements the live-connection count however the connection task ends (even if aborted); made
/// when the connection is counted (at accept), handed to the task that serves it.
struct ConnectionGuard(Arc<ServerContext>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// Runs the TLS handshake, then serves the connection with the HTTP version ALPN chose. A server
/// that starts draining during the handshake drops the connection.
async fn serve_tls(
    stream: Stream,
    (id, remote, local): (u64, crate::transport::PeerAddr, crate::transport::PeerAddr),
    tls: Arc<TlsAcceptor>,
    guard: ConnectionGuard,
) {
    let ctx = guard.0.clone();
    let mut phase = ctx.subscribe();
    let handshake = tokio::select! {
        result = tls.handshake(stream, &remote) => result,
        _ = async { phase.wait_for(|p| *p != Phase::Running).await.map(|_| ()) } => return,
    };
    match handshake {
        Ok(done) => {
            let info = Arc::new(ConnectionInfo::new(id, remote, local, Some(done.info)));
            serve_connection(done.stream, info, done.protocols, guard).await;
        }
        Err(e) => {
            log_at!(
                ctx.logger,
                Debug,
                "kestrel.tls",
                "connection {} from {} on {}: {}",
                id,
                remote,
                tls.endpoint(),
                e
            );
        }
    }
}

async fn serve_connection<I>(
    stream: I,
    info: Arc<ConnectionInfo>,
    protocols: Protocols,
    guard: ConnectionGuard,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctx = guard.0.clone();
    log_at!(
        ctx.logger,
        Trace,
        "kestrel.connections",
        "connection {} from {} accepted",
        info.id(),
        info.remote_text()
    );
    let service = {
        let (info, ctx) = (info.clone(), ctx.clone());
        service_fn(move |request| respond(request, info.clone(), ctx.clone()))
    };
    let builder = ctx.builder(protocols);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut phase = ctx.subscribe();
    let mut draining = false;
    loop {
        let current = *phase.borrow_and_update();
        if current == Phase::Aborting {
            // Requests still waiting for the host are answered 500 by `respond`; give the
            // connection a moment to write those, then tear it down.
            if tokio::time::timeout(ABORT_FLUSH, connection.as_mut())
                .await
                .is_err()
            {
                info.torn_down.store(true, Ordering::Release);
            }
            break;
        }
        if current == Phase::Draining && !draining {
            draining = true;
            // HTTP/1.1: finish the request in flight, then close; HTTP/2: GOAWAY.
            connection.as_mut().graceful_shutdown();
        }
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    log_at!(ctx.logger, Debug, "kestrel.connections", "connection {} ended: {}", info.id(), e);
                }
                break;
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    info.torn_down.store(true, Ordering::Release);
                    break;
                }
            }
        }
    }
    log_at!(
        ctx.logger,
        Trace,
        "kestrel.connections",
        "connection {} closed",
        info.id()
    );
}

/// Aborts the exchange if hyper drops the request before the response head was handed over:
/// that is how hyper tells a service the client went away (or the stream was reset).
struct AbortGuard(Option<Arc<Shared>>);

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.abort();
        }
    }
}

/// Turns a hyper request into an exchange, hands it to the host, and returns the future hyper
/// awaits for the response head.
///
/// The exchange is built and dispatched here, synchronously, so the returned future holds only
/// what waiting needs (232 bytes rather than 776 with the request inside): hyper's HTTP/2 server
/// spawns it as a task per stream.
fn respond(
    request: hyper::Request<hyper::body::Incoming>,
    info: Arc<ConnectionInfo>,
    ctx: Arc<ServerContext>,
) -> impl std::future::Future<Output = Result<hyper::Response<ResponseBody>, Infallible>> {
    let (exchange, head) = Exchange::new(request, info, ctx.clone());
    let mut guard = AbortGuard(Some(exchange.shared().clone()));
    ctx.dispatch(exchange);
    async move {
        let response = tokio::select! {
            // Biased, with the subscription made inside the second branch: a response that is
            // ready at once (INLINE handlers) costs no watch registration.
            biased;
            response = head => response.ok(),
            // The stop timeout passed and the host has not answered: 500, and the exchange is
            // aborted (the guard, below) so the host's late calls return Cancelled.
            _ = async { ctx.subscribe().wait_for(|p| *p == Phase::Aborting).await.map(|_| ()) } => None,
        };
        if response.is_some() {
            // From here on a streamed body notices a vanished client itself.
            guard.0 = None;
        }
        drop(guard);
        Ok(response.unwrap_or_else(|| ResponseBody::status(StatusCode::INTERNAL_SERVER_ERROR)))
    }
}
