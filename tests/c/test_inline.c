/*
 * test_inline.c: INLINE dispatch, where handlers run on the I/O thread and must not block.
 * A blocking read returns KESTREL_WOULD_BLOCK and kestrel_request_read_async delivers the body;
 * a write into a full response buffer returns KESTREL_WOULD_BLOCK and kestrel_response_on_writable
 * says when to write again; flush only starts the response; blocking work is handed to a host
 * thread. The server header is turned off here.
 */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static counter handler_ud;
static pthread_t main_thread;
static int g_port;

#define BUFFER_SIZE 16 /* the response buffer: tiny, so that writes fill it */

/* ---- /read: the body through kestrel_request_read_async ------------------------------------ */

typedef struct {
    kestrel_request *req;
    uint8_t buf[8];
    char body[256];
    size_t len;
    int in_call;
    pthread_t io_thread;
} read_ctx;

static int reads_done, read_callbacks;

static void on_read(void *userdata, kestrel_result result, size_t n) {
    read_ctx *ctx = userdata;
    atomic_inc(&read_callbacks);
    CHECK(atomic_get(&ctx->in_call) == 0); /* never inside kestrel_request_read_async */
    CHECK(!pthread_equal(pthread_self(), main_thread));
    CHECK_RC(result, KESTREL_OK);
    kestrel_response *res = kestrel_request_response(ctx->req);
    if (result != KESTREL_OK) {
        kestrel_response_fail(res);
        free(ctx);
        return;
    }
    CHECK(n <= sizeof ctx->buf);
    if (n > 0 && ctx->len + n <= sizeof ctx->body) {
        memcpy(ctx->body + ctx->len, ctx->buf, n);
        ctx->len += n;
        atomic_set(&ctx->in_call, 1);
        kestrel_result rc = kestrel_request_read_async(ctx->req, ctx->buf, sizeof ctx->buf, on_read, ctx);
        atomic_set(&ctx->in_call, 0);
        CHECK_RC(rc, KESTREL_OK);
        return;
    }
    /* The end of the body: answer from the I/O thread. */
    CHECK_RC(kestrel_response_send(res, (const uint8_t *)ctx->body, ctx->len), KESTREL_OK);
    atomic_set(&reads_done, 1);
    free(ctx);
}

static kestrel_result route_read(kestrel_request *req, kestrel_response *res) {
    (void)res;
    uint8_t buf[4];
    size_t n = 77;
    CHECK_RC(kestrel_request_read(req, buf, sizeof buf, &n), KESTREL_WOULD_BLOCK);
    CHECK_LAST_ERROR(NULL);
    CHECK(n == 77); /* outputs only on success */
    read_ctx *ctx = calloc(1, sizeof *ctx);
    REQUIRE(ctx != NULL);
    ctx->req = req;
    ctx->in_call = 1;
    kestrel_result rc = kestrel_request_read_async(req, ctx->buf, sizeof ctx->buf, on_read, ctx);
    atomic_set(&ctx->in_call, 0);
    CHECK_RC(rc, KESTREL_OK);
    if (rc != KESTREL_OK) free(ctx); /* no callback will come */
    return rc;
}

static void test_read_async(void) {
    http_response r;
    http_request(g_port,
                 "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 36\r\nConnection: close\r\n\r\n"
                 "abcdefghijklmnopqrstuvwxyz0123456789",
                 &r);
    CHECK(r.status == 200 && strcmp(r.body, "abcdefghijklmnopqrstuvwxyz0123456789") == 0);
    char v[32];
    CHECK(!http_header(&r, "server", 0, v, sizeof v)); /* turned off */
    http_response_free(&r);
    CHECK(atomic_get(&reads_done) == 1);
    CHECK(atomic_get(&read_callbacks) >= 6); /* 36 bytes through an 8-byte buffer, then the end */

    /* A chunked body, and an empty one. */
    http_request(g_port,
                 "POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                 "3\r\nabc\r\n0\r\n\r\n",
                 &r);
    CHECK(r.status == 200 && strcmp(r.body, "abc") == 0);
    http_response_free(&r);
    http_request(g_port, "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", &r);
    CHECK(r.status == 200 && r.body_len == 0);
    http_response_free(&r);
}

/* ---- /write: backpressure without blocking ------------------------------------------------- */

typedef struct {
    kestrel_response *res;
    int writable_calls;
    int nested_called;
} write_ctx;

static int writes_done;

static void on_room_again(void *userdata, kestrel_result result) {
    write_ctx *ctx = userdata;
    CHECK_RC(result, KESTREL_OK);
    atomic_set(&ctx->nested_called, 1);
}

