//! `kestrel_tls_config`: certificates and TLS settings for `https://` endpoints; the request's
//! TLS session view; certificate reload.

use std::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::options::{kestrel_options, kestrel_protocols, protocols_from};
use super::request::kestrel_request;
use super::server::{kestrel_server, server_ref};
use super::{
    bytes, check_null, copy_out_named, ffi_panic_boundary, invalid, kestrel_result, kestrel_str,
    kestrel_userdata_free_fn, null_argument, result, set_last_error, view_size, write_view,
    Userdata, KESTREL_NOT_FOUND, KESTREL_OK,
};
use crate::tls::{
    CertificateDer, CertificateSelector, CertificateSource, ClientCertificateMode,
    ClientCertificateValidator, ClientHelloInfo, Selection, TlsOptions, TlsVersion,
};

/// TLS settings for one or more `https://` endpoints: certificates (with the SNI names each
/// serves), client certificates, versions, timeouts. Made by `kestrel_tls_config_new`, released by
/// `kestrel_tls_config_free`. The functions that use it (`kestrel_options_add_https_urls`,
/// `kestrel_options_set_https_defaults`) copy it, so the host frees it when it likes. Use from one
/// thread at a time.
pub struct kestrel_tls_config {
    inner: TlsOptions,
}

/// What a client must show (`KESTREL_CLIENT_CERTIFICATE_*`), as Kestrel's `ClientCertificateMode`.
pub type kestrel_client_certificate_mode = u32;
/// The server does not ask for a client certificate. The default.
pub const KESTREL_CLIENT_CERTIFICATE_NONE: kestrel_client_certificate_mode = 0;
/// The server asks; clients without one are served, clients with one that fails the checks are
/// refused.
pub const KESTREL_CLIENT_CERTIFICATE_ALLOW: kestrel_client_certificate_mode = 1;
/// The server refuses clients without a valid certificate.
pub const KESTREL_CLIENT_CERTIFICATE_REQUIRE: kestrel_client_certificate_mode = 2;

/// The lowest accepted TLS version (`KESTREL_TLS_VERSION_*`). TLS 1.0 and 1.1 are never accepted.
pub type kestrel_tls_version = u32;
/// TLS 1.2 and 1.3. The default.
pub const KESTREL_TLS_VERSION_1_2: kestrel_tls_version = 0;
/// TLS 1.3 only.
pub const KESTREL_TLS_VERSION_1_3: kestrel_tls_version = 1;

/// A certificate selector's answer: apply the SNI names, then the default certificate.
pub const KESTREL_SELECT_DEFAULT: i32 = -1;
/// A certificate selector's answer: fail the handshake.
pub const KESTREL_SELECT_REFUSE: i32 = -2;

/// What a certificate selector sees of a client's hello. Versioned like the other views: read
/// only the fields your `size` covers. Valid only during the callback.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct kestrel_client_hello {
    /// The size of this struct as the library built it.
    pub size: usize,
    /// The SNI name the client asked for; empty when it sent none (e.g. it connected by IP).
    pub server_name: kestrel_str,
    /// The client's address (`127.0.0.1:50000`).
    pub remote_addr: kestrel_str,
}

/// Picks the certificate for one handshake: returns the index of a certificate of this config
/// (in the order added, from 0), `KESTREL_SELECT_DEFAULT`, or `KESTREL_SELECT_REFUSE`. Any other
/// value refuses. Runs on a library blocking-task thread (never an I/O thread), possibly on
/// several at once; it may block, but the handshake timeout keeps running.
pub type kestrel_certificate_selector_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, hello: *const kestrel_client_hello) -> i32>;

/// Decides on a client certificate chain after the library's checks passed (or, with no client
/// CA configured, in their place: the library then only checks that the client holds the key).
/// `chain` holds `count` DER certificates, leaf first, valid only during the call. Return true to
/// accept. Runs on a library blocking-task thread once the handshake is done; a refusal closes the
/// connection before any request is read.
pub type kestrel_client_certificate_validator_fn = Option<
    unsafe extern "C" fn(userdata: *mut c_void, chain: *const kestrel_str, count: usize) -> bool,
