/*
 * test_server.c: the server's lifecycle. Start on port 0 and read the addresses back (TCP, Unix
 * socket, inherited listening fd), start twice, bind failures that leave nothing bound, stop
 * twice, free without stop, handler/hook/log userdata released once, thread hooks once per pool
 * thread, the log callback, stop from inside a handler, stop with a request that never
 * completes.
 */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- shared state -------------------------------------------------------------------------- */


static counter handler_ud, hooks_ud, log_ud, abort_ud;
static int hook_starts, hook_stops;
static pthread_t hook_threads[16];
static pthread_t main_thread;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static kestrel_server *g_server;          /* the server the handler may stop */
static void *g_held;                      /* a request kept by /hold */
static int stop_rc = -1;                  /* what kestrel_server_stop returned in a handler */
static int stop_ms = -1;                  /* and how long it took */

/* ---- log records --------------------------------------------------------------------------- */

#define MAX_RECORDS 64
static struct {
    kestrel_log_level level;
    char category[64];
    char message[256];
} records[MAX_RECORDS];
static int record_count;

static void log_record(void *userdata, kestrel_log_level level, kestrel_str category, kestrel_str message) {
    atomic_inc(&((counter *)userdata)->calls);
    pthread_mutex_lock(&lock);
    if (record_count < MAX_RECORDS) {
        records[record_count].level = level;
        str_c(category, records[record_count].category, sizeof records[record_count].category);
        str_c(message, records[record_count].message, sizeof records[record_count].message);
        record_count++;
    }
    pthread_mutex_unlock(&lock);
}

/* Whether a record at `level` (or any level if -1) whose message contains `text` was logged. */
static int logged(int level, const char *text) {
    int found = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < record_count; i++) {
        if ((level < 0 || records[i].level == (kestrel_log_level)level) && strstr(records[i].message, text)) found = 1;
    }
    pthread_mutex_unlock(&lock);
    return found;
}

static int logged_at_or_below(kestrel_log_level level) {
    int found = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < record_count; i++) {
        if (records[i].level <= level) found = 1;
    }
    pthread_mutex_unlock(&lock);
    return found;
}

static void reset_records(void) {
    pthread_mutex_lock(&lock);
    record_count = 0;
    pthread_mutex_unlock(&lock);
}

/* ---- hooks and handler --------------------------------------------------------------------- */

static void hook_start(void *userdata) {
    CHECK(userdata == &hooks_ud);
    CHECK(!pthread_equal(pthread_self(), main_thread));
    int n = atomic_inc(&hook_starts);
    if (n <= 16) hook_threads[n - 1] = pthread_self();
}

static void hook_stop(void *userdata) {
    CHECK(userdata == &hooks_ud);
    CHECK(!pthread_equal(pthread_self(), main_thread));
    atomic_inc(&hook_stops);
}

static void abort_called(void *userdata) { atomic_inc(&((counter *)userdata)->calls); }

static kestrel_result handler(void *userdata, kestrel_request *req, kestrel_response *res) {
    CHECK(userdata == &handler_ud);
    atomic_inc(&handler_ud.calls);
    kestrel_str path = kestrel_request_path(req);
    if (str_eq(path, "/hold")) {
        /* Keep the request: it is completed later, by the test, from the main thread. */
        CHECK_RC(kestrel_request_on_abort(req, abort_called, &abort_ud, count_free), KESTREL_OK);
        atomic_set_ptr(&g_held, req);
        return KESTREL_OK;
    }
    if (str_eq(path, "/free")) {
        /* On a library thread free only hands the teardown over and returns at once; this
         * request stays valid until completed. */
        uint64_t t0 = now_ms();
        kestrel_server_free(g_server);
        atomic_set(&stop_ms, (int)(now_ms() - t0));
        kestrel_result rc = kestrel_response_send(res, LIT("freed"));
        CHECK(rc == KESTREL_OK || rc == KESTREL_CANCELLED);
        return KESTREL_OK;
    }
    if (str_eq(path, "/stop")) {
        uint64_t t0 = now_ms();
        size_t aborted = 99;
        kestrel_result rc = kestrel_server_stop(g_server, 1500, &aborted);
        atomic_set(&stop_ms, (int)(now_ms() - t0));
        atomic_set(&stop_rc, (int)rc);
        return kestrel_response_send(res, LIT("stopping"));
    }
    kestrel_response_add_header(res, LIT("content-type"), LIT("text/plain"));
    return kestrel_response_send(res, LIT("hello"));
}

