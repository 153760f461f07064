//! Errors of the core API.
//!
//! Every fallible operation of the core returns [`Error`]. The C layer maps each variant to a
//! stable `kestrel_result` code; the variants therefore describe *what the caller can do about
//! it*, and the payload carries the detail for the human reading the log or the last-error text.

use std::fmt;
use std::io;

/// An error from the core server API.
#[derive(Debug)]
pub enum Error {
    /// An argument was out of range or otherwise unusable (a zero thread count, a bad range...).
    InvalidArgument(String),
    /// An endpoint URL could not be parsed; the string says what is wrong with which URL.
    InvalidUrl(String),
    /// A header name or value contains bytes HTTP forbids (CR, LF, NUL, or a non-token name).
    InvalidHeader(String),
    /// Binding an endpoint failed; nothing stays bound.
    Bind {
        /// The address (or socket path) that could not be bound.
        address: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// The operation does not fit the object's current state (starting twice, a header after the
    /// response started, reading a body while another read is in flight...).
    InvalidState(String),
    /// The response was already completed; a request is completed exactly once.
    AlreadyCompleted,
    /// The client went away or the server aborted the request; nothing more can be sent.
    Cancelled,
    /// The call would block, and the caller is on an I/O thread where blocking is not allowed.
    WouldBlock,
    /// Waiting ran out of time.
    Timeout,
    /// The server is stopping or stopped.
    Stopped,
    /// A file or other I/O resource could not be used.
    Io(io::Error),
    /// A certificate, key or other TLS setting is unusable (unreadable file, wrong password, a key
    /// that does not match its certificate, no certificate for an https endpoint...).
    Tls(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
            Error::InvalidUrl(msg) => write!(f, "invalid URL: {msg}"),
            Error::InvalidHeader(msg) => write!(f, "invalid header: {msg}"),
            Error::Bind { address, source } => write!(f, "failed to bind {address}: {source}"),
            Error::InvalidState(msg) => write!(f, "invalid state: {msg}"),
            Error::AlreadyCompleted => f.write_str("the response was already completed"),
            Error::Cancelled => {
                f.write_str("the request was aborted (client gone or server stopped)")
            }
            Error::WouldBlock => f.write_str(
                "the call would block an I/O thread; use the asynchronous form in INLINE mode",
            ),
            Error::Timeout => f.write_str("timed out"),
            Error::Stopped => f.write_str("the server is stopped"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Tls(msg) => write!(f, "TLS: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } => Some(source),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Shorthand for results of the core API.
pub type Result<T> = std::result::Result<T, Error>;
