//! The C API: a thin layer that checks arguments, converts C types to core types, calls the core
//! and maps results to codes. No HTTP logic lives here.
//!
//! Conventions (see `include/kestrel.h` and the design note): opaque handles; `kestrel_result`
//! codes with the detail in a thread-local message; every export catches panics; every pointer is
//! NULL-checked; strings in are pointer + length, strings out are `kestrel_str` views whose
//! lifetime each function states.

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{c_char, c_void};

use crate::error::Error;

pub mod options;
pub mod request;
pub mod response;
pub mod server;
pub mod tls;

/// A result code. `KESTREL_OK` (0) is success; every other value names a failure, with details
/// from `kestrel_last_error` on the same thread. Codes are stable and never reused.
pub type kestrel_result = u32;

/// Success.
pub const KESTREL_OK: kestrel_result = 0;
/// A Rust panic was caught at the API boundary; the object involved may be unusable.
pub const KESTREL_PANIC: kestrel_result = 1;
/// A required pointer or callback argument was NULL.
pub const KESTREL_NULL_ARGUMENT: kestrel_result = 2;
/// An argument was out of range or unusable.
pub const KESTREL_INVALID_ARGUMENT: kestrel_result = 3;
/// An endpoint URL could not be parsed.
pub const KESTREL_INVALID_URL: kestrel_result = 4;
/// A header name or value contains forbidden bytes (CR, LF, NUL...).
pub const KESTREL_INVALID_HEADER: kestrel_result = 5;
/// An endpoint could not be bound; nothing stays bound.
pub const KESTREL_BIND_FAILED: kestrel_result = 6;
/// The call does not fit the object's state (started twice, header after the head was sent...).
pub const KESTREL_INVALID_STATE: kestrel_result = 7;
/// The response was already completed.
pub const KESTREL_ALREADY_COMPLETED: kestrel_result = 8;
/// The request was aborted (client gone or server stopped).
pub const KESTREL_CANCELLED: kestrel_result = 9;
/// The call would block an I/O thread (INLINE mode); use the asynchronous form.
pub const KESTREL_WOULD_BLOCK: kestrel_result = 10;
/// Waiting timed out.
pub const KESTREL_TIMEOUT: kestrel_result = 11;
/// The server is stopped or stopping.
pub const KESTREL_STOPPED: kestrel_result = 12;
/// An I/O error (opening a file, starting a thread...).
pub const KESTREL_IO_ERROR: kestrel_result = 13;
/// The output buffer was too small; the output was truncated.
pub const KESTREL_BUFFER_TOO_SMALL: kestrel_result = 14;
/// The thing asked for does not exist (a header, an address index).
pub const KESTREL_NOT_FOUND: kestrel_result = 15;
/// A certificate, key or TLS setting is unusable (unreadable or malformed file, wrong PKCS#12
/// password, a key that does not match its certificate, an https endpoint without certificate).
pub const KESTREL_TLS_ERROR: kestrel_result = 16;

/// A view of bytes owned by the library: `len` bytes at `ptr`, not NUL-terminated. Each function
/// returning one says how long it stays valid. `ptr` is never NULL (an empty view points to a
/// static empty string).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct kestrel_str {
    /// The first byte.
    pub ptr: *const c_char,
    /// The number of bytes.
    pub len: usize,
}

impl kestrel_str {
    pub(crate) fn from_bytes(bytes: &[u8]) -> kestrel_str {
        if bytes.is_empty() {
            return kestrel_str::empty();
        }
        kestrel_str {
            ptr: bytes.as_ptr().cast(),
            len: bytes.len(),
        }
    }

    pub(crate) fn empty() -> kestrel_str {
        kestrel_str {
            ptr: c"".as_ptr(),
            len: 0,
        }
    }
}

/// Called exactly once with a registration's `userdata` when the library no longer needs it.
pub type kestrel_userdata_free_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// A host pointer with its release function; released when dropped.
pub(crate) struct Userdata {
    ptr: *mut c_void,
    free: kestrel_userdata_free_fn,
}

// SAFETY: the header documents that userdata may be used from any library thread; making it safe
// to do so is the host's side of the contract.
unsafe impl Send for Userdata {}
unsafe impl Sync for Userdata {}

impl Userdata {
    pub(crate) fn new(ptr: *mut c_void, free: kestrel_userdata_free_fn) -> Self {
        Userdata { ptr, free }
    }

    pub(crate) fn get(&self) -> *mut c_void {
        self.ptr
    }
}

impl Drop for Userdata {
    fn drop(&mut self) {
        if let Some(free) = self.free {
            // SAFETY: `free` is the host's function for its own pointer, called exactly once.
            unsafe { free(self.ptr) }
        }
    }
}

/// A host pointer moved into a completion callback that runs on another thread.
pub(crate) struct SendUserdata(pub(crate) *mut c_void);

