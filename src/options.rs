//! Server options: everything decided before start.

use std::sync::Arc;

use crate::endpoint::{parse_urls, EndpointConfig, Protocols, Security};
use crate::error::{Error, Result};
use crate::exchange::Exchange;
use crate::log::{LogLevel, LogSink};
use crate::tls::TlsOptions;

/// Default size of a response's write buffer, as Kestrel's MaxResponseBufferSize.
pub const DEFAULT_RESPONSE_BUFFER: usize = 64 * 1024;

/// The error a handler may return; the server answers 500 (or aborts a started response).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Application code that answers requests.
///
/// The handler receives the exchange (request and response) and must complete it exactly once,
/// now or later, from any thread. Returning an error completes it with a 500 when nothing was
/// sent yet, or aborts the response otherwise.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request.
    fn handle(&self, exchange: Exchange) -> std::result::Result<(), HandlerError>;
}

impl<F> Handler for F
where
    F: Fn(Exchange) -> std::result::Result<(), HandlerError> + Send + Sync + 'static,
{
    fn handle(&self, exchange: Exchange) -> std::result::Result<(), HandlerError> {
        self(exchange)
    }
}

/// Hooks run on each handler-pool thread as it starts and before it exits, so a host can attach a
/// language runtime (an interpreter, a managed thread) once per thread.
pub trait ThreadHooks: Send + Sync + 'static {
    /// Runs first on a new pool thread.
    fn on_start(&self) {}
    /// Runs last on a pool thread about to exit.
    fn on_stop(&self) {}
}

/// Where handlers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DispatchMode {
    /// On library-owned handler threads; handlers may block. The default.
    Pool,
    /// On the I/O thread that read the request: fastest, but the handler must never block.
    Inline,
    /// Requests queue up until the host takes them with `Server::next_request`.
    Pull,
}

/// Options for a [`crate::Server`].
pub struct ServerOptions {
    pub(crate) endpoints: Vec<EndpointConfig>,
    pub(crate) io_threads: usize,
    pub(crate) dispatch: DispatchMode,
    pub(crate) pool_threads: usize,
    pub(crate) handler: Option<Arc<dyn Handler>>,
    pub(crate) thread_hooks: Option<Arc<dyn ThreadHooks>>,
    pub(crate) server_header: bool,
    pub(crate) response_buffer: usize,
    pub(crate) log: Option<(LogSink, LogLevel)>,
    pub(crate) https_defaults: Option<Arc<TlsOptions>>,
    pub(crate) dev_certificate: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions::new()
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl ServerOptions {
    /// Options with Kestrel's defaults: `http://localhost:5000` unless endpoints are added, one I/O
    /// thread per core, POOL dispatch, `Server: kestrel` on.
    pub fn new() -> Self {
        ServerOptions {
            endpoints: Vec::new(),
            io_threads: cores(),
            dispatch: DispatchMode::Pool,
            pool_threads: (2 * cores()).max(4),
            handler: None,
            thread_hooks: None,
            server_header: true,
            response_buffer: DEFAULT_RESPONSE_BUFFER,
            log: None,
            https_defaults: None,
            dev_certificate: true,
        }
    }

    /// Adds endpoints from `;`-separated Kestrel-style URLs.
    pub fn add_urls(&mut self, urls: &str, protocols: Protocols) -> Result<&mut Self> {
        let parsed = parse_urls(urls, protocols)?;
        self.endpoints.extend(parsed);
        Ok(self)
    }

    /// Adds `https://` endpoints with their own TLS settings (`http://` URLs are refused here).
    pub fn add_https_urls(
        &mut self,
        urls: &str,
        protocols: Protocols,
        tls: TlsOptions,
    ) -> Result<&mut Self> {
        let mut parsed = parse_urls(urls, protocols)?;
        let tls = Arc::new(tls);
        for endpoint in &mut parsed {
            if !matches!(endpoint.security, Security::Https(_)) {
                return Err(Error::InvalidUrl(format!(
                    "{urls:?}: TLS settings apply to https:// URLs only"
                )));
            }
            endpoint.security = Security::Https(Some(tls.clone()));
        }
        self.endpoints.extend(parsed);
        Ok(self)
    }

    /// TLS settings for `https://` endpoints added without their own (Kestrel's
    /// `ConfigureHttpsDefaults`).
    pub fn https_defaults(&mut self, tls: TlsOptions) -> &mut Self {
        self.https_defaults = Some(Arc::new(tls));
        self
    }

    /// Whether an `https://localhost` endpoint without any certificate gets an in-memory
    /// self-signed development certificate (default on; a warning with its fingerprint is
    /// logged). Off: such an endpoint fails the start.
    pub fn dev_certificate(&mut self, on: bool) -> &mut Self {
        self.dev_certificate = on;
        self
    }

    /// Adds an endpoint.
    pub fn add_endpoint(&mut self, endpoint: EndpointConfig) -> &mut Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Sets the number of I/O threads (the tokio runtime's workers).
    pub fn io_threads(&mut self, n: usize) -> Result<&mut Self> {
        if n == 0 || n > 1024 {
            return Err(Error::InvalidArgument(format!(
                "io threads must be 1..=1024, not {n}"
            )));
        }
        self.io_threads = n;
        Ok(self)
    }

    /// Chooses where handlers run.
    pub fn dispatch(&mut self, mode: DispatchMode) -> &mut Self {
        self.dispatch = mode;
        self
    }

    /// Sets the number of handler threads for [`DispatchMode::Pool`].
    pub fn pool_threads(&mut self, n: usize) -> Result<&mut Self> {
        if n == 0 || n > 4096 {
            return Err(Error::InvalidArgument(format!(
                "pool threads must be 1..=4096, not {n}"
            )));
        }
        self.pool_threads = n;
        Ok(self)
    }

    /// Installs the request handler (required except in [`DispatchMode::Pull`]).
    pub fn handler(&mut self, handler: Arc<dyn Handler>) -> &mut Self {
        self.handler = Some(handler);
        self
    }

    /// Installs pool-thread start/stop hooks.
    pub fn thread_hooks(&mut self, hooks: Arc<dyn ThreadHooks>) -> &mut Self {
        self.thread_hooks = Some(hooks);
        self
    }

    /// Whether responses carry `Server: kestrel` (default on).
    pub fn server_header(&mut self, on: bool) -> &mut Self {
        self.server_header = on;
        self
    }

    /// Sets the bound on data a streamed response may buffer before writes wait.
    pub fn response_buffer(&mut self, bytes: usize) -> Result<&mut Self> {
        if bytes == 0 {
            return Err(Error::InvalidArgument(
                "the response buffer size must not be 0".into(),
            ));
        }
        self.response_buffer = bytes;
        Ok(self)
    }

    /// Sends log records at or above `min` to `sink`.
    pub fn log_sink(&mut self, sink: LogSink, min: LogLevel) -> &mut Self {
        self.log = Some((sink, min));
        self
    }
}
