//! `kestrel_request`: reading the request (head, headers, body) and the handle's lifetime.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::response::kestrel_response;
use super::{
    bytes, check_null, fail, ffi_panic_boundary, invalid, kestrel_result, kestrel_result_name,
    kestrel_str, kestrel_userdata_free_fn, null_argument, set_last_error, view_size, write_view,
    SendUserdata, Userdata, KESTREL_NOT_FOUND, KESTREL_OK,
};
use crate::exchange::Exchange;
use crate::options::{Handler, HandlerError};

/// A request being served. The same allocation backs the request's `kestrel_response` (see
/// `kestrel_request_response`). In a handler it is valid until the later of the callback's return
/// and the response's completion; from `kestrel_server_next_request` until the response is
/// completed. Any thread may use it while it is valid. A completing call (`send`, `send_owned`,
/// `send_file`, `send_fd`, `end`, `fail`) that returns `KESTREL_OK`, `KESTREL_CANCELLED` or
/// `KESTREL_ALREADY_COMPLETED` has completed the request; other codes leave it open. A blocking
/// `kestrel_request_read`, `kestrel_response_write` or `kestrel_response_flush` may overlap a
/// completing call made on another thread: the handle then stays valid until that call returns
/// (with `KESTREL_CANCELLED` if the completion cut it short).
pub struct kestrel_request {
    exchange: Exchange,
    /// One reference for the handler callback (while it runs), one for "not yet completed".
    refs: AtomicUsize,
    completion_released: AtomicBool,
    header_views: OnceLock<HeaderViews>,
}

/// The exchange behind a request handle.
///
/// # Safety
/// `request` must be a non-NULL, live request handle.
pub(crate) unsafe fn exchange_of<'a>(request: *const kestrel_request) -> &'a Exchange {
    // SAFETY: the caller's promise.
    unsafe { &(*request).exchange }
}

/// A header as two views.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct kestrel_header {
    /// The name, lower-case.
    pub name: kestrel_str,
    /// The value, as received (not necessarily UTF-8).
    pub value: kestrel_str,
}

/// The whole request head in one call, for hosts where each call across the boundary is costly.
///
/// A versioned view: set `size` to `sizeof(kestrel_request_head)` before the call; the library
/// fills only the fields that fit in `size` bytes, so a host built against an older, shorter
/// struct keeps working. Every view is valid as long as the request handle is.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct kestrel_request_head {
    /// Set by the caller: the size of the struct it passes.
    pub size: usize,
    /// `GET`, `POST`...
    pub method: kestrel_str,
    /// `http` or `https`.
    pub scheme: kestrel_str,
    /// The path as sent, not percent-decoded.
    pub path: kestrel_str,
    /// The query without `?`; empty when absent.
    pub query: kestrel_str,
    /// The raw request target (`/path?query`, an absolute URL, or `*`).
    pub target: kestrel_str,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub version: kestrel_str,
    /// The authority: the target's own for an absolute-form target, else the Host header
    /// (HTTP/1.x) or `:authority` (HTTP/2); empty when absent.
    pub authority: kestrel_str,
    /// The client's address (`127.0.0.1:50000`, `[::1]:50000`, `unix:`).
    pub remote_addr: kestrel_str,
    /// The server's address of the connection.
    pub local_addr: kestrel_str,
    /// The request id, `<connection id>:<request number>` in hexadecimal.
    pub id: kestrel_str,
    /// The connection id, unique within the server.
    pub connection_id: u64,
    /// `header_count` headers, lower-case names, grouped by name in order of first appearance
    /// (each repeated value is its own entry).
    pub headers: *const kestrel_header,
    /// The number of entries at `headers`.
    pub header_count: usize,
}

struct HeaderViews(Vec<kestrel_header>);

// SAFETY: the views point into the exchange's immutable header map, which lives as long as the
// handle that owns these views; sharing read-only pointers across threads is sound.
unsafe impl Send for HeaderViews {}
unsafe impl Sync for HeaderViews {}