// SAFETY: the header documents that callback userdata may be used on the library's threads;
// making that safe is the host's side of the contract.
unsafe impl Send for SendUserdata {}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(crate) fn set_last_error(message: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// Records `message` and returns `KESTREL_INVALID_ARGUMENT`.
pub(crate) fn invalid(message: String) -> kestrel_result {
    set_last_error(message);
    KESTREL_INVALID_ARGUMENT
}

/// The `size` a host set at the start of a versioned view struct (`name` is the argument,
/// `type_name` the C type, for the message). Every view starts with a `size_t size`.
///
/// # Safety
/// `view` must be non-NULL and point to at least a readable `size_t`.
pub(crate) unsafe fn view_size<T>(
    view: *const T,
    name: &str,
    type_name: &str,
) -> Result<usize, kestrel_result> {
    // SAFETY: the caller's promise; the size field comes first.
    let size = unsafe { *view.cast::<usize>() };
    if size < std::mem::size_of::<usize>() {
        return Err(invalid(format!(
            "{name}->size is {size}; set it to sizeof({type_name})"
        )));
    }
    Ok(size)
}

/// Copies the fields of `full` that fit in the host's `size` bytes at `out`, so a host built
/// against an older, shorter struct keeps working.
///
/// # Safety
/// `out` must point to `size` writable bytes.
pub(crate) unsafe fn write_view<T: Copy>(out: *mut T, full: &T, size: usize) {
    let n = size.min(std::mem::size_of::<T>());
    // SAFETY: at most `size` bytes, which the caller promises are writable.
    unsafe { std::ptr::copy_nonoverlapping((full as *const T).cast::<u8>(), out.cast::<u8>(), n) };
}

/// Records the error's text and returns its code.
pub(crate) fn fail(error: Error) -> kestrel_result {
    let code = match &error {
        Error::InvalidArgument(_) => KESTREL_INVALID_ARGUMENT,
        Error::InvalidUrl(_) => KESTREL_INVALID_URL,
        Error::InvalidHeader(_) => KESTREL_INVALID_HEADER,
        Error::Bind { .. } => KESTREL_BIND_FAILED,
        Error::InvalidState(_) => KESTREL_INVALID_STATE,
        Error::AlreadyCompleted => KESTREL_ALREADY_COMPLETED,
        Error::Cancelled => KESTREL_CANCELLED,
        Error::WouldBlock => KESTREL_WOULD_BLOCK,
        Error::Timeout => KESTREL_TIMEOUT,
        Error::Stopped => KESTREL_STOPPED,
        Error::Io(_) => KESTREL_IO_ERROR,
        Error::Tls(_) => KESTREL_TLS_ERROR,
    };
    set_last_error(error.to_string());
    code
}

/// Maps a core result to a code.
pub(crate) fn result(r: crate::Result<()>) -> kestrel_result {
    match r {
        Ok(()) => KESTREL_OK,
        Err(e) => fail(e),
    }
}

pub(crate) fn null_argument(name: &str) -> kestrel_result {
    set_last_error(format!("the argument `{name}` must not be NULL"));
    KESTREL_NULL_ARGUMENT
}

/// The value an export returns when it caught a panic.
pub(crate) trait PanicValue {
    fn panic_value() -> Self;
}

impl PanicValue for kestrel_result {
    fn panic_value() -> Self {
        KESTREL_PANIC
    }
}
impl PanicValue for () {
    fn panic_value() -> Self {}
}
impl PanicValue for bool {
    fn panic_value() -> Self {
        false
    }
}
impl PanicValue for usize {
    fn panic_value() -> Self {
        0
    }
}
impl PanicValue for u64 {
    fn panic_value() -> Self {
        0
    }
}
impl PanicValue for kestrel_str {
    fn panic_value() -> Self {
        kestrel_str::empty()
    }
}
impl<T> PanicValue for *mut T {
    fn panic_value() -> Self {
        std::ptr::null_mut()
    }
}
impl<T> PanicValue for *const T {
    fn panic_value() -> Self {
        std::ptr::null()
    }
}

/// Runs an export's body, turning a panic into the function's neutral value (and
/// `KESTREL_PANIC` for results). A panic must never unwind into the host.
macro_rules! ffi_panic_boundary {
    ($($body:tt)*) => {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| { $($body)* })) {
            Ok(value) => value,
            Err(_) => {
                $crate::ffi::set_last_error("a panic was caught at the kestrel API boundary".to_string());
                $crate::ffi::PanicValue::panic_value()
            }
        }
    };
}
pub(crate) use ffi_panic_boundary;

/// Returns `KESTREL_NULL_ARGUMENT` from the enclosing function when a pointer is NULL.
macro_rules! check_null {
    ($($arg:ident),+) => {
        $(if $arg.is_null() {
            return $crate::ffi::null_argument(stringify!($arg));
        })+
    };
}
pub(crate) use check_null;