>;

/// TLS facts of a request's connection. Versioned: set `size` to `sizeof(kestrel_tls_info)`
/// before the call; only what fits is filled. Views are valid as long as the request handle.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct kestrel_tls_info {
    /// Set by the caller: the size of the struct it passes.
    pub size: usize,
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: kestrel_str,
    /// The cipher suite as rustls names it, e.g. `TLS13_AES_128_GCM_SHA256` or
    /// `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`.
    pub cipher_suite: kestrel_str,
    /// The ALPN protocol agreed on (`h2`, `http/1.1`); empty when none.
    pub alpn: kestrel_str,
    /// The SNI name the client sent; empty when none.
    pub server_name: kestrel_str,
    /// The client certificate's subject (`CN=alice, O=Example`); empty without one.
    pub peer_subject: kestrel_str,
    /// The number of certificates the client presented (read each with
    /// `kestrel_request_peer_certificate`).
    pub peer_certificate_count: usize,
}

unsafe fn config_mut<'a>(config: *mut kestrel_tls_config) -> &'a mut TlsOptions {
    // SAFETY: checked non-NULL by the caller; the host promises a live config used by one thread.
    unsafe { &mut (*config).inner }
}

unsafe fn config_ref<'a>(config: *const kestrel_tls_config) -> &'a TlsOptions {
    // SAFETY: as above.
    unsafe { &(*config).inner }
}

/// Reads a UTF-8 argument (`what` names it in the error).
unsafe fn text<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a str, kestrel_result> {
    let Some(raw) = (unsafe { bytes(ptr, len) }) else {
        return Err(null_argument(what));
    };
    std::str::from_utf8(raw).map_err(|_| invalid(format!("{what} is not valid UTF-8")))
}

/// Reads a path argument (any bytes but NUL, as Unix allows).
unsafe fn path(ptr: *const u8, len: usize, what: &str) -> Result<PathBuf, kestrel_result> {
    use std::os::unix::ffi::OsStrExt;
    let Some(raw) = (unsafe { bytes(ptr, len) }) else {
        return Err(null_argument(what));
    };
    if raw.is_empty() || raw.contains(&0) {
        return Err(invalid(format!("{what} is empty or contains NUL")));
    }
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(raw)))
}

/// Adds a certificate source with its `;`-separated SNI names.
unsafe fn add(
    config: *mut kestrel_tls_config,
    source: CertificateSource,
    names: *const u8,
    names_len: usize,
) -> kestrel_result {
    let names = match unsafe { text(names, names_len, "names") } {
        Ok(n) => n,
        Err(code) => return code,
    };
    let names: Vec<&str> = names
        .split(';')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    result(
        unsafe { config_mut(config) }
            .add_certificate(source, &names)
            .map(|_| ()),
    )
}

/// Makes an empty TLS config: no certificate, no client certificates, TLS 1.2 and 1.3, a 10 s
/// handshake timeout, no file watching. On success `*out` owns it.
#[no_mangle]
pub unsafe extern "C" fn kestrel_tls_config_new(
    out: *mut *mut kestrel_tls_config,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(out);
        let config = Box::new(kestrel_tls_config { inner: TlsOptions::new() });
        // SAFETY: checked non-NULL; the host promises a writable pointer.
        unsafe { *out = Box::into_raw(config) };
        KESTREL_OK
    }
}

/// Releases a TLS config (and its callbacks' userdata, unless an options handle or server still
/// holds a copy: then when the last copy goes). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn kestrel_tls_config_free(config: *mut kestrel_tls_config) {
    ffi_panic_boundary! {
        if !config.is_null() {
            // SAFETY: made by kestrel_tls_config_new, not freed before (host contract).
            drop(unsafe { Box::from_raw(config) });
        }
    }
}

