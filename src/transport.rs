//! Sockets: binding endpoints, accepting connections, and the byte stream a connection runs on.
//!
//! Everything above this module sees a [`Stream`] and the two [`PeerAddr`]s of a connection; TLS
//! (and later QUIC) slot in here as further transports.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::endpoint::{BindTarget, EndpointConfig};
use crate::error::{Error, Result};

/// Listen backlog, as Kestrel's default.
const BACKLOG: i32 = 512;

/// The address of one end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAddr {
    /// A TCP socket address.
    Tcp(SocketAddr),
    /// A Unix socket; the path of the listening socket (peers are usually unnamed).
    Unix(String),
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => write!(f, "{addr}"),
            PeerAddr::Unix(path) => write!(f, "unix:{path}"),
        }
    }
}

/// A bound listening socket with the URL it is reachable at.
pub(crate) struct Listener {
    kind: ListenerKind,
    url: String,
    local: PeerAddr,
}

enum ListenerKind {
    Tcp(TcpListener),
    /// The socket file is held for its `Drop`, which removes it.
    Unix(UnixListener, #[allow(dead_code)] UnixSocketFile),
}

/// The socket file of a Unix endpoint, removed when the listener goes away — but only if it is
/// still the file this server created (another process may have replaced it meanwhile).
struct UnixSocketFile {
    path: PathBuf,
    identity: Option<(u64, u64)>,
}

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        let current = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current.is_some() && current == self.identity {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A connection's byte stream.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    /// The URL this listener is reachable at, with the real port (never 0).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Waits for the next connection.
    pub(crate) async fn accept(&self) -> io::Result<(Stream, PeerAddr, PeerAddr)> {
        match &self.kind {
            ListenerKind::Tcp(l) => {
                let (s, remote) = l.accept().await?;
                // Responses are written whole; Nagle would only add latency.
                let _ = s.set_nodelay(true);
                no_sigpipe(s.as_raw_fd());
                let local = s
                    .local_addr()
                    .map(PeerAddr::Tcp)
                    .unwrap_or_else(|_| self.local.clone());
                Ok((Stream::Tcp(s), PeerAddr::Tcp(remote), local))
            }
            ListenerKind::Unix(l, _) => {
                let (s, _) = l.accept().await?;
                no_sigpipe(s.as_raw_fd());
                Ok((
                    Stream::Unix(s),
                    PeerAddr::Unix(String::new()),
                    self.local.clone(),
                ))
            }
        }
    }
}

/// Binds every endpoint, or none: on the first failure the ones bound so far are dropped.
/// Must run inside the server's runtime context.
pub(crate) fn bind_all(endpoints: &[EndpointConfig]) -> Result<Vec<(Listener, usize)>> {
    let mut bound = Vec::new();
    for (index, endpoint) in endpoints.iter().enumerate() {
        let https = matches!(endpoint.security, crate::endpoint::Security::Https(_));
        for mut listener in bind(&endpoint.target)? {
            if https {
                listener.url.replace_range(.."http".len(), "https");
            }
            bound.push((listener, index));
        }
    }
    Ok(bound)
}

fn bind(target: &BindTarget) -> Result<Vec<Listener>> {
    match target {
        BindTarget::Ip(addr) => Ok(vec![bind_tcp(*addr)?]),
        BindTarget::Localhost { port } => {
            let v4 = bind_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, *port)))?;
            // Port 0: both loopback addresses share the port the OS gave the first one.
            let port = match &v4.local {
                PeerAddr::Tcp(a) => a.port(),
                PeerAddr::Unix(_) => *port,
            };
            match bind_tcp(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
                Ok(v6) => Ok(vec![v4, v6]),
                // A machine without IPv6 still serves localhost over IPv4, as Kestrel does.
                Err(Error::Bind { source, .. }) if ipv6_unavailable(&source) => Ok(vec![v4]),
                Err(e) => Err(e),
            }
        }
        BindTarget::AnyAddress { port } => {
            match bind_tcp(SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port))) {
                Ok(l) => Ok(vec![l]),
                Err(Error::Bind { source, .. }) if ipv6_unavailable(&source) => Ok(vec![bind_tcp(
                    SocketAddr::from((Ipv4Addr::UNSPECIFIED, *port)),
                )?]),
                Err(e) => Err(e),
            }
        }
        BindTarget::Unix(path) => Ok(vec![bind_unix(path)?]),
        BindTarget::Fd(fd) => Ok(vec![adopt_fd(*fd)?]),
    }
}

fn ipv6_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
    )
}

