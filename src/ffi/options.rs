//! `kestrel_options`: the builder consumed by `kestrel_server_new`.

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use super::request::{kestrel_request, CHandler};
use super::response::kestrel_response;
use super::{
    bytes, check_null, ffi_panic_boundary, invalid, kestrel_result, kestrel_str,
    kestrel_userdata_free_fn, null_argument, result, Userdata, KESTREL_OK,
};
use crate::endpoint::{EndpointConfig, Protocols};
use crate::log::LogLevel;
use crate::options::{DispatchMode, ServerOptions, ThreadHooks};

/// Which HTTP versions an endpoint serves (`KESTREL_PROTOCOLS_*`).
pub type kestrel_protocols = u32;
/// HTTP/1.1 and HTTP/2; on cleartext endpoints h2c is recognised by its preface. The default.
pub const KESTREL_PROTOCOLS_HTTP1_AND_HTTP2: kestrel_protocols = 0;
/// HTTP/1.x only.
pub const KESTREL_PROTOCOLS_HTTP1: kestrel_protocols = 1;
/// HTTP/2 only (h2c with prior knowledge on cleartext endpoints).
pub const KESTREL_PROTOCOLS_HTTP2: kestrel_protocols = 2;

/// Where handlers run (`KESTREL_DISPATCH_*`).
pub type kestrel_dispatch = u32;
/// On library-owned handler threads; handlers may block. The default.
pub const KESTREL_DISPATCH_POOL: kestrel_dispatch = 0;
/// On the I/O thread that read the request; handlers must never block.
pub const KESTREL_DISPATCH_INLINE: kestrel_dispatch = 1;
/// No handler: the host takes requests with `kestrel_server_next_request`.
pub const KESTREL_DISPATCH_PULL: kestrel_dispatch = 2;

/// Log severity (`KESTREL_LOG_*`), lowest first.
pub type kestrel_log_level = u32;
/// Per-request detail.
pub const KESTREL_LOG_TRACE: kestrel_log_level = 0;
/// Per-connection detail.
pub const KESTREL_LOG_DEBUG: kestrel_log_level = 1;
/// Lifecycle: endpoints bound, server stopped.
pub const KESTREL_LOG_INFO: kestrel_log_level = 2;
/// Worth an operator's look; the server keeps working.
pub const KESTREL_LOG_WARN: kestrel_log_level = 3;
/// A failure (a handler error, an endpoint that stopped accepting).
pub const KESTREL_LOG_ERROR: kestrel_log_level = 4;

/// Options for a server: endpoints, threads, dispatch mode, handler. Made by
/// `kestrel_options_new`, consumed by `kestrel_server_new` (on success and on failure alike), or
/// released by `kestrel_options_free`. Not thread-safe: use from one thread at a time.
pub struct kestrel_options {
    inner: ServerOptions,
}

/// Handles a request.
///
/// `request` and `response` are valid until the later of: this callback returning, and the
/// response being completed (`kestrel_response_send*`, `_end`, `_fail`). Complete the response
/// exactly once, from any thread, now or later. Returning anything but `KESTREL_OK` completes it
/// for you: a 500 if nothing was sent yet, otherwise the response is cut off.
///
/// Runs on a handler thread (POOL) or on an I/O thread (INLINE, where it must not block).
pub type kestrel_handler_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        request: *mut kestrel_request,
        response: *mut kestrel_response,
    ) -> kestrel_result,
>;

/// Runs on a handler-pool thread as it starts or before it exits.
pub type kestrel_thread_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// Receives a log record. `category` and `message` are valid only during the call. Called on any
/// library thread, I/O threads included: it must not block.
pub type kestrel_log_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        level: kestrel_log_level,
        category: kestrel_str,
        message: kestrel_str,
    ),
>;

pub(crate) unsafe fn options_mut<'a>(options: *mut kestrel_options) -> &'a mut ServerOptions {
    // SAFETY: checked non-NULL by the caller; the host promises it is a live options handle
    // used by one thread at a time.
    unsafe { &mut (*options).inner }
}

pub(crate) fn protocols_from(value: kestrel_protocols) -> Option<Protocols> {
    match value {
        KESTREL_PROTOCOLS_HTTP1_AND_HTTP2 => Some(Protocols::Http1AndHttp2),
        KESTREL_PROTOCOLS_HTTP1 => Some(Protocols::Http1),
        KESTREL_PROTOCOLS_HTTP2 => Some(Protocols::Http2),
        _ => None,
    }
}

