//! Helpers shared by the integration tests: a server on 127.0.0.1:0 and a minimal blocking
//! HTTP/1.1 client over raw sockets (so tests control exactly what goes on the wire).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use kestrel::{DispatchMode, Exchange, HandlerError, Server, ServerOptions};

/// Starts a server on 127.0.0.1 with an ephemeral port.
pub fn serve<F>(mode: DispatchMode, handler: F) -> (Server, SocketAddr)
where
    F: Fn(Exchange) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    serve_with(mode, handler, |_| {})
}

/// Like [`serve`], letting the test adjust the options first.
pub fn serve_with<F>(
    mode: DispatchMode,
    handler: F,
    adjust: impl FnOnce(&mut ServerOptions),
) -> (Server, SocketAddr)
where
    F: Fn(Exchange) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    let mut options = ServerOptions::new();
    adjust(&mut options);
    options
        .add_urls("http://127.0.0.1:0", Default::default())
        .unwrap();
    options.io_threads(2).unwrap();
    options.dispatch(mode).handler(std::sync::Arc::new(handler));
    let server = Server::new(options).unwrap();
    server.start().unwrap();
    let url = server.addresses()[0].clone();
    let addr = url.trim_start_matches("http://").parse().unwrap();
    (server, addr)
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    // write! issues several small writes; without this, Nagle and delayed ACKs add 40 ms each.
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (Content-Length, chunked, or until close).
pub fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<Response> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before a response",
        ));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("header line");
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if status == 100 {
        return Ok(resp);
    }
    if let Some(len) = resp.header("content-length") {
        let mut body = vec![0; len.parse().unwrap()];
        reader.read_exact(&mut body)?;
        resp.body = body;
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size =
                usize::from_str_radix(line.trim_end().split(';').next().unwrap(), 16).unwrap();
            if size == 0 {
                // Trailers until the empty line.
                loop {
                    line.clear();
                    reader.read_line(&mut line)?;
                    if line.trim_end().is_empty() {
                        break;
                    }
                    let (n, v) = line.trim_end().split_once(':').unwrap();
                    resp.headers
                        .push((n.trim().to_string(), v.trim().to_string()));
                }
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            resp.body.extend_from_slice(&chunk[..size]);
        }
    } else if status != 204 && status != 304 {
        reader.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// Sends raw bytes on a new connection and reads one response.
pub fn roundtrip(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut s = connect(addr);
    s.write_all(raw).unwrap();
    read_response(&mut BufReader::new(s)).unwrap()
}

/// Peak resident memory of this process (VmHWM), in KiB.
pub fn peak_rss_kib() -> u64 {
    status_field("VmHWM:")
}

/// Current resident memory of this process (VmRSS), in KiB.
pub fn rss_kib() -> u64 {
    status_field("VmRSS:")
}

fn status_field(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(name)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resets VmHWM to the current RSS (Linux: write 5 to clear_refs).
pub fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// Raises the soft open-files limit (tests with many sockets).
pub fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = want.min(lim.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}