impl kestrel_request {
    fn header_views(&self) -> &[kestrel_header] {
        &self
            .header_views
            .get_or_init(|| {
                let views = self
                    .exchange
                    .request()
                    .headers()
                    .iter()
                    .map(|(name, value)| kestrel_header {
                        name: kestrel_str::from_bytes(name.as_str().as_bytes()),
                        value: kestrel_str::from_bytes(value.as_bytes()),
                    })
                    .collect();
                HeaderViews(views)
            })
            .0
    }
}

/// Makes a handle holding `refs` references.
pub(crate) fn new_handle(exchange: Exchange, refs: usize) -> *mut kestrel_request {
    Box::into_raw(Box::new(kestrel_request {
        exchange,
        refs: AtomicUsize::new(refs),
        completion_released: AtomicBool::new(false),
        header_views: OnceLock::new(),
    }))
}

/// Drops one reference; the last one frees the handle.
unsafe fn release(handle: *const kestrel_request) {
    // SAFETY: the caller holds one of the references, so the handle is alive.
    if unsafe { &*handle }.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
        // SAFETY: that was the last reference; the handle came from Box::into_raw in new_handle.
        drop(unsafe { Box::from_raw(handle.cast_mut()) });
    }
}

/// Runs a completing operation and, once the exchange is completed, drops the completion
/// reference (exactly once). The handle must not be touched after this returns.
pub(crate) unsafe fn complete(
    handle: *const kestrel_request,
    operation: impl FnOnce(&Exchange) -> crate::Result<()>,
) -> kestrel_result {
    // SAFETY: the caller checked non-NULL; the host promises a live handle.
    let request = unsafe { &*handle };
    let outcome = operation(&request.exchange);
    let code = super::result(outcome);
    if request.exchange.is_completed() && !request.completion_released.swap(true, Ordering::AcqRel)
    {
        // SAFETY: this thread held a valid handle; the completion reference is dropped once.
        unsafe { release(handle) };
    }
    code
}

/// A reference held for the length of one call that may block (a body read, a streamed write), so
/// that a completion from another thread meanwhile cannot free the handle under it.
pub(crate) struct CallRef(*const kestrel_request);

impl CallRef {
    /// Takes the reference.
    ///
    /// # Safety
    /// `handle` must be non-NULL and live (the host's promise for every call).
    pub(crate) unsafe fn take(handle: *const kestrel_request) -> CallRef {
        // SAFETY: the caller's promise.
        unsafe { &*handle }.refs.fetch_add(1, Ordering::Relaxed);
        CallRef(handle)
    }

    /// The exchange, alive as long as this reference.
    pub(crate) fn exchange(&self) -> &Exchange {
        // SAFETY: the reference we hold keeps the handle alive.
        unsafe { &(*self.0).exchange }
    }
}

impl Drop for CallRef {
    fn drop(&mut self) {
        // SAFETY: drops the reference taken in CallRef::take.
        unsafe { release(self.0) };
    }
}

pub(crate) unsafe fn exchange<'a>(request: *const kestrel_request) -> &'a Exchange {
    // SAFETY: the caller checked non-NULL; the host promises a live handle.
    unsafe { &(*request).exchange }
}

/// The C handler as a core [`Handler`].
pub(crate) struct CHandler {
    callback: unsafe extern "C" fn(
        *mut c_void,
        *mut kestrel_request,
        *mut kestrel_response,
    ) -> kestrel_result,
    userdata: Userdata,
}

impl CHandler {
    pub(crate) fn new(
        callback: unsafe extern "C" fn(
            *mut c_void,
            *mut kestrel_request,
            *mut kestrel_response,
        ) -> kestrel_result,
        userdata: Userdata,
    ) -> Self {
        CHandler { callback, userdata }
    }
}

impl Handler for CHandler {
    fn handle(&self, exchange: Exchange) -> Result<(), HandlerError> {
        let handle = new_handle(exchange, 2);
        // SAFETY: the host's callback with live handles (we hold the callback reference).
        let code = unsafe { (self.callback)(self.userdata.get(), handle, handle.cast()) };
        if code != KESTREL_OK {
            // SAFETY: the callback reference keeps the handle alive through this call.
            unsafe { complete(handle, |exchange| exchange.fail()) };
        }
        // SAFETY: drops the callback reference taken in new_handle.
        unsafe { release(handle) };
        if code != KESTREL_OK {
            // SAFETY: kestrel_result_name returns a static C string.
            let name = unsafe { std::ffi::CStr::from_ptr(kestrel_result_name(code)) };
            return Err(format!("the handler returned {} ({code})", name.to_string_lossy()).into());
        }
        Ok(())
    }
}