static void on_writable(void *userdata, kestrel_result result) {
    write_ctx *ctx = userdata;
    atomic_inc(&ctx->writable_calls);
    CHECK(!pthread_equal(pthread_self(), main_thread));
    CHECK_RC(result, KESTREL_OK);
    CHECK_RC(kestrel_response_write(ctx->res, LIT("more")), KESTREL_OK);
    /* There is room now: the callback runs at once, on this thread, before this returns. */
    CHECK_RC(kestrel_response_on_writable(ctx->res, on_room_again, ctx), KESTREL_OK);
    CHECK(atomic_get(&ctx->nested_called) == 1);
    CHECK_RC(kestrel_response_end(ctx->res), KESTREL_OK);
    atomic_set(&writes_done, 1);
    free(ctx);
}

static kestrel_result route_write(kestrel_request *req, kestrel_response *res) {
    (void)req;
    write_ctx *ctx = calloc(1, sizeof *ctx);
    REQUIRE(ctx != NULL);
    ctx->res = res;
    /* On an I/O thread flush only starts the response. */
    CHECK_RC(kestrel_response_flush(res), KESTREL_OK);
    CHECK_RC(kestrel_response_write(res, LIT("0123456789abcdef")), KESTREL_OK); /* fills the 16 bytes */
    CHECK_RC(kestrel_response_write(res, LIT("more")), KESTREL_WOULD_BLOCK);   /* full: nothing written */
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_response_on_writable(res, on_writable, ctx), KESTREL_OK);
    CHECK(atomic_get(&ctx->writable_calls) == 0); /* the buffer cannot drain while we run */
    return KESTREL_OK;
}

static void test_writable(void) {
    http_response r;
    http_get(g_port, "/write", &r);
    CHECK(r.status == 200 && r.chunked && r.complete);
    CHECK(strcmp(r.body, "0123456789abcdefmore") == 0);
    http_response_free(&r);
    CHECK(atomic_get(&writes_done) == 1);
}

/* ---- /overshoot: a write larger than the room left ------------------------------------------ */

/* Writes 10 bytes at a time into the 16-byte buffer: the second write is taken although it does
 * not fit (the buffer is not full), the third is refused, and on_writable then waits for the
 * buffer to drain instead of calling back at once (which would loop forever). */
static int overshoot_round;
static int overshoot_done;

static void overshoot_writable(void *userdata, kestrel_result result) {
    kestrel_response *res = userdata;
    CHECK_RC(result, KESTREL_OK);
    int round = atomic_inc(&overshoot_round);
    REQUIRE(round < 20); /* bounded: a callback loop fails here */
    kestrel_result rc;
    while ((rc = kestrel_response_write(res, LIT("0123456789"))) == KESTREL_OK) {
    }
    CHECK_RC(rc, KESTREL_WOULD_BLOCK);
    if (round >= 3) {
        CHECK_RC(kestrel_response_end(res), KESTREL_OK);
        atomic_set(&overshoot_done, 1);
        return;
    }
    CHECK_RC(kestrel_response_on_writable(res, overshoot_writable, res), KESTREL_OK);
}

static kestrel_result route_overshoot(kestrel_request *req, kestrel_response *res) {
    (void)req;
    CHECK_RC(kestrel_response_write(res, LIT("0123456789")), KESTREL_OK);
    CHECK_RC(kestrel_response_write(res, LIT("0123456789")), KESTREL_OK); /* 20 > 16: taken whole */
    CHECK_RC(kestrel_response_write(res, LIT("0123456789")), KESTREL_WOULD_BLOCK);
    CHECK_RC(kestrel_response_on_writable(res, overshoot_writable, res), KESTREL_OK);
    CHECK(atomic_get(&overshoot_round) == 0); /* full: no call back before the buffer drains */
    return KESTREL_OK;
}

static void test_overshoot(void) {
    http_response r;
    http_get(g_port, "/overshoot", &r);
    CHECK(r.status == 200 && r.complete);
    /* Two writes in the handler, then at least one per callback round (rounds 1 to 3). */
    CHECK(r.body_len >= 50 && r.body_len <= 80 && r.body_len % 10 == 0);
    http_response_free(&r);
    CHECK(atomic_get(&overshoot_done) == 1);
    CHECK(atomic_get(&overshoot_round) == 3);
}

/* ---- /defer: blocking work on a host thread ------------------------------------------------ */

static pthread_t deferred_thread;
static int deferred_started;