/// Adds a certificate from PEM files: `cert_path` holds the chain, leaf first; `key_path` the
/// private key (PKCS#8, PKCS#1 RSA or SEC1 EC; RSA, ECDSA P-256/P-384 or Ed25519; not encrypted).
/// They may name the same file. `names` (`names_len` bytes, may be NULL when 0) lists the SNI names
/// it serves, `;`-separated, exact (`api.example.com`) or wildcard (`*.example.com`, one label);
/// no names makes it the default certificate (at most one). Paths are bytes, no NUL needed. The
/// files are read at start (and on reload): a missing or bad file, or a key that does not match
/// its certificate, then fails the start with `KESTREL_TLS_ERROR`. `KESTREL_INVALID_ARGUMENT` for
/// a bad name or a second default.
#[no_mangle]
pub unsafe extern "C" fn kestrel_tls_config_add_pem_files(
    config: *mut kestrel_tls_config,
    cert_path: *const u8,
    cert_path_len: usize,
    key_path: *const u8,
    key_path_len: usize,
    names: *const u8,
    names_len: usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(config);
        let cert = match unsafe { path(cert_path, cert_path_len, "cert_path") } { Ok(p) => p, Err(c) => return c };
        let key = match unsafe { path(key_path, key_path_len, "key_path") } { Ok(p) => p, Err(c) => return c };
        unsafe { add(config, CertificateSource::PemFiles { cert, key }, names, names_len) }
    }
}

/// Adds a certificate from PEM text in memory (copied): `cert_pem` the chain, `key_pem` the key;
/// otherwise as `kestrel_tls_config_add_pem_files`. Checked at start.
#[no_mangle]
pub unsafe extern "C" fn kestrel_tls_config_add_pem(
    config: *mut kestrel_tls_config,
    cert_pem: *const u8,
    cert_pem_len: usize,
    key_pem: *const u8,
    key_pem_len: usize,
    names: *const u8,
    names_len: usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(config, cert_pem, key_pem);
        let (Some(cert), Some(key)) = (unsafe { bytes(cert_pem, cert_pem_len) }, unsafe { bytes(key_pem, key_pem_len) }) else {
            return null_argument("cert_pem");
        };
        let source = CertificateSource::Pem { cert: cert.to_vec(), key: key.to_vec() };
        unsafe { add(config, source, names, names_len) }
    }
}

/// Adds a certificate and key from a PKCS#12 (`.pfx`/`.p12`) file with its `password` (UTF-8,
/// may be empty), as Kestrel accepts; otherwise as `kestrel_tls_config_add_pem_files`. A wrong
/// password fails the start with `KESTREL_TLS_ERROR` saying so.
#[no_mangle]
pub unsafe extern "C" fn kestrel_tls_config_add_pkcs12_file(
    config: *mut kestrel_tls_config,
    pfx_path: *const u8,
    pfx_path_len: usize,
    password: *const u8,
    password_len: usize,
    names: *const u8,
    names_len: usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(config);
        let path = match unsafe { path(pfx_path, pfx_path_len, "pfx_path") } { Ok(p) => p, Err(c) => return c };
        let password = match unsafe { text(password, password_len, "password") } { Ok(p) => p.to_owned(), Err(c) => return c };
        unsafe { add(config, CertificateSource::Pkcs12File { path, password }, names, names_len) }
    }
}

struct CSelector {
    callback: unsafe extern "C" fn(*mut c_void, *const kestrel_client_hello) -> i32,
    userdata: Userdata,
}

impl CertificateSelector for CSelector {
    fn select(&self, hello: &ClientHelloInfo<'_>) -> Selection {
        let view = kestrel_client_hello {
            size: std::mem::size_of::<kestrel_client_hello>(),
            server_name: kestrel_str::from_bytes(hello.server_name.unwrap_or("").as_bytes()),
            remote_addr: kestrel_str::from_bytes(hello.remote.as_bytes()),
        };
        // SAFETY: the host's callback with its userdata; the view lives for the call.
        let answer = unsafe { (self.callback)(self.userdata.get(), &view) };
        match answer {
            KESTREL_SELECT_DEFAULT => Selection::Default,
            i if i >= 0 => Selection::Certificate(i as usize),
            _ => Selection::Refuse,
        }
    }
}

