/*
 * test_pull.c: PULL dispatch. The host takes requests with kestrel_server_next_request:
 * KESTREL_INVALID_STATE before start, KESTREL_TIMEOUT when none came, a request it reads and
 * answers from its own threads, a request in flight at stop (aborted, completing it reports
 * KESTREL_CANCELLED), KESTREL_STOPPED once the server stopped (also for a thread already waiting).
 */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static kestrel_server *g_server;

static void *answer_from_thread(void *arg) {
    kestrel_request *req = arg;
    kestrel_response *res = kestrel_request_response(req);
    CHECK(str_eq(kestrel_request_path(req), "/second"));
    CHECK_RC(kestrel_response_write(res, LIT("from ")), KESTREL_OK);
    CHECK_RC(kestrel_response_write(res, LIT("a host thread")), KESTREL_OK);
    CHECK_RC(kestrel_response_end(res), KESTREL_OK);
    return NULL;
}

/* Opens a connection, sends `raw`, and takes the request it makes; `*fd` gets the connection. */
static kestrel_request *send_and_pull(kestrel_server *server, int port, const char *raw, int *fd) {
    *fd = http_connect(port);
    REQUIRE(*fd >= 0);
    send_str(*fd, raw);
    kestrel_request *req = NULL;
    CHECK_RC(kestrel_server_next_request(server, WAIT_MS, &req), KESTREL_OK);
    REQUIRE(req != NULL);
    return req;
}

/* A read blocked on a body that never comes, while another thread completes the request. */
static int overlap_got;
static kestrel_result overlap_rc = 999;
static void *read_until_error(void *arg) {
    kestrel_request *req = arg;
    char buf[64];
    size_t n = 0;
    kestrel_result rc;
    while ((rc = kestrel_request_read(req, (uint8_t *)buf, sizeof buf, &n)) == KESTREL_OK && n > 0) {
        atomic_inc(&overlap_got);
    }
    overlap_rc = rc;
    return NULL;
}

static kestrel_result waiter_rc = 999;
static void *wait_forever(void *arg) {
    (void)arg;
    kestrel_request *req = NULL;
    waiter_rc = kestrel_server_next_request(g_server, -1, &req);
    CHECK(req == NULL);
    return NULL;
}

