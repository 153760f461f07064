//! Endpoint configuration: Kestrel-style URLs, listen file descriptors and protocol selection.
//!
//! Parsing happens when the host adds an endpoint, so a typo is reported at once; binding happens
//! at start (see [`crate::transport`]).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::tls::TlsOptions;

/// The address used when the host configures no endpoint, as in Kestrel.
pub const DEFAULT_URL: &str = "http://localhost:5000";

/// Which HTTP versions an endpoint serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocols {
    /// HTTP/1.0 and HTTP/1.1 only.
    Http1,
    /// HTTP/2 only; on a cleartext endpoint this is h2c with prior knowledge.
    Http2,
    /// Both. On a cleartext endpoint the connection preface decides: a client that opens with
    /// the HTTP/2 preface gets h2c, any other gets HTTP/1.1 (Kestrel serves only HTTP/1.1 here).
    #[default]
    Http1AndHttp2,
}

impl fmt::Display for Protocols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocols::Http1 => "Http1",
            Protocols::Http2 => "Http2",
            Protocols::Http1AndHttp2 => "Http1AndHttp2",
        })
    }
}

/// Where an endpoint listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindTarget {
    /// `localhost`: both loopback addresses, 127.0.0.1 and ::1, on one port.
    Localhost {
        /// The port; 0 asks the OS for one, shared by both addresses.
        port: u16,
    },
    /// `*`, `+` or a host name other than localhost: every address (IPv6 dual-stack where
    /// available, else IPv4).
    AnyAddress {
        /// The port; 0 asks the OS for one.
        port: u16,
    },
    /// An IP literal: exactly that address.
    Ip(SocketAddr),
    /// `http://unix:/absolute/path`: a Unix domain socket.
    Unix(PathBuf),
    /// An already-open listening socket handed over by the host (the library duplicates it).
    Fd(RawFd),
}

/// Whether an endpoint speaks TLS, and with which settings.
#[derive(Clone, Debug, Default)]
pub enum Security {
    /// Cleartext (`http://`).
    #[default]
    Plain,
    /// TLS (`https://`). `None`: the server's HTTPS defaults, or the development certificate on
    /// a localhost endpoint when there are none.
    Https(Option<Arc<TlsOptions>>),
}

/// One configured endpoint: where to listen and what to speak there.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Where to listen.
    pub target: BindTarget,
    /// Which protocols to serve.
    pub protocols: Protocols,
    /// Cleartext or TLS.
    pub security: Security,
}

impl EndpointConfig {
    /// The endpoint as a URL, for messages (`https://localhost:5001`, `http://unix:/run/a.sock`,
    /// `http://fd:3`).
    pub fn url(&self) -> String {
        let scheme = match self.security {
            Security::Plain => "http",
            Security::Https(_) => "https",
        };
        match &self.target {
            BindTarget::Localhost { port } => format!("{scheme}://localhost:{port}"),
            BindTarget::AnyAddress { port } => format!("{scheme}://*:{port}"),
            BindTarget::Ip(addr) => format!("{scheme}://{addr}"),
            BindTarget::Unix(path) => format!("{scheme}://unix:{}", path.display()),
            BindTarget::Fd(fd) => format!("{scheme}://fd:{fd}"),
        }
    }

    /// An endpoint on an already-listening socket. The descriptor stays the host's: the library
    /// works on a duplicate.
    pub fn from_fd(fd: RawFd, protocols: Protocols) -> Self {
        EndpointConfig {
            target: BindTarget::Fd(fd),
            protocols,
            security: Security::Plain,
        }
    }
}

/// Parses one or more Kestrel-style URLs separated by `;`.
///
/// Accepted forms: `http://localhost:5000`, `http://*:8080`, `http://+:8080`,
/// `http://0.0.0.0:0`, `http://[::1]:0`, `http://example.com:80` (binds every address, as
/// Kestrel does), `http://unix:/abs/path.sock`, and the same with `https://`. A missing port
/// means 80 (443 for https). A path other than `/` is an error, as in Kestrel.
pub fn parse_urls(urls: &str, protocols: Protocols) -> Result<Vec<EndpointConfig>> {
    let mut endpoints = Vec::new();
    for url in urls.split(';').map(str::trim).filter(|u| !u.is_empty()) {
        let (target, https) = parse_url(url)?;
        endpoints.push(EndpointConfig {
            target,
            protocols,
            security: if https {
                Security::Https(None)
            } else {
                Security::Plain
            },
        });
    }
    if endpoints.is_empty() {
        return Err(Error::InvalidUrl(format!("no URL in {urls:?}")));
    }
    Ok(endpoints)
}

/// Parses one URL into where to bind and whether it is https.
fn parse_url(url: &str) -> Result<(BindTarget, bool)> {
    let bad = |why: &str| Error::InvalidUrl(format!("{url:?}: {why}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected scheme://host:port"))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        _ => return Err(bad("the scheme must be http or https")),
    };
    parse_authority(url, rest, https).map(|target| (target, https))
}

