/*
 * test_api.c: the parts of the C API that need no connection: version, result names, the
 * last-error text, NULL arguments for every function, option validation, and who frees what
 * (userdata of unconsumed options, options consumed by kestrel_server_new on every path).
 */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- callbacks that only count ------------------------------------------------------------- */

static void count_call(void *userdata) { atomic_inc(&((counter *)userdata)->calls); }
static void count_log(void *userdata, kestrel_log_level level, kestrel_str category, kestrel_str message) {
    (void)level;
    (void)category;
    (void)message;
    atomic_inc(&((counter *)userdata)->calls);
}
static kestrel_result never_called(void *userdata, kestrel_request *req, kestrel_response *res) {
    (void)req;
    (void)res;
    if (userdata) atomic_inc(&((counter *)userdata)->calls);
    return KESTREL_OK;
}
static void read_cb(void *userdata, kestrel_result result, size_t read) {
    (void)userdata;
    (void)result;
    (void)read;
}
static void writable_cb(void *userdata, kestrel_result result) {
    (void)userdata;
    (void)result;
}

/* ---- version and result names -------------------------------------------------------------- */

#define CHECK_NAME(code) CHECK(strcmp(kestrel_result_name(code), #code) == 0)

static void test_version_and_names(void) {
    const char *version = kestrel_version();
    REQUIRE(version != NULL);
    CHECK(strcmp(version, KESTREL_VERSION_STRING) == 0);
    char expected[64];
    snprintf(expected, sizeof expected, "%d.%d.%d", KESTREL_VERSION_MAJOR, KESTREL_VERSION_MINOR, KESTREL_VERSION_PATCH);
    CHECK(strncmp(version, expected, strlen(expected)) == 0);
    CHECK(version[strlen(expected)] == '\0' || version[strlen(expected)] == '-');
    CHECK(kestrel_version() == version); /* static */

    CHECK_NAME(KESTREL_OK);
    CHECK_NAME(KESTREL_PANIC);
    CHECK_NAME(KESTREL_NULL_ARGUMENT);
    CHECK_NAME(KESTREL_INVALID_ARGUMENT);
    CHECK_NAME(KESTREL_INVALID_URL);
    CHECK_NAME(KESTREL_INVALID_HEADER);
    CHECK_NAME(KESTREL_BIND_FAILED);
    CHECK_NAME(KESTREL_INVALID_STATE);
    CHECK_NAME(KESTREL_ALREADY_COMPLETED);
    CHECK_NAME(KESTREL_CANCELLED);
    CHECK_NAME(KESTREL_WOULD_BLOCK);
    CHECK_NAME(KESTREL_TIMEOUT);
    CHECK_NAME(KESTREL_STOPPED);
    CHECK_NAME(KESTREL_IO_ERROR);
    CHECK_NAME(KESTREL_BUFFER_TOO_SMALL);
    CHECK_NAME(KESTREL_NOT_FOUND);
    CHECK_NAME(KESTREL_TLS_ERROR);
    /* Stable numbers (never reused). */
    CHECK(KESTREL_OK == 0 && KESTREL_PANIC == 1 && KESTREL_NULL_ARGUMENT == 2 && KESTREL_NOT_FOUND == 15);
    CHECK(KESTREL_TLS_ERROR == 16);
    CHECK(strcmp(kestrel_result_name(17), "KESTREL_UNKNOWN") == 0);
    CHECK(strcmp(kestrel_result_name(0xFFFFFFFFu), "KESTREL_UNKNOWN") == 0);
}

/* ---- last error ---------------------------------------------------------------------------- */

static void *other_thread_fails(void *arg) {
    (void)arg;
    /* A failure on another thread must not change the main thread's message. */
    kestrel_options_set_io_threads(NULL, 1);
    char message[256];
    CHECK(strstr(last_error(message, sizeof message), "options") != NULL);
    return NULL;
}