/// Makes options with Kestrel's defaults: `http://localhost:5000` when no endpoint is added, one
/// I/O thread per core, POOL dispatch with 2 × cores (at least 4) handler threads, `Server:
/// kestrel`, a 64 KiB response buffer. On success `*out` owns the new options.
#[no_mangle]
pub unsafe extern "C" fn kestrel_options_new(out: *mut *mut kestrel_options) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(out);
        let options = Box::new(kestrel_options { inner: ServerOptions::new() });
        // SAFETY: checked non-NULL; the host promises a writable pointer.
        unsafe { *out = Box::into_raw(options) };
        KESTREL_OK
    }
}

/// Releases options that were not given to `kestrel_server_new` (their userdata is released
/// too). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn kestrel_options_free(options: *mut kestrel_options) {
    ffi_panic_boundary! {
        if !options.is_null() {
            // SAFETY: non-NULL, made by kestrel_options_new and not yet consumed (host contract).
            drop(unsafe { Box::from_raw(options) });
        }
    }
}

/// Takes the options back from a raw pointer (consumes the handle).
pub(crate) unsafe fn take_options(options: *mut kestrel_options) -> ServerOptions {
    // SAFETY: see kestrel_options_free.
    unsafe { Box::from_raw(options) }.inner
}

/// Adds endpoints from Kestrel-style URLs separated by `;` (`urls`: `len` bytes, no NUL needed):
/// `http://localhost:5000` (127.0.0.1 and ::1), `http://+:8080` (every address; the host `*`
/// does the same), `http://0.0.0.0:0`, `http://[::1]:0` (port 0: chosen at start), and
/// `http://unix:/absolute/path.sock`. `protocols` is a `KESTREL_PROTOCOLS_*` value. A bad URL
/// returns `KESTREL_INVALID_URL` and adds nothing.
#[no_mangle]
pub unsafe extern "C" fn kestrel_options_add_urls(
    options: *mut kestrel_options,
    urls: *const u8,
    len: usize,
    protocols: kestrel_protocols,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(options);
        let Some(urls) = (unsafe { bytes(urls, len) }) else { return null_argument("urls") };
        let Ok(urls) = std::str::from_utf8(urls) else {
            return super::fail(crate::Error::InvalidUrl("the URLs are not valid UTF-8".into()));
        };
        let Some(protocols) = protocols_from(protocols) else {
            return invalid(format!("{protocols} is not a KESTREL_PROTOCOLS_* value"));
        };
        result(unsafe { options_mut(options) }.add_urls(urls, protocols).map(|_| ()))
    }
}

/// Adds an endpoint on an already-listening socket (TCP or Unix), e.g. one inherited from
/// systemd. The library works on a duplicate: `fd` stays the host's to close. Checked at start.
#[no_mangle]
pub unsafe extern "C" fn kestrel_options_add_listen_fd(
    options: *mut kestrel_options,
    fd: c_int,
    protocols: kestrel_protocols,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(options);
        if fd < 0 {
            return invalid(format!("{fd} is not a file descriptor"));
        }
        let Some(protocols) = protocols_from(protocols) else {
            return invalid(format!("{protocols} is not a KESTREL_PROTOCOLS_* value"));
        };
        unsafe { options_mut(options) }.add_endpoint(EndpointConfig::from_fd(fd, protocols));
        KESTREL_OK
    }
}

/// Sets the number of I/O threads (1..=1024; default: the number of cores).
#[no_mangle]
pub unsafe extern "C" fn kestrel_options_set_io_threads(
    options: *mut kestrel_options,
    threads: u32,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(options);
        result(unsafe { options_mut(options) }.io_threads(threads as usize).map(|_| ()))
    }
}

/// Sets the dispatch mode (`KESTREL_DISPATCH_*`).
#[no_mangle]
pub unsafe extern "C" fn kestrel_options_set_dispatch(
    options: *mut kestrel_options,
    mode: kestrel_dispatch,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(options);
        let mode = match mode {
            KESTREL_DISPATCH_POOL => DispatchMode::Pool,
            KESTREL_DISPATCH_INLINE => DispatchMode::Inline,
            KESTREL_DISPATCH_PULL => DispatchMode::Pull,
            other => return invalid(format!("{other} is not a KESTREL_DISPATCH_* value")),
        };
        unsafe { options_mut(options) }.dispatch(mode);
        KESTREL_OK
    }
}