static void *deferred(void *arg) {
    kestrel_request *req = arg;
    kestrel_response *res = kestrel_request_response(req);
    /* Off the I/O threads, reads and writes may block. */
    char body[64];
    size_t len = 0, n = 0;
    do {
        CHECK_RC(kestrel_request_read(req, (uint8_t *)body + len, sizeof body - len, &n), KESTREL_OK);
        len += n;
    } while (n > 0 && len < sizeof body);
    CHECK(len == 5 && memcmp(body, "hello", 5) == 0);
    /* 100 bytes through a 16-byte buffer: each write waits for room. */
    char data[100];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (char)('a' + i % 26);
    CHECK_RC(kestrel_response_write(res, (const uint8_t *)data, sizeof data), KESTREL_OK);
    for (int i = 0; i < 10; i++) CHECK_RC(kestrel_response_write(res, LIT("0123456789")), KESTREL_OK);
    CHECK_RC(kestrel_response_flush(res), KESTREL_OK);
    CHECK_RC(kestrel_response_end(res), KESTREL_OK);
    return NULL;
}

static kestrel_result route_defer(kestrel_request *req, kestrel_response *res) {
    (void)res;
    REQUIRE(pthread_create(&deferred_thread, NULL, deferred, req) == 0);
    atomic_set(&deferred_started, 1);
    return KESTREL_OK;
}

static void test_defer(void) {
    http_response r;
    http_request(g_port, "POST /defer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", &r);
    CHECK(r.status == 200 && r.complete && r.body_len == 200);
    int ok = r.body_len == 200;
    for (size_t i = 0; ok && i < 100; i++) ok = r.body[i] == (char)('a' + i % 26);
    for (size_t i = 100; ok && i < 200; i++) ok = r.body[i] == (char)('0' + (i - 100) % 10);
    CHECK(ok);
    http_response_free(&r);
    if (atomic_get(&deferred_started)) pthread_join(deferred_thread, NULL);
}

/* ---- /error and a plain send ---------------------------------------------------------------- */

static kestrel_result route_error(kestrel_request *req, kestrel_response *res) {
    (void)req;
    (void)res;
    return KESTREL_INVALID_ARGUMENT;
}

static kestrel_result route_hello(kestrel_request *req, kestrel_response *res) {
    (void)req;
    return kestrel_response_send(res, LIT("inline hello"));
}

static void test_simple(void) {
    http_response r;
    http_get(g_port, "/hello", &r);
    CHECK(r.status == 200 && strcmp(r.body, "inline hello") == 0);
    http_response_free(&r);
    http_get(g_port, "/error", &r);
    CHECK(r.status == 500 && r.body_len == 0);
    http_response_free(&r);
}

/* ---- handler -------------------------------------------------------------------------------- */

static kestrel_result handler(void *userdata, kestrel_request *req, kestrel_response *res) {
    CHECK(userdata == &handler_ud);
    CHECK(!pthread_equal(pthread_self(), main_thread));
    atomic_inc(&handler_ud.calls);
    kestrel_str path = kestrel_request_path(req);
    if (str_eq(path, "/read")) return route_read(req, res);
    if (str_eq(path, "/write")) return route_write(req, res);
    if (str_eq(path, "/overshoot")) return route_overshoot(req, res);
    if (str_eq(path, "/defer")) return route_defer(req, res);
    if (str_eq(path, "/error")) return route_error(req, res);
    return route_hello(req, res);
}

/* Pool threads are not started in INLINE mode: the hooks never run. */
static int hook_calls;
static void hook(void *userdata) {
    (void)userdata;
    atomic_inc(&hook_calls);
}

int main(void) {
    test_start("test_inline", 120);
    main_thread = pthread_self();
    counter hooks_ud = {0, 0};
    kestrel_options *options = test_options("http://127.0.0.1:0", 0);
    CHECK_RC(kestrel_options_set_dispatch(options, KESTREL_DISPATCH_INLINE), KESTREL_OK);
    CHECK_RC(kestrel_options_set_response_buffer_size(options, BUFFER_SIZE), KESTREL_OK);
    CHECK_RC(kestrel_options_set_server_header(options, false), KESTREL_OK);
    CHECK_RC(kestrel_options_set_handler(options, handler, &handler_ud, count_free), KESTREL_OK);
    CHECK_RC(kestrel_options_set_thread_hooks(options, hook, hook, &hooks_ud, count_free), KESTREL_OK);
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    REQUIRE(kestrel_server_start(server) == KESTREL_OK);
    g_port = server_port(server, 0);
    REQUIRE(g_port > 0);

    kestrel_request *req = NULL;
    CHECK_RC(kestrel_server_next_request(server, 0, &req), KESTREL_INVALID_STATE);

    test_simple();
    test_read_async();
    test_writable();
    test_overshoot();
    test_defer();

    size_t aborted = 99;
    CHECK_RC(kestrel_server_stop(server, 5000, &aborted), KESTREL_OK);
    CHECK(aborted == 0);
    kestrel_server_free(server);
    CHECK(atomic_get(&handler_ud.freed) == 1);
    CHECK(atomic_get(&hooks_ud.freed) == 1);
    CHECK(atomic_get(&hook_calls) == 0);
    return test_finish();
}
