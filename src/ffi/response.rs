//! `kestrel_response`: status, headers, bodies (copied, zero-copy, streamed, file) and trailers.

use std::ffi::{c_int, c_void};
use std::os::fd::BorrowedFd;

use bytes::Bytes;

use super::request::{complete, exchange, kestrel_request, CallRef};
use super::{
    bytes, check_null, ffi_panic_boundary, invalid, kestrel_result, null_argument, result,
    SendUserdata,
};
use crate::error::Error;

/// The response of a request: the same handle as its `kestrel_request`, typed for the response
/// functions, with the same lifetime. Any thread may use it; calls on one response should not
/// race each other (their order would be undefined, never their safety).
///
/// The head (status, headers) can change until the response starts: at the first write, flush or
/// a completing call. Changing it afterwards returns `KESTREL_INVALID_STATE` (or
/// `KESTREL_ALREADY_COMPLETED` once completed). `kestrel_response_send`, `_send_owned`,
/// `_send_file` and `_send_fd` need a response that has not started (`KESTREL_INVALID_STATE`
/// otherwise, the response staying open): after writes, finish with `kestrel_response_end`. Completing calls: `kestrel_response_send`, `_send_owned`, `_send_file`,
/// `_send_fd`, `_end`, `_fail`. After the first completion every other completing call returns
/// `KESTREL_ALREADY_COMPLETED`; after an abort they return `KESTREL_CANCELLED` (and still count
/// as the completion).
pub struct kestrel_response {
    _private: [u8; 0],
}

fn req(response: *const kestrel_response) -> *const kestrel_request {
    response.cast()
}

/// Sets the status code (200..=999; default 200). Before the response starts.
#[no_mangle]
pub unsafe extern "C" fn kestrel_response_set_status(
    response: *mut kestrel_response,
    status: u16,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(response);
        result(unsafe { exchange(req(response)) }.set_status(status))
    }
}

unsafe fn with_header(
    response: *mut kestrel_response,
    name: *const u8,
    name_len: usize,
    value: *const u8,
    value_len: usize,
    apply: impl FnOnce(&crate::Exchange, &[u8], &[u8]) -> crate::Result<()>,
) -> kestrel_result {
    check_null!(response);
    let Some(name) = (unsafe { bytes(name, name_len) }) else {
        return null_argument("name");
    };
    let Some(value) = (unsafe { bytes(value, value_len) }) else {
        return null_argument("value");
    };
    result(apply(unsafe { exchange(req(response)) }, name, value))
}

/// Adds a response header (repeats allowed). A name that is not an HTTP token, or a name or
/// value with CR, LF, NUL or another control byte, is refused with `KESTREL_INVALID_HEADER`.
/// Before the response starts (`KESTREL_INVALID_STATE` after).
#[no_mangle]
pub unsafe extern "C" fn kestrel_response_add_header(
    response: *mut kestrel_response,
    name: *const u8,
    name_len: usize,
    value: *const u8,
    value_len: usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        unsafe { with_header(response, name, name_len, value, value_len, |e, n, v| e.add_header(n, v)) }
    }
}

/// Sets a response header, replacing earlier values. Same checks as
/// `kestrel_response_add_header`.
#[no_mangle]
pub unsafe extern "C" fn kestrel_response_set_header(
    response: *mut kestrel_response,
    name: *const u8,
    name_len: usize,
    value: *const u8,
    value_len: usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        unsafe { with_header(response, name, name_len, value, value_len, |e, n, v| e.set_header(n, v)) }
    }
}

/// Adds a trailer, sent after the body: always on HTTP/2; on HTTP/1.1 only when the request
/// carried `TE: trailers`. Allowed until the response is completed.
#[no_mangle]
pub unsafe extern "C" fn kestrel_response_add_trailer(
    response: *mut kestrel_response,
    name: *const u8,
    name_len: usize,
    value: *const u8,
    value_len: usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        unsafe { with_header(response, name, name_len, value, value_len, |e, n, v| e.add_trailer(n, v)) }
    }
}