static void test_last_error(void) {
    char buf[256];
    size_t written = 12345;
    /* Nothing failed on this thread yet: an empty message. */
    CHECK_RC(kestrel_last_error(buf, sizeof buf, &written), KESTREL_OK);
    CHECK(written == 0 && buf[0] == '\0');

    CHECK_RC(kestrel_options_set_dispatch(NULL, KESTREL_DISPATCH_POOL), KESTREL_NULL_ARGUMENT);
    written = 0;
    CHECK_RC(kestrel_last_error(buf, sizeof buf, &written), KESTREL_OK);
    CHECK(written > 0 && written == strlen(buf));
    CHECK(strstr(buf, "options") != NULL); /* names the argument */
    size_t full = written;

    /* written may be NULL. */
    CHECK_RC(kestrel_last_error(buf, sizeof buf, NULL), KESTREL_OK);
    CHECK(strlen(buf) == full);

    /* Truncated: NUL-terminated prefix, KESTREL_BUFFER_TOO_SMALL, and the message itself stays
     * (so the host can retry with a bigger buffer). */
    char small[5];
    memset(small, 'x', sizeof small);
    written = 0;
    CHECK_RC(kestrel_last_error(small, sizeof small, &written), KESTREL_BUFFER_TOO_SMALL);
    CHECK(small[4] == '\0' && strncmp(small, buf, 4) == 0);
    CHECK(written == full); /* the full length: retry with written + 1 bytes */
    char again[256];
    CHECK(strcmp(last_error(again, sizeof again), buf) == 0);
    /* Zero length: nothing written, the length still reported. */
    small[0] = 'y';
    written = 0;
    CHECK_RC(kestrel_last_error(small, 0, &written), KESTREL_BUFFER_TOO_SMALL);
    CHECK(small[0] == 'y' && written == full);
    /* A NULL buffer with length 0 asks for the length only; with a length it is refused. Neither
     * changes the message. */
    written = 0;
    CHECK_RC(kestrel_last_error(NULL, 0, &written), KESTREL_BUFFER_TOO_SMALL);
    CHECK(written == full);
    CHECK_RC(kestrel_last_error(NULL, 8, &written), KESTREL_NULL_ARGUMENT);
    CHECK(strcmp(last_error(again, sizeof again), buf) == 0);
    /* Whatever happened above, start again from a known message. */
    CHECK_RC(kestrel_options_set_dispatch(NULL, KESTREL_DISPATCH_POOL), KESTREL_NULL_ARGUMENT);
    CHECK_RC(kestrel_last_error(buf, sizeof buf, NULL), KESTREL_OK);

    /* A successful call keeps the message. */
    kestrel_options *options = NULL;
    CHECK_RC(kestrel_options_new(&options), KESTREL_OK);
    CHECK_RC(kestrel_options_set_io_threads(options, 2), KESTREL_OK);
    CHECK(strcmp(last_error(again, sizeof again), buf) == 0);
    kestrel_options_free(options);

    /* Thread-local. */
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, other_thread_fails, NULL) == 0);
    pthread_join(thread, NULL);
    CHECK(strcmp(last_error(again, sizeof again), buf) == 0);

    /* buf NULL with a length: refused, and (like every call of this function) the message
     * stays. */
    CHECK_RC(kestrel_last_error(NULL, 10, &written), KESTREL_NULL_ARGUMENT);
    CHECK(strcmp(last_error(again, sizeof again), buf) == 0);
}

/* ---- NULL arguments everywhere ------------------------------------------------------------- */

/* A NULL request gives an empty view (never a NULL pointer) and a last-error message naming the
 * argument. Another failure first replaces any earlier message. */
#define CHECK_EMPTY_VIEW(call)                                                 \
    do {                                                                       \
        kestrel_options_set_io_threads(NULL, 0);                               \
        kestrel_str view_ = call;                                              \
        CHECK(view_.ptr != NULL && view_.len == 0);                            \
        CHECK_LAST_ERROR("request");                                           \
    } while (0)

