/*
 * test_http.c: requests and responses in POOL mode, driven by a plain-socket HTTP/1.1 client.
 *
 * Request: every accessor, header lookups (case-insensitive, repeated values, NOT_FOUND), the
 * whole head in one call (versioned size), body reads (Content-Length, chunked, Expect:
 * 100-continue), an asynchronous read pending while a blocking read is tried.
 * Response: status, add/set/remove header, forbidden bytes, headers after the start, send,
 * send_owned (free called once, also on failure), write/flush/end (chunked), send_file and
 * send_fd with ranges and their errors, trailers, fail, a handler returning an error, completing
 * twice, completing from another thread, aborts (is_aborted, on_abort, CANCELLED).
 */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>


static counter handler_ud, log_ud;
static int error_records;

static void log_errors(void *userdata, kestrel_log_level level, kestrel_str category, kestrel_str message) {
    (void)category;
    (void)message;
    CHECK(userdata == &log_ud);
    CHECK(level >= KESTREL_LOG_ERROR);
    atomic_inc(&error_records);
}
static pthread_t main_thread;
static int g_port;
static char g_file[64];            /* a 1000-byte file: byte i is 'A' + i % 26 */
static char g_big_file[64];        /* FD_SHARED_SIZE bytes of position-dependent data */
static char g_expect_remote[64];   /* the client's address as the server should see it */

#define FILE_SIZE 1000
#define BIG_BODY (256 * 1024)
#define FD_SHARED_SIZE (8 * 1024 * 1024)

static char file_byte(size_t i) { return (char)('A' + i % 26); }

/* ---- small handler helpers ----------------------------------------------------------------- */

static kestrel_result send_text(kestrel_response *res, const char *text) {
    return kestrel_response_send(res, (const uint8_t *)text, strlen(text));
}

/* ---- /accessors ---------------------------------------------------------------------------- */

static void noop_read(void *userdata, kestrel_result result, size_t read) {
    (void)userdata;
    (void)result;
    (void)read;
}
static void noop_writable(void *userdata, kestrel_result result) {
    (void)userdata;
    (void)result;
}
static void noop_abort(void *userdata) { (void)userdata; }