/// Removes every value of a response header (a missing header is not an error). Before the
/// response starts.
#[no_mangle]
pub unsafe extern "C" fn kestrel_response_remove_header(
    response: *mut kestrel_response,
    name: *const u8,
    name_len: usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(response);
        let Some(name) = (unsafe { bytes(name, name_len) }) else { return null_argument("name") };
        result(unsafe { exchange(req(response)) }.remove_header(name).map(|_| ()))
    }
}

/// Completes the response with a copy of `body` (`len` bytes; NULL allowed when `len` is 0) as
/// the whole body, with Content-Length. Completing: the handles may be invalid after this returns
/// (see `kestrel_handler_fn`).
#[no_mangle]
pub unsafe extern "C" fn kestrel_response_send(
    response: *mut kestrel_response,
    body: *const u8,
    len: usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(response);
        let Some(body) = (unsafe { bytes(body, len) }) else { return null_argument("body") };
        let body = Bytes::copy_from_slice(body);
        unsafe { complete(req(response), |e| e.send(body)) }
    }
}

/// Frees a zero-copy body: called exactly once with the `userdata` given with it.
pub type kestrel_body_free_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// Host bytes lent to the library until their free callback runs.
struct LentBytes {
    ptr: *const u8,
    len: usize,
    free: kestrel_body_free_fn,
    userdata: *mut c_void,
}

// SAFETY: the host promises the bytes stay valid and unchanged until `free` runs, on any thread.
unsafe impl Send for LentBytes {}

impl AsRef<[u8]> for LentBytes {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: see the Send impl: `len` bytes at `ptr` until `free` runs.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for LentBytes {
    fn drop(&mut self) {
        if let Some(free) = self.free {
            // SAFETY: the host's function, called exactly once.
            unsafe { free(self.userdata) }
        }
    }
}

/// Completes the response with `body` as the whole body, without copying it: the bytes must stay
/// valid and unchanged until `free(userdata)` runs, exactly once, on any thread, when the library
/// is done with them — also when this call fails. `free` may be NULL (static data).
#[no_mangle]
pub unsafe extern "C" fn kestrel_response_send_owned(
    response: *mut kestrel_response,
    body: *const u8,
    len: usize,
    free: kestrel_body_free_fn,
    userdata: *mut c_void,
) -> kestrel_result {
    ffi_panic_boundary! {
        let lent = LentBytes { ptr: body, len, free, userdata };
        check_null!(response);
        if body.is_null() && len > 0 {
            return null_argument("body");
        }
        let body = Bytes::from_owner(lent);
        unsafe { complete(req(response), |e| e.send(body)) }
    }
}

/// Writes body bytes (copied), starting the response (status and headers first) if needed; the
/// body is then sent chunked on HTTP/1.1 unless a Content-Length header was set.
///
/// Backpressure: at most the response buffer size (64 KiB by default) waits unsent. Off I/O
/// threads, a write waits until it fits. On an I/O thread (INLINE mode) it never waits: while the
/// buffer is not full the write is taken whole (the buffer may then exceed its size by this one
/// write); when it is full it returns `KESTREL_WOULD_BLOCK` having written nothing; register
/// `kestrel_response_on_writable` (which uses the same "not full" test) and write again from
/// there. `KESTREL_CANCELLED` once the client
/// went away.
#[no_mangle]
pub unsafe extern "C" fn kestrel_response_write(
    response: *mut kestrel_response,
    data: *const u8,
    len: usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(response);
        let Some(data) = (unsafe { bytes(data, len) }) else { return null_argument("data") };
        // May block; a completion from another thread meanwhile must not free the handle.
        let call = unsafe { CallRef::take(req(response)) };
        result(call.exchange().write(data))
    }
}

/// Runs when a response buffer has room again (or with the error that ended the request).
/// Runs on an I/O thread, or on the caller's thread when there is room already; must not block.
pub type kestrel_writable_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, result: kestrel_result)>;

