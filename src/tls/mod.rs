//! HTTPS: TLS configuration for endpoints, certificate loading, SNI, client certificates,
//! reload, and the development certificate. TLS is a layer on an endpoint: a connection accepted
//! on an `https://` endpoint goes through [`acceptor::TlsAcceptor`] before hyper sees it.
//!
//! Everything is checked at start (`Server::start`), before anything is bound, so a bad file, a
//! wrong password or a key that does not match its certificate stops the start with a message
//! naming the file, as Kestrel does.

pub(crate) mod acceptor;
mod certificate;
mod client_auth;
mod sni;
pub(crate) mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

pub use certificate::DevCertificate;
pub use rustls::pki_types::CertificateDer;

/// Kestrel's default TLS handshake timeout.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a certificate and its private key come from. File sources are read again on reload.
#[derive(Clone, Debug)]
pub enum CertificateSource {
    /// A PEM file with the certificate chain (leaf first) and a PEM file with the private key
    /// (PKCS#8, PKCS#1 RSA or SEC1 EC; RSA, ECDSA or Ed25519). They may be the same file.
    PemFiles {
        /// The chain.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
    },
    /// The same, already in memory.
    Pem {
        /// The chain, PEM.
        cert: Vec<u8>,
        /// The key, PEM.
        key: Vec<u8>,
    },
    /// A PKCS#12 (`.pfx`/`.p12`) file holding the key and its chain, with its password.
    Pkcs12File {
        /// The file.
        path: PathBuf,
        /// Its password (may be empty).
        password: String,
    },
}

impl CertificateSource {
    /// The files this source reads, for reload watching.
    pub(crate) fn files(&self) -> Vec<&std::path::Path> {
        match self {
            CertificateSource::PemFiles { cert, key } => vec![cert.as_path(), key.as_path()],
            CertificateSource::Pem { .. } => Vec::new(),
            CertificateSource::Pkcs12File { path, .. } => vec![path.as_path()],
        }
    }
}

/// A certificate of an endpoint and the host names it serves.
#[derive(Clone, Debug)]
pub struct CertificateEntry {
    /// Where it comes from.
    pub source: CertificateSource,
    /// SNI names it answers: exact names (`api.example.com`) or one-label wildcards
    /// (`*.example.com`). Empty: the default certificate, used when no name matches.
    pub names: Vec<String>,
}

/// What a client must show, per endpoint (Kestrel's `ClientCertificateMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientCertificateMode {
    /// The server does not ask for one. The default.
    #[default]
    NoCertificate,
    /// The server asks; a client without one is served, one with a bad one is refused.
    AllowCertificate,
    /// The server asks and refuses a client without a valid one.
    RequireCertificate,
}

/// The lowest TLS version an endpoint accepts. TLS 1.0 and 1.1 are never offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3. The default.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// What a certificate selector sees of a client's hello.
#[derive(Debug)]
pub struct ClientHelloInfo<'a> {
    /// The SNI name the client asked for, if any.
    pub server_name: Option<&'a str>,
    /// The client's address as text.
    pub remote: &'a str,
}

/// What a certificate selector decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Serve the certificate at this index (in the order the certificates were added).
    Certificate(usize),
    /// Apply the SNI rules (names, then the default certificate).
    Default,
    /// Fail the handshake.
    Refuse,
}

/// Host code that picks a certificate per handshake. It runs on a blocking-task thread, never on
/// an I/O thread, so it may take its time (the handshake timeout still applies).
pub trait CertificateSelector: Send + Sync + 'static {
    /// Picks the certificate for one handshake.
    fn select(&self, hello: &ClientHelloInfo<'_>) -> Selection;
}