/* ---- helpers ------------------------------------------------------------------------------- */

static int listening_socket(int port, int *bound_port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 16) != 0) {
        close(fd);
        return -1;
    }
    socklen_t len = sizeof addr;
    getsockname(fd, (struct sockaddr *)&addr, &len);
    if (bound_port) *bound_port = ntohs(addr.sin_port);
    return fd;
}

static void check_hello(const http_response *r, const char *what) {
    int ok = r->status == 200 && strcmp(r->body, "hello") == 0;
    if (!ok) fprintf(stderr, "%s: status %d, body \"%s\"\n", what, r->status, r->body);
    t_check(ok, what, __FILE__, __LINE__);
}

static void reset_counters(void) {
    memset(&handler_ud, 0, sizeof handler_ud);
    memset(&hooks_ud, 0, sizeof hooks_ud);
    memset(&log_ud, 0, sizeof log_ud);
    memset(&abort_ud, 0, sizeof abort_ud);
    atomic_set(&hook_starts, 0);
    atomic_set(&hook_stops, 0);
    atomic_set_ptr(&g_held, NULL);
    reset_records();
}

/* ---- start, addresses, stop twice, free ---------------------------------------------------- */

static void test_lifecycle(void) {
    reset_counters();
    char sock_path[128], urls[256];
    snprintf(sock_path, sizeof sock_path, "/tmp/kestrel-ctest-%d.sock", (int)getpid());
    unlink(sock_path);
    snprintf(urls, sizeof urls, "http://127.0.0.1:0;http://unix:%s", sock_path);
    int fd_port = 0;
    int listen_fd = listening_socket(0, &fd_port);
    REQUIRE(listen_fd >= 0);

    kestrel_options *options = test_options(urls, 3);
    CHECK_RC(kestrel_options_add_listen_fd(options, listen_fd, KESTREL_PROTOCOLS_HTTP1), KESTREL_OK);
    CHECK_RC(kestrel_options_set_handler(options, handler, &handler_ud, count_free), KESTREL_OK);
    CHECK_RC(kestrel_options_set_thread_hooks(options, hook_start, hook_stop, &hooks_ud, count_free), KESTREL_OK);
    CHECK_RC(kestrel_options_set_log_callback(options, log_record, KESTREL_LOG_INFO, &log_ud, count_free), KESTREL_OK);
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK && server != NULL);
    g_server = server;
    CHECK(kestrel_server_address_count(server) == 0);
    CHECK(atomic_get(&hook_starts) == 0);

    REQUIRE(kestrel_server_start(server) == KESTREL_OK);
    CHECK(kestrel_server_address_count(server) == 3);

    /* Addresses: real ports, in endpoint order. */
    char url[256], expected[256];
    size_t written = 0;
    CHECK_RC(kestrel_server_address(server, 0, url, sizeof url, &written), KESTREL_OK);
    CHECK(written == strlen(url));
    CHECK(strncmp(url, "http://127.0.0.1:", 17) == 0);
    int port = server_port(server, 0);
    CHECK(port > 0 && port < 65536);
    CHECK_RC(kestrel_server_address(server, 1, url, sizeof url, NULL), KESTREL_OK);
    snprintf(expected, sizeof expected, "http://unix:%s", sock_path);
    CHECK(strcmp(url, expected) == 0);
    CHECK_RC(kestrel_server_address(server, 2, url, sizeof url, NULL), KESTREL_OK);
    snprintf(expected, sizeof expected, "http://127.0.0.1:%d", fd_port);
    CHECK(strcmp(url, expected) == 0);
    /* Past the end: KESTREL_NOT_FOUND, nothing written. */
    strcpy(url, "untouched");
    written = 42;
    CHECK_RC(kestrel_server_address(server, 3, url, sizeof url, &written), KESTREL_NOT_FOUND);
    CHECK_LAST_ERROR("3");
    CHECK(strcmp(url, "untouched") == 0 && written == 42);
    /* Too small: KESTREL_BUFFER_TOO_SMALL with a NUL-terminated prefix. */
    char full[256], small[10];
    kestrel_server_address(server, 0, full, sizeof full, NULL);
    memset(small, 'x', sizeof small);
    CHECK_RC(kestrel_server_address(server, 0, small, sizeof small, &written), KESTREL_BUFFER_TOO_SMALL);
    CHECK_LAST_ERROR(NULL);
    CHECK(small[9] == '\0' && strncmp(small, full, 9) == 0);
    small[0] = 'y';
    CHECK_RC(kestrel_server_address(server, 0, small, 0, NULL), KESTREL_BUFFER_TOO_SMALL);
    CHECK(small[0] == 'y');
    /* Exactly fitting. */
    size_t need = strlen(full) + 1;
    char *exact = malloc(need);
    REQUIRE(exact != NULL);
    CHECK_RC(kestrel_server_address(server, 0, exact, need, &written), KESTREL_OK);
    CHECK(strcmp(exact, full) == 0 && written == need - 1);
    free(exact);

    /* Serving on each endpoint. */
    http_response r;
    http_get(port, "/", &r);
    check_hello(&r, "GET / over TCP");
    char value[64];
    CHECK(http_header(&r, "server", 0, value, sizeof value) && strcmp(value, "kestrel") == 0);
    http_response_free(&r);
    int ufd = http_connect_unix(sock_path);
    CHECK(ufd >= 0);
    if (ufd >= 0) {
        send_str(ufd, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        http_read_response(ufd, &r);
        close(ufd);
        check_hello(&r, "GET / over the Unix socket");
        http_response_free(&r);
    }
    http_get(fd_port, "/", &r);
    check_hello(&r, "GET / over the inherited listening fd");
    http_response_free(&r);

    /* Starting twice; next_request outside PULL mode. */
    CHECK_RC(kestrel_server_start(server), KESTREL_INVALID_STATE);
    CHECK_LAST_ERROR(NULL);
    kestrel_request *req = NULL;
    CHECK_RC(kestrel_server_next_request(server, 0, &req), KESTREL_INVALID_STATE);
    CHECK_LAST_ERROR(NULL);
    CHECK(req == NULL);

    /* Thread hooks: once per pool thread, on distinct threads. */
    WAIT_FOR(atomic_get(&hook_starts) == 3, WAIT_MS);
    CHECK(atomic_get(&hook_starts) == 3);
    CHECK(!pthread_equal(hook_threads[0], hook_threads[1]) && !pthread_equal(hook_threads[1], hook_threads[2]) &&
          !pthread_equal(hook_threads[0], hook_threads[2]));

    /* The log callback got "listening on" for every address, at INFO. */
    CHECK(logged(KESTREL_LOG_INFO, "listening on http://127.0.0.1:"));
    kestrel_server_address(server, 0, url, sizeof url, NULL);
    CHECK(logged(KESTREL_LOG_INFO, url));
    CHECK(logged(KESTREL_LOG_INFO, sock_path));
    pthread_mutex_lock(&lock);
    CHECK(record_count > 0 && strncmp(records[0].category, "kestrel", 7) == 0);
    pthread_mutex_unlock(&lock);

    /* Stop twice: OK both times; then nothing accepts and the socket file is gone. */
    size_t aborted = 77;
    uint64_t t0 = now_ms();
    CHECK_RC(kestrel_server_stop(server, 5000, &aborted), KESTREL_OK);
    CHECK(aborted == 0);
    CHECK(now_ms() - t0 < 5000); /* nothing in flight: no need to wait for the timeout */
    aborted = 77;
    CHECK_RC(kestrel_server_stop(server, 5000, &aborted), KESTREL_OK);
    CHECK(aborted == 0);
    CHECK_RC(kestrel_server_stop(server, 0, NULL), KESTREL_OK);
    /* Nothing accepts any more and the Unix socket file is gone (see also
     * test_stop_closes_listeners for "at once"). */
    WAIT_FOR(port_can_listen(port) && access(sock_path, F_OK) != 0, WAIT_MS);
    CHECK(!port_accepts(port));
    CHECK(access(sock_path, F_OK) != 0);
    CHECK(logged(KESTREL_LOG_INFO, "stopped"));
    /* A stopped server does not start again; next_request is still refused (POOL). */
    CHECK_RC(kestrel_server_start(server), KESTREL_INVALID_STATE);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_server_next_request(server, 0, &req), KESTREL_INVALID_STATE);

    CHECK(atomic_get(&handler_ud.freed) == 0);
    kestrel_server_free(server);
    g_server = NULL;
    /* After free: every thread joined, every userdata released exactly once. */
    CHECK(atomic_get(&handler_ud.freed) == 1);
    CHECK(atomic_get(&hooks_ud.freed) == 1);
    CHECK(atomic_get(&log_ud.freed) == 1);
    CHECK(atomic_get(&hook_starts) == 3);
    CHECK(atomic_get(&hook_stops) == 3);
    CHECK(atomic_get(&handler_ud.calls) == 3);
    /* The inherited fd stays the host's: still a valid, listening descriptor. */
    int accept_conn = 0;
    socklen_t optlen = sizeof accept_conn;
    CHECK(getsockopt(listen_fd, SOL_SOCKET, SO_ACCEPTCONN, &accept_conn, &optlen) == 0 && accept_conn == 1);
    close(listen_fd);
    unlink(sock_path);
}