/// The response of `request` (the same handle, typed for the response functions). Valid as long
/// as the request is.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_response(
    request: *mut kestrel_request,
) -> *mut kestrel_response {
    request.cast()
}

/// The request head behind a handle, or None (with the last error set) for NULL.
unsafe fn head<'a>(request: *const kestrel_request) -> Option<&'a crate::request::RequestHead> {
    if request.is_null() {
        set_last_error("the argument `request` must not be NULL".into());
        return None;
    }
    // SAFETY: non-NULL; the host promises a live handle.
    Some(unsafe { exchange(request) }.request())
}

/// The method (`GET`...). Valid as long as the request handle; empty if `request` is NULL.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_method(request: *const kestrel_request) -> kestrel_str {
    ffi_panic_boundary! {
        match unsafe { head(request) } {
            Some(r) => kestrel_str::from_bytes(r.method().as_bytes()),
            None => kestrel_str::empty(),
        }
    }
}

/// `http` or `https`. Valid as long as the request handle.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_scheme(request: *const kestrel_request) -> kestrel_str {
    ffi_panic_boundary! {
        match unsafe { head(request) } {
            Some(r) => kestrel_str::from_bytes(r.scheme().as_bytes()),
            None => kestrel_str::empty(),
        }
    }
}

/// The path as sent (not percent-decoded). Valid as long as the request handle.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_path(request: *const kestrel_request) -> kestrel_str {
    ffi_panic_boundary! {
        match unsafe { head(request) } {
            Some(r) => kestrel_str::from_bytes(r.path().as_bytes()),
            None => kestrel_str::empty(),
        }
    }
}

/// The query without its `?` (empty when absent). Valid as long as the request handle.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_query(request: *const kestrel_request) -> kestrel_str {
    ffi_panic_boundary! {
        match unsafe { head(request) } {
            Some(r) => kestrel_str::from_bytes(r.query().as_bytes()),
            None => kestrel_str::empty(),
        }
    }
}

/// The raw request target (`/path?query`). Valid as long as the request handle.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_target(request: *const kestrel_request) -> kestrel_str {
    ffi_panic_boundary! {
        match unsafe { head(request) } {
            Some(r) => kestrel_str::from_bytes(r.target().as_bytes()),
            None => kestrel_str::empty(),
        }
    }
}

/// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`. Valid as long as the request handle.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_version(request: *const kestrel_request) -> kestrel_str {
    ffi_panic_boundary! {
        match unsafe { head(request) } {
            Some(r) => kestrel_str::from_bytes(r.version().as_bytes()),
            None => kestrel_str::empty(),
        }
    }
}

/// The authority: the target's own for an absolute-form target, else the Host header (HTTP/1.x)
/// or `:authority` (HTTP/2); empty when absent. Valid as long as the request handle.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_authority(request: *const kestrel_request) -> kestrel_str {
    ffi_panic_boundary! {
        match unsafe { head(request) } {
            Some(r) => kestrel_str::from_bytes(r.authority()),
            None => kestrel_str::empty(),
        }
    }
}

/// The client's address as text. Valid as long as the request handle.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_remote_addr(
    request: *const kestrel_request,
) -> kestrel_str {
    ffi_panic_boundary! {
        match unsafe { head(request) } {
            Some(r) => kestrel_str::from_bytes(r.connection().remote_text().as_bytes()),
            None => kestrel_str::empty(),
        }
    }
}

/// The server-side address of the connection as text. Valid as long as the request handle.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_local_addr(
    request: *const kestrel_request,
) -> kestrel_str {
    ffi_panic_boundary! {
        match unsafe { head(request) } {
            Some(r) => kestrel_str::from_bytes(r.connection().local_text().as_bytes()),
            None => kestrel_str::empty(),
        }
    }
}