int main(void) {
    test_start("test_pull", 120);
    kestrel_options *options = test_options("http://127.0.0.1:0", 0);
    CHECK_RC(kestrel_options_set_dispatch(options, KESTREL_DISPATCH_PULL), KESTREL_OK);
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK); /* no handler needed */
    g_server = server;
    kestrel_request *req = NULL;
    CHECK_RC(kestrel_server_next_request(server, 0, &req), KESTREL_INVALID_STATE); /* before start */
    CHECK_LAST_ERROR(NULL);
    REQUIRE(kestrel_server_start(server) == KESTREL_OK);
    int port = server_port(server, 0);
    REQUIRE(port > 0);

    /* Nothing came: KESTREL_TIMEOUT after about the timeout, *request untouched. */
    kestrel_request *untouched = (kestrel_request *)&port;
    req = untouched;
    uint64_t t0 = now_ms();
    CHECK_RC(kestrel_server_next_request(server, 100, &req), KESTREL_TIMEOUT);
    uint64_t waited = now_ms() - t0;
    CHECK(waited >= 90 && waited < 5000);
    CHECK_LAST_ERROR(NULL);
    CHECK(req == untouched);
    CHECK_RC(kestrel_server_next_request(server, 0, &req), KESTREL_TIMEOUT);

    /* A request: read its body and answer it from this (the main) thread. */
    int fd = -1;
    req = send_and_pull(server, port, "POST /first?k=v HTTP/1.1\r\nHost: pull\r\nContent-Length: 11\r\nConnection: close\r\n\r\npulled body", &fd);
    CHECK(str_eq(kestrel_request_method(req), "POST"));
    CHECK(str_eq(kestrel_request_path(req), "/first"));
    CHECK(str_eq(kestrel_request_query(req), "k=v"));
    CHECK(str_eq(kestrel_request_authority(req), "pull"));
    char body[64];
    size_t len = 0, n = 0;
    do {
        CHECK_RC(kestrel_request_read(req, (uint8_t *)body + len, sizeof body - len, &n), KESTREL_OK);
        len += n;
    } while (n > 0 && len < sizeof body);
    CHECK(len == 11 && memcmp(body, "pulled body", 11) == 0);
    kestrel_response *res = kestrel_request_response(req);
    CHECK_RC(kestrel_response_set_status(res, 202), KESTREL_OK);
    CHECK_RC(kestrel_response_add_header(res, LIT("x-pulled"), LIT("yes")), KESTREL_OK);
    CHECK_RC(kestrel_response_send(res, (const uint8_t *)body, len), KESTREL_OK);
    http_response r;
    http_read_response(fd, &r);
    close(fd);
    char v[16];
    CHECK(r.status == 202 && strcmp(r.body, "pulled body") == 0);
    CHECK(http_header(&r, "x-pulled", 0, v, sizeof v) && strcmp(v, "yes") == 0);
    http_response_free(&r);

    /* A request answered from another host thread. */
    req = send_and_pull(server, port, "GET /second HTTP/1.1\r\nHost: pull\r\nConnection: close\r\n\r\n", &fd);
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, answer_from_thread, req) == 0);
    http_read_response(fd, &r);
    close(fd);
    pthread_join(thread, NULL);
    CHECK(r.status == 200 && r.chunked && r.complete && strcmp(r.body, "from a host thread") == 0);
    http_response_free(&r);

    /* A blocking read overlapping a completion from another thread: the handle stays valid until
     * the read returns (valgrind would report the use after free otherwise). */
    req = send_and_pull(server, port, "POST /overlap HTTP/1.1\r\nHost: pull\r\nContent-Length: 100\r\n\r\nfirst", &fd);
    pthread_t reader;
    REQUIRE(pthread_create(&reader, NULL, read_until_error, req) == 0);
    for (int i = 0; i < 500 && atomic_get(&overlap_got) == 0; i++) sleep_ms(10);
    CHECK(atomic_get(&overlap_got) == 1);
    sleep_ms(50); /* the reader is now blocked waiting for the rest of the body */
    CHECK_RC(kestrel_response_fail(kestrel_request_response(req)), KESTREL_OK);
    http_read_one(fd, &r);
    CHECK(r.status == 500);
    http_response_free(&r);
    close(fd); /* the body never comes: the blocked read ends */
    pthread_join(reader, NULL);
    CHECK(overlap_rc == KESTREL_CANCELLED);

    /* A request in flight at stop: aborted; completing it reports KESTREL_CANCELLED. */
    req = send_and_pull(server, port, "GET /inflight HTTP/1.1\r\nHost: pull\r\nConnection: close\r\n\r\n", &fd);
    CHECK(str_eq(kestrel_request_path(req), "/inflight"));

    /* Meanwhile another host thread waits forever for the next request. */
    pthread_t waiter;
    REQUIRE(pthread_create(&waiter, NULL, wait_forever, NULL) == 0);
    sleep_ms(50);

    size_t aborted = 0;
    t0 = now_ms();
    CHECK_RC(kestrel_server_stop(server, 200, &aborted), KESTREL_OK);
    CHECK(aborted == 1);
    CHECK(now_ms() - t0 < WAIT_MS);
    CHECK(kestrel_request_is_aborted(req));
    CHECK_RC(kestrel_response_send(kestrel_request_response(req), LIT("late")), KESTREL_CANCELLED);
    http_read_response(fd, &r);
    close(fd);
    CHECK(!r.timed_out && (r.eof || r.status != 0));
    http_response_free(&r);

    /* The waiting thread learns the loop is over; so does everyone after. */
    pthread_join(waiter, NULL);
    CHECK_RC(waiter_rc, KESTREL_STOPPED);
    req = untouched;
    CHECK_RC(kestrel_server_next_request(server, 0, &req), KESTREL_STOPPED);
    CHECK_LAST_ERROR(NULL);
    CHECK(req == untouched);
    t0 = now_ms();
    CHECK_RC(kestrel_server_next_request(server, -1, &req), KESTREL_STOPPED);
    CHECK_RC(kestrel_server_next_request(server, 10000, &req), KESTREL_STOPPED);
    CHECK(now_ms() - t0 < 5000);

    kestrel_server_free(server);
    return test_finish();
}