fn bind_tcp(addr: SocketAddr) -> Result<Listener> {
    let fail = |source: io::Error| Error::Bind {
        address: addr.to_string(),
        source,
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(fail)?;
    if addr.is_ipv6() {
        // `[::]` serves IPv4 too (dual-stack); an explicit IPv6 literal means just that address.
        socket
            .set_only_v6(!addr.ip().is_unspecified())
            .map_err(fail)?;
    }
    // Lets a restarted server rebind while old connections sit in TIME_WAIT; it does not let two
    // listeners share the port.
    socket.set_reuse_address(true).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(BACKLOG).map_err(fail)?;
    let listener = TcpListener::from_std(socket.into()).map_err(fail)?;
    let local = listener.local_addr().map_err(fail)?;
    Ok(Listener {
        url: format!("http://{local}"),
        local: PeerAddr::Tcp(local),
        kind: ListenerKind::Tcp(listener),
    })
}

fn bind_unix(path: &Path) -> Result<Listener> {
    let shown = format!("unix:{}", path.display());
    let fail = |source: io::Error| Error::Bind {
        address: shown.clone(),
        source,
    };
    remove_stale_socket(path).map_err(fail)?;
    let std_listener = std::os::unix::net::UnixListener::bind(path).map_err(fail)?;
    let identity = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    let file = UnixSocketFile {
        path: path.to_path_buf(),
        identity,
    };
    std_listener.set_nonblocking(true).map_err(fail)?;
    let listener = UnixListener::from_std(std_listener).map_err(fail)?;
    let display = path.display().to_string();
    Ok(Listener {
        url: format!("http://unix:{display}"),
        local: PeerAddr::Unix(display),
        kind: ListenerKind::Unix(listener, file),
    })
}

/// A socket file left by a crashed process blocks `bind` with EADDRINUSE. Remove it when nobody
/// accepts on it; refuse when a server is alive there, or when the path is not a socket at all.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another server is listening on this socket",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(e) => Err(e),
    }
}

fn adopt_fd(fd: RawFd) -> Result<Listener> {
    let shown = format!("fd:{fd}");
    let fail = |source: io::Error| Error::Bind {
        address: shown.clone(),
        source,
    };
    if fd < 0 {
        return Err(fail(io::Error::from_raw_os_error(libc::EBADF)));
    }
    // SAFETY: the host promises `fd` is an open descriptor for the duration of this call; we only
    // borrow it long enough to duplicate it, so the host keeps ownership of the original.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let owned = borrowed.try_clone_to_owned().map_err(fail)?;
    let socket = Socket::from(owned);
    let listening = socket.is_listener().map_err(fail)?;
    if !listening {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the descriptor is not a listening socket",
        )));
    }
    socket.set_nonblocking(true).map_err(fail)?;
    let local = socket.local_addr().map_err(fail)?;
    if let Some(addr) = local.as_socket() {
        let listener = TcpListener::from_std(socket.into()).map_err(fail)?;
        return Ok(Listener {
            url: format!("http://{addr}"),
            local: PeerAddr::Tcp(addr),
            kind: ListenerKind::Tcp(listener),
        });
    }
    if local.is_unix() {
        let path = local
            .as_pathname()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let listener = UnixListener::from_std(socket.into()).map_err(fail)?;
        // The host created this socket file; it is the host's to remove.
        let file = UnixSocketFile {
            path: PathBuf::new(),
            identity: None,
        };
        return Ok(Listener {
            url: format!("http://unix:{path}"),
            local: PeerAddr::Unix(path),
            kind: ListenerKind::Unix(listener, file),
        });
    }
    Err(fail(io::Error::new(
        io::ErrorKind::InvalidInput,
        "unsupported socket family",
    )))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl Drop for Stream {
    /// Closing a socket with unread input makes the kernel answer with RST instead of FIN, and a
    /// client may then lose the response it has not read yet (a 400, a GOAWAY). Discard what is
    /// already buffered (bounded, never waiting) so the close is a clean one.
    fn drop(&mut self) {
        let mut sink = [0u8; 4096];
        for _ in 0..64 {
            let read = match self {
                Stream::Tcp(s) => s.try_read(&mut sink),
                Stream::Unix(s) => s.try_read(&mut sink),
            };
            if !matches!(read, Ok(n) if n > 0) {
                break;
            }
        }
    }
}

/// Flags for socket writes: a peer that closed must give EPIPE, never a SIGPIPE that kills the
/// host process (a C host, unlike a Rust binary, does not ignore SIGPIPE, and a library must not
/// change process-wide signal dispositions).
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd"
))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd"
)))]
const SEND_FLAGS: libc::c_int = 0;

/// Where MSG_NOSIGNAL does not exist, the socket option does the same for every write.
fn no_sigpipe(fd: RawFd) {
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    {
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and a correctly sized option value.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_NOSIGPIPE,
                (&on as *const libc::c_int).cast(),
                4,
            );
        }
    }
    let _ = fd;
}

/// One `sendmsg` of every buffer (std's `writev` path would raise SIGPIPE).
fn send_nosignal(fd: RawFd, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(1024) as _;
    // SAFETY: `msg` points at `bufs`, alive for the call; sendmsg does not write through it.
    let n = unsafe { libc::sendmsg(fd, &msg, SEND_FLAGS) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Waits for writability and sends without SIGPIPE.
macro_rules! poll_send {
    ($stream:expr, $cx:expr, $bufs:expr) => {
        loop {
            std::task::ready!($stream.poll_write_ready($cx))?;
            let fd = $stream.as_raw_fd();
            match $stream.try_io(Interest::WRITABLE, || send_nosignal(fd, $bufs)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    };
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let bufs = [io::IoSlice::new(buf)];
        match self.get_mut() {
            Stream::Tcp(s) => poll_send!(s, cx, &bufs),
            Stream::Unix(s) => poll_send!(s, cx, &bufs),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => poll_send!(s, cx, bufs),
            Stream::Unix(s) => poll_send!(s, cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
