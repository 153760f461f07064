//! The protocol-neutral request head: what every protocol (HTTP/1.x, HTTP/2, and later HTTP/3
//! and WebSocket upgrades) hands to the handler.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Method, Uri, Version};

use crate::tls::TlsInfo;
use crate::transport::PeerAddr;

/// What a connection knows about itself; shared by all requests on it.
#[derive(Debug)]
pub struct ConnectionInfo {
    id: u64,
    remote: PeerAddr,
    local: PeerAddr,
    tls: Option<Box<TlsInfo>>,
    remote_text: OnceLock<String>,
    local_text: OnceLock<String>,
    next_request: AtomicU64,
    /// Set before the server tears the connection down, so a body reader that sees the stream end
    /// can tell an abort from the end of the body.
    pub(crate) torn_down: AtomicBool,
}

impl ConnectionInfo {
    pub(crate) fn new(id: u64, remote: PeerAddr, local: PeerAddr, tls: Option<TlsInfo>) -> Self {
        ConnectionInfo {
            id,
            remote,
            local,
            tls: tls.map(Box::new),
            remote_text: OnceLock::new(),
            local_text: OnceLock::new(),
            next_request: AtomicU64::new(1),
            torn_down: AtomicBool::new(false),
        }
    }

    /// A number unique among this server's connections.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The TLS session, on an https endpoint.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_deref()
    }

    /// The client's address.
    pub fn remote(&self) -> &PeerAddr {
        &self.remote
    }

    /// The server's address of this connection.
    pub fn local(&self) -> &PeerAddr {
        &self.local
    }

    /// The client's address as text (`127.0.0.1:50000`, `[::1]:50000`, `unix:`).
    pub fn remote_text(&self) -> &str {
        self.remote_text.get_or_init(|| self.remote.to_string())
    }

    /// The server's address as text.
    pub fn local_text(&self) -> &str {
        self.local_text.get_or_init(|| self.local.to_string())
    }
}

/// The head of a request: everything but the body. Immutable once built.
#[derive(Debug)]
pub struct RequestHead {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    conn: std::sync::Arc<ConnectionInfo>,
    sequence: u64,
    target: OnceLock<String>,
    id: OnceLock<String>,
}

impl RequestHead {
    pub(crate) fn new(
        parts: hyper::http::request::Parts,
        conn: std::sync::Arc<ConnectionInfo>,
    ) -> Self {
        let sequence = conn.next_request.fetch_add(1, Ordering::Relaxed);
        RequestHead {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            conn,
            sequence,
            target: OnceLock::new(),
            id: OnceLock::new(),
        }
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &str {
        self.method.as_str()
    }

    /// `http` or `https`: the scheme of the transport the request came on.
    pub fn scheme(&self) -> &str {
        self.conn.scheme()
    }

    /// The path as sent (not percent-decoded), e.g. `/a%20b`.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The query without its `?`; empty when there is none.
    pub fn query(&self) -> &str {
        self.uri.query().unwrap_or("")
    }

    /// The request target as sent: `/path?query` (origin form), or the absolute URL, or `*`. On
    /// HTTP/2 and later it is the `:path` pseudo-header (the scheme and authority travel apart).
    pub fn target(&self) -> &str {
        let has_path_pseudo_header = matches!(self.version, Version::HTTP_2 | Version::HTTP_3);
        if self.uri.scheme().is_none() || has_path_pseudo_header {
            if let Some(pq) = self.uri.path_and_query() {
                return pq.as_str();
            }
        }
        self.target.get_or_init(|| self.uri.to_string())
    }

    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2` (and `HTTP/3` once served).
    pub fn version(&self) -> &'static str {
        match self.version {
            Version::HTTP_09 => "HTTP/0.9",
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_11 => "HTTP/1.1",
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/?",
        }
    }

    /// The `Host` header for HTTP/1.x, the `:authority` for HTTP/2; empty when absent.
    pub fn authority(&self) -> &[u8] {
        if let Some(authority) = self.uri.authority() {
            return authority.as_str().as_bytes();
        }
        self.headers
            .get(HOST)
            .map(HeaderValue::as_bytes)
            .unwrap_or(b"")
    }

    /// All headers, lower-case names, repeated names kept in arrival order.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The `index`-th value of the header `name` (case-insensitive), if there is one.
    pub fn header(&self, name: &[u8], index: usize) -> Option<&[u8]> {
        let name = HeaderName::from_bytes(name).ok()?;
        self.headers
            .get_all(name)
            .iter()
            .nth(index)
            .map(HeaderValue::as_bytes)
    }

    /// The connection this request came on.
    pub fn connection(&self) -> &ConnectionInfo {
        &self.conn
    }

    /// An identifier unique within the server's lifetime, in Kestrel's shape:
    /// `<connection id>:<request number on that connection>` in hexadecimal.
    pub fn id(&self) -> &str {
        self.id
            .get_or_init(|| format!("{:016X}:{:08X}", self.conn.id, self.sequence))
    }
}