fn parse_authority(url: &str, rest: &str, https: bool) -> Result<BindTarget> {
    let bad = |why: &str| Error::InvalidUrl(format!("{url:?}: {why}"));
    if let Some(path) = rest.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(bad(
                "a Unix socket path must be absolute (http://unix:/path/to.sock)",
            ));
        }
        return Ok(BindTarget::Unix(PathBuf::from(path)));
    }
    let authority = match rest.find('/') {
        Some(i) if &rest[i..] == "/" => &rest[..i],
        Some(_) => return Err(bad("a path is not allowed in an endpoint URL")),
        None => rest,
    };
    if authority.contains(['?', '#', '@']) {
        return Err(bad(
            "a query, fragment or user info is not allowed in an endpoint URL",
        ));
    }
    let (host, port) = split_host_port(authority).map_err(&bad)?;
    let port = match port {
        None if https => 443,
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| bad("the port must be a number from 0 to 65535"))?,
    };
    if host.is_empty() {
        return Err(bad("the host is missing"));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(BindTarget::Localhost { port });
    }
    if host == "*" || host == "+" {
        return Ok(BindTarget::AnyAddress { port });
    }
    if let Some(inner) = host.strip_prefix('[') {
        let literal = inner
            .strip_suffix(']')
            .ok_or_else(|| bad("unclosed '[' in the host"))?;
        let ip: IpAddr = literal
            .parse()
            .map_err(|_| bad("not an IPv6 address in brackets"))?;
        return Ok(BindTarget::Ip(SocketAddr::new(ip, port)));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(BindTarget::Ip(SocketAddr::new(ip, port)));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(bad("the host is not a valid name"));
    }
    // Kestrel binds every address for a host name other than localhost.
    Ok(BindTarget::AnyAddress { port })
}

/// Splits `host[:port]`, with IPv6 literals in brackets.
fn split_host_port(authority: &str) -> std::result::Result<(&str, Option<&str>), &'static str> {
    if authority.starts_with('[') {
        let end = authority.find(']').ok_or("unclosed '[' in the host")?;
        let (host, after) = authority.split_at(end + 1);
        return match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or("junk after ']'"),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Err("an IPv6 address must be in brackets"),
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(url: &str) -> Result<BindTarget> {
        parse_urls(url, Protocols::default()).map(|mut v| v.remove(0).target)
    }

    #[test]
    fn https_urls() {
        let e = parse_urls("https://localhost;http://[::1]:1", Protocols::Http2).unwrap();
        assert!(matches!(e[0].security, Security::Https(None)));
        assert_eq!(e[0].target, BindTarget::Localhost { port: 443 });
        assert!(matches!(e[1].security, Security::Plain));
    }

    #[test]
    fn kestrel_url_forms() {
        assert_eq!(
            one("http://localhost:5000").unwrap(),
            BindTarget::Localhost { port: 5000 }
        );
        assert_eq!(
            one("http://*:8080").unwrap(),
            BindTarget::AnyAddress { port: 8080 }
        );
        assert_eq!(
            one("http://+:8080/").unwrap(),
            BindTarget::AnyAddress { port: 8080 }
        );
        assert_eq!(
            one("HTTP://example.com").unwrap(),
            BindTarget::AnyAddress { port: 80 }
        );
        assert_eq!(
            one("http://0.0.0.0:0").unwrap(),
            BindTarget::Ip("0.0.0.0:0".parse().unwrap())
        );
        assert_eq!(
            one("http://[::1]:0").unwrap(),
            BindTarget::Ip("[::1]:0".parse().unwrap())
        );
        assert_eq!(
            one("http://[::1]").unwrap(),
            BindTarget::Ip("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            one("http://unix:/tmp/k.sock").unwrap(),
            BindTarget::Unix(PathBuf::from("/tmp/k.sock"))
        );
    }

    #[test]
    fn several_urls() {
        let v = parse_urls(" http://127.0.0.1:1 ; http://[::1]:2;", Protocols::Http2).unwrap();
        assert_eq!(v.len(), 2);
        assert!(v.iter().all(|e| e.protocols == Protocols::Http2));
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("localhost:5000", "scheme"),
            ("ftp://localhost", "scheme"),
            ("http://localhost:5000/app", "path"),
            ("http://localhost:99999", "port"),
            ("http://localhost:x", "port"),
            ("http://::1:80", "brackets"),
            ("http://[::1:80", "unclosed"),
            ("http://unix:relative.sock", "absolute"),
            ("http://:80", "missing"),
            ("http://bad_host!:80", "valid name"),
            ("", "no URL"),
        ] {
            let err = parse_urls(url, Protocols::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{url:?} -> {err}");
        }
    }
}
