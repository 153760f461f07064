//! The TLS layer of one `https://` endpoint: it holds the endpoint's current certificates (which
//! reload swaps), runs each handshake (SNI choice, ALPN, client certificates, timeout), and tells
//! the connection which HTTP version to speak.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{Acceptor, ClientHello, ProducesTickets, ResolvesServerCert, ServerConfig};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::CertifiedKey;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use super::certificate::{self, DevCertificate, LoadedCertificate};
use super::sni::SniMap;
use super::{client_auth, ClientHelloInfo, Selection, TlsInfo, TlsOptions, TlsVersion};
use crate::endpoint::Protocols;
use crate::error::{Error, Result};
use crate::log::{log_at, Logger};
use crate::transport::{PeerAddr, Stream};

/// Sessions remembered for resumption by ID (TLS 1.2) per endpoint; tickets need no memory.
const SESSION_CACHE_SIZE: usize = 4096;

/// The process-wide choice of cryptography: ring, rustls' safe default cipher suites and groups.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where an endpoint's certificates come from.
pub(crate) enum CertificateOrigin {
    /// The host's TLS options.
    Configured(Arc<TlsOptions>),
    /// No certificate configured on a localhost endpoint: the development certificate.
    Development(DevCertificate),
}

/// One endpoint's TLS layer.
pub(crate) struct TlsAcceptor {
    setup: Setup,
    state: RwLock<Arc<TlsState>>,
}

/// What stays the same across reloads: where certificates come from, and the session stores
/// (kept, so clients resume across a reload).
struct Setup {
    origin: CertificateOrigin,
    /// Where the endpoint listens, for messages.
    endpoint: String,
    protocols: Protocols,
    provider: Arc<CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
}

/// The certificates in use, swapped whole on reload.
struct TlsState {
    /// One configuration per certificate, in the order the host added them.
    configs: Vec<Arc<ServerConfig>>,
    sni: SniMap,
    /// Resolves no certificate: rustls then fails the handshake with an alert.
    refuse: Arc<ServerConfig>,
    /// The development certificate serves only `localhost` (or no SNI name, for IP literals).
    localhost_only: bool,
}