static kestrel_result route_accessors(kestrel_request *req, kestrel_response *res) {
    char tmp[128];
    CHECK(kestrel_request_response(req) == res);
    CHECK(str_eq(kestrel_request_method(req), "GET"));
    CHECK(str_eq(kestrel_request_scheme(req), "http"));
    CHECK(str_eq(kestrel_request_path(req), "/accessors/a%20b"));
    CHECK(str_eq(kestrel_request_query(req), "x=1&y=2"));
    CHECK(str_eq(kestrel_request_target(req), "/accessors/a%20b?x=1&y=2"));
    CHECK(str_eq(kestrel_request_version(req), "HTTP/1.1"));
    CHECK(str_eq(kestrel_request_authority(req), "example.test:8080"));
    kestrel_str remote = kestrel_request_remote_addr(req);
    if (!str_eq(remote, g_expect_remote)) fprintf(stderr, "remote \"%s\", expected \"%s\"\n", str_c(remote, tmp, sizeof tmp), g_expect_remote);
    CHECK(str_eq(remote, g_expect_remote));
    snprintf(tmp, sizeof tmp, "127.0.0.1:%d", g_port);
    CHECK(str_eq(kestrel_request_local_addr(req), tmp));
    /* The id is "<connection id>:<request number>" in hexadecimal. */
    uint64_t conn = kestrel_request_connection_id(req);
    CHECK(conn != 0);
    kestrel_str id = kestrel_request_id(req);
    str_c(id, tmp, sizeof tmp);
    char *colon = strchr(tmp, ':');
    CHECK(colon != NULL);
    if (colon) {
        *colon = '\0';
        CHECK(strtoull(tmp, NULL, 16) == conn);
        CHECK(strtoull(colon + 1, NULL, 16) == 1); /* first request on its connection */
    }
    /* Views stay valid and stable as long as the handle: the same bytes on a second call. */
    CHECK(kestrel_request_path(req).ptr == kestrel_request_path(req).ptr);

    /* Headers: Host, X-Multi: one, X-Other: v, x-multi: two, User-Agent, Connection. */
    size_t count = kestrel_request_header_count(req);
    CHECK(count == 6);
    int multi_seen = 0, multi_index = -1;
    for (size_t i = 0; i < count; i++) {
        kestrel_str name, value;
        CHECK_RC(kestrel_request_header_at(req, i, &name, &value), KESTREL_OK);
        for (size_t j = 0; j < name.len; j++) CHECK(!(name.ptr[j] >= 'A' && name.ptr[j] <= 'Z'));
        if (str_eq(name, "x-multi")) {
            /* Grouped by name, each value its own entry, in arrival order. */
            if (multi_seen == 0) {
                CHECK(str_eq(value, "one"));
                multi_index = (int)i;
            } else {
                CHECK(str_eq(value, "two"));
                CHECK((int)i == multi_index + 1);
            }
            multi_seen++;
        }
    }
    CHECK(multi_seen == 2);
    kestrel_str name = {"untouched", 9}, value = {"untouched", 9};
    CHECK_RC(kestrel_request_header_at(req, count, &name, &value), KESTREL_NOT_FOUND);
    CHECK_LAST_ERROR(NULL);
    CHECK(str_eq(name, "untouched") && str_eq(value, "untouched"));
    CHECK_RC(kestrel_request_header_at(req, (size_t)-1, &name, &value), KESTREL_NOT_FOUND);

    /* Lookup by name: case-insensitive, nth value, NOT_FOUND, no NUL needed. */
    CHECK_RC(kestrel_request_header(req, LIT("X-MULTI"), 0, &value), KESTREL_OK);
    CHECK(str_eq(value, "one"));
    CHECK_RC(kestrel_request_header(req, LIT("x-Multi"), 1, &value), KESTREL_OK);
    CHECK(str_eq(value, "two"));
    value.ptr = "untouched";
    value.len = 9;
    CHECK_RC(kestrel_request_header(req, LIT("x-multi"), 2, &value), KESTREL_NOT_FOUND);
    CHECK_LAST_ERROR("x-multi");
    CHECK(str_eq(value, "untouched"));
    CHECK_RC(kestrel_request_header(req, LIT("x-missing"), 0, &value), KESTREL_NOT_FOUND);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_request_header(req, (const uint8_t *)"x-otherGARBAGE", 7, 0, &value), KESTREL_OK);
    CHECK(str_eq(value, "v"));
    CHECK_RC(kestrel_request_header(req, LIT("Host"), 0, &value), KESTREL_OK);
    CHECK(str_eq(value, "example.test:8080"));
    CHECK_RC(kestrel_request_header(req, LIT("bad name"), 0, &value), KESTREL_NOT_FOUND);
    CHECK_RC(kestrel_request_header(req, NULL, 0, 0, &value), KESTREL_NOT_FOUND);

    /* NULL for every other pointer and callback parameter of the request functions. */
    uint8_t buf[8];
    size_t n = 0;
    counter ud = {0, 0};
    CHECK_RC(kestrel_request_header_at(req, 0, NULL, &value), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("name");
    CHECK_RC(kestrel_request_header_at(req, 0, &name, NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("value");
    CHECK_RC(kestrel_request_header(req, NULL, 4, 0, &value), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("name");
    CHECK_RC(kestrel_request_header(req, LIT("host"), 0, NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("value");
    CHECK_RC(kestrel_request_get_head(req, NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("head");
    CHECK_RC(kestrel_request_read(req, NULL, 1, &n), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("buf");
    CHECK_RC(kestrel_request_read(req, buf, sizeof buf, NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("read");
    CHECK_RC(kestrel_request_read_async(req, NULL, 1, noop_read, NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("buf");
    CHECK_RC(kestrel_request_read_async(req, buf, sizeof buf, NULL, NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("callback");
    CHECK_RC(kestrel_request_read_async(req, buf, 0, noop_read, NULL), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_request_on_abort(req, NULL, &ud, count_free), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("callback");
    CHECK(atomic_get(&ud.freed) == 1); /* a refused registration releases its userdata once */
    CHECK(kestrel_request_is_aborted(req) == false);

    /* ...and of the response functions: none of these starts or completes the response. */
    ud.freed = 0;
    CHECK_RC(kestrel_response_add_header(res, NULL, 3, LIT("v")), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("name");
    CHECK_RC(kestrel_response_add_header(res, LIT("x-a"), NULL, 1), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("value");
    CHECK_RC(kestrel_response_set_header(res, NULL, 3, LIT("v")), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("name");
    CHECK_RC(kestrel_response_set_header(res, LIT("x-a"), NULL, 1), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("value");
    CHECK_RC(kestrel_response_add_trailer(res, NULL, 3, LIT("v")), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("name");
    CHECK_RC(kestrel_response_add_trailer(res, LIT("x-a"), NULL, 1), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("value");
    CHECK_RC(kestrel_response_remove_header(res, NULL, 3), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("name");
    CHECK_RC(kestrel_response_send(res, NULL, 5), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("body");
    CHECK_RC(kestrel_response_send_owned(res, NULL, 5, count_free, &ud), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("body");
    CHECK(atomic_get(&ud.freed) == 1); /* "also when this call fails" */
    CHECK_RC(kestrel_response_write(res, NULL, 3), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("data");
    CHECK_RC(kestrel_response_on_writable(res, NULL, NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("callback");
    CHECK_RC(kestrel_response_send_file(res, NULL, 4, 0, KESTREL_TO_END), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("path");
    CHECK_RC(kestrel_response_send_fd(res, -1, 0, KESTREL_TO_END), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    /* A descriptor that is not open: the duplicate fails. */
    CHECK_RC(kestrel_response_send_fd(res, 987, 0, KESTREL_TO_END), KESTREL_IO_ERROR);
    CHECK_LAST_ERROR(NULL);
    (void)noop_writable;
    (void)noop_abort;
    return send_text(res, "ok");
}

static void test_accessors(void) {
    int fd = http_connect(g_port);
    REQUIRE(fd >= 0);
    struct sockaddr_in me;
    socklen_t len = sizeof me;
    getsockname(fd, (struct sockaddr *)&me, &len);
    snprintf(g_expect_remote, sizeof g_expect_remote, "127.0.0.1:%d", ntohs(me.sin_port));
    send_str(fd,
             "GET /accessors/a%20b?x=1&y=2 HTTP/1.1\r\n"
             "Host: example.test:8080\r\n"
             "X-Multi: one\r\n"
             "X-Other: v\r\n"
             "x-multi: two\r\n"
             "User-Agent: kestrel-ctest\r\n"
             "Connection: close\r\n\r\n");
    http_response r;
    http_read_response(fd, &r);
    close(fd);
    CHECK(r.status == 200 && strcmp(r.body, "ok") == 0);
    http_response_free(&r);
}

/* ---- /head: the whole head in one call ----------------------------------------------------- */

static int same(kestrel_str a, kestrel_str b) { return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0; }

static kestrel_result route_head(kestrel_request *req, kestrel_response *res) {
    kestrel_request_head head;
    memset(&head, 0, sizeof head);
    head.size = sizeof head;
    CHECK_RC(kestrel_request_get_head(req, &head), KESTREL_OK);
    CHECK(head.size == sizeof head);
    CHECK(same(head.method, kestrel_request_method(req)) && str_eq(head.method, "POST"));
    CHECK(same(head.scheme, kestrel_request_scheme(req)));
    CHECK(same(head.path, kestrel_request_path(req)) && str_eq(head.path, "/head"));
    CHECK(head.query.ptr != NULL && head.query.len == 0); /* no query: empty, never NULL */
    CHECK(same(head.target, kestrel_request_target(req)) && str_eq(head.target, "/head"));
    CHECK(same(head.version, kestrel_request_version(req)));
    CHECK(same(head.authority, kestrel_request_authority(req)) && str_eq(head.authority, "h"));
    CHECK(same(head.remote_addr, kestrel_request_remote_addr(req)));
    CHECK(same(head.local_addr, kestrel_request_local_addr(req)));
    CHECK(same(head.id, kestrel_request_id(req)));
    CHECK(head.connection_id == kestrel_request_connection_id(req));
    CHECK(head.header_count == kestrel_request_header_count(req));
    CHECK(head.header_count == 4 && head.headers != NULL);
    for (size_t i = 0; head.headers && i < head.header_count; i++) {
        kestrel_str name, value;
        CHECK_RC(kestrel_request_header_at(req, i, &name, &value), KESTREL_OK);
        CHECK(same(head.headers[i].name, name) && same(head.headers[i].value, value));
    }

    /* An older host's shorter struct: only the fields that fit are written. */
    kestrel_request_head older;
    memset(&older, 0xAB, sizeof older);
    older.size = offsetof(kestrel_request_head, scheme);
    CHECK_RC(kestrel_request_get_head(req, &older), KESTREL_OK);
    CHECK(str_eq(older.method, "POST"));
    const unsigned char *rest = (const unsigned char *)&older.scheme;
    int untouched = 1;
    for (size_t i = 0; i < sizeof older - offsetof(kestrel_request_head, scheme); i++) untouched &= rest[i] == 0xAB;
    CHECK(untouched);
    /* A newer host's longer struct: the library writes no more than it knows. */
    struct {
        kestrel_request_head head;
        unsigned char extra[32];
    } newer;
    memset(&newer, 0xCD, sizeof newer);
    newer.head.size = sizeof newer;
    CHECK_RC(kestrel_request_get_head(req, &newer.head), KESTREL_OK);
    CHECK(str_eq(newer.head.path, "/head") && newer.head.header_count == 4);
    untouched = 1;
    for (size_t i = 0; i < sizeof newer.extra; i++) untouched &= newer.extra[i] == 0xCD;
    CHECK(untouched);
    /* Too small to hold even `size`: KESTREL_INVALID_ARGUMENT. */
    kestrel_request_head tiny;
    memset(&tiny, 0, sizeof tiny);
    tiny.size = 0;
    CHECK_RC(kestrel_request_get_head(req, &tiny), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("size");
    tiny.size = sizeof(size_t) - 1;
    CHECK_RC(kestrel_request_get_head(req, &tiny), KESTREL_INVALID_ARGUMENT);
    CHECK(tiny.method.ptr == NULL); /* nothing written */
    return send_text(res, "head ok");
}

static void test_head(void) {
    http_response r;
    http_request(g_port, "POST /head HTTP/1.1\r\nHost: h\r\nA: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", &r);
    CHECK(r.status == 200 && strcmp(r.body, "head ok") == 0);
    http_response_free(&r);
}

/* HTTP/1.0 without a Host header. */
static kestrel_result route_v10(kestrel_request *req, kestrel_response *res) {
    CHECK(str_eq(kestrel_request_version(req), "HTTP/1.0"));
    kestrel_str authority = kestrel_request_authority(req);
    CHECK(authority.ptr != NULL && authority.len == 0);
    CHECK(kestrel_request_header_count(req) == 0);
    return send_text(res, "v10");
}

static void test_http10(void) {
    http_response r;
    http_request(g_port, "GET /v10 HTTP/1.0\r\n\r\n", &r);
    CHECK(r.status == 200 && strcmp(r.body, "v10") == 0);
    CHECK(r.eof);
    http_response_free(&r);
}

/* ---- /echo-head: request-target forms, HEAD, keep-alive ids ------------------------------ */

static kestrel_result route_echo_head(kestrel_request *req, kestrel_response *res) {
    char body[512], m[16], t[128], p[128], q[64], a[64], id[64];
    int n = snprintf(body, sizeof body, "%s|%s|%s|%s|%s|%s|%llu", str_c(kestrel_request_method(req), m, sizeof m),
                     str_c(kestrel_request_target(req), t, sizeof t), str_c(kestrel_request_path(req), p, sizeof p),
                     str_c(kestrel_request_query(req), q, sizeof q), str_c(kestrel_request_authority(req), a, sizeof a),
                     str_c(kestrel_request_id(req), id, sizeof id), (unsigned long long)kestrel_request_connection_id(req));
    return kestrel_response_send(res, (const uint8_t *)body, (size_t)n);
}

static void test_target_forms(void) {
    http_response r;
    /* Absolute form: the target as sent; path and query from it; the authority from the URL. */
    http_request(g_port, "GET http://example.com/echo-head?q=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n", &r);
    CHECK(r.status == 200 && strncmp(r.body, "GET|http://example.com/echo-head?q=1|/echo-head|q=1|example.com|", 64) == 0);
    http_response_free(&r);
    /* Asterisk form. */
    http_request(g_port, "OPTIONS * HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", &r);
    CHECK(r.status == 200 && strncmp(r.body, "OPTIONS|*|", 10) == 0);
    http_response_free(&r);
    /* HEAD: the head of the GET response, no body. */
    char v[32];
    http_request(g_port, "HEAD /owned-static HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", &r);
    CHECK(r.status == 200 && r.eof && !r.timed_out);
    CHECK(http_header(&r, "content-length", 0, v, sizeof v) && strcmp(v, "6") == 0);
    CHECK(strstr(r.raw, "\r\n\r\n") != NULL && strcmp(strstr(r.raw, "\r\n\r\n"), "\r\n\r\n") == 0);
    http_response_free(&r);
    http_request(g_port, "HEAD /chunked HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", &r);
    CHECK(r.status == 200 && r.eof && !r.timed_out);
    CHECK(strstr(r.raw, "\r\n\r\n") != NULL && strcmp(strstr(r.raw, "\r\n\r\n"), "\r\n\r\n") == 0);
    http_response_free(&r);

    /* Two requests on one connection: the same connection id, request numbers 1 and 2. */
    int fd = http_connect(g_port);
    REQUIRE(fd >= 0);
    send_str(fd, "GET /echo-head HTTP/1.1\r\nHost: h\r\n\r\n");
    http_response one;
    http_read_one(fd, &one);
    send_str(fd, "GET /echo-head?second HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    http_read_response(fd, &r);
    close(fd);
    char *id1 = strstr(one.body, "|0"), *id2 = strstr(r.body, "|0");
    CHECK(one.status == 200 && r.status == 200 && id1 && id2);
    if (id1 && id2) {
        /* "|<16 hex digits>:<8 hex digits>|<connection id>" */
        CHECK(strncmp(id1, id2, 18) == 0);            /* the same connection */
        CHECK(strncmp(id1 + 18, "00000001|", 9) == 0); /* request 1 */
        CHECK(strncmp(id2 + 18, "00000002|", 9) == 0); /* request 2 */
    }
    http_response_free(&one);
    http_response_free(&r);
}

/* ---- /headers: status and response headers ------------------------------------------------- */

#define CHECK_BAD_HEADER(fn, name, value)                                                            \
    do {                                                                                             \
        CHECK_RC(fn(res, (const uint8_t *)(name), sizeof(name) - 1, (const uint8_t *)(value), sizeof(value) - 1), \
                 KESTREL_INVALID_HEADER);                                                            \
        CHECK_LAST_ERROR(NULL);                                                                      \
    } while (0)

static void check_bad_headers(kestrel_response *res,
                              kestrel_result (*fn)(kestrel_response *, const uint8_t *, size_t, const uint8_t *, size_t)) {
    CHECK_BAD_HEADER(fn, "bad name", "v");
    CHECK_BAD_HEADER(fn, "bad\rname", "v");
    CHECK_BAD_HEADER(fn, "bad\nname", "v");
    CHECK_BAD_HEADER(fn, "bad\0name", "v");
    CHECK_BAD_HEADER(fn, "bad:name", "v");
    CHECK_BAD_HEADER(fn, "", "v");
    CHECK_BAD_HEADER(fn, "x-ok", "a\rb");
    CHECK_BAD_HEADER(fn, "x-ok", "a\nb");
    CHECK_BAD_HEADER(fn, "x-ok", "a\r\nx-injected: 1");
    CHECK_BAD_HEADER(fn, "x-ok", "a\0b");
    CHECK_BAD_HEADER(fn, "x-ok", "a\x7f");
    CHECK_BAD_HEADER(fn, "x-ok", "a\x01");
}

static kestrel_result route_headers(kestrel_request *req, kestrel_response *res) {
    (void)req;
    CHECK_RC(kestrel_response_set_status(res, 99), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("99");
    CHECK_RC(kestrel_response_set_status(res, 0), KESTREL_INVALID_ARGUMENT);
    CHECK_RC(kestrel_response_set_status(res, 100), KESTREL_INVALID_ARGUMENT);
    CHECK_RC(kestrel_response_set_status(res, 199), KESTREL_INVALID_ARGUMENT);
    CHECK_RC(kestrel_response_set_status(res, 1000), KESTREL_INVALID_ARGUMENT);
    CHECK_RC(kestrel_response_set_status(res, 999), KESTREL_OK);
    CHECK_RC(kestrel_response_set_status(res, 201), KESTREL_OK);

    CHECK_RC(kestrel_response_add_header(res, LIT("X-Multi"), LIT("a")), KESTREL_OK);
    CHECK_RC(kestrel_response_add_header(res, LIT("x-multi"), LIT("b")), KESTREL_OK);
    CHECK_RC(kestrel_response_set_header(res, LIT("x-replace"), LIT("1")), KESTREL_OK);
    CHECK_RC(kestrel_response_add_header(res, LIT("x-replace"), LIT("2")), KESTREL_OK);
    CHECK_RC(kestrel_response_set_header(res, LIT("X-Replace"), LIT("3")), KESTREL_OK);
    CHECK_RC(kestrel_response_add_header(res, LIT("x-gone"), LIT("1")), KESTREL_OK);
    CHECK_RC(kestrel_response_add_header(res, LIT("x-gone"), LIT("2")), KESTREL_OK);
    CHECK_RC(kestrel_response_remove_header(res, LIT("X-GONE")), KESTREL_OK);
    CHECK_RC(kestrel_response_remove_header(res, LIT("x-never-added")), KESTREL_OK);
    CHECK_RC(kestrel_response_remove_header(res, LIT("bad name")), KESTREL_INVALID_HEADER);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_response_add_header(res, LIT("x-tab"), LIT("a\tb")), KESTREL_OK);
    CHECK_RC(kestrel_response_add_header(res, LIT("x-empty"), NULL, 0), KESTREL_OK);
    CHECK_RC(kestrel_response_add_header(res, (const uint8_t *)"x-lenXXXX", 5, (const uint8_t *)"valueXXXX", 5), KESTREL_OK);
    CHECK_RC(kestrel_response_set_header(res, LIT("server"), LIT("custom")), KESTREL_OK);
    check_bad_headers(res, kestrel_response_add_header);
    check_bad_headers(res, kestrel_response_set_header);
    check_bad_headers(res, kestrel_response_add_trailer);
    return send_text(res, "headers");
}

static void test_response_headers(void) {
    http_response r;
    char v[64];
    http_get(g_port, "/headers", &r);
    CHECK(r.status == 201);
    CHECK(strcmp(r.body, "headers") == 0);
    CHECK(http_header(&r, "x-multi", 0, v, sizeof v) && strcmp(v, "a") == 0);
    CHECK(http_header(&r, "x-multi", 1, v, sizeof v) && strcmp(v, "b") == 0);
    CHECK(http_header(&r, "x-replace", 0, v, sizeof v) && strcmp(v, "3") == 0);
    CHECK(!http_header(&r, "x-replace", 1, v, sizeof v));
    CHECK(!http_header(&r, "x-gone", 0, v, sizeof v));
    CHECK(http_header(&r, "x-tab", 0, v, sizeof v) && strcmp(v, "a\tb") == 0);
    CHECK(http_header(&r, "x-empty", 0, v, sizeof v) && strcmp(v, "") == 0);
    CHECK(http_header(&r, "x-len", 0, v, sizeof v) && strcmp(v, "value") == 0);
    CHECK(http_header(&r, "server", 0, v, sizeof v) && strcmp(v, "custom") == 0);
    CHECK(!http_header(&r, "server", 1, v, sizeof v));
    CHECK(http_header(&r, "content-length", 0, v, sizeof v) && strcmp(v, "7") == 0);
    CHECK(!http_header(&r, "x-ok", 0, v, sizeof v) && !http_header(&r, "x-injected", 0, v, sizeof v));
    CHECK(strstr(r.head, "X-Multi") == NULL); /* names go out lower-case */
    http_response_free(&r);
}

/* ---- /started: the head after the response started ----------------------------------------- */

static counter owned_fail_ud;

static kestrel_result route_started(kestrel_request *req, kestrel_response *res) {
    (void)req;
    CHECK_RC(kestrel_response_write(res, LIT("abc")), KESTREL_OK);
    CHECK_RC(kestrel_response_write(res, NULL, 0), KESTREL_OK); /* empty write: nothing */
    CHECK_RC(kestrel_response_add_header(res, LIT("x-late"), LIT("1")), KESTREL_INVALID_STATE);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_response_set_header(res, LIT("x-late"), LIT("1")), KESTREL_INVALID_STATE);
    CHECK_RC(kestrel_response_remove_header(res, LIT("x-late")), KESTREL_INVALID_STATE);
    CHECK_RC(kestrel_response_set_status(res, 404), KESTREL_INVALID_STATE);
    /* A whole-body send after a write does not fit: refused, and the response stays open. */
    CHECK_RC(kestrel_response_send(res, LIT("whole")), KESTREL_INVALID_STATE);
    CHECK_RC(kestrel_response_send_owned(res, LIT("whole"), count_free, &owned_fail_ud), KESTREL_INVALID_STATE);
    CHECK(atomic_get(&owned_fail_ud.freed) == 1);
    CHECK_RC(kestrel_response_send_file(res, (const uint8_t *)g_file, strlen(g_file), 0, 1), KESTREL_INVALID_STATE);
    CHECK_RC(kestrel_response_flush(res), KESTREL_OK);
    CHECK_RC(kestrel_response_write(res, LIT("def")), KESTREL_OK);
    /* HTTP/1.1: not announced in the head that went out, so refused (HTTP/2 would take it). */
    CHECK_RC(kestrel_response_add_trailer(res, LIT("x-trailer"), LIT("t")), KESTREL_INVALID_STATE);
    CHECK_RC(kestrel_response_end(res), KESTREL_OK);
    /* Completed: every completing call now returns KESTREL_ALREADY_COMPLETED. */
    CHECK_RC(kestrel_response_end(res), KESTREL_ALREADY_COMPLETED);
    CHECK_RC(kestrel_response_fail(res), KESTREL_ALREADY_COMPLETED);
    CHECK_RC(kestrel_response_write(res, LIT("x")), KESTREL_ALREADY_COMPLETED);
    CHECK_RC(kestrel_response_flush(res), KESTREL_ALREADY_COMPLETED);
    CHECK_RC(kestrel_response_add_trailer(res, LIT("x-t2"), LIT("t")), KESTREL_ALREADY_COMPLETED);
    kestrel_result rc = kestrel_response_add_header(res, LIT("x-late"), LIT("1"));
    CHECK(rc == KESTREL_INVALID_STATE || rc == KESTREL_ALREADY_COMPLETED);
    return KESTREL_OK;
}

static void test_started(void) {
    http_response r;
    http_get(g_port, "/started", &r);
    CHECK(r.status == 200);
    CHECK(r.chunked && r.complete);
    CHECK(r.body_len == 6 && strcmp(r.body, "abcdef") == 0);
    char v[16];
    CHECK(!http_header(&r, "x-late", 0, v, sizeof v));
    /* No "TE: trailers" in the request: no trailer on HTTP/1.1. */
    CHECK(strcmp(r.trailers, "") == 0);
    http_response_free(&r);
}

/* ---- /send, /send-empty: whole bodies; completing twice ------------------------------------- */

static counter owned_after_ud;

static kestrel_result route_send(kestrel_request *req, kestrel_response *res) {
    (void)req;
    CHECK_RC(kestrel_response_send(res, LIT("sent")), KESTREL_OK);
    CHECK_RC(kestrel_response_send(res, LIT("again")), KESTREL_ALREADY_COMPLETED);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_response_end(res), KESTREL_ALREADY_COMPLETED);
    CHECK_RC(kestrel_response_fail(res), KESTREL_ALREADY_COMPLETED);
    CHECK_RC(kestrel_response_send_owned(res, LIT("again"), count_free, &owned_after_ud), KESTREL_ALREADY_COMPLETED);
    CHECK(atomic_get(&owned_after_ud.freed) == 1); /* called once, also when the call fails */
    CHECK_RC(kestrel_response_send_file(res, (const uint8_t *)g_file, strlen(g_file), 0, KESTREL_TO_END), KESTREL_ALREADY_COMPLETED);
    int fd = open(g_file, O_RDONLY);
    CHECK_RC(kestrel_response_send_fd(res, fd, 0, KESTREL_TO_END), KESTREL_ALREADY_COMPLETED);
    close(fd);
    CHECK_RC(kestrel_response_write(res, LIT("x")), KESTREL_ALREADY_COMPLETED);
    kestrel_result rc = kestrel_response_set_status(res, 500);
    CHECK(rc == KESTREL_INVALID_STATE || rc == KESTREL_ALREADY_COMPLETED);
    return KESTREL_OK;
}

static kestrel_result route_send_empty(kestrel_request *req, kestrel_response *res) {
    (void)req;
    return kestrel_response_send(res, NULL, 0);
}

static kestrel_result route_end_only(kestrel_request *req, kestrel_response *res) {
    (void)req;
    CHECK_RC(kestrel_response_set_status(res, 204), KESTREL_OK);
    return kestrel_response_end(res);
}

static void test_send(void) {
    http_response r;
    char v[32];
    http_get(g_port, "/send", &r);
    CHECK(r.status == 200 && strcmp(r.body, "sent") == 0 && !r.chunked);
    CHECK(http_header(&r, "content-length", 0, v, sizeof v) && strcmp(v, "4") == 0);
    CHECK(http_header(&r, "server", 0, v, sizeof v) && strcmp(v, "kestrel") == 0);
    http_response_free(&r);
    /* (The client may have the response before the handler made its later calls.) */
    WAIT_FOR(atomic_get(&owned_after_ud.freed) >= 1, WAIT_MS);
    CHECK(atomic_get(&owned_after_ud.freed) == 1);

    http_get(g_port, "/send-empty", &r);
    CHECK(r.status == 200 && r.body_len == 0);
    CHECK(http_header(&r, "content-length", 0, v, sizeof v) && strcmp(v, "0") == 0);
    http_response_free(&r);

    http_get(g_port, "/end-only", &r);
    CHECK(r.status == 204 && r.body_len == 0);
    http_response_free(&r);
}

/* ---- /owned: zero-copy bodies --------------------------------------------------------------- */

static counter owned_ud;
static char *owned_body;

static void free_owned(void *userdata) {
    CHECK(userdata == owned_body);
    atomic_inc(&owned_ud.freed);
    free(userdata);
}

static kestrel_result route_owned(kestrel_request *req, kestrel_response *res) {
    (void)req;
    static const char text[] = "an owned body, lent without a copy";
    owned_body = malloc(sizeof text);
    REQUIRE(owned_body != NULL);
    memcpy(owned_body, text, sizeof text);
    CHECK_RC(kestrel_response_send_owned(res, (const uint8_t *)owned_body, sizeof text - 1, free_owned, owned_body), KESTREL_OK);
    return KESTREL_OK;
}

static kestrel_result route_owned_static(kestrel_request *req, kestrel_response *res) {
    (void)req;
    static const char text[] = "static";
    return kestrel_response_send_owned(res, (const uint8_t *)text, sizeof text - 1, NULL, NULL);
}

static void test_owned(void) {
    http_response r;
    http_get(g_port, "/owned", &r);
    CHECK(r.status == 200 && strcmp(r.body, "an owned body, lent without a copy") == 0);
    http_response_free(&r);
    WAIT_FOR(atomic_get(&owned_ud.freed) == 1, WAIT_MS);
    CHECK(atomic_get(&owned_ud.freed) == 1);
    http_get(g_port, "/owned-static", &r);
    CHECK(r.status == 200 && strcmp(r.body, "static") == 0);
    http_response_free(&r);
    CHECK(atomic_get(&owned_ud.freed) == 1); /* never twice */
}

/* ---- /chunked, /big, /stream-length: streamed bodies ---------------------------------------- */

static kestrel_result route_chunked(kestrel_request *req, kestrel_response *res) {
    (void)req;
    CHECK_RC(kestrel_response_add_header(res, LIT("content-type"), LIT("text/plain")), KESTREL_OK);
    CHECK_RC(kestrel_response_flush(res), KESTREL_OK); /* starts the response: head only */
    CHECK_RC(kestrel_response_add_header(res, LIT("x-late"), LIT("1")), KESTREL_INVALID_STATE);
    CHECK_RC(kestrel_response_write(res, LIT("one,")), KESTREL_OK);
    CHECK_RC(kestrel_response_flush(res), KESTREL_OK);
    CHECK_RC(kestrel_response_write(res, LIT("two,")), KESTREL_OK);
    CHECK_RC(kestrel_response_write(res, LIT("three")), KESTREL_OK);
    return kestrel_response_end(res);
}

static kestrel_result route_big(kestrel_request *req, kestrel_response *res) {
    (void)req;
    /* Four times the 64 KiB response buffer in one write: it waits for room as needed. */
    uint8_t *data = malloc(BIG_BODY);
    REQUIRE(data != NULL);
    for (size_t i = 0; i < BIG_BODY; i++) data[i] = (uint8_t)file_byte(i);
    CHECK_RC(kestrel_response_write(res, data, BIG_BODY), KESTREL_OK);
    free(data);
    CHECK_RC(kestrel_response_flush(res), KESTREL_OK);
    return kestrel_response_end(res);
}

static kestrel_result route_stream_length(kestrel_request *req, kestrel_response *res) {
    (void)req;
    CHECK_RC(kestrel_response_set_header(res, LIT("content-length"), LIT("6")), KESTREL_OK);
    CHECK_RC(kestrel_response_write(res, LIT("abc")), KESTREL_OK);
    CHECK_RC(kestrel_response_write(res, LIT("def")), KESTREL_OK);
    return kestrel_response_end(res);
}

static void test_streamed(void) {
    http_response r;
    char v[32];
    http_get(g_port, "/chunked", &r);
    CHECK(r.status == 200 && r.chunked && r.complete);
    CHECK(strcmp(r.body, "one,two,three") == 0);
    CHECK(!http_header(&r, "content-length", 0, v, sizeof v));
    CHECK(http_header(&r, "content-type", 0, v, sizeof v) && strcmp(v, "text/plain") == 0);
    http_response_free(&r);

    http_get(g_port, "/big", &r);
    CHECK(r.status == 200 && r.complete && r.body_len == BIG_BODY);
    int ok = r.body_len == BIG_BODY;
    for (size_t i = 0; ok && i < BIG_BODY; i++) ok = r.body[i] == file_byte(i);
    CHECK(ok);
    http_response_free(&r);

    http_get(g_port, "/stream-length", &r);
    CHECK(r.status == 200 && !r.chunked && r.complete && strcmp(r.body, "abcdef") == 0);
    CHECK(http_header(&r, "content-length", 0, v, sizeof v) && strcmp(v, "6") == 0);
    http_response_free(&r);
}

/* ---- files ---------------------------------------------------------------------------------- */

static kestrel_result route_file(kestrel_request *req, kestrel_response *res) {
    kestrel_str query = kestrel_request_query(req);
    /* The path does not need a NUL: pass it with trailing garbage and its length. */
    char path[128];
    size_t path_len = strlen(g_file);
    snprintf(path, sizeof path, "%sGARBAGE", g_file);
    if (str_eq(query, "range")) return kestrel_response_send_file(res, (const uint8_t *)path, path_len, 10, 20);
    if (str_eq(query, "rest")) return kestrel_response_send_file(res, (const uint8_t *)path, path_len, 990, KESTREL_TO_END);
    if (str_eq(query, "end")) return kestrel_response_send_file(res, (const uint8_t *)path, path_len, FILE_SIZE, KESTREL_TO_END);
    return kestrel_response_send_file(res, (const uint8_t *)path, path_len, 0, KESTREL_TO_END);
}

static kestrel_result route_file_errors(kestrel_request *req, kestrel_response *res) {
    (void)req;
    CHECK_RC(kestrel_response_add_header(res, LIT("x-before"), LIT("1")), KESTREL_OK);
    CHECK_RC(kestrel_response_send_file(res, LIT("/nonexistent/kestrel-ctest"), 0, KESTREL_TO_END), KESTREL_IO_ERROR);
    CHECK_LAST_ERROR("/nonexistent/kestrel-ctest");
    CHECK_RC(kestrel_response_send_file(res, (const uint8_t *)g_file, strlen(g_file), FILE_SIZE + 1, KESTREL_TO_END), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_response_send_file(res, (const uint8_t *)g_file, strlen(g_file), 990, 11), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_response_send_file(res, (const uint8_t *)g_file, strlen(g_file), 0, FILE_SIZE + 1), KESTREL_INVALID_ARGUMENT);
    int fd = open(g_file, O_RDONLY);
    CHECK(fd >= 0);
    CHECK_RC(kestrel_response_send_fd(res, fd, FILE_SIZE + 1, KESTREL_TO_END), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_response_send_fd(res, fd, 5, FILE_SIZE), KESTREL_INVALID_ARGUMENT);
    close(fd);
    /* The response is still open, head included: answer 404 instead. */
    CHECK_RC(kestrel_response_set_status(res, 404), KESTREL_OK);
    CHECK_RC(kestrel_response_add_header(res, LIT("x-after"), LIT("1")), KESTREL_OK);
    return send_text(res, "missing");
}

/* A path that opens but is not a regular file. */
static kestrel_result file_dir_rc = 999;

static kestrel_result route_file_dir(kestrel_request *req, kestrel_response *res) {
    (void)req;
    file_dir_rc = kestrel_response_send_file(res, LIT("/tmp"), 0, KESTREL_TO_END);
    if (file_dir_rc == KESTREL_OK) return KESTREL_OK;
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_response_set_status(res, 404), KESTREL_OK);
    return send_text(res, "not a file");
}

static kestrel_result route_fd(kestrel_request *req, kestrel_response *res) {
    (void)req;
    int fd = open(g_file, O_RDONLY);
    REQUIRE(fd >= 0);
    kestrel_result rc = kestrel_response_send_fd(res, fd, 5, 10);
    close(fd); /* the library works on a duplicate: ours to close at once */
    return rc;
}

static void check_file_body(const http_response *r, size_t offset, size_t len, const char *what) {
    char v[32];
    int ok = r->status == 200 && r->complete && r->body_len == len && !r->chunked;
    for (size_t i = 0; ok && i < len; i++) ok = r->body[i] == file_byte(offset + i);
    snprintf(v, sizeof v, "%zu", len);
    char got[32] = "";
    ok = ok && http_header(r, "content-length", 0, got, sizeof got) && strcmp(got, v) == 0;
    if (!ok) fprintf(stderr, "%s: status %d, %zu bytes, content-length %s\n", what, r->status, r->body_len, got);
    t_check(ok, what, __FILE__, __LINE__);
}

static void test_files(void) {
    http_response r;
    char v[32];
    http_get(g_port, "/file", &r);
    check_file_body(&r, 0, FILE_SIZE, "send_file whole");
    http_response_free(&r);
    http_get(g_port, "/file?range", &r);
    check_file_body(&r, 10, 20, "send_file offset 10 length 20");
    http_response_free(&r);
    http_get(g_port, "/file?rest", &r);
    check_file_body(&r, 990, 10, "send_file offset 990 to the end");
    http_response_free(&r);
    http_get(g_port, "/file?end", &r);
    check_file_body(&r, FILE_SIZE, 0, "send_file offset at the end");
    http_response_free(&r);
    http_get(g_port, "/fd", &r);
    check_file_body(&r, 5, 10, "send_fd offset 5 length 10");
    http_response_free(&r);
    http_get(g_port, "/file-dir", &r);
    CHECK(file_dir_rc == KESTREL_IO_ERROR && r.status == 404);
    http_response_free(&r);
    http_get(g_port, "/file-errors", &r);
    CHECK(r.status == 404 && strcmp(r.body, "missing") == 0);
    CHECK(http_header(&r, "x-before", 0, v, sizeof v) && http_header(&r, "x-after", 0, v, sizeof v));
    http_response_free(&r);
}

/* Two responses served from the same descriptor at once. The library reads from a dup() of it,
 * and a dup shares the file offset with the original and with every other dup: one response's
 * seek and reads move the other's position. */
static int g_shared_fd = -1;
static int fd_shared_sent;

static kestrel_result route_fd_shared(kestrel_request *req, kestrel_response *res) {
    (void)req;
    kestrel_result rc = kestrel_response_send_fd(res, g_shared_fd, 0, KESTREL_TO_END);
    atomic_inc(&fd_shared_sent);
    return rc;
}

static uint32_t big_word(size_t index) { return (uint32_t)(index * 2654435761u); }

static int body_matches_big_file(const http_response *r) {
    if (r->status != 200 || r->body_len != FD_SHARED_SIZE) return 0;
    for (size_t i = 0; i < FD_SHARED_SIZE / 4; i++) {
        uint32_t w;
        memcpy(&w, r->body + i * 4, 4);
        if (w != big_word(i)) return 0;
    }
    return 1;
}

static void test_fd_shared(void) {
    g_shared_fd = open(g_big_file, O_RDONLY);
    REQUIRE(g_shared_fd >= 0);
    atomic_set(&fd_shared_sent, 0);
    /* Client A reads the head, then stops reading: once the socket buffers are full (well under
     * the 8 MiB body) its file body stops reading too. Then B is served in full from the same fd.
     * Then A reads the rest. */
    int a = http_connect(g_port);
    REQUIRE(a >= 0);
    send_str(a, "GET /fd-shared HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    WAIT_FOR(atomic_get(&fd_shared_sent) == 1, WAIT_MS);
    char head[4096];
    CHECK(read_until(a, head, sizeof head, "\r\n\r\n") > 0);
    sleep_ms(100); /* let A's transfer stall */
    http_response rb;
    http_get(g_port, "/fd-shared", &rb);
    http_response ra_rest;
    http_read_response(a, &ra_rest);
    close(a);
    size_t head_len = strlen(head);
    char *raw = malloc(head_len + ra_rest.raw_len);
    REQUIRE(raw != NULL);
    memcpy(raw, head, head_len);
    memcpy(raw + head_len, ra_rest.raw, ra_rest.raw_len);
    http_response ra;
    http_parse(raw, head_len + ra_rest.raw_len, &ra);
    free(raw);
    CHECK(!ra_rest.timed_out && !rb.timed_out);
    int a_ok = body_matches_big_file(&ra), b_ok = body_matches_big_file(&rb);
    if (!a_ok || !b_ok) {
        fprintf(stderr, "send_fd twice on one fd: A got %zu of %d bytes (%s), B got %zu (%s)\n", ra.body_len,
                FD_SHARED_SIZE, a_ok ? "intact" : "corrupt or cut off", rb.body_len, b_ok ? "intact" : "corrupt or cut off");
    }
    CHECK(a_ok && b_ok);
    http_response_free(&ra);
    http_response_free(&ra_rest);
    http_response_free(&rb);
    close(g_shared_fd);
}

/* ---- trailers -------------------------------------------------------------------------------- */

static kestrel_result route_trailers(kestrel_request *req, kestrel_response *res) {
    kestrel_str query = kestrel_request_query(req);
    if (str_eq(query, "declared")) { /* announced by the host, added after the body */
        CHECK_RC(kestrel_response_add_header(res, LIT("trailer"), LIT("x-checksum")), KESTREL_OK);
        CHECK_RC(kestrel_response_write(res, LIT("body")), KESTREL_OK);
        CHECK_RC(kestrel_response_add_trailer(res, LIT("X-Checksum"), LIT("abc123")), KESTREL_OK);
        return kestrel_response_end(res);
    }
    if (str_eq(query, "early")) { /* added before the response starts */
        CHECK_RC(kestrel_response_add_trailer(res, LIT("X-Checksum"), LIT("abc123")), KESTREL_OK);
        CHECK_RC(kestrel_response_write(res, LIT("body")), KESTREL_OK);
        return kestrel_response_end(res);
    }
    /* On HTTP/1.1 the head announces the trailers: one added after the response started is
     * refused with a clear error rather than silently dropped. */
    CHECK_RC(kestrel_response_write(res, LIT("body")), KESTREL_OK);
    CHECK_RC(kestrel_response_add_trailer(res, LIT("X-Late"), LIT("late")), KESTREL_INVALID_STATE);
    CHECK_LAST_ERROR("before the response starts");
    return kestrel_response_end(res);
}

static void test_trailers(void) {
    http_response r;
    char v[32];
    /* The request carries TE: trailers: the trailer must follow the body on HTTP/1.1. */
    http_request(g_port, "GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n", &r);
    CHECK(r.status == 200 && r.chunked && r.complete && strcmp(r.body, "body") == 0);
    CHECK(!http_trailer(&r, "x-late", v, sizeof v));
    http_response_free(&r);
    /* Added before the response started. */
    http_request(g_port, "GET /trailers?early HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n", &r);
    CHECK(r.status == 200 && r.chunked && r.complete && strcmp(r.body, "body") == 0);
    CHECK(http_trailer(&r, "x-checksum", v, sizeof v) && strcmp(v, "abc123") == 0);
    http_response_free(&r);
    /* Announced by the host in a Trailer header, then added after the body. */
    http_request(g_port, "GET /trailers?declared HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n", &r);
    CHECK(r.status == 200 && r.chunked && r.complete && strcmp(r.body, "body") == 0);
    CHECK(http_trailer(&r, "x-checksum", v, sizeof v) && strcmp(v, "abc123") == 0);
    http_response_free(&r);
    /* Without TE: trailers: none on HTTP/1.1. */
    http_get(g_port, "/trailers?declared", &r);
    CHECK(r.status == 200 && r.complete && strcmp(r.body, "body") == 0);
    CHECK(!http_trailer(&r, "x-checksum", v, sizeof v));
    http_response_free(&r);
}

/* ---- failures -------------------------------------------------------------------------------- */

static kestrel_result route_fail(kestrel_request *req, kestrel_response *res) {
    (void)req;
    CHECK_RC(kestrel_response_set_status(res, 202), KESTREL_OK);
    CHECK_RC(kestrel_response_add_header(res, LIT("x-dropped"), LIT("1")), KESTREL_OK);
    CHECK_RC(kestrel_response_fail(res), KESTREL_OK);
    CHECK_RC(kestrel_response_fail(res), KESTREL_ALREADY_COMPLETED);
    CHECK_RC(kestrel_response_send(res, LIT("x")), KESTREL_ALREADY_COMPLETED);
    return KESTREL_OK;
}

static kestrel_result route_fail_started(kestrel_request *req, kestrel_response *res) {
    (void)req;
    CHECK_RC(kestrel_response_write(res, LIT("partial")), KESTREL_OK);
    CHECK_RC(kestrel_response_flush(res), KESTREL_OK);
    return kestrel_response_fail(res);
}

static kestrel_result route_error(kestrel_request *req, kestrel_response *res) {
    (void)req;
    CHECK_RC(kestrel_response_add_header(res, LIT("x-dropped"), LIT("1")), KESTREL_OK);
    return KESTREL_IO_ERROR; /* not completed: the library answers 500 */
}

static kestrel_result route_error_started(kestrel_request *req, kestrel_response *res) {
    (void)req;
    CHECK_RC(kestrel_response_write(res, LIT("partial")), KESTREL_OK);
    CHECK_RC(kestrel_response_flush(res), KESTREL_OK);
    return KESTREL_INVALID_STATE; /* started: the response is cut off */
}

static kestrel_result route_error_after_send(kestrel_request *req, kestrel_response *res) {
    (void)req;
    CHECK_RC(kestrel_response_send(res, LIT("complete")), KESTREL_OK);
    return KESTREL_IO_ERROR; /* already complete: nothing left to change */
}

static void test_failures(void) {
    http_response r;
    char v[32];
    http_get(g_port, "/fail", &r);
    CHECK(r.status == 500 && r.body_len == 0);
    CHECK(!http_header(&r, "x-dropped", 0, v, sizeof v));
    http_response_free(&r);
    int records = atomic_get(&error_records);
    http_get(g_port, "/error", &r);
    CHECK(r.status == 500 && r.body_len == 0);
    CHECK(!http_header(&r, "x-dropped", 0, v, sizeof v));
    http_response_free(&r);
    /* A handler error is logged at KESTREL_LOG_ERROR. */
    WAIT_FOR(atomic_get(&error_records) > records, WAIT_MS);
    CHECK(atomic_get(&error_records) > records);
    /* Cut off: the client must not mistake it for a whole response. */
    /* (The connection may close before or after the head and the partial chunk went out.) */
    http_get(g_port, "/fail-started", &r);
    CHECK(r.eof && !r.timed_out && !r.complete);
    CHECK(r.status == 0 || (r.status == 200 && r.chunked));
    http_response_free(&r);
    http_get(g_port, "/error-started", &r);
    CHECK(r.eof && !r.timed_out && !r.complete);
    CHECK(r.status == 0 || (r.status == 200 && r.chunked));
    http_response_free(&r);
    http_get(g_port, "/error-after-send", &r);
    CHECK(r.status == 200 && r.complete && strcmp(r.body, "complete") == 0);
    http_response_free(&r);
}

/* ---- /later: completed from another thread after the callback returned --------------------- */

static pthread_t later_thread;
static int later_started;

static void *complete_later(void *arg) {
    kestrel_request *req = arg;
    sleep_ms(50);
    CHECK(str_eq(kestrel_request_path(req), "/later")); /* still valid: not completed yet */
    CHECK_RC(kestrel_response_add_header(kestrel_request_response(req), LIT("x-thread"), LIT("other")), KESTREL_OK);
    CHECK_RC(send_text(kestrel_request_response(req), "later"), KESTREL_OK);
    return NULL;
}

static kestrel_result route_later(kestrel_request *req, kestrel_response *res) {
    (void)res;
    REQUIRE(pthread_create(&later_thread, NULL, complete_later, req) == 0);
    atomic_set(&later_started, 1);
    return KESTREL_OK;
}

static void test_later(void) {
    http_response r;
    char v[16];
    http_get(g_port, "/later", &r);
    CHECK(r.status == 200 && strcmp(r.body, "later") == 0);
    CHECK(http_header(&r, "x-thread", 0, v, sizeof v) && strcmp(v, "other") == 0);
    http_response_free(&r);
    if (atomic_get(&later_started)) pthread_join(later_thread, NULL);
}

/* ---- request bodies ------------------------------------------------------------------------- */

static kestrel_result route_echo(kestrel_request *req, kestrel_response *res) {
    char body[4096];
    size_t len = 0;
    for (;;) {
        uint8_t chunk[7]; /* small on purpose: many reads */
        size_t n = 99;
        kestrel_result rc = kestrel_request_read(req, chunk, sizeof chunk, &n);
        CHECK_RC(rc, KESTREL_OK);
        if (rc != KESTREL_OK) return rc;
        if (n == 0) break;
        CHECK(n <= sizeof chunk);
        if (len + n > sizeof body) return KESTREL_INVALID_ARGUMENT;
        memcpy(body + len, chunk, n);
        len += n;
    }
    /* At the end it stays at the end. */
    uint8_t more[4];
    size_t n = 99;
    CHECK_RC(kestrel_request_read(req, more, sizeof more, &n), KESTREL_OK);
    CHECK(n == 0);
    return kestrel_response_send(res, (const uint8_t *)body, len);
}

/* Expect: 100-continue and a handler that answers without reading: no 100 Continue. */
static kestrel_result route_expect_refuse(kestrel_request *req, kestrel_response *res) {
    (void)req;
    CHECK_RC(kestrel_response_set_status(res, 417), KESTREL_OK);
    return send_text(res, "refused");
}

static void test_bodies(void) {
    http_response r;
    http_request(g_port,
                 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 26\r\nConnection: close\r\n\r\n"
                 "abcdefghijklmnopqrstuvwxyz",
                 &r);
    CHECK(r.status == 200 && strcmp(r.body, "abcdefghijklmnopqrstuvwxyz") == 0);
    http_response_free(&r);
    http_request(g_port,
                 "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                 "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
                 &r);
    CHECK(r.status == 200 && strcmp(r.body, "hello world") == 0);
    http_response_free(&r);
    http_request(g_port, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", &r);
    CHECK(r.status == 200 && r.body_len == 0);
    http_response_free(&r);

    /* Expect: 100-continue: the first read answers it, then the client sends the body. */
    int fd = http_connect(g_port);
    REQUIRE(fd >= 0);
    send_str(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n");
    char interim[256];
    long n = read_until(fd, interim, sizeof interim, "\r\n\r\n");
    CHECK(n > 0 && strncmp(interim, "HTTP/1.1 100", 12) == 0);
    send_str(fd, "continued");
    http_read_response(fd, &r);
    close(fd);
    CHECK(r.status == 200 && strcmp(r.body, "continued") == 0);
    http_response_free(&r);

    fd = http_connect(g_port);
    REQUIRE(fd >= 0);
    send_str(fd, "POST /expect-refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n");
    http_read_response(fd, &r);
    close(fd);
    CHECK(r.informational == 0 && r.status == 417 && strcmp(r.body, "refused") == 0);
    http_response_free(&r);
}

/* An asynchronous read is pending while a blocking read is tried (POOL thread). */
static int async_done, async_in_call;
static kestrel_result async_result = 999;
static size_t async_read;
static uint8_t async_buf[16];
static int async_ready;

static void async_cb(void *userdata, kestrel_result result, size_t read) {
    CHECK(userdata == &async_buf);
    CHECK(atomic_get(&async_in_call) == 0); /* never inside kestrel_request_read_async */
    CHECK(!pthread_equal(pthread_self(), main_thread));
    async_result = result;
    async_read = read;
    atomic_set(&async_done, 1);
}

static kestrel_result route_async_pending(kestrel_request *req, kestrel_response *res) {
    atomic_set(&async_in_call, 1);
    kestrel_result rc = kestrel_request_read_async(req, async_buf, sizeof async_buf, async_cb, async_buf);
    atomic_set(&async_in_call, 0);
    CHECK_RC(rc, KESTREL_OK);
    uint8_t buf[4];
    size_t n = 0;
    CHECK_RC(kestrel_request_read(req, buf, sizeof buf, &n), KESTREL_INVALID_STATE);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_request_read_async(req, buf, sizeof buf, async_cb, async_buf), KESTREL_INVALID_STATE);
    atomic_set(&async_ready, 1);
    /* The request must not be completed before the callback ran. */
    WAIT_FOR(atomic_get(&async_done), WAIT_MS);
    CHECK(atomic_get(&async_done));
    CHECK_RC(async_result, KESTREL_OK);
    char body[64];
    size_t len = async_read;
    memcpy(body, async_buf, len);
    for (;;) { /* the rest, blocking */
        CHECK_RC(kestrel_request_read(req, (uint8_t *)body + len, sizeof body - len, &n), KESTREL_OK);
        if (n == 0) break;
        len += n;
    }
    return kestrel_response_send(res, (const uint8_t *)body, len);
}

static void test_async_pending(void) {
    int fd = http_connect(g_port);
    REQUIRE(fd >= 0);
    send_str(fd, "POST /async-pending HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n");
    WAIT_FOR(atomic_get(&async_ready), WAIT_MS);
    CHECK(atomic_get(&async_ready));
    send_str(fd, "hello");
    http_response r;
    http_read_response(fd, &r);
    close(fd);
    CHECK(r.status == 200 && strcmp(r.body, "hello") == 0);
    http_response_free(&r);
}

/* ---- aborts ---------------------------------------------------------------------------------- */

static void *g_abort_req;
static counter abort_ud, abort_late_ud, abort_normal_ud;
static pthread_t abort_late_thread;

static void on_abort(void *userdata) { atomic_inc(&((counter *)userdata)->calls); }
static void on_abort_late(void *userdata) {
    abort_late_thread = pthread_self();
    atomic_inc(&((counter *)userdata)->calls);
}
static void writable_after_abort(void *userdata, kestrel_result result) {
    (void)result;
    atomic_inc(&((counter *)userdata)->calls);
}

static kestrel_result route_abort(kestrel_request *req, kestrel_response *res) {
    (void)res;
    CHECK_RC(kestrel_request_on_abort(req, on_abort, &abort_ud, count_free), KESTREL_OK);
    atomic_set_ptr(&g_abort_req, req); /* kept: completed later by the main thread */
    return KESTREL_OK;
}

static kestrel_result route_abort_normal(kestrel_request *req, kestrel_response *res) {
    CHECK_RC(kestrel_request_on_abort(req, on_abort, &abort_normal_ud, count_free), KESTREL_OK);
    return send_text(res, "normal");
}

/* A blocking read when the client goes away mid-body. */
static kestrel_result read_gone_rc = 999, read_gone_send_rc = 999;
static int read_gone_done, read_gone_waiting;

static kestrel_result route_read_gone(kestrel_request *req, kestrel_response *res) {
    uint8_t buf[64];
    size_t n = 0, total = 0;
    kestrel_result rc = KESTREL_OK;
    while (total < 10 && (rc = kestrel_request_read(req, buf, sizeof buf, &n)) == KESTREL_OK && n > 0) total += n;
    CHECK(total == 10);
    atomic_set(&read_gone_waiting, 1);
    /* The next read blocks: the other 90 bytes never come. */
    while ((rc = kestrel_request_read(req, buf, sizeof buf, &n)) == KESTREL_OK && n > 0) total += n;
    read_gone_rc = rc;
    read_gone_send_rc = kestrel_response_send(res, LIT("too late"));
    atomic_set(&read_gone_done, 1);
    return KESTREL_OK;
}

/* The client goes away mid-body while the handler holds the request without reading. */
static void *g_mid_body_req;

static kestrel_result route_hold_body(kestrel_request *req, kestrel_response *res) {
    (void)res;
    atomic_set_ptr(&g_mid_body_req, req);
    return KESTREL_OK;
}

static void test_abort(void) {
    /* The handler keeps the request; the client goes away. */
    int fd = http_connect(g_port);
    REQUIRE(fd >= 0);
    send_str(fd, "GET /abort HTTP/1.1\r\nHost: x\r\n\r\n");
    WAIT_FOR(atomic_get_ptr(&g_abort_req) != NULL, WAIT_MS);
    kestrel_request *req = atomic_get_ptr(&g_abort_req);
    REQUIRE(req != NULL);
    kestrel_response *res = kestrel_request_response(req);
    CHECK(!kestrel_request_is_aborted(req));
    CHECK(atomic_get(&abort_ud.calls) == 0);
    close(fd);
    WAIT_FOR(kestrel_request_is_aborted(req), WAIT_MS);
    CHECK(kestrel_request_is_aborted(req));
    WAIT_FOR(atomic_get(&abort_ud.freed) == 1, WAIT_MS);
    CHECK(atomic_get(&abort_ud.calls) == 1);
    CHECK(atomic_get(&abort_ud.freed) == 1);
    /* Registered after the abort: runs at once, on this thread. */
    CHECK_RC(kestrel_request_on_abort(req, on_abort_late, &abort_late_ud, count_free), KESTREL_OK);
    CHECK(atomic_get(&abort_late_ud.calls) == 1 && atomic_get(&abort_late_ud.freed) == 1);
    CHECK(pthread_equal(abort_late_thread, main_thread));
    /* The handle is still valid (not completed); everything reports KESTREL_CANCELLED. */
    CHECK(str_eq(kestrel_request_path(req), "/abort"));
    CHECK_RC(kestrel_response_write(res, LIT("late")), KESTREL_CANCELLED);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_response_flush(res), KESTREL_CANCELLED);
    CHECK_RC(kestrel_response_add_header(res, LIT("x-late"), LIT("1")), KESTREL_CANCELLED);
    counter writable = {0, 0};
    kestrel_result rc = kestrel_response_on_writable(res, writable_after_abort, &writable);
    /* Either refused, or exactly one call with KESTREL_CANCELLED. */
    CHECK(rc == KESTREL_CANCELLED || (rc == KESTREL_OK && atomic_get(&writable.calls) == 1));
    CHECK_RC(kestrel_response_send(res, LIT("late")), KESTREL_CANCELLED); /* the completion */
    CHECK(atomic_get(&abort_ud.calls) == 1 && atomic_get(&abort_ud.freed) == 1);
    /* The server closed its side of the connection. */
    WAIT_FOR(count_close_wait(g_port) == 0, 2000);
    CHECK(count_close_wait(g_port) == 0);

    /* A request that finishes normally: the abort callback never runs, its userdata is freed. */
    http_response r;
    http_get(g_port, "/abort-normal", &r);
    CHECK(r.status == 200 && strcmp(r.body, "normal") == 0);
    http_response_free(&r);
    WAIT_FOR(atomic_get(&abort_normal_ud.freed) == 1, WAIT_MS);
    CHECK(atomic_get(&abort_normal_ud.freed) == 1);
    CHECK(atomic_get(&abort_normal_ud.calls) == 0);

    /* A blocking body read when the client leaves mid-body: KESTREL_CANCELLED. */
    fd = http_connect(g_port);
    REQUIRE(fd >= 0);
    send_str(fd, "POST /read-gone HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789");
    WAIT_FOR(atomic_get(&read_gone_waiting), WAIT_MS);
    sleep_ms(100); /* into the blocking read */
    close(fd);
    WAIT_FOR(atomic_get(&read_gone_done), WAIT_MS);
    CHECK(atomic_get(&read_gone_done));
    CHECK_RC(read_gone_rc, KESTREL_CANCELLED);
    CHECK_RC(read_gone_send_rc, KESTREL_CANCELLED);
    /* The request is over: the server must close its side of the connection too. (Regression
     * check: at commit bd4621c the connection stayed in CLOSE_WAIT until kestrel_server_stop,
     * which then waited its whole timeout, because the aborted exchange kept the response channel
     * its connection task was waiting on.) */
    WAIT_FOR(count_close_wait(g_port) == 0, 2000);
    CHECK(count_close_wait(g_port) == 0);

    /* The client leaves mid-body while the request is held, unread: that is an abort too. */
    fd = http_connect(g_port);
    REQUIRE(fd >= 0);
    send_str(fd, "POST /hold-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789");
    WAIT_FOR(atomic_get_ptr(&g_mid_body_req) != NULL, WAIT_MS);
    req = atomic_get_ptr(&g_mid_body_req);
    REQUIRE(req != NULL);
    sleep_ms(50);
    close(fd);
    /* Documented: on HTTP/1.1 the connection is not read while the body is unread, so the
     * departure shows at the next body read (which fails and aborts the request). */
    uint8_t tmp[256];
    size_t got = 0;
    kestrel_result read_rc = KESTREL_OK;
    for (int i = 0; i < 20 && read_rc == KESTREL_OK; i++) read_rc = kestrel_request_read(req, tmp, sizeof tmp, &got);
    CHECK_RC(read_rc, KESTREL_CANCELLED);
    CHECK(kestrel_request_is_aborted(req));
    rc = kestrel_response_send(kestrel_request_response(req), LIT("late"));
    CHECK_RC(rc, KESTREL_CANCELLED);
}

/* ---- the handler ----------------------------------------------------------------------------- */

typedef kestrel_result (*route_fn)(kestrel_request *, kestrel_response *);

static const struct {
    const char *path;
    route_fn fn;
} routes[] = {
    {"/accessors/a%20b", route_accessors},
    {"/head", route_head},
    {"/v10", route_v10},
    {"/headers", route_headers},
    {"/started", route_started},
    {"/send", route_send},
    {"/send-empty", route_send_empty},
    {"/end-only", route_end_only},
    {"/owned", route_owned},
    {"/owned-static", route_owned_static},
    {"/chunked", route_chunked},
    {"/big", route_big},
    {"/stream-length", route_stream_length},
    {"/file", route_file},
    {"/file-errors", route_file_errors},
    {"/fd", route_fd},
    {"/fd-shared", route_fd_shared},
    {"/trailers", route_trailers},
    {"/fail", route_fail},
    {"/fail-started", route_fail_started},
    {"/error", route_error},
    {"/error-started", route_error_started},
    {"/error-after-send", route_error_after_send},
    {"/later", route_later},
    {"/echo", route_echo},
    {"/async-pending", route_async_pending},
    {"/abort", route_abort},
    {"/abort-normal", route_abort_normal},
    {"/read-gone", route_read_gone},
    {"/hold-body", route_hold_body},
    {"/echo-head", route_echo_head},
    {"*", route_echo_head},
    {"/expect-refuse", route_expect_refuse},
    {"/file-dir", route_file_dir},
};

static kestrel_result handler(void *userdata, kestrel_request *req, kestrel_response *res) {
    CHECK(userdata == &handler_ud);
    CHECK(!pthread_equal(pthread_self(), main_thread));
    atomic_inc(&handler_ud.calls);
    kestrel_str path = kestrel_request_path(req);
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (str_eq(path, routes[i].path)) return routes[i].fn(req, res);
    }
    char tmp[128];
    fprintf(stderr, "no route for %s\n", str_c(path, tmp, sizeof tmp));
    kestrel_response_set_status(res, 404);
    return send_text(res, "no route");
}

/* ---- main ------------------------------------------------------------------------------------ */

static void make_files(void) {
    snprintf(g_file, sizeof g_file, "/tmp/kestrel-ctest-file-XXXXXX");
    int fd = mkstemp(g_file);
    REQUIRE(fd >= 0);
    char data[FILE_SIZE];
    for (size_t i = 0; i < FILE_SIZE; i++) data[i] = file_byte(i);
    REQUIRE(write(fd, data, sizeof data) == (ssize_t)sizeof data);
    close(fd);

    snprintf(g_big_file, sizeof g_big_file, "/tmp/kestrel-ctest-big-XXXXXX");
    fd = mkstemp(g_big_file);
    REQUIRE(fd >= 0);
    uint32_t *words = malloc(FD_SHARED_SIZE);
    REQUIRE(words != NULL);
    for (size_t i = 0; i < FD_SHARED_SIZE / 4; i++) words[i] = big_word(i);
    REQUIRE(write(fd, words, FD_SHARED_SIZE) == (ssize_t)FD_SHARED_SIZE);
    free(words);
    close(fd);
}

/* Runs one test function (all of them, or those named in $KTEST_ONLY, e.g.
 * KTEST_ONLY=test_abort,test_files) and reports how long it took when it was slow. */
#define RUN(fn)                                                                                  \
    do {                                                                                         \
        uint64_t run_t0_ = now_ms();                                                             \
        if (!getenv("KTEST_ONLY") || strstr(getenv("KTEST_ONLY"), #fn)) fn();                    \
        uint64_t run_ms_ = now_ms() - run_t0_;                                                   \
        if (run_ms_ > 5000) fprintf(stderr, "note: %s took %llu ms\n", #fn, (unsigned long long)run_ms_); \
    } while (0)

int main(void) {
    test_start("test_http", 240);
    main_thread = pthread_self();
    make_files();

    kestrel_options *options = test_options("http://127.0.0.1:0", 4);
    CHECK_RC(kestrel_options_set_handler(options, handler, &handler_ud, count_free), KESTREL_OK);
    CHECK_RC(kestrel_options_set_log_callback(options, log_errors, KESTREL_LOG_ERROR, &log_ud, count_free), KESTREL_OK);
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    REQUIRE(kestrel_server_start(server) == KESTREL_OK);
    g_port = server_port(server, 0);
    REQUIRE(g_port > 0);

    RUN(test_accessors);
    RUN(test_head);
    RUN(test_target_forms);
    RUN(test_http10);
    RUN(test_response_headers);
    RUN(test_started);
    RUN(test_send);
    RUN(test_owned);
    RUN(test_streamed);
    RUN(test_files);
    RUN(test_fd_shared);
    RUN(test_trailers);
    RUN(test_failures);
    RUN(test_later);
    RUN(test_bodies);
    RUN(test_async_pending);
    RUN(test_abort);

    /* (A connection left open by the read-gone bug above makes stop wait its timeout: keep it short.) */
    size_t aborted = 99;
    CHECK_RC(kestrel_server_stop(server, 1000, &aborted), KESTREL_OK);
    CHECK(aborted == 0);
    kestrel_server_free(server);
    CHECK(atomic_get(&handler_ud.freed) == 1);
    CHECK(atomic_get(&log_ud.freed) == 1);
    unlink(g_file);
    unlink(g_big_file);
    return test_finish();
}
