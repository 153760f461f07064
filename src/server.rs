//! The server: its runtime, endpoints, handler threads, and lifecycle (start, stop, drop).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{watch, Notify};

use crate::connection::accept_loop;
use crate::dispatch::{
    mark_library_thread, on_library_thread, run_handler, start_pool, RequestQueue,
};
use crate::endpoint::{parse_urls, Protocols, DEFAULT_URL};
use crate::error::{Error, Result};
use crate::exchange::{lock, Exchange};
use crate::log::{log_at, Logger};
use crate::options::{DispatchMode, Handler, ServerOptions};
use crate::tls::acceptor::TlsAcceptor;
use crate::tls::{build_layers, DevCertificate};
use crate::transport::bind_all;

/// How long to let the runtime's threads wind down once every connection is gone.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);

/// Where the server is in its shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// Not accepting; connections finish what is in flight.
    Draining,
    /// Remaining connections are torn down.
    Aborting,
}

/// How the server reaches the host's code.
enum Route {
    Inline(Arc<dyn Handler>),
    Queue(Arc<RequestQueue>),
}

/// State shared by every connection of a running server.
pub(crate) struct ServerContext {
    runtime: Handle,
    pub(crate) response_buffer: usize,
    pub(crate) server_header: bool,
    pub(crate) logger: Logger,
    route: Route,
    phase: watch::Sender<Phase>,
    connections: AtomicUsize,
    connections_gone: Notify,
    next_connection: AtomicU64,
    unsettled_requests: AtomicUsize,
    builders: [auto::Builder<TokioExecutor>; 3],
}

impl ServerContext {
    pub(crate) fn runtime(&self) -> &Handle {
        &self.runtime
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub(crate) fn builder(&self, protocols: Protocols) -> &auto::Builder<TokioExecutor> {
        &self.builders[match protocols {
            Protocols::Http1 => 0,
            Protocols::Http2 => 1,
            Protocols::Http1AndHttp2 => 2,
        }]
    }

    /// Counts a new connection and returns its id.
    pub(crate) fn connection_opened(&self) -> u64 {
        self.connections.fetch_add(1, Ordering::AcqRel);
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn connection_closed(&self) {
        if self.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.connections_gone.notify_waiters();
        }
    }

    pub(crate) fn request_started(&self) {
        self.unsettled_requests.fetch_add(1, Ordering::AcqRel);
    }

    /// A request was completed or aborted.
    pub(crate) fn request_settled(&self) {
        self.unsettled_requests.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn dispatch(&self, exchange: Exchange) {
        match &self.route {
            Route::Inline(handler) => run_handler(handler.as_ref(), exchange, &self.logger),
            Route::Queue(queue) => queue.push(exchange),
        }
    }

    async fn connections_closed(&self) {
        loop {
            let gone = self.connections_gone.notified();
            let mut gone = std::pin::pin!(gone);
            gone.as_mut().enable();
            if self.connections.load(Ordering::Acquire) == 0 {
                return;
            }
            gone.await;
        }
    }
}

fn http_builder(protocols: Protocols) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Not pipeline_flush: with it, hyper 1.12 never flushes its automatic 400 for a malformed
        // request before closing, and the client sees a bare close.
        .pipeline_flush(false)
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .initial_stream_window_size(768 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_frame_size(16 * 1024)
        .max_header_list_size(32 * 1024);
    match protocols {
        Protocols::Http1 => builder.http1_only(),
        Protocols::Http2 => builder.http2_only(),
        Protocols::Http1AndHttp2 => builder,
    }
}

/// Whether waiting here is off limits: on the library's own threads, or inside any tokio runtime.
fn must_not_block() -> bool {
    on_library_thread() || Handle::try_current().is_ok()
}

/// What a stop did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Requests still in flight at the timeout, aborted.
    pub aborted_requests: usize,
    /// True when the stop was only scheduled (called from a library thread) and runs in the
    /// background.
    pub scheduled: bool,
}

struct Running {
    runtime: Mutex<Option<Runtime>>,
    ctx: Arc<ServerContext>,
    addresses: Vec<String>,
    accept_loops: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pool: Mutex<Vec<JoinHandle<()>>>,
    /// Stops scheduled from library threads; joined at teardown.
    stop_threads: Mutex<Vec<JoinHandle<()>>>,
    queue: Option<Arc<RequestQueue>>,
    stopping: AtomicBool,
    /// The TLS layers of the https endpoints, for reload.
    tls: Vec<Arc<TlsAcceptor>>,
    dev_certificate: Option<DevCertificate>,
}

enum State {
    Created,
    Running(Arc<Running>),
    Stopped(Arc<Running>),
}

struct ServerInner {
    options: ServerOptions,
    state: Mutex<State>,
}

/// An HTTP server. Dropping it stops it at once (in-flight requests are aborted) and joins every
/// thread it started; call [`Server::stop`] first for a graceful stop.
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

impl Server {
    /// Checks the options and makes a server; nothing is bound until [`Server::start`].
    pub fn new(mut options: ServerOptions) -> Result<Server> {
        if options.dispatch != DispatchMode::Pull && options.handler.is_none() {
            return Err(Error::InvalidArgument(
                "a handler is required unless the dispatch mode is pull".into(),
            ));
        }
        if options.endpoints.is_empty() {
            options.endpoints = parse_urls(DEFAULT_URL, Protocols::default())?;
        }
        Ok(Server {
            inner: Arc::new(ServerInner {
                options,
                state: Mutex::new(State::Created),
            }),
        })
    }