/// Sets the number of handler threads in POOL mode (1..=4096).
#[no_mangle]
pub unsafe extern "C" fn kestrel_options_set_pool_threads(
    options: *mut kestrel_options,
    threads: u32,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(options);
        result(unsafe { options_mut(options) }.pool_threads(threads as usize).map(|_| ()))
    }
}

/// Turns the `Server: kestrel` response header on (default) or off.
#[no_mangle]
pub unsafe extern "C" fn kestrel_options_set_server_header(
    options: *mut kestrel_options,
    enabled: bool,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(options);
        unsafe { options_mut(options) }.server_header(enabled);
        KESTREL_OK
    }
}

/// Sets how many bytes a streamed response may buffer before `kestrel_response_write` waits
/// (default 65536, as Kestrel's MaxResponseBufferSize; must not be 0).
#[no_mangle]
pub unsafe extern "C" fn kestrel_options_set_response_buffer_size(
    options: *mut kestrel_options,
    bytes: usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(options);
        result(unsafe { options_mut(options) }.response_buffer(bytes).map(|_| ()))
    }
}

/// Installs the request handler (required unless the dispatch mode is PULL). `userdata` is passed
/// to every call; `userdata_free` (may be NULL) is called with it exactly once, when the options
/// or the server built from them are freed, or when another handler replaces this one.
#[no_mangle]
pub unsafe extern "C" fn kestrel_options_set_handler(
    options: *mut kestrel_options,
    handler: kestrel_handler_fn,
    userdata: *mut c_void,
    userdata_free: kestrel_userdata_free_fn,
) -> kestrel_result {
    ffi_panic_boundary! {
        let userdata = Userdata::new(userdata, userdata_free);
        check_null!(options);
        let Some(callback) = handler else { return null_argument("handler") };
        unsafe { options_mut(options) }.handler(Arc::new(CHandler::new(callback, userdata)));
        KESTREL_OK
    }
}

struct CThreadHooks {
    on_start: kestrel_thread_fn,
    on_stop: kestrel_thread_fn,
    userdata: Userdata,
}

impl ThreadHooks for CThreadHooks {
    fn on_start(&self) {
        if let Some(f) = self.on_start {
            // SAFETY: the host's callback with the host's userdata.
            unsafe { f(self.userdata.get()) }
        }
    }
    fn on_stop(&self) {
        if let Some(f) = self.on_stop {
            // SAFETY: as above.
            unsafe { f(self.userdata.get()) }
        }
    }
}

/// Installs hooks run on each POOL handler thread as it starts (`on_start`) and before it exits
/// (`on_stop`); either may be NULL. `userdata_free` (may be NULL) is called once when the options
/// or the server are freed.
#[no_mangle]
pub unsafe extern "C" fn kestrel_options_set_thread_hooks(
    options: *mut kestrel_options,
    on_start: kestrel_thread_fn,
    on_stop: kestrel_thread_fn,
    userdata: *mut c_void,
    userdata_free: kestrel_userdata_free_fn,
) -> kestrel_result {
    ffi_panic_boundary! {
        let userdata = Userdata::new(userdata, userdata_free);
        check_null!(options);
        unsafe { options_mut(options) }.thread_hooks(Arc::new(CThreadHooks { on_start, on_stop, userdata }));
        KESTREL_OK
    }
}

/// Sends log records at or above `min_level` to `callback`. No logger is installed by default and
/// nothing process-global is touched. `userdata_free` (may be NULL) is called once when the
/// options or the server are freed.
#[no_mangle]
pub unsafe extern "C" fn kestrel_options_set_log_callback(
    options: *mut kestrel_options,
    callback: kestrel_log_fn,
    min_level: kestrel_log_level,
    userdata: *mut c_void,
    userdata_free: kestrel_userdata_free_fn,
) -> kestrel_result {
    ffi_panic_boundary! {
        let userdata = Userdata::new(userdata, userdata_free);
        check_null!(options);
        let Some(callback) = callback else { return null_argument("callback") };
        let Some(level) = LogLevel::from_u32(min_level) else {
            return invalid(format!("{min_level} is not a KESTREL_LOG_* value"));
        };
        let sink = move |level: LogLevel, category: &str, message: &str| {
            // SAFETY: the host's callback; the views live for the duration of the call.
            unsafe {
                callback(
                    userdata.get(),
                    level as u32,
                    kestrel_str::from_bytes(category.as_bytes()),
                    kestrel_str::from_bytes(message.as_bytes()),
                )
            }
        };
        unsafe { options_mut(options) }.log_sink(Arc::new(sink), level);
        KESTREL_OK
    }
}
