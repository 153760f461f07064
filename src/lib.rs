//! kestrel: a Kestrel-class HTTP server with a C ABI.
//!
//! The Rust core is plain Rust (no raw pointers, no `extern "C"`): [`ServerOptions`] →
//! [`Server`] → [`Exchange`] per request. The C API in [`ffi`] translates to it. See
//! ARCHITECTURE.md for the path of a request.

#![warn(missing_docs)]

mod connection;
mod dispatch;
pub mod endpoint;
pub mod error;
mod exchange;
pub mod ffi;
pub mod log;
pub mod options;
pub mod request;
mod server;
pub mod tls;
pub mod transport;

pub use endpoint::{BindTarget, EndpointConfig, Protocols};
pub use error::{Error, Result};
pub use exchange::Exchange;
pub use log::{LogLevel, LogSink};
pub use options::{DispatchMode, Handler, HandlerError, ServerOptions, ThreadHooks};
pub use request::{ConnectionInfo, RequestHead};
pub use server::{Server, StopReport};
pub use tls::{
    CertificateSelector, CertificateSource, ClientCertificateMode, ClientCertificateValidator,
    ClientHelloInfo, DevCertificate, Selection, TlsInfo, TlsOptions, TlsVersion,
};
pub use transport::PeerAddr;

/// The library version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