/// Installs a callback that picks the certificate for each handshake (see
/// `kestrel_certificate_selector_fn`); it replaces a previous one. `userdata_free` (may be NULL) is
/// called once with `userdata` when no copy of this config needs it any more, also when this call
/// fails.
#[no_mangle]
pub unsafe extern "C" fn kestrel_tls_config_set_certificate_selector(
    config: *mut kestrel_tls_config,
    selector: kestrel_certificate_selector_fn,
    userdata: *mut c_void,
    userdata_free: kestrel_userdata_free_fn,
) -> kestrel_result {
    ffi_panic_boundary! {
        let userdata = Userdata::new(userdata, userdata_free);
        check_null!(config);
        let Some(callback) = selector else { return null_argument("selector") };
        unsafe { config_mut(config) }.certificate_selector(Arc::new(CSelector { callback, userdata }));
        KESTREL_OK
    }
}

/// Sets what clients must show (`KESTREL_CLIENT_CERTIFICATE_*`). ALLOW and REQUIRE need trust
/// anchors (`kestrel_tls_config_set_client_ca_*`) or a validator, else the start fails with
/// `KESTREL_TLS_ERROR`. With a CA, untrusted, expired or not-yet-valid certificates are refused in
/// the handshake.
#[no_mangle]
pub unsafe extern "C" fn kestrel_tls_config_set_client_certificate_mode(
    config: *mut kestrel_tls_config,
    mode: kestrel_client_certificate_mode,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(config);
        let mode = match mode {
            KESTREL_CLIENT_CERTIFICATE_NONE => ClientCertificateMode::NoCertificate,
            KESTREL_CLIENT_CERTIFICATE_ALLOW => ClientCertificateMode::AllowCertificate,
            KESTREL_CLIENT_CERTIFICATE_REQUIRE => ClientCertificateMode::RequireCertificate,
            other => return invalid(format!("{other} is not a KESTREL_CLIENT_CERTIFICATE_* value")),
        };
        unsafe { config_mut(config) }.client_certificate_mode(mode);
        KESTREL_OK
    }
}

/// Trusts client certificates issued by the CA certificates in this PEM file (read at start).
#[no_mangle]
pub unsafe extern "C" fn kestrel_tls_config_set_client_ca_file(
    config: *mut kestrel_tls_config,
    ca_path: *const u8,
    ca_path_len: usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(config);
        let ca = match unsafe { path(ca_path, ca_path_len, "ca_path") } { Ok(p) => p, Err(c) => return c };
        unsafe { config_mut(config) }.client_ca_file(ca);
        KESTREL_OK
    }
}

/// Trusts client certificates issued by the CA certificates in this PEM text (copied).
#[no_mangle]
pub unsafe extern "C" fn kestrel_tls_config_set_client_ca_pem(
    config: *mut kestrel_tls_config,
    ca_pem: *const u8,
    ca_pem_len: usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(config, ca_pem);
        let Some(pem) = (unsafe { bytes(ca_pem, ca_pem_len) }) else { return null_argument("ca_pem") };
        unsafe { config_mut(config) }.client_ca_pem(pem.to_vec());
        KESTREL_OK
    }
}

struct CValidator {
    callback: unsafe extern "C" fn(*mut c_void, *const kestrel_str, usize) -> bool,
    userdata: Userdata,
}