/* Once kestrel_server_stop returned, the server no longer accepts: its port can be taken at once
 * (a restart on the same port) and its Unix socket file is gone. A few cycles, because what is
 * checked is a race inside the library (accept loops end asynchronously after stop returns). */
static void test_stop_closes_listeners(void) {
    int late = 0;
    for (int i = 0; i < 5; i++) {
        char sock_path[128], urls[256];
        snprintf(sock_path, sizeof sock_path, "/tmp/kestrel-ctest-%d-%d.sock", (int)getpid(), i);
        unlink(sock_path);
        snprintf(urls, sizeof urls, "http://127.0.0.1:0;http://unix:%s", sock_path);
        kestrel_options *options = test_options(urls, 1);
        CHECK_RC(kestrel_options_set_handler(options, handler, &handler_ud, NULL), KESTREL_OK);
        kestrel_server *server = NULL;
        REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
        REQUIRE(kestrel_server_start(server) == KESTREL_OK);
        int port = server_port(server, 0);
        /* Ready before the stop, so that only bind() runs after it. */
        int probe = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in addr;
        memset(&addr, 0, sizeof addr);
        addr.sin_family = AF_INET;
        addr.sin_port = htons((uint16_t)port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        CHECK_RC(kestrel_server_stop(server, 1000, NULL), KESTREL_OK);
        int rebound = bind(probe, (struct sockaddr *)&addr, sizeof addr) == 0;
        int removed = access(sock_path, F_OK) != 0;
        if (!rebound || !removed) late++;
        close(probe);
        kestrel_server_free(server);
        unlink(sock_path);
    }
    if (late) fprintf(stderr, "stop: a listener was still open after kestrel_server_stop returned in %d of 5 cycles\n", late);
    CHECK(late == 0);
}

/* ---- bind failure, restart, free while running -------------------------------------------- */

static void test_bind_failure_and_free_running(void) {
    reset_counters();
    int free_port = 0;
    int probe = listening_socket(0, &free_port);
    REQUIRE(probe >= 0);
    close(probe); /* free_port is free again (nothing connected: no TIME_WAIT) */
    int busy_port = 0;
    int blocker = listening_socket(0, &busy_port);
    REQUIRE(blocker >= 0);

    char urls[128];
    snprintf(urls, sizeof urls, "http://127.0.0.1:%d;http://127.0.0.1:%d", free_port, busy_port);
    kestrel_options *options = test_options(urls, 2);
    CHECK_RC(kestrel_options_set_handler(options, handler, &handler_ud, count_free), KESTREL_OK);
    /* WARN and above only: no "listening on" (INFO) records, but the bind error (ERROR). */
    CHECK_RC(kestrel_options_set_log_callback(options, log_record, KESTREL_LOG_WARN, &log_ud, count_free), KESTREL_OK);
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    g_server = server;

    CHECK_RC(kestrel_server_start(server), KESTREL_BIND_FAILED);
    char busy[64];
    snprintf(busy, sizeof busy, "127.0.0.1:%d", busy_port);
    CHECK_LAST_ERROR(busy); /* names the address */
    CHECK(kestrel_server_address_count(server) == 0);
    /* Nothing stays bound: the first endpoint's port can be bound (without SO_REUSEADDR). */
    int check = listening_socket(free_port, NULL);
    CHECK(check >= 0);
    if (check >= 0) close(check);
    CHECK(!port_accepts(free_port));

    /* Start again once the port is free. */
    close(blocker);
    CHECK_RC(kestrel_server_start(server), KESTREL_OK);
    CHECK(kestrel_server_address_count(server) == 2);
    CHECK(server_port(server, 0) == free_port);
    CHECK(server_port(server, 1) == busy_port);
    http_response r;
    http_get(busy_port, "/", &r);
    check_hello(&r, "GET / after a failed start");
    http_response_free(&r);
    CHECK(logged(KESTREL_LOG_ERROR, busy));
    CHECK(!logged_at_or_below(KESTREL_LOG_INFO));

    /* An inherited descriptor is checked at start: one that is not a listening socket fails
     * to bind and names itself. */
    {
        int not_listening = socket(AF_INET, SOCK_STREAM, 0);
        REQUIRE(not_listening >= 0);
        kestrel_options *bad = test_options(NULL, 1);
        CHECK_RC(kestrel_options_add_listen_fd(bad, not_listening, KESTREL_PROTOCOLS_HTTP1), KESTREL_OK);
        CHECK_RC(kestrel_options_set_handler(bad, handler, &handler_ud, NULL), KESTREL_OK);
        kestrel_server *bad_server = NULL;
        REQUIRE(kestrel_server_new(bad, &bad_server) == KESTREL_OK);
        CHECK_RC(kestrel_server_start(bad_server), KESTREL_BIND_FAILED);
        char fd_name[32];
        snprintf(fd_name, sizeof fd_name, "%d", not_listening);
        CHECK_LAST_ERROR(fd_name);
        CHECK(kestrel_server_address_count(bad_server) == 0);
        kestrel_server_free(bad_server);
        close(not_listening);
    }

    /* A keep-alive connection stays open while the server is freed without a stop. */
    int keep = http_connect(free_port);
    REQUIRE(keep >= 0);
    send_str(keep, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    char buf[1024];
    long n = read_until(keep, buf, sizeof buf, "hello");
    CHECK(n > 0 && strstr(buf, "200") != NULL);

    uint64_t t0 = now_ms();
    kestrel_server_free(server);
    g_server = NULL;
    CHECK(now_ms() - t0 < WAIT_MS);
    CHECK(atomic_get(&handler_ud.freed) == 1);
    CHECK(atomic_get(&log_ud.freed) == 1);
    CHECK(!port_accepts(free_port));
    CHECK(!port_accepts(busy_port));
    /* The kept-alive client sees its connection closed (not a hang). */
    http_read_response(keep, &r);
    CHECK(r.eof && !r.timed_out);
    http_response_free(&r);
    close(keep);
}

/* ---- stop with a request that never completes ---------------------------------------------- */

static void test_stop_with_request_in_flight(void) {
    reset_counters();
    kestrel_options *options = test_options("http://127.0.0.1:0", 2);
    CHECK_RC(kestrel_options_set_handler(options, handler, &handler_ud, count_free), KESTREL_OK);
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    g_server = server;
    REQUIRE(kestrel_server_start(server) == KESTREL_OK);
    int port = server_port(server, 0);

    int fd = http_connect(port);
    REQUIRE(fd >= 0);
    send_str(fd, "GET /hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    WAIT_FOR(atomic_get_ptr(&g_held) != NULL, WAIT_MS);
    kestrel_request *held = atomic_get_ptr(&g_held);
    REQUIRE(held != NULL);

    size_t aborted = 0;
    uint64_t t0 = now_ms();
    CHECK_RC(kestrel_server_stop(server, 300, &aborted), KESTREL_OK);
    uint64_t took = now_ms() - t0;
    CHECK(aborted == 1);
    CHECK(took >= 250 && took < WAIT_MS);
    CHECK(kestrel_request_is_aborted(held));
    WAIT_FOR(atomic_get(&abort_ud.calls) == 1, WAIT_MS);
    CHECK(atomic_get(&abort_ud.calls) == 1);
    /* The client gets a response or a closed connection, not a hang. */
    http_response r;
    http_read_response(fd, &r);
    CHECK(!r.timed_out);
    CHECK(r.eof || r.status != 0);
    http_response_free(&r);
    close(fd);
    /* The handle still has to be completed: KESTREL_CANCELLED (and it counts as the completion). */
    CHECK_RC(kestrel_response_write(kestrel_request_response(held), LIT("late")), KESTREL_CANCELLED);
    CHECK_RC(kestrel_response_send(kestrel_request_response(held), LIT("late")), KESTREL_CANCELLED);
    kestrel_server_free(server);
    g_server = NULL;
    CHECK(atomic_get(&abort_ud.calls) == 1);
    CHECK(atomic_get(&abort_ud.freed) == 1);
    CHECK(atomic_get(&handler_ud.freed) == 1);
}

/* ---- stop from inside a handler ------------------------------------------------------------ */

static void test_stop_in_handler(void) {
    reset_counters();
    atomic_set(&stop_rc, -1);
    kestrel_options *options = test_options("http://127.0.0.1:0", 2);
    CHECK_RC(kestrel_options_set_handler(options, handler, &handler_ud, count_free), KESTREL_OK);
    CHECK_RC(kestrel_options_set_log_callback(options, log_record, KESTREL_LOG_INFO, &log_ud, count_free), KESTREL_OK);
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    g_server = server;
    REQUIRE(kestrel_server_start(server) == KESTREL_OK);
    int port = server_port(server, 0);

    http_response r;
    http_get(port, "/stop", &r);
    CHECK(r.status == 200 && strcmp(r.body, "stopping") == 0);
    http_response_free(&r);
    CHECK(atomic_get(&stop_rc) == KESTREL_OK);
    /* It only scheduled the stop: well under the 1500 ms timeout it was given. */
    CHECK(atomic_get(&stop_ms) >= 0 && atomic_get(&stop_ms) < 1000);
    /* The server then stops by itself. */
    WAIT_FOR(logged(KESTREL_LOG_INFO, "stopped"), WAIT_MS);
    CHECK(logged(KESTREL_LOG_INFO, "stopped"));
    WAIT_FOR(!port_accepts(port), WAIT_MS);
    CHECK(!port_accepts(port));
    CHECK_RC(kestrel_server_stop(server, 1000, NULL), KESTREL_OK);
    kestrel_server_free(server);
    g_server = NULL;
    CHECK(atomic_get(&handler_ud.freed) == 1);
    CHECK(atomic_get(&log_ud.freed) == 1);
}

/* kestrel_server_free from inside a handler: allowed, the teardown moves to another thread. */
static void test_free_in_handler(void) {
    reset_counters();
    atomic_set(&stop_ms, -1);
    kestrel_options *options = test_options("http://127.0.0.1:0", 2);
    CHECK_RC(kestrel_options_set_handler(options, handler, &handler_ud, count_free), KESTREL_OK);
    CHECK_RC(kestrel_options_set_thread_hooks(options, hook_start, hook_stop, &hooks_ud, count_free), KESTREL_OK);
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    g_server = server;
    REQUIRE(kestrel_server_start(server) == KESTREL_OK);
    int port = server_port(server, 0);
    http_response r;
    http_get(port, "/free", &r);
    CHECK(!r.timed_out);
    CHECK(r.status == 200 || r.status == 0); /* the answer, or the connection closed by the teardown */
    http_response_free(&r);
    g_server = NULL;
    CHECK(atomic_get(&stop_ms) >= 0 && atomic_get(&stop_ms) < 1000);
    /* The teardown finishes by itself: threads exit, userdata released once, port closed. */
    WAIT_FOR(atomic_get(&handler_ud.freed) == 1 && atomic_get(&hooks_ud.freed) == 1, WAIT_MS);
    CHECK(atomic_get(&handler_ud.freed) == 1);
    CHECK(atomic_get(&hooks_ud.freed) == 1);
    CHECK(atomic_get(&hook_starts) == 2 && atomic_get(&hook_stops) == 2);
    WAIT_FOR(!port_accepts(port), WAIT_MS);
    CHECK(!port_accepts(port));
    sleep_ms(100); /* let the detached teardown thread exit before the next test */
}

/* "http://localhost:0": 127.0.0.1 and, where IPv6 works, ::1 on the same port. */
static void test_localhost(void) {
    kestrel_options *options = test_options("http://localhost:0", 1);
    CHECK_RC(kestrel_options_set_handler(options, handler, &handler_ud, NULL), KESTREL_OK);
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    REQUIRE(kestrel_server_start(server) == KESTREL_OK);
    size_t count = kestrel_server_address_count(server);
    CHECK(count == 1 || count == 2);
    char url[128], expected[128];
    int port = server_port(server, 0);
    CHECK(port > 0);
    snprintf(expected, sizeof expected, "http://127.0.0.1:%d", port);
    CHECK_RC(kestrel_server_address(server, 0, url, sizeof url, NULL), KESTREL_OK);
    CHECK(strcmp(url, expected) == 0);
    if (count == 2) {
        snprintf(expected, sizeof expected, "http://[::1]:%d", port);
        CHECK_RC(kestrel_server_address(server, 1, url, sizeof url, NULL), KESTREL_OK);
        CHECK(strcmp(url, expected) == 0);
    }
    http_response r;
    http_get(port, "/", &r);
    check_hello(&r, "GET / on localhost");
    http_response_free(&r);
    CHECK_RC(kestrel_server_stop(server, 1000, NULL), KESTREL_OK);
    kestrel_server_free(server);
}

/* kestrel_server_free while a stop scheduled from a handler is still running: the header says
 * free returns after every library thread exited and the handler's userdata_free ran. */
static void test_free_during_scheduled_stop(void) {
    reset_counters();
    atomic_set(&stop_rc, -1);
    kestrel_options *options = test_options("http://127.0.0.1:0", 2);
    CHECK_RC(kestrel_options_set_handler(options, handler, &handler_ud, count_free), KESTREL_OK);
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    g_server = server;
    REQUIRE(kestrel_server_start(server) == KESTREL_OK);
    int port = server_port(server, 0);

    /* A request that stays in flight makes the scheduled stop wait its whole timeout (1500 ms). */
    int fd = http_connect(port);
    REQUIRE(fd >= 0);
    send_str(fd, "GET /hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    WAIT_FOR(atomic_get_ptr(&g_held) != NULL, WAIT_MS);
    kestrel_request *held = atomic_get_ptr(&g_held);
    REQUIRE(held != NULL);
    http_response r;
    http_get(port, "/stop", &r);
    CHECK(r.status == 200);
    http_response_free(&r);
    CHECK(atomic_get(&stop_rc) == KESTREL_OK);

    kestrel_server_free(server);
    g_server = NULL;
    CHECK(atomic_get(&handler_ud.freed) == 1);
    /* Let the background teardown finish so the rest of the run stays clean. */
    WAIT_FOR(atomic_get(&handler_ud.freed) == 1, WAIT_MS);
    CHECK(atomic_get(&handler_ud.freed) == 1);
    CHECK(kestrel_request_is_aborted(held));
    CHECK_RC(kestrel_response_end(kestrel_request_response(held)), KESTREL_CANCELLED);
    http_read_response(fd, &r);
    CHECK(!r.timed_out);
    http_response_free(&r);
    close(fd);
    CHECK(atomic_get(&abort_ud.calls) == 1);
    CHECK(atomic_get(&abort_ud.freed) == 1);
}

int main(void) {
    test_start("test_server", 180);
    main_thread = pthread_self();
    test_lifecycle();
    test_stop_closes_listeners();
    test_bind_failure_and_free_running();
    test_stop_with_request_in_flight();
    test_stop_in_handler();
    test_free_in_handler();
    test_localhost();
    test_free_during_scheduled_stop();
    return test_finish();
}