/// Calls `callback(userdata, KESTREL_OK)` once the response buffer has room (at once, on this
/// thread, if it has), or `callback(userdata, KESTREL_CANCELLED)` if the request is aborted first.
/// Exactly one call, unless this function returns an error.
#[no_mangle]
pub unsafe extern "C" fn kestrel_response_on_writable(
    response: *mut kestrel_response,
    callback: kestrel_writable_fn,
    userdata: *mut c_void,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(response);
        let Some(callback) = callback else { return null_argument("callback") };
        let userdata = SendUserdata(userdata);
        result(unsafe { exchange(req(response)) }.on_writable(Box::new(move |outcome| {
            let userdata = userdata;
            let code = super::result(outcome);
            // SAFETY: the host's callback, called exactly once.
            unsafe { callback(userdata.0, code) };
        })))
    }
}

/// Starts the response if needed and, off I/O threads, waits until every byte written so far
/// was handed to the connection. On an I/O thread it only starts the response.
#[no_mangle]
pub unsafe extern "C" fn kestrel_response_flush(response: *mut kestrel_response) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(response);
        let call = unsafe { CallRef::take(req(response)) };
        result(call.exchange().flush())
    }
}

/// Completes the response: ends a streamed body (trailers follow), or sends the head with an
/// empty body when nothing was written.
#[no_mangle]
pub unsafe extern "C" fn kestrel_response_end(response: *mut kestrel_response) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(response);
        unsafe { complete(req(response), |e| e.end()) }
    }
}

/// Completes the request as failed: a 500 with an empty body when nothing was sent, otherwise the
/// response is cut off (HTTP/1.1 closes the connection, HTTP/2 resets the stream) — after a
/// flush that may happen before the head reached the client.
#[no_mangle]
pub unsafe extern "C" fn kestrel_response_fail(response: *mut kestrel_response) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(response);
        unsafe { complete(req(response), |e| e.fail()) }
    }
}

/// Length meaning "to the end of the file" for `kestrel_response_send_file` and `_send_fd`.
pub const KESTREL_TO_END: u64 = u64::MAX;

fn range_len(length: u64) -> Option<u64> {
    (length != KESTREL_TO_END).then_some(length)
}

/// Completes the response with `length` bytes of the file at `path` (`path_len` bytes, no NUL
/// needed) from `offset` (`KESTREL_TO_END`: the rest of the file), with Content-Length. The file
/// is opened on the calling thread; a missing file or one that is not a regular file returns
/// `KESTREL_IO_ERROR` and a range past the end `KESTREL_INVALID_ARGUMENT`, leaving the response
/// open (send a 404 instead, say). Chunks are read on a small blocking pool as the client takes
/// them (hyper writes from buffers, so no sendfile).
#[no_mangle]
pub unsafe extern "C" fn kestrel_response_send_file(
    response: *mut kestrel_response,
    path: *const u8,
    path_len: usize,
    offset: u64,
    length: u64,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(response, path);
        let Some(path) = (unsafe { bytes(path, path_len) }) else { return null_argument("path") };
        use std::os::unix::ffi::OsStrExt;
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return super::fail(Error::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))),
        };
        unsafe { complete(req(response), |e| e.send_file(file, offset, range_len(length))) }
    }
}

/// Like `kestrel_response_send_file` for an open descriptor of a regular file. The library reads a
/// duplicate of `fd` at explicit offsets: `fd` stays the host's to close at any time, and its file
/// position is never moved, so one descriptor may serve several responses at once.
#[no_mangle]
pub unsafe extern "C" fn kestrel_response_send_fd(
    response: *mut kestrel_response,
    fd: c_int,
    offset: u64,
    length: u64,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(response);
        if fd < 0 {
            return invalid(format!("{fd} is not a file descriptor"));
        }
        // SAFETY: the host promises `fd` is open for the duration of this call; we duplicate it.
        let owned = match unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => return super::fail(Error::Io(e)),
        };
        let file = std::fs::File::from(owned);
        unsafe { complete(req(response), |e| e.send_file(file, offset, range_len(length))) }
    }
}