/// The request id (`<connection id>:<request number>`, hexadecimal). Valid as long as the
/// request handle.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_id(request: *const kestrel_request) -> kestrel_str {
    ffi_panic_boundary! {
        match unsafe { head(request) } {
            Some(r) => kestrel_str::from_bytes(r.id().as_bytes()),
            None => kestrel_str::empty(),
        }
    }
}

/// The connection id, unique within the server (0 if `request` is NULL).
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_connection_id(request: *const kestrel_request) -> u64 {
    ffi_panic_boundary! {
        if request.is_null() {
            return 0;
        }
        unsafe { exchange(request) }.request().connection().id()
    }
}

/// The number of request headers, counting each repeated value (0 if `request` is NULL).
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_header_count(request: *const kestrel_request) -> usize {
    ffi_panic_boundary! {
        if request.is_null() {
            return 0;
        }
        unsafe { &*request }.header_views().len()
    }
}

/// The `index`-th header (0-based; names grouped in order of first appearance, each value its
/// own entry). `name` and `value` are written on success
/// and are valid as long as the request handle. `KESTREL_NOT_FOUND` past the last one.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_header_at(
    request: *const kestrel_request,
    index: usize,
    name: *mut kestrel_str,
    value: *mut kestrel_str,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(request, name, value);
        let views = unsafe { &*request }.header_views();
        let Some(header) = views.get(index) else {
            set_last_error(format!("header index {index} is out of range (there are {})", views.len()));
            return KESTREL_NOT_FOUND;
        };
        unsafe {
            *name = header.name;
            *value = header.value;
        }
        KESTREL_OK
    }
}

/// Looks a header up by name, case-insensitively: the `nth` value (0 for the first) of the header
/// `name` (`name_len` bytes). `*value` is written on success and is valid as long as the request
/// handle. `KESTREL_NOT_FOUND` when there is no such value.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_header(
    request: *const kestrel_request,
    name: *const u8,
    name_len: usize,
    nth: usize,
    value: *mut kestrel_str,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(request, value);
        let Some(name) = (unsafe { bytes(name, name_len) }) else { return null_argument("name") };
        match unsafe { exchange(request) }.request().header(name, nth) {
            Some(found) => {
                unsafe { *value = kestrel_str::from_bytes(found) };
                KESTREL_OK
            }
            None => {
                set_last_error(format!("no value {nth} for header {:?}", String::from_utf8_lossy(name)));
                KESTREL_NOT_FOUND
            }
        }
    }
}

/// Fills `*head` with the whole request head (set `head->size` first; see
/// `kestrel_request_head`). Views are valid as long as the request handle.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_get_head(
    request: *const kestrel_request,
    head: *mut kestrel_request_head,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(request, head);
        let caller_size = match unsafe { view_size(head, "head", "kestrel_request_head") } {
            Ok(size) => size,
            Err(code) => return code,
        };
        let handle = unsafe { &*request };
        let r = handle.exchange.request();
        let views = handle.header_views();
        let full = kestrel_request_head {
            size: caller_size,
            method: kestrel_str::from_bytes(r.method().as_bytes()),
            scheme: kestrel_str::from_bytes(r.scheme().as_bytes()),
            path: kestrel_str::from_bytes(r.path().as_bytes()),
            query: kestrel_str::from_bytes(r.query().as_bytes()),
            target: kestrel_str::from_bytes(r.target().as_bytes()),
            version: kestrel_str::from_bytes(r.version().as_bytes()),
            authority: kestrel_str::from_bytes(r.authority()),
            remote_addr: kestrel_str::from_bytes(r.connection().remote_text().as_bytes()),
            local_addr: kestrel_str::from_bytes(r.connection().local_text().as_bytes()),
            id: kestrel_str::from_bytes(r.id().as_bytes()),
            connection_id: r.connection().id(),
            headers: views.as_ptr(),
            header_count: views.len(),
        };
        unsafe { write_view(head, &full, caller_size) };
        KESTREL_OK
    }
}