    /// Binds every endpoint and starts serving. On a bind failure nothing stays bound and the
    /// error names the address; the server can be started again.
    pub fn start(&self) -> Result<()> {
        let mut state = lock(&self.inner.state);
        match &*state {
            State::Created => {}
            State::Running(r) if r.stopping.load(Ordering::Acquire) => {
                return Err(Error::InvalidState(
                    "a stopped server cannot start again".into(),
                ))
            }
            State::Running(_) => {
                return Err(Error::InvalidState("the server is already running".into()))
            }
            State::Stopped(_) => {
                return Err(Error::InvalidState(
                    "a stopped server cannot start again".into(),
                ))
            }
        }
        let running = self.inner.launch()?;
        *state = State::Running(running);
        Ok(())
    }

    /// The URLs the server listens on, with real ports (empty before start).
    pub fn addresses(&self) -> Vec<String> {
        match &*lock(&self.inner.state) {
            State::Running(r) | State::Stopped(r) => r.addresses.clone(),
            State::Created => Vec::new(),
        }
    }

    /// Whether the server is running (started, not stopped).
    pub fn is_running(&self) -> bool {
        matches!(&*lock(&self.inner.state), State::Running(r) if !r.stopping.load(Ordering::Acquire))
    }

    /// Stops gracefully: stop accepting, let in-flight requests finish for up to `timeout`
    /// (HTTP/2 connections get GOAWAY), then abort the rest. Stopping a server that is not running
    /// does nothing. From a library thread (inside a handler) the stop is scheduled and this
    /// returns at once; so it is from inside any tokio runtime (where waiting would block a
    /// worker). Otherwise it returns when the stop is done.
    pub fn stop(&self, timeout: Duration) -> Result<StopReport> {
        let running = match &*lock(&self.inner.state) {
            State::Running(r) => r.clone(),
            _ => return Ok(StopReport::default()),
        };
        if must_not_block() {
            let stopper = running.clone();
            let thread = std::thread::Builder::new()
                .name("kestrel-stop".into())
                .spawn(move || {
                    stopper.stop(timeout);
                })
                .map_err(Error::Io)?;
            lock(&running.stop_threads).push(thread);
            return Ok(StopReport {
                scheduled: true,
                ..StopReport::default()
            });
        }
        let report = running.stop(timeout);
        *lock(&self.inner.state) = State::Stopped(running);
        Ok(report)
    }

