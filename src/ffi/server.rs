//! `kestrel_server`: build, start, addresses, stop, pull, free.

use std::ffi::c_char;
use std::time::Duration;

use super::options::{kestrel_options, take_options};
use super::request::{kestrel_request, new_handle};
use super::{
    check_null, copy_out_named, fail, ffi_panic_boundary, kestrel_result, result, set_last_error,
    KESTREL_NOT_FOUND, KESTREL_OK,
};
use crate::server::Server;

/// A server. Made by `kestrel_server_new`, released by `kestrel_server_free`. Its functions may
/// be called from any thread, concurrently, except `kestrel_server_free`, which must be the last
/// call and must not run on a library thread (inside a handler or callback).
pub struct kestrel_server {
    inner: Server,
}

pub(crate) unsafe fn server_ref<'a>(server: *const kestrel_server) -> &'a Server {
    // SAFETY: the caller checked non-NULL; the host promises a live server.
    unsafe { &(*server).inner }
}

/// Builds a server from `options`, which are consumed (freed) on every path, success or error.
/// Nothing is bound until `kestrel_server_start`. On success `*out` owns the server.
/// `KESTREL_INVALID_ARGUMENT` when no handler was set outside PULL mode.
#[no_mangle]
pub unsafe extern "C" fn kestrel_server_new(
    options: *mut kestrel_options,
    out: *mut *mut kestrel_server,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(options);
        let options = unsafe { take_options(options) };
        check_null!(out);
        match Server::new(options) {
            Ok(inner) => {
                unsafe { *out = Box::into_raw(Box::new(kestrel_server { inner })) };
                KESTREL_OK
            }
            Err(e) => fail(e),
        }
    }
}

/// Binds every endpoint and starts serving; returns once listening. On failure
/// (`KESTREL_BIND_FAILED`: port in use, permission, missing directory...) nothing stays bound and
/// the last error names the address and the OS error; the server may be started again.
/// `KESTREL_INVALID_STATE` when already started or stopped.
#[no_mangle]
pub unsafe extern "C" fn kestrel_server_start(server: *mut kestrel_server) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(server);
        result(unsafe { server_ref(server) }.start())
    }
}

/// The number of bound addresses (0 before start or if `server` is NULL). `localhost` counts as
/// two (127.0.0.1 and ::1).
#[no_mangle]
pub unsafe extern "C" fn kestrel_server_address_count(server: *const kestrel_server) -> usize {
    ffi_panic_boundary! {
        if server.is_null() {
            return 0;
        }
        unsafe { server_ref(server) }.addresses().len()
    }
}

/// Copies the `index`-th bound address as a URL with its real port (`http://127.0.0.1:41234`,
/// `http://[::1]:5000`, `http://unix:/run/app.sock`) into `buf` (`len` bytes): as much as fits,
/// NUL-terminated. `written` (may be NULL) gets the URL's full length without the NUL.
/// `KESTREL_NOT_FOUND` past the last one; `KESTREL_BUFFER_TOO_SMALL` when truncated (retry with
/// `written + 1` bytes).
#[no_mangle]
pub unsafe extern "C" fn kestrel_server_address(
    server: *const kestrel_server,
    index: usize,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(server, buf);
        let addresses = unsafe { server_ref(server) }.addresses();
        let Some(address) = addresses.get(index) else {
            set_last_error(format!("address index {index} is out of range (there are {})", addresses.len()));
            return KESTREL_NOT_FOUND;
        };
        unsafe { copy_out_named("the address", address.as_bytes(), buf, len, written) }
    }
}

/// Stops gracefully: stops accepting (a Unix socket file is removed), lets in-flight requests
/// finish for up to `timeout_ms` (HTTP/1.1 connections close after their current response,
/// HTTP/2 connections get GOAWAY), then aborts the rest (their handles report
/// `KESTREL_CANCELLED`). `*aborted` (may be NULL) gets the number of requests aborted.
///
/// Any thread may call it. Inside a handler or callback (a library thread) it only schedules the
/// stop and returns at once. Stopping a stopped or never-started server is a no-op returning
/// `KESTREL_OK`.
#[no_mangle]
pub unsafe extern "C" fn kestrel_server_stop(
    server: *mut kestrel_server,
    timeout_ms: u32,
    aborted: *mut usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(server);
        match unsafe { server_ref(server) }.stop(Duration::from_millis(u64::from(timeout_ms))) {
            Ok(report) => {
                if !aborted.is_null() {
                    unsafe { *aborted = report.aborted_requests };
                }
                KESTREL_OK
            }
            Err(e) => fail(e),
        }
    }
}

/// PULL mode: waits up to `timeout_ms` (negative: forever) for the next request and writes its
/// handle to `*request`; it is valid until its response is completed. `KESTREL_TIMEOUT` when none
/// came, `KESTREL_STOPPED` once the server stopped (the loop's end), `KESTREL_INVALID_STATE` in
/// another mode or before start. Blocks: never call it on a library thread.
#[no_mangle]
pub unsafe extern "C" fn kestrel_server_next_request(
    server: *mut kestrel_server,
    timeout_ms: i64,
    request: *mut *mut kestrel_request,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(server, request);
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        match unsafe { server_ref(server) }.next_request(timeout) {
            Ok(exchange) => {
                unsafe { *request = new_handle(exchange, 1) };
                KESTREL_OK
            }
            Err(e) => fail(e),
        }
    }
}

/// Releases a server. A running server is stopped at once (in-flight requests are aborted; call
/// `kestrel_server_stop` first for a graceful stop). Returns after every library thread has
/// exited (handler threads finish the handler they are running first) and the handler's and
/// hooks' `userdata_free` ran. NULL is a no-op. Must not be called from a library thread; if it is,
/// the teardown moves to a new thread and this returns at once.
#[no_mangle]
pub unsafe extern "C" fn kestrel_server_free(server: *mut kestrel_server) {
    ffi_panic_boundary! {
        if !server.is_null() {
            // SAFETY: made by kestrel_server_new; this is the last call on it (host contract).
            drop(unsafe { Box::from_raw(server) });
        }
    }
}