impl ClientCertificateValidator for CValidator {
    fn validate(&self, chain: &[CertificateDer<'static>]) -> bool {
        let views: Vec<kestrel_str> = chain.iter().map(|c| kestrel_str::from_bytes(c)).collect();
        // SAFETY: the host's callback with its userdata; the views live for the call.
        unsafe { (self.callback)(self.userdata.get(), views.as_ptr(), views.len()) }
    }
}

/// Installs a callback with the last word on client certificates (see
/// `kestrel_client_certificate_validator_fn`); it replaces a previous one. `userdata_free` as for
/// the selector.
#[no_mangle]
pub unsafe extern "C" fn kestrel_tls_config_set_client_certificate_validator(
    config: *mut kestrel_tls_config,
    validator: kestrel_client_certificate_validator_fn,
    userdata: *mut c_void,
    userdata_free: kestrel_userdata_free_fn,
) -> kestrel_result {
    ffi_panic_boundary! {
        let userdata = Userdata::new(userdata, userdata_free);
        check_null!(config);
        let Some(callback) = validator else { return null_argument("validator") };
        unsafe { config_mut(config) }.client_certificate_validator(Arc::new(CValidator { callback, userdata }));
        KESTREL_OK
    }
}

/// Sets the lowest accepted TLS version (`KESTREL_TLS_VERSION_*`).
#[no_mangle]
pub unsafe extern "C" fn kestrel_tls_config_set_min_version(
    config: *mut kestrel_tls_config,
    version: kestrel_tls_version,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(config);
        let version = match version {
            KESTREL_TLS_VERSION_1_2 => TlsVersion::Tls12,
            KESTREL_TLS_VERSION_1_3 => TlsVersion::Tls13,
            other => return invalid(format!("{other} is not a KESTREL_TLS_VERSION_* value")),
        };
        unsafe { config_mut(config) }.min_version(version);
        KESTREL_OK
    }
}

/// Sets how long a client may take to complete its TLS handshake, in milliseconds (default
/// 10,000; 0 is invalid). A client that takes longer is disconnected.
#[no_mangle]
pub unsafe extern "C" fn kestrel_tls_config_set_handshake_timeout(
    config: *mut kestrel_tls_config,
    timeout_ms: u64,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(config);
        result(unsafe { config_mut(config) }.handshake_timeout(Duration::from_millis(timeout_ms)).map(|_| ()))
    }
}

/// Watches the certificate files: every `interval_ms` milliseconds (at least 10) their metadata is
/// checked, and when it changed the endpoint's certificates are reloaded (new connections get them;
/// open ones keep theirs; a failed reload is logged and changes nothing). 0 turns watching off (the
/// default).
#[no_mangle]
pub unsafe extern "C" fn kestrel_tls_config_set_watch_interval(
    config: *mut kestrel_tls_config,
    interval_ms: u64,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(config);
        let interval = (interval_ms > 0).then(|| Duration::from_millis(interval_ms));
        result(unsafe { config_mut(config) }.watch_interval(interval).map(|_| ()))
    }
}

/// Adds `https://` endpoints (`;`-separated URLs, as for `kestrel_options_add_urls`) served with
/// a copy of `config`. `http://` URLs are refused here (`KESTREL_INVALID_URL`). `config` stays the
/// host's.
#[no_mangle]
pub unsafe extern "C" fn kestrel_options_add_https_urls(
    options: *mut kestrel_options,
    urls: *const u8,
    len: usize,
    protocols: kestrel_protocols,
    config: *const kestrel_tls_config,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(options, config);
        let urls = match unsafe { text(urls, len, "urls") } { Ok(u) => u, Err(c) => return c };
        let Some(protocols) = protocols_from(protocols) else {
            return invalid(format!("{protocols} is not a KESTREL_PROTOCOLS_* value"));
        };
        let tls = unsafe { config_ref(config) }.clone();
        result(unsafe { super::options::options_mut(options) }.add_https_urls(urls, protocols, tls).map(|_| ()))
    }
}

/// Uses a copy of `config` for every `https://` endpoint added without its own (with
/// `kestrel_options_add_urls`), like Kestrel's `ConfigureHttpsDefaults`. `config` stays the host's.
#[no_mangle]
pub unsafe extern "C" fn kestrel_options_set_https_defaults(
    options: *mut kestrel_options,
    config: *const kestrel_tls_config,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(options, config);
        let tls = unsafe { config_ref(config) }.clone();
        unsafe { super::options::options_mut(options) }.https_defaults(tls);
        KESTREL_OK
    }
}