static void test_null_arguments(void) {
    uint8_t byte = 0;
    char cbuf[16];
    size_t n = 0;
    kestrel_str s;
    kestrel_request *req = NULL;
    kestrel_request_head head;
    counter c = {0, 0};

    /* options */
    CHECK_RC(kestrel_options_new(NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("out");
    kestrel_options_free(NULL); /* no-op */
    CHECK_RC(kestrel_options_add_urls(NULL, LIT("http://127.0.0.1:0"), KESTREL_PROTOCOLS_HTTP1), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("options");
    CHECK_RC(kestrel_options_add_listen_fd(NULL, 3, KESTREL_PROTOCOLS_HTTP1), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_options_set_io_threads(NULL, 1), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_options_set_dispatch(NULL, KESTREL_DISPATCH_POOL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_options_set_pool_threads(NULL, 1), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_options_set_server_header(NULL, false), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_options_set_response_buffer_size(NULL, 10), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_options_set_handler(NULL, never_called, &c, count_free), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("options");
    CHECK(atomic_get(&c.freed) <= 1); /* never twice; see the report about failed registrations */
    c.freed = 0;
    CHECK_RC(kestrel_options_set_thread_hooks(NULL, count_call, count_call, &c, count_free), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK(atomic_get(&c.freed) <= 1);
    c.freed = 0;
    CHECK_RC(kestrel_options_set_log_callback(NULL, count_log, KESTREL_LOG_INFO, &c, count_free), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK(atomic_get(&c.freed) <= 1);
    c.freed = 0;

    kestrel_options *options = NULL;
    REQUIRE(kestrel_options_new(&options) == KESTREL_OK);
    CHECK_RC(kestrel_options_add_urls(options, NULL, 5, KESTREL_PROTOCOLS_HTTP1), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("urls");
    /* NULL with length 0 is an empty list: not a NULL argument, but no URL either. */
    CHECK_RC(kestrel_options_add_urls(options, NULL, 0, KESTREL_PROTOCOLS_HTTP1), KESTREL_INVALID_URL);
    CHECK_LAST_ERROR(NULL);
    /* A NULL handler or log callback: refused; the userdata of the refused registration is
     * released exactly once (the library will never need it). */
    CHECK_RC(kestrel_options_set_handler(options, NULL, &c, count_free), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("handler");
    CHECK(atomic_get(&c.freed) == 1);
    CHECK_RC(kestrel_options_set_log_callback(options, NULL, KESTREL_LOG_INFO, &c, count_free), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("callback");
    CHECK(atomic_get(&c.freed) == 2);
    /* Thread hooks: both hooks may be NULL. */
    CHECK_RC(kestrel_options_set_thread_hooks(options, NULL, NULL, NULL, NULL), KESTREL_OK);
    kestrel_options_free(options);
    CHECK(atomic_get(&c.freed) == 2);
    CHECK(atomic_get(&c.calls) == 0);

    /* server */
    kestrel_server *server = (kestrel_server *)&byte; /* must stay untouched */
    CHECK_RC(kestrel_server_new(NULL, &server), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("options");
    CHECK(server == (kestrel_server *)&byte);
    CHECK_RC(kestrel_server_start(NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("server");
    CHECK(kestrel_server_address_count(NULL) == 0);
    CHECK_RC(kestrel_server_address(NULL, 0, cbuf, sizeof cbuf, &n), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("server");
    CHECK_RC(kestrel_server_stop(NULL, 0, &n), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("server");
    CHECK_RC(kestrel_server_next_request(NULL, 0, &req), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("server");
    CHECK(req == NULL);
    kestrel_server_free(NULL); /* no-op */

    /* A built (never started) PULL server for the second-argument NULL checks. */
    options = test_options("http://127.0.0.1:0", 0);
    CHECK_RC(kestrel_options_set_dispatch(options, KESTREL_DISPATCH_PULL), KESTREL_OK);
    server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK && server != NULL);
    CHECK_RC(kestrel_server_address(server, 0, NULL, 10, &n), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("buf");
    CHECK_RC(kestrel_server_next_request(server, 0, NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("request");
    /* Never started: no address, next_request is refused, stop is a no-op. */
    CHECK(kestrel_server_address_count(server) == 0);
    CHECK_RC(kestrel_server_address(server, 0, cbuf, sizeof cbuf, &n), KESTREL_NOT_FOUND);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_server_next_request(server, 0, &req), KESTREL_INVALID_STATE);
    CHECK_LAST_ERROR(NULL);
    n = 77;
    CHECK_RC(kestrel_server_stop(server, 0, &n), KESTREL_OK);
    CHECK_RC(kestrel_server_stop(server, 0, NULL), KESTREL_OK);
    kestrel_server_free(server);

    /* request: NULL handle -> neutral values (empty views with a non-NULL pointer, 0, false). */
    CHECK(kestrel_request_response(NULL) == NULL);
    CHECK_EMPTY_VIEW(kestrel_request_method(NULL));
    CHECK_EMPTY_VIEW(kestrel_request_scheme(NULL));
    CHECK_EMPTY_VIEW(kestrel_request_path(NULL));
    CHECK_EMPTY_VIEW(kestrel_request_query(NULL));
    CHECK_EMPTY_VIEW(kestrel_request_target(NULL));
    CHECK_EMPTY_VIEW(kestrel_request_version(NULL));
    CHECK_EMPTY_VIEW(kestrel_request_authority(NULL));
    CHECK_EMPTY_VIEW(kestrel_request_remote_addr(NULL));
    CHECK_EMPTY_VIEW(kestrel_request_local_addr(NULL));
    CHECK_EMPTY_VIEW(kestrel_request_id(NULL));
    CHECK(kestrel_request_connection_id(NULL) == 0);
    CHECK(kestrel_request_header_count(NULL) == 0);
    CHECK(kestrel_request_is_aborted(NULL) == false);
    kestrel_str name;
    CHECK_RC(kestrel_request_header_at(NULL, 0, &name, &s), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("request");
    CHECK_RC(kestrel_request_header(NULL, LIT("host"), 0, &s), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("request");
    head.size = sizeof head;
    CHECK_RC(kestrel_request_get_head(NULL, &head), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("request");
    CHECK_RC(kestrel_request_read(NULL, &byte, 1, &n), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("request");
    CHECK_RC(kestrel_request_read_async(NULL, &byte, 1, read_cb, NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("request");
    /* on_abort with a NULL request: refused; its userdata is released exactly once. */
    c.freed = 0;
    CHECK_RC(kestrel_request_on_abort(NULL, count_call, &c, count_free), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("request");
    CHECK(atomic_get(&c.freed) == 1);
    CHECK(atomic_get(&c.calls) == 0);

    /* response: NULL handle */
    CHECK_RC(kestrel_response_set_status(NULL, 200), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("response");
    CHECK_RC(kestrel_response_add_header(NULL, LIT("a"), LIT("b")), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("response");
    CHECK_RC(kestrel_response_set_header(NULL, LIT("a"), LIT("b")), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("response");
    CHECK_RC(kestrel_response_add_trailer(NULL, LIT("a"), LIT("b")), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("response");
    CHECK_RC(kestrel_response_remove_header(NULL, LIT("a")), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("response");
    CHECK_RC(kestrel_response_send(NULL, LIT("x")), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("response");
    /* send_owned: the free callback runs exactly once, also when the call fails. */
    c.freed = 0;
    CHECK_RC(kestrel_response_send_owned(NULL, LIT("x"), count_free, &c), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("response");
    CHECK(atomic_get(&c.freed) == 1);
    CHECK_RC(kestrel_response_send_owned(NULL, LIT("x"), NULL, NULL), KESTREL_NULL_ARGUMENT);
    CHECK_RC(kestrel_response_write(NULL, LIT("x")), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("response");
    CHECK_RC(kestrel_response_on_writable(NULL, writable_cb, NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("response");
    CHECK_RC(kestrel_response_flush(NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("response");
    CHECK_RC(kestrel_response_end(NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("response");
    CHECK_RC(kestrel_response_fail(NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("response");
    CHECK_RC(kestrel_response_send_file(NULL, LIT("/etc/hostname"), 0, KESTREL_TO_END), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("response");
    CHECK_RC(kestrel_response_send_fd(NULL, 0, 0, KESTREL_TO_END), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("response");
}

/* ---- options ------------------------------------------------------------------------------- */

static void check_bad_url(const char *url, size_t len, const char *needle) {
    kestrel_options *options = NULL;
    REQUIRE(kestrel_options_new(&options) == KESTREL_OK);
    kestrel_result rc = kestrel_options_add_urls(options, (const uint8_t *)url, len, KESTREL_PROTOCOLS_HTTP1_AND_HTTP2);
    char message[512];
    last_error(message, sizeof message);
    int ok = rc == KESTREL_INVALID_URL && message[0] != '\0' && (needle == NULL || strstr(message, needle) != NULL);
    if (!ok) fprintf(stderr, "bad URL \"%.*s\": %s, \"%s\"\n", (int)len, url, kestrel_result_name(rc), message);
    t_check(ok, "kestrel_options_add_urls(bad URL) == KESTREL_INVALID_URL naming the URL", __FILE__, __LINE__);
    kestrel_options_free(options);
}

static void test_option_checks(void) {
    static const char *bad[] = {
        "localhost:5000",           /* no scheme */
        "ftp://localhost:5000",     /* scheme */
        "https://localhost:5001/x", /* path, with https too */
        "http://localhost:5000/app", /* path */
        "http://localhost:99999",   /* port range */
        "http://localhost:x",       /* port */
        "http://::1:80",            /* IPv6 without brackets */
        "http://[::1:80",           /* unclosed bracket */
        "http://unix:relative.sock", /* relative Unix path */
        "http://:80",               /* no host */
        "http://bad_host!:80",      /* bad host name */
        "http://user@localhost:80", /* user info */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        /* The message names the URL (or at least its distinctive part). */
        check_bad_url(bad[i], strlen(bad[i]), bad[i]);
    }
    check_bad_url("", 0, NULL);
    check_bad_url(" ; ", 3, NULL);
    check_bad_url("http://\xff\xfe:80", 11, NULL); /* not UTF-8 */

    counter handler1 = {0, 0}, handler2 = {0, 0}, hooks = {0, 0}, log = {0, 0};
    kestrel_options *options = NULL;
    REQUIRE(kestrel_options_new(&options) == KESTREL_OK && options != NULL);

    /* Not NUL-terminated: only `len` bytes count. */
    const char urls[] = "http://127.0.0.1:0;http://[::1]:0XXXX";
    CHECK_RC(kestrel_options_add_urls(options, (const uint8_t *)urls, strlen("http://127.0.0.1:0"), KESTREL_PROTOCOLS_HTTP1), KESTREL_OK);
    /* A list with one bad URL adds nothing (checked below through the address count). */
    CHECK_RC(kestrel_options_add_urls(options, LIT("http://127.0.0.1:0;ftp://nope"), KESTREL_PROTOCOLS_HTTP1), KESTREL_INVALID_URL);
    CHECK_LAST_ERROR("ftp://nope");

    /* Enumerations and ranges. */
    CHECK_RC(kestrel_options_add_urls(options, LIT("http://127.0.0.1:0"), 3), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("3");
    CHECK_RC(kestrel_options_add_urls(options, LIT("http://127.0.0.1:0"), 0xFFFFFFFFu), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_options_add_listen_fd(options, -1, KESTREL_PROTOCOLS_HTTP1), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_options_add_listen_fd(options, 0, 7), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_options_set_dispatch(options, 3), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("3");
    CHECK_RC(kestrel_options_set_dispatch(options, 0xFFFFFFFFu), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_options_set_io_threads(options, 0), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_options_set_io_threads(options, 1025), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("1025");
    CHECK_RC(kestrel_options_set_io_threads(options, 1024), KESTREL_OK);
    CHECK_RC(kestrel_options_set_io_threads(options, 1), KESTREL_OK);
    CHECK_RC(kestrel_options_set_pool_threads(options, 0), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_options_set_pool_threads(options, 4097), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("4097");
    CHECK_RC(kestrel_options_set_pool_threads(options, 4096), KESTREL_OK);
    CHECK_RC(kestrel_options_set_pool_threads(options, 1), KESTREL_OK);
    CHECK_RC(kestrel_options_set_response_buffer_size(options, 0), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_options_set_response_buffer_size(options, 1), KESTREL_OK);
    CHECK_RC(kestrel_options_set_server_header(options, false), KESTREL_OK);
    CHECK_RC(kestrel_options_set_server_header(options, true), KESTREL_OK);
    CHECK_RC(kestrel_options_set_dispatch(options, KESTREL_DISPATCH_INLINE), KESTREL_OK);
    CHECK_RC(kestrel_options_set_dispatch(options, KESTREL_DISPATCH_PULL), KESTREL_OK);
    CHECK_RC(kestrel_options_set_dispatch(options, KESTREL_DISPATCH_POOL), KESTREL_OK);
    /* A bad log level: refused, and the userdata of the refused registration released once. */
    CHECK_RC(kestrel_options_set_log_callback(options, count_log, 5, &log, count_free), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("5");
    CHECK(atomic_get(&log.freed) == 1);
    log.freed = 0;

    /* Userdata: replacing a handler releases the old one's userdata at once. */
    CHECK_RC(kestrel_options_set_handler(options, never_called, &handler1, count_free), KESTREL_OK);
    CHECK(atomic_get(&handler1.freed) == 0);
    CHECK_RC(kestrel_options_set_handler(options, never_called, &handler2, count_free), KESTREL_OK);
    CHECK(atomic_get(&handler1.freed) == 1);
    CHECK(atomic_get(&handler2.freed) == 0);
    CHECK_RC(kestrel_options_set_thread_hooks(options, count_call, count_call, &hooks, count_free), KESTREL_OK);
    CHECK_RC(kestrel_options_set_log_callback(options, count_log, KESTREL_LOG_TRACE, &log, count_free), KESTREL_OK);
    /* Options freed unconsumed: every userdata released exactly once, no callback ran. */
    kestrel_options_free(options);
    CHECK(atomic_get(&handler1.freed) == 1);
    CHECK(atomic_get(&handler2.freed) == 1);
    CHECK(atomic_get(&hooks.freed) == 1);
    CHECK(atomic_get(&log.freed) == 1);
    CHECK(handler2.calls == 0 && hooks.calls == 0 && log.calls == 0);

    /* Userdata with a NULL userdata_free: nothing to call, nothing leaks. */
    REQUIRE(kestrel_options_new(&options) == KESTREL_OK);
    CHECK_RC(kestrel_options_set_handler(options, never_called, NULL, NULL), KESTREL_OK);
    CHECK_RC(kestrel_options_set_thread_hooks(options, NULL, count_call, NULL, NULL), KESTREL_OK);
    CHECK_RC(kestrel_options_set_log_callback(options, count_log, KESTREL_LOG_ERROR, &log, NULL), KESTREL_OK);
    kestrel_options_free(options);
    CHECK(atomic_get(&log.freed) == 1);

    /* "A bad URL adds nothing": one good URL was added above to a fresh options object... */
    REQUIRE(kestrel_options_new(&options) == KESTREL_OK);
    CHECK_RC(kestrel_options_set_io_threads(options, 1), KESTREL_OK);
    CHECK_RC(kestrel_options_add_urls(options, LIT("http://127.0.0.1:0"), KESTREL_PROTOCOLS_HTTP1), KESTREL_OK);
    CHECK_RC(kestrel_options_add_urls(options, LIT("http://127.0.0.1:0;http://127.0.0.1:0;http://x:y"), KESTREL_PROTOCOLS_HTTP1), KESTREL_INVALID_URL);
    CHECK_RC(kestrel_options_set_dispatch(options, KESTREL_DISPATCH_PULL), KESTREL_OK);
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    CHECK_RC(kestrel_server_start(server), KESTREL_OK);
    CHECK(kestrel_server_address_count(server) == 1);
    CHECK_RC(kestrel_server_stop(server, 1000, NULL), KESTREL_OK);
    kestrel_server_free(server);
}

/* ---- kestrel_server_new consumes its options on every path --------------------------------- */

static void test_server_new_consumes(void) {
    counter hooks = {0, 0}, log = {0, 0}, handler = {0, 0};
    kestrel_options *options;
    kestrel_server *server;

    /* POOL without a handler: KESTREL_INVALID_ARGUMENT, and the options are gone. */
    options = test_options("http://127.0.0.1:0", 2);
    CHECK_RC(kestrel_options_set_thread_hooks(options, count_call, count_call, &hooks, count_free), KESTREL_OK);
    CHECK_RC(kestrel_options_set_log_callback(options, count_log, KESTREL_LOG_TRACE, &log, count_free), KESTREL_OK);
    server = NULL;
    CHECK_RC(kestrel_server_new(options, &server), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("handler");
    CHECK(server == NULL);
    CHECK(atomic_get(&hooks.freed) == 1);
    CHECK(atomic_get(&log.freed) == 1);
    CHECK(hooks.calls == 0);

    /* INLINE without a handler: the same. */
    options = test_options(NULL, 0);
    CHECK_RC(kestrel_options_set_dispatch(options, KESTREL_DISPATCH_INLINE), KESTREL_OK);
    CHECK_RC(kestrel_options_set_log_callback(options, count_log, KESTREL_LOG_TRACE, &log, count_free), KESTREL_OK);
    CHECK_RC(kestrel_server_new(options, &server), KESTREL_INVALID_ARGUMENT);
    CHECK(atomic_get(&log.freed) == 2);

    /* NULL out: KESTREL_NULL_ARGUMENT, options consumed all the same. */
    options = test_options(NULL, 0);
    CHECK_RC(kestrel_options_set_handler(options, never_called, &handler, count_free), KESTREL_OK);
    CHECK_RC(kestrel_server_new(options, NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("out");
    CHECK(atomic_get(&handler.freed) == 1);

    /* Success: the server owns the userdata until kestrel_server_free (not started: no threads). */
    options = test_options(NULL, 0);
    handler.freed = 0;
    CHECK_RC(kestrel_options_set_handler(options, never_called, &handler, count_free), KESTREL_OK);
    CHECK_RC(kestrel_options_set_thread_hooks(options, count_call, count_call, &hooks, count_free), KESTREL_OK);
    server = NULL;
    CHECK_RC(kestrel_server_new(options, &server), KESTREL_OK);
    REQUIRE(server != NULL);
    CHECK(atomic_get(&handler.freed) == 0);
    kestrel_server_free(server);
    CHECK(atomic_get(&handler.freed) == 1);
    CHECK(atomic_get(&hooks.freed) == 2);
    CHECK(hooks.calls == 0 && handler.calls == 0);
}

int main(void) {
    test_start("test_api", 120);
    test_last_error(); /* first: it checks the empty message of a fresh thread */
    test_version_and_names();
    test_null_arguments();
    test_option_checks();
    test_server_new_consumes();
    return test_finish();
}