    /// Reads every https endpoint's certificate files again and serves the new certificates to
    /// new connections; open connections keep theirs. All or nothing: on an error (named in it)
    /// every endpoint keeps its current certificates. Blocking (reads files).
    pub fn reload_certificates(&self) -> Result<()> {
        let running = match &*lock(&self.inner.state) {
            State::Running(r) if !r.stopping.load(Ordering::Acquire) => r.clone(),
            _ => return Err(Error::InvalidState("the server is not running".into())),
        };
        let mut prepared = Vec::with_capacity(running.tls.len());
        for acceptor in &running.tls {
            prepared.push(acceptor.prepare_reload()?);
        }
        for (acceptor, reload) in running.tls.iter().zip(prepared) {
            acceptor.install(reload, &running.ctx.logger, "certificates reloaded");
        }
        Ok(())
    }

    /// The development certificate, when an `https://localhost` endpoint without a configured
    /// certificate serves it (after start).
    pub fn dev_certificate(&self) -> Option<DevCertificate> {
        match &*lock(&self.inner.state) {
            State::Running(r) | State::Stopped(r) => r.dev_certificate.clone(),
            State::Created => None,
        }
    }

    /// Pull mode: waits up to `timeout` (forever when `None`) for the next request.
    /// [`Error::Timeout`] when none came, [`Error::Stopped`] once the server stopped.
    pub fn next_request(&self, timeout: Option<Duration>) -> Result<Exchange> {
        let queue = match &*lock(&self.inner.state) {
            State::Created => return Err(Error::InvalidState("the server is not started".into())),
            State::Running(r) | State::Stopped(r) => r.queue.clone(),
        };
        match (queue, self.inner.options.dispatch) {
            (Some(queue), DispatchMode::Pull) => queue.pop(timeout),
            _ => Err(Error::InvalidState(
                "next_request needs the pull dispatch mode".into(),
            )),
        }
    }
}

impl ServerInner {
    fn launch(&self) -> Result<Arc<Running>> {
        let options = &self.options;
        let logger = Logger::new(options.log.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.io_threads)
            .thread_name("kestrel-io")
            .on_thread_start(mark_library_thread)
            .enable_all()
            .build()
            .map_err(Error::Io)?;
        let queue = match options.dispatch {
            DispatchMode::Inline => None,
            DispatchMode::Pool | DispatchMode::Pull => Some(Arc::new(RequestQueue::new())),
        };
        let route = match (&queue, &options.handler) {
            (Some(queue), _) => Route::Queue(queue.clone()),
            (None, Some(handler)) => Route::Inline(handler.clone()),
            (None, None) => {
                return Err(Error::InvalidArgument(
                    "INLINE dispatch needs a handler".into(),
                ))
            }
        };
        let (phase, _) = watch::channel(Phase::Running);
        let ctx = Arc::new(ServerContext {
            runtime: runtime.handle().clone(),
            response_buffer: options.response_buffer,
            server_header: options.server_header,
            logger: logger.clone(),
            route,
            phase,
            connections: AtomicUsize::new(0),
            connections_gone: Notify::new(),
            next_connection: AtomicU64::new(1),
            unsettled_requests: AtomicUsize::new(0),
            builders: [
                http_builder(Protocols::Http1),
                http_builder(Protocols::Http2),
                http_builder(Protocols::Http1AndHttp2),
            ],
        });
        // Certificates are loaded before anything is bound: a bad one binds nothing.
        let layers = match build_layers(options, &logger) {
            Ok(layers) => layers,
            Err(e) => {
                log_at!(logger, Error, "kestrel", "{}", e);
                return Err(e);
            }
        };
        let listeners = {
            let _entered = runtime.enter();
            bind_all(&options.endpoints)
        };
        let listeners = match listeners {
            Ok(l) => l,
            Err(e) => {
                log_at!(logger, Error, "kestrel", "{}", e);
                return Err(e);
            }
        };
        let mut pool = Vec::new();
        if let (DispatchMode::Pool, Some(queue), Some(handler)) =
            (options.dispatch, &queue, &options.handler)
        {
            pool = start_pool(
                options.pool_threads,
                queue.clone(),
                handler.clone(),
                options.thread_hooks.clone(),
                logger.clone(),
            )?;
        }
        let mut addresses = Vec::with_capacity(listeners.len());
        let mut accept_loops = Vec::with_capacity(listeners.len());
        for (listener, index) in listeners {
            addresses.push(listener.url().to_string());
            log_at!(logger, Info, "kestrel", "listening on {}", listener.url());
            let protocols = options.endpoints[index].protocols;
            let tls = layers.acceptors[index].clone();
            accept_loops.push(runtime.spawn(accept_loop(listener, protocols, tls, ctx.clone())));
        }
        let tls: Vec<Arc<TlsAcceptor>> = layers.acceptors.into_iter().flatten().collect();
        for acceptor in &tls {
            if let Some(interval) = acceptor.options().and_then(|o| o.watch_interval) {
                runtime.spawn(crate::tls::watch::watch_files(
                    acceptor.clone(),
                    interval,
                    ctx.clone(),
                ));
            }
        }
        Ok(Arc::new(Running {
            runtime: Mutex::new(Some(runtime)),
            ctx,
            addresses,
            accept_loops: Mutex::new(accept_loops),
            stop_threads: Mutex::new(Vec::new()),
            pool: Mutex::new(pool),
            queue,
            stopping: AtomicBool::new(false),
            tls,
            dev_certificate: layers.dev_certificate,
        }))
    }
}

impl Running {
    fn stop(&self, timeout: Duration) -> StopReport {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return StopReport::default();
        }
        let ctx = &self.ctx;
        ctx.phase.send_replace(Phase::Draining);
        // Listeners close (and Unix socket files go) before stop returns, so the host can bind
        // the same address again at once.
        let accept_loops = std::mem::take(&mut *lock(&self.accept_loops));
        ctx.runtime.block_on(async {
            for accept_loop in accept_loops {
                let _ = accept_loop.await;
            }
        });
        let drained = ctx.runtime.block_on(async {
            tokio::time::timeout(timeout, ctx.connections_closed())
                .await
                .is_ok()
        });
        let mut report = StopReport::default();
        if !drained {
            report.aborted_requests = ctx.unsettled_requests.load(Ordering::Acquire);
            ctx.phase.send_replace(Phase::Aborting);
            let _ = ctx.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(1), ctx.connections_closed()).await
            });
            log_at!(
                ctx.logger,
                Warn,
                "kestrel",
                "stop timed out: {} requests aborted",
                report.aborted_requests
            );
        }
        if let Some(queue) = &self.queue {
            queue.close();
        }
        log_at!(ctx.logger, Info, "kestrel", "stopped");
        report
    }

    /// Stops at once, joins every thread and shuts the runtime down. Must run off the library's
    /// threads.
    fn teardown(&self) {
        if self.stopping.load(Ordering::Acquire) {
            // A stop is under way (perhaps scheduled from a handler): hurry it to its end.
            self.ctx.phase.send_replace(Phase::Aborting);
        } else {
            self.stop(Duration::ZERO);
        }
        for thread in std::mem::take(&mut *lock(&self.stop_threads)) {
            let _ = thread.join();
        }
        for thread in std::mem::take(&mut *lock(&self.pool)) {
            let _ = thread.join();
        }
        if let Some(runtime) = lock(&self.runtime).take() {
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
        }
    }
}

impl Drop for ServerInner {
    fn drop(&mut self) {
        let state = std::mem::replace(&mut *lock(&self.state), State::Created);
        let running = match state {
            State::Running(r) | State::Stopped(r) => r,
            State::Created => return,
        };
        if must_not_block() {
            // Joining our own threads from one of them would deadlock, and a runtime must not be
            // shut down from async code: hand the work over.
            let _ = std::thread::Builder::new()
                .name("kestrel-teardown".into())
                .spawn(move || running.teardown());
        } else {
            running.teardown();
        }
    }
}