/// Why a handshake did not produce a connection; logged at debug level (clients cause these).
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The client took longer than the handshake timeout.
    Timeout,
    /// No certificate for the requested name, or the host's selector refused.
    NoCertificate(Option<String>),
    /// The host's client certificate validator said no.
    ClientRejected,
    /// TLS or socket failure (bad hello, old protocol version, untrusted client...).
    Io(std::io::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Timeout => f.write_str("TLS handshake timed out"),
            HandshakeError::NoCertificate(Some(name)) => {
                write!(f, "no certificate for SNI name {name:?}")
            }
            HandshakeError::NoCertificate(None) => {
                f.write_str("no certificate for a client without SNI")
            }
            HandshakeError::ClientRejected => {
                f.write_str("the client certificate was rejected by the host")
            }
            HandshakeError::Io(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

fn log_warnings(logger: &Logger, warnings: Vec<String>) {
    for warning in warnings {
        log_at!(logger, Warn, "kestrel.tls", "{}", warning);
    }
}

/// Certificates read by [`TlsAcceptor::prepare_reload`], not yet in use.
pub(crate) struct PreparedReload {
    state: TlsState,
    warnings: Vec<String>,
}

/// A finished handshake: the stream to serve, what the handler may learn, and the HTTP version.
pub(crate) struct Handshake {
    pub(crate) stream: TlsStream<Stream>,
    pub(crate) info: TlsInfo,
    pub(crate) protocols: Protocols,
}

impl TlsAcceptor {
    /// Loads the endpoint's certificates and logs their warnings (certificates outside their
    /// validity period). Blocking (reads files).
    pub(crate) fn new(
        origin: CertificateOrigin,
        endpoint: String,
        protocols: Protocols,
        logger: &Logger,
    ) -> Result<TlsAcceptor> {
        let ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| Error::Tls(format!("cannot make a session ticket key: {e}")))?;
        let setup = Setup {
            origin,
            endpoint,
            protocols,
            provider: provider(),
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            ticketer,
        };
        let (state, warnings) = setup.load()?;
        log_warnings(logger, warnings);
        Ok(TlsAcceptor {
            setup,
            state: RwLock::new(Arc::new(state)),
        })
    }

    /// Where the endpoint listens, for messages.
    pub(crate) fn endpoint(&self) -> &str {
        &self.setup.endpoint
    }

    /// The handshake timeout of this endpoint.
    pub(crate) fn handshake_timeout(&self) -> Duration {
        match &self.setup.origin {
            CertificateOrigin::Configured(options) => options.handshake_timeout,
            CertificateOrigin::Development(_) => super::DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// The host's TLS options, when it gave some.
    pub(crate) fn options(&self) -> Option<&Arc<TlsOptions>> {
        match &self.setup.origin {
            CertificateOrigin::Configured(options) => Some(options),
            CertificateOrigin::Development(_) => None,
        }
    }

    /// Reads the certificates again, ready to [`install`](Self::install). Blocking (reads
    /// files). The development certificate stays as it is.
    pub(crate) fn prepare_reload(&self) -> Result<PreparedReload> {
        self.setup
            .load()
            .map(|(state, warnings)| PreparedReload { state, warnings })
    }

    /// Swaps in reloaded certificates (connections already open keep theirs), then logs the
    /// reload's warnings and `done` at info level.
    pub(crate) fn install(&self, reload: PreparedReload, logger: &Logger, done: &str) {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(reload.state);
        log_warnings(logger, reload.warnings);
        log_at!(logger, Info, "kestrel.tls", "{}: {}", self.endpoint(), done);
    }

    /// Runs one handshake within the endpoint's timeout.
    pub(crate) async fn handshake(
        &self,
        stream: Stream,
        remote: &PeerAddr,
    ) -> std::result::Result<Handshake, HandshakeError> {
        match tokio::time::timeout(
            self.handshake_timeout(),
            self.handshake_inner(stream, remote),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(HandshakeError::Timeout),
        }
    }

    async fn handshake_inner(
        &self,
        stream: Stream,
        remote: &PeerAddr,
    ) -> std::result::Result<Handshake, HandshakeError> {
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream)
            .await
            .map_err(HandshakeError::Io)?;
        let hello = start.client_hello();
        let server_name = hello.server_name().map(str::to_owned);
        let state = self.state.read().unwrap_or_else(|e| e.into_inner()).clone();
        let choice = self.choose(&state, server_name.as_deref(), remote).await;
        let config = match choice {
            Some(index) => state.configs[index].clone(),
            None => {
                // Let rustls send its alert; the handshake then fails.
                let _ = start.into_stream(state.refuse.clone()).await;
                return Err(HandshakeError::NoCertificate(server_name));
            }
        };
        let stream = start
            .into_stream(config)
            .await
            .map_err(HandshakeError::Io)?;
        let connection = stream.get_ref().1;
        let peer_chain: Vec<_> = connection
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        if !peer_chain.is_empty() {
            if let Some(validator) = self.options().and_then(|o| o.client_validator.clone()) {
                let chain = peer_chain.clone();
                let accepted = tokio::task::spawn_blocking(move || validator.validate(&chain))
                    .await
                    .unwrap_or(false);
                if !accepted {
                    return Err(HandshakeError::ClientRejected);
                }
            }
        }
        let alpn = connection
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let protocols = match (alpn.as_deref(), self.setup.protocols) {
            (Some("h2"), _) => Protocols::Http2,
            (Some(_), _) => Protocols::Http1,
            // No ALPN: HTTP/1.1 where allowed (as Kestrel), else HTTP/2 with prior knowledge.
            (None, Protocols::Http2) => Protocols::Http2,
            (None, _) => Protocols::Http1,
        };
        let version = match connection.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            _ => "TLSv1.2",
        };
        let cipher_suite = connection
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("")
            .to_owned();
        let peer_subject = peer_chain
            .first()
            .and_then(|leaf| certificate::subject_of(leaf));
        let info = TlsInfo {
            version,
            cipher_suite,
            alpn,
            server_name,
            peer_chain,
            peer_subject,
        };
        Ok(Handshake {
            stream,
            info,
            protocols,
        })
    }

    /// The index of the certificate to serve, or `None` to refuse.
    async fn choose(
        &self,
        state: &TlsState,
        server_name: Option<&str>,
        remote: &PeerAddr,
    ) -> Option<usize> {
        if state.localhost_only {
            return match server_name {
                Some(name) if !name.trim_end_matches('.').eq_ignore_ascii_case("localhost") => None,
                _ => Some(0),
            };
        }
        let selector = self.options().and_then(|o| o.selector.clone());
        let selection = match selector {
            None => Selection::Default,
            Some(selector) => {
                // Formatted only here: most endpoints have no selector.
                let (name, remote) = (server_name.map(str::to_owned), remote.to_string());
                tokio::task::spawn_blocking(move || {
                    selector.select(&ClientHelloInfo {
                        server_name: name.as_deref(),
                        remote: &remote,
                    })
                })
                .await
                .unwrap_or(Selection::Refuse)
            }
        };
        match selection {
            Selection::Certificate(i) if i < state.configs.len() => Some(i),
            Selection::Certificate(_) | Selection::Refuse => None,
            Selection::Default => state.sni.pick(server_name),
        }
    }
}

impl Setup {
    /// Loads and checks every certificate and builds one configuration per certificate.
    /// Blocking (reads files).
    fn load(&self) -> Result<(TlsState, Vec<String>)> {
        let mut warnings = Vec::new();
        let (keys, names, verifier, versions, localhost_only): (Vec<_>, Vec<Vec<String>>, _, _, _) =
            match &self.origin {
                CertificateOrigin::Development(dev) => (
                    vec![dev.key.clone()],
                    vec![Vec::new()],
                    rustls::server::WebPkiClientVerifier::no_client_auth(),
                    TlsVersion::Tls12,
                    true,
                ),
                CertificateOrigin::Configured(options) => {
                    if options.certificates.is_empty() {
                        return Err(Error::Tls(format!(
                            "{}: no certificate configured for this https endpoint",
                            self.endpoint
                        )));
                    }
                    let mut keys = Vec::with_capacity(options.certificates.len());
                    for entry in &options.certificates {
                        let LoadedCertificate {
                            key,
                            subject,
                            validity_problem,
                        } = certificate::load(&entry.source, &self.provider)?;
                        if let Some(problem) = validity_problem {
                            warnings.push(format!(
                                "{}: the certificate {subject} is {problem}; clients will refuse it",
                                self.endpoint
                            ));
                        }
                        keys.push(key);
                    }
                    let names = options
                        .certificates
                        .iter()
                        .map(|c| c.names.clone())
                        .collect();
                    let verifier = client_auth::verifier(options, &self.provider)?;
                    (keys, names, verifier, options.min_version, false)
                }
            };
        let versions: &[&rustls::SupportedProtocolVersion] = match versions {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let alpn: Vec<Vec<u8>> = match self.protocols {
            Protocols::Http1 => vec![b"http/1.1".to_vec()],
            Protocols::Http2 => vec![b"h2".to_vec()],
            Protocols::Http1AndHttp2 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        let make = |resolver: Arc<dyn ResolvesServerCert>| -> Result<Arc<ServerConfig>> {
            let mut config = ServerConfig::builder_with_provider(self.provider.clone())
                .with_protocol_versions(versions)
                .map_err(|e| Error::Tls(format!("{}: {e}", self.endpoint)))?
                .with_client_cert_verifier(verifier.clone())
                .with_cert_resolver(resolver);
            config.alpn_protocols = alpn.clone();
            config.session_storage = self.sessions.clone();
            config.ticketer = self.ticketer.clone();
            Ok(Arc::new(config))
        };
        let mut configs = Vec::with_capacity(keys.len());
        for key in keys {
            configs.push(make(Arc::new(Fixed(key)))?);
        }
        let state = TlsState {
            configs,
            sni: SniMap::new(names.iter().map(Vec::as_slice)),
            refuse: make(Arc::new(Refuse))?,
            localhost_only,
        };
        Ok((state, warnings))
    }
}

/// Always the same certificate: each certificate has its own configuration, chosen before the
/// handshake continues (so a host selector can run off the I/O thread).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[derive(Debug)]
struct Refuse;

impl ResolvesServerCert for Refuse {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}