/// Borrows `len` bytes at `ptr`; a NULL `ptr` is allowed only with `len == 0`.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller promises `len` readable bytes at `ptr` for the call's duration.
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Copies `text` into a host buffer of `len` bytes: as much as fits, always NUL-terminated when
/// `len > 0`. `written` gets the full length of `text` (NUL excluded), so a host that got
/// `KESTREL_BUFFER_TOO_SMALL` can retry with `written + 1` bytes. Leaves the last error alone (the
/// caller may be reading it).
pub(crate) unsafe fn copy_out(
    text: &[u8],
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> kestrel_result {
    let room = len.saturating_sub(1);
    let n = text.len().min(room);
    if len > 0 {
        // SAFETY: the caller promises `len` writable bytes at `buf`; we write at most `len`.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    if !written.is_null() {
        // SAFETY: checked non-NULL; the caller promises it points to a size_t.
        unsafe { *written = text.len() };
    }
    if n < text.len() {
        return KESTREL_BUFFER_TOO_SMALL;
    }
    KESTREL_OK
}

/// [`copy_out`] for API outputs (not the last-error text itself): a truncation also records why,
/// naming `what` was copied.
///
/// # Safety
/// As for [`copy_out`].
pub(crate) unsafe fn copy_out_named(
    what: &str,
    text: &[u8],
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> kestrel_result {
    // SAFETY: the caller's promises, passed on.
    let code = unsafe { copy_out(text, buf, len, written) };
    if code != KESTREL_OK {
        set_last_error(format!(
            "{what} needs {} bytes plus NUL; the buffer has {len}",
            text.len()
        ));
    }
    code
}

/// The library version, e.g. `"0.1.0"`: a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn kestrel_version() -> *const c_char {
    static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

/// The name of a result code (`"KESTREL_OK"`...), or `"KESTREL_UNKNOWN"`: a static
/// NUL-terminated string.
#[no_mangle]
pub extern "C" fn kestrel_result_name(result: kestrel_result) -> *const c_char {
    let name: &'static std::ffi::CStr = match result {
        KESTREL_OK => c"KESTREL_OK",
        KESTREL_PANIC => c"KESTREL_PANIC",
        KESTREL_NULL_ARGUMENT => c"KESTREL_NULL_ARGUMENT",
        KESTREL_INVALID_ARGUMENT => c"KESTREL_INVALID_ARGUMENT",
        KESTREL_INVALID_URL => c"KESTREL_INVALID_URL",
        KESTREL_INVALID_HEADER => c"KESTREL_INVALID_HEADER",
        KESTREL_BIND_FAILED => c"KESTREL_BIND_FAILED",
        KESTREL_INVALID_STATE => c"KESTREL_INVALID_STATE",
        KESTREL_ALREADY_COMPLETED => c"KESTREL_ALREADY_COMPLETED",
        KESTREL_CANCELLED => c"KESTREL_CANCELLED",
        KESTREL_WOULD_BLOCK => c"KESTREL_WOULD_BLOCK",
        KESTREL_TIMEOUT => c"KESTREL_TIMEOUT",
        KESTREL_STOPPED => c"KESTREL_STOPPED",
        KESTREL_IO_ERROR => c"KESTREL_IO_ERROR",
        KESTREL_BUFFER_TOO_SMALL => c"KESTREL_BUFFER_TOO_SMALL",
        KESTREL_NOT_FOUND => c"KESTREL_NOT_FOUND",
        KESTREL_TLS_ERROR => c"KESTREL_TLS_ERROR",
        _ => c"KESTREL_UNKNOWN",
    };
    name.as_ptr()
}

/// Copies the message of the last failed call on this thread into `buf` (`len` bytes): as much as
/// fits, NUL-terminated. `written` (may be NULL) gets the message's full length without the NUL.
/// Returns `KESTREL_BUFFER_TOO_SMALL` when the message was truncated (retry with `written + 1`
/// bytes). `buf` may be NULL when `len` is 0, to ask for the length only. The message stays until
/// the next failing call on this thread; this call never changes it.
#[no_mangle]
pub unsafe extern "C" fn kestrel_last_error(
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        let message = LAST_ERROR.with(|e| e.borrow().clone());
        if buf.is_null() {
            // Asking only for the length is allowed; the message itself stays untouched.
            if len != 0 {
                return KESTREL_NULL_ARGUMENT;
            }
            if !written.is_null() {
                // SAFETY: checked non-NULL; the caller promises it points to a size_t.
                unsafe { *written = message.len() };
            }
            return if message.is_empty() { KESTREL_OK } else { KESTREL_BUFFER_TOO_SMALL };
        }
        unsafe { copy_out(message.as_bytes(), buf, len, written) }
    }
}