/// Whether an `https://localhost` (or loopback IP) endpoint with no certificate configured
/// serves an in-memory self-signed development certificate (default true). It covers
/// `localhost`, `127.0.0.1` and `::1`, refuses other SNI names, and its SHA-256 fingerprint is
/// logged as a warning at start. False: such an endpoint fails the start with `KESTREL_TLS_ERROR`.
#[no_mangle]
pub unsafe extern "C" fn kestrel_options_set_dev_certificate(
    options: *mut kestrel_options,
    enabled: bool,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(options);
        unsafe { super::options::options_mut(options) }.dev_certificate(enabled);
        KESTREL_OK
    }
}

/// Reads every https endpoint's certificate files again; new connections get the new
/// certificates, open connections keep theirs. All or nothing: on `KESTREL_TLS_ERROR` (the message
/// names the file) every endpoint keeps its current certificates. `KESTREL_INVALID_STATE` when the
/// server is not running. Blocks while reading the files.
#[no_mangle]
pub unsafe extern "C" fn kestrel_server_reload_certificates(
    server: *const kestrel_server,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(server);
        result(unsafe { server_ref(server) }.reload_certificates())
    }
}

/// Copies the development certificate (PEM, NUL-terminated) into `buf` (`len` bytes), so a client
/// can trust it; `*written` (may be NULL) gets its full length without the NUL.
/// `KESTREL_BUFFER_TOO_SMALL` when truncated; `KESTREL_NOT_FOUND` when the running server serves
/// none.
#[no_mangle]
pub unsafe extern "C" fn kestrel_server_dev_certificate_pem(
    server: *const kestrel_server,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(server, buf);
        match unsafe { server_ref(server) }.dev_certificate() {
            Some(dev) => unsafe { copy_out_named("the certificate", dev.pem().as_bytes(), buf, len, written) },
            None => {
                set_last_error("the server serves no development certificate".into());
                KESTREL_NOT_FOUND
            }
        }
    }
}

/// Fills `info` with the TLS facts of the request's connection (set `info->size` first; views
/// valid as long as the request handle). `KESTREL_NOT_FOUND` on a cleartext connection.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_get_tls(
    request: *const kestrel_request,
    info: *mut kestrel_tls_info,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(request, info);
        let caller_size = match unsafe { view_size(info, "info", "kestrel_tls_info") } {
            Ok(size) => size,
            Err(code) => return code,
        };
        let exchange = unsafe { super::request::exchange_of(request) };
        let Some(tls) = exchange.request().connection().tls() else {
            set_last_error("the request did not come over TLS".into());
            return KESTREL_NOT_FOUND;
        };
        let view = |s: Option<&str>| kestrel_str::from_bytes(s.unwrap_or("").as_bytes());
        let full = kestrel_tls_info {
            size: caller_size,
            version: view(Some(tls.version())),
            cipher_suite: view(Some(tls.cipher_suite())),
            alpn: view(tls.alpn()),
            server_name: view(tls.server_name()),
            peer_subject: view(tls.peer_subject()),
            peer_certificate_count: tls.peer_certificates().len(),
        };
        unsafe { write_view(info, &full, caller_size) };
        KESTREL_OK
    }
}

/// Sets `*der` to the client's certificate at `index` (0 is the leaf), DER bytes valid as long as
/// the request handle. `KESTREL_NOT_FOUND` past the last one or on a cleartext connection.
#[no_mangle]
pub unsafe extern "C" fn kestrel_request_peer_certificate(
    request: *const kestrel_request,
    index: usize,
    der: *mut kestrel_str,
) -> kestrel_result {
    ffi_panic_boundary! {
        check_null!(request, der);
        let exchange = unsafe { super::request::exchange_of(request) };
        let chain = exchange.request().connection().tls().map(|t| t.peer_certificates()).unwrap_or(&[]);
        match chain.get(index) {
            Some(cert) => {
                // SAFETY: checked non-NULL; the caller promises a writable kestrel_str.
                unsafe { *der = kestrel_str::from_bytes(cert) };
                KESTREL_OK
            }
            None => {
                set_last_error(format!("no client certificate at index {index} ({} presented)", chain.len()));
                KESTREL_NOT_FOUND
            }
        }
    }
}
