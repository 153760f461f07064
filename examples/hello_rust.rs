//! The Rust core without the C layer: INLINE hello on the address given as the first argument
//! (default http://127.0.0.1:5000). Used to split the C layer's cost from the core's in profiles.

use std::sync::Arc;

use bytes::Bytes;
use kestrel::{DispatchMode, Exchange, HandlerError, Server, ServerOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:5000".into());
    let mut options = ServerOptions::new();
    options.add_urls(&url, Default::default())?.io_threads(1)?;
    options.dispatch(DispatchMode::Inline).handler(Arc::new(
        |ex: Exchange| -> Result<(), HandlerError> {
            ex.add_header(b"content-type", b"text/plain")?;
            ex.send(Bytes::from_static(b"Hello, World!"))?;
            Ok(())
        },
    ));
    let server = Server::new(options)?;
    server.start()?;
    for address in server.addresses() {
        println!("listening on {address}");
    }
    std::thread::park();
    Ok(())
}