/// Host code that accepts or refuses a client certificate chain (leaf first, DER) after the
/// library's own checks passed. It runs on a blocking-task thread once the handshake is done; a
/// refusal closes the connection before any request is read.
pub trait ClientCertificateValidator: Send + Sync + 'static {
    /// Returns whether the client may proceed.
    fn validate(&self, chain: &[CertificateDer<'static>]) -> bool;
}

/// TLS settings of one or more `https://` endpoints.
#[derive(Clone)]
pub struct TlsOptions {
    pub(crate) certificates: Vec<CertificateEntry>,
    pub(crate) selector: Option<Arc<dyn CertificateSelector>>,
    pub(crate) client_mode: ClientCertificateMode,
    pub(crate) client_ca: Option<CaSource>,
    pub(crate) client_validator: Option<Arc<dyn ClientCertificateValidator>>,
    pub(crate) min_version: TlsVersion,
    pub(crate) handshake_timeout: Duration,
    pub(crate) watch_interval: Option<Duration>,
}

/// Trust anchors for client certificates.
#[derive(Clone, Debug)]
pub(crate) enum CaSource {
    File(PathBuf),
    Pem(Vec<u8>),
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions::new()
    }
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("certificates", &self.certificates)
            .field("selector", &self.selector.is_some())
            .field("client_mode", &self.client_mode)
            .field("client_ca", &self.client_ca)
            .field("client_validator", &self.client_validator.is_some())
            .field("min_version", &self.min_version)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("watch_interval", &self.watch_interval)
            .finish()
    }
}

impl TlsOptions {
    /// No certificate yet, no client certificates, TLS 1.2 and 1.3, a 10 s handshake timeout, no
    /// file watching.
    pub fn new() -> Self {
        TlsOptions {
            certificates: Vec::new(),
            selector: None,
            client_mode: ClientCertificateMode::NoCertificate,
            client_ca: None,
            client_validator: None,
            min_version: TlsVersion::Tls12,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            watch_interval: None,
        }
    }

    /// Adds a certificate for the given SNI names (none: the default certificate). Names are
    /// checked here; the certificate itself is loaded and checked at start.
    pub fn add_certificate(
        &mut self,
        source: CertificateSource,
        names: &[&str],
    ) -> Result<&mut Self> {
        let mut checked = Vec::with_capacity(names.len());
        for name in names {
            checked.push(sni::check_pattern(name)?);
        }
        if checked.is_empty() && self.certificates.iter().any(|c| c.names.is_empty()) {
            return Err(Error::InvalidArgument(
                "there is already a default certificate (one added without names)".into(),
            ));
        }
        self.certificates.push(CertificateEntry {
            source,
            names: checked,
        });
        Ok(self)
    }

    /// The certificates added so far.
    pub fn certificates(&self) -> &[CertificateEntry] {
        &self.certificates
    }

    /// Installs a host callback that picks the certificate per handshake.
    pub fn certificate_selector(&mut self, selector: Arc<dyn CertificateSelector>) -> &mut Self {
        self.selector = Some(selector);
        self
    }

    /// Sets what clients must show.
    pub fn client_certificate_mode(&mut self, mode: ClientCertificateMode) -> &mut Self {
        self.client_mode = mode;
        self
    }

    /// Trusts client certificates issued by the CAs in this PEM file.
    pub fn client_ca_file(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.client_ca = Some(CaSource::File(path.into()));
        self
    }

    /// Trusts client certificates issued by the CAs in this PEM text.
    pub fn client_ca_pem(&mut self, pem: Vec<u8>) -> &mut Self {
        self.client_ca = Some(CaSource::Pem(pem));
        self
    }

    /// Installs a host callback that has the last word on client certificates.
    pub fn client_certificate_validator(
        &mut self,
        validator: Arc<dyn ClientCertificateValidator>,
    ) -> &mut Self {
        self.client_validator = Some(validator);
        self
    }

    /// Sets the lowest accepted TLS version.
    pub fn min_version(&mut self, version: TlsVersion) -> &mut Self {
        self.min_version = version;
        self
    }

    /// Sets how long a client may take to finish its handshake.
    pub fn handshake_timeout(&mut self, timeout: Duration) -> Result<&mut Self> {
        if timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "the handshake timeout must not be 0".into(),
            ));
        }
        self.handshake_timeout = timeout;
        Ok(self)
    }

    /// Polls the certificate files at this interval and reloads them when they change; `None`
    /// turns watching off (the default).
    pub fn watch_interval(&mut self, interval: Option<Duration>) -> Result<&mut Self> {
        if interval.is_some_and(|i| i < Duration::from_millis(10)) {
            return Err(Error::InvalidArgument(
                "the watch interval must be at least 10 ms".into(),
            ));
        }
        self.watch_interval = interval;
        Ok(self)
    }
}