/// Reads request body bytes into `buf` (`len` bytes, not 0), blocking until some arrive; `*read`
/// gets the count, 0 at the end of the body. The first read answers `Expect: 100-continue`.
/// Off I/O threads only (POOL handlers, pull mode, host threads): on an I/O thread (INLINE) it
/// returns `KESTREL_WOULD_BLOCK`; use `kestrel_request_read_async` there. `KESTREL_CANCELLED`
/// when the client went away; `KESTREL_INVALID_STATE` while an asynchronous read is pending.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_read(
    request: *const kestrel_request,
    buf: *mut u8,
    len: usize,
    read: *mut usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(request, buf, read);
        if len == 0 {
            // A 0-byte read would look like the end of the body.
            return invalid("len must not be 0".into());
        }
        // SAFETY: the caller promises `len` writable bytes at `buf`.
        let slice = unsafe { std::slice::from_raw_parts_mut(buf, len) };
        // May block; a completion from another thread meanwhile must not free the handle.
        let call = unsafe { CallRef::take(request) };
        match call.exchange().read(slice) {
            Ok(n) => {
                unsafe { *read = n };
                KESTREL_OK
            }
            Err(e) => fail(e),
        }
    }
}

/// Completion of `kestrel_request_read_async`: `result` and the number of bytes placed in the
/// buffer (0 with `KESTREL_OK` at the end of the body). Runs on an I/O thread; must not block.
pub type kestrel_read_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, result: kestrel_result, read: usize)>;

struct SendPtr(*mut u8);
// SAFETY: the host promises the buffer stays valid and untouched until the callback runs.
unsafe impl Send for SendPtr {}

/// Starts reading up to `len` body bytes into `buf` without blocking; `callback(userdata,
/// result, read)` runs exactly once, later, on an I/O thread (never inside this call). `buf`
/// must stay valid until then, and the request must not be completed before then. Returns an
/// error (and never calls `callback`) if the read cannot start.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_read_async(
    request: *const kestrel_request,
    buf: *mut u8,
    len: usize,
    callback: kestrel_read_fn,
    userdata: *mut c_void,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(request, buf);
        let Some(callback) = callback else { return null_argument("callback") };
        if len == 0 {
            return invalid("len must not be 0".into());
        }
        let (target, userdata) = (SendPtr(buf), SendUserdata(userdata));
        let done = Box::new(move |outcome: crate::Result<bytes::Bytes>| {
            let (target, userdata) = (target, userdata);
            let (code, n) = match outcome {
                Ok(data) => {
                    // SAFETY: at most `len` bytes (read_async caps at `len`) into the host's buffer.
                    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), target.0, data.len()) };
                    (KESTREL_OK, data.len())
                }
                Err(e) => (fail(e), 0),
            };
            // SAFETY: the host's callback, called exactly once.
            unsafe { callback(userdata.0, code, n) };
        });
        super::result(unsafe { exchange(request) }.read_async(len, done))
    }
}

/// Whether the request was aborted: the client went away, the stream was reset, the request
/// body broke its framing, or the server stopped. False if `request` is NULL.
///
/// On HTTP/1.1 a client that leaves while its request body is still unread is noticed at the
/// next body read or response write (the connection is not read meanwhile); HTTP/2 stream
/// resets and a client leaving a body-less request are noticed at once.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_is_aborted(request: *const kestrel_request) -> bool {
    ffi_panic_boundary! {
        if request.is_null() {
            return false;
        }
        unsafe { exchange(request) }.is_aborted()
    }
}

/// Called once when a request is aborted. Runs on the thread that noticed (usually an I/O thread)
/// and must not block; the request handle is still valid then (it must still be completed).
pub type kestrel_abort_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// Registers `callback` to run once if the request is aborted (at once, on this thread, if it
/// already was). `userdata_free` (may be NULL) is called exactly once, after the callback ran or
/// when the request is finished without an abort.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_on_abort(
    request: *const kestrel_request,
    callback: kestrel_abort_fn,
    userdata: *mut c_void,
    userdata_free: kestrel_userdata_free_fn,
) -> kestrel_result {
    ffi_panic_boundary! {
        let userdata = Userdata::new(userdata, userdata_free);
        check_null!(request);
        let Some(callback) = callback else { return null_argument("callback") };
        unsafe { exchange(request) }.on_abort(Box::new(move || {
            // SAFETY: the host's callback with its userdata; `userdata` is dropped (freed) after.
            unsafe { callback(userdata.get()) };
        }));
        KESTREL_OK
    }
}