/// What a handler can learn about a connection's TLS session.
#[derive(Debug)]
pub struct TlsInfo {
    pub(crate) version: &'static str,
    pub(crate) cipher_suite: String,
    pub(crate) alpn: Option<String>,
    pub(crate) server_name: Option<String>,
    pub(crate) peer_chain: Vec<CertificateDer<'static>>,
    pub(crate) peer_subject: Option<String>,
}

impl TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub fn version(&self) -> &str {
        self.version
    }

    /// The negotiated cipher suite as rustls names it (`TLS13_AES_128_GCM_SHA256`).
    pub fn cipher_suite(&self) -> &str {
        &self.cipher_suite
    }

    /// The ALPN protocol agreed on (`h2`, `http/1.1`), if any.
    pub fn alpn(&self) -> Option<&str> {
        self.alpn.as_deref()
    }

    /// The SNI name the client sent, if any.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The client's certificate chain, leaf first (empty without a client certificate).
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        &self.peer_chain
    }

    /// The client certificate's subject (`CN=alice, O=Example`), if one was presented.
    pub fn peer_subject(&self) -> Option<&str> {
        self.peer_subject.as_deref()
    }
}

/// The TLS layers of a server's endpoints, made at start.
pub(crate) struct EndpointLayers {
    /// One per endpoint, in order: `None` for cleartext endpoints.
    pub(crate) acceptors: Vec<Option<Arc<acceptor::TlsAcceptor>>>,
    /// The development certificate, when an endpoint uses it.
    pub(crate) dev_certificate: Option<DevCertificate>,
}

/// Loads every https endpoint's certificates (blocking: reads files) and logs warnings. Fails,
/// before anything is bound, on the first unusable certificate or an https endpoint without one.
pub(crate) fn build_layers(
    options: &crate::options::ServerOptions,
    logger: &crate::log::Logger,
) -> Result<EndpointLayers> {
    use crate::endpoint::{BindTarget, Security};
    use crate::log::log_at;
    let mut layers = EndpointLayers {
        acceptors: Vec::with_capacity(options.endpoints.len()),
        dev_certificate: None,
    };
    for endpoint in &options.endpoints {
        let Security::Https(own) = &endpoint.security else {
            layers.acceptors.push(None);
            continue;
        };
        let name = endpoint.url();
        let origin = match own.as_ref().or(options.https_defaults.as_ref()) {
            Some(tls) => acceptor::CertificateOrigin::Configured(tls.clone()),
            None => {
                let local = match &endpoint.target {
                    BindTarget::Localhost { .. } => true,
                    BindTarget::Ip(addr) => addr.ip().is_loopback(),
                    _ => false,
                };
                if !local || !options.dev_certificate {
                    return Err(Error::Tls(format!(
                        "{name}: no certificate configured for this https endpoint{}",
                        if local {
                            " (the development certificate is turned off)"
                        } else {
                            " (the development certificate serves only localhost)"
                        }
                    )));
                }
                let dev = match &layers.dev_certificate {
                    Some(dev) => dev.clone(),
                    None => {
                        let dev = DevCertificate::generate(&acceptor::provider())?;
                        log_at!(
                            logger,
                            Warn,
                            "kestrel.tls",
                            "{name}: no certificate configured, serving an in-memory self-signed \
                         development certificate for localhost (SHA-256 fingerprint {}); clients \
                         will not trust it",
                            dev.fingerprint()
                        );
                        layers.dev_certificate = Some(dev.clone());
                        dev
                    }
                };
                acceptor::CertificateOrigin::Development(dev)
            }
        };
        let acceptor = acceptor::TlsAcceptor::new(origin, name, endpoint.protocols, logger)?;
        layers.acceptors.push(Some(Arc::new(acceptor)));
    }
    Ok(layers)
}
