/*
 * testutil.h: a tiny test harness for the kestrel C API tests.
 *
 * - CHECK(cond), CHECK_RC(call, code): count a pass or print file:line and count a failure
 *   (thread-safe: handlers run on library threads). REQUIRE(cond) fails the process at once.
 * - test_finish() prints "N passed, M failed" and returns the process exit code.
 * - A blocking HTTP/1.1 client on plain sockets (every socket has a receive/send timeout).
 * - Small helpers: clocks, bounded waits, atomic counters, last-error text, server setup.
 */
#ifndef KESTREL_TESTUTIL_H
#define KESTREL_TESTUTIL_H

#include <kestrel.h>

#include <stddef.h>
#include <stdint.h>

/* ---- assertions ---------------------------------------------------------------------------- */

void t_check(int ok, const char *expr, const char *file, int line);
void t_check_rc(kestrel_result got, kestrel_result want, const char *expr, const char *file, int line);
void t_fatal(const char *expr, const char *file, int line);
/* Prints the summary; returns 0 when nothing failed, 1 otherwise. */
int test_finish(void);
/* Starts a watchdog: the process is killed (SIGALRM) if it runs longer than `seconds`. */
void test_start(const char *name, unsigned seconds);

#define CHECK(cond) t_check(!!(cond), #cond, __FILE__, __LINE__)
#define CHECK_RC(call, want) t_check_rc((call), (want), #call, __FILE__, __LINE__)
#define REQUIRE(cond)                                \
    do {                                             \
        if (!(cond)) t_fatal(#cond, __FILE__, __LINE__); \
        else t_check(1, #cond, __FILE__, __LINE__);  \
    } while (0)

/* ---- time and waiting ---------------------------------------------------------------------- */

uint64_t now_ms(void);
void sleep_ms(unsigned ms);

/* Polls `cond` every 2 ms until it holds or `ms` milliseconds passed. */
#define WAIT_FOR(cond, ms)                                      \
    do {                                                        \
        uint64_t wait_deadline_ = now_ms() + (uint64_t)(ms);    \
        while (!(cond) && now_ms() < wait_deadline_) sleep_ms(2); \
    } while (0)

/* Under valgrind everything is 10-50x slower: generous bounds, still finite. */
#define WAIT_MS 20000

/* ---- counters shared with library threads -------------------------------------------------- */

int atomic_get(const int *p);
int atomic_inc(int *p);
void atomic_set(int *p, int v);
void *atomic_get_ptr(void *const *p);
void atomic_set_ptr(void **p, void *v);

/* Counts the calls of a userdata_free (freed) and of other callbacks (calls). */
typedef struct {
    int freed;
    int calls;
} counter;

/* A userdata_free that counts into the counter it is given. */
void count_free(void *userdata);

/* ---- kestrel helpers ----------------------------------------------------------------------- */

/* The last error of this thread (static buffer per call site is not needed: copies into buf). */
const char *last_error(char *buf, size_t len);
/* CHECKs that the last error on this thread is non-empty and contains `needle` (if not NULL). */
#define CHECK_LAST_ERROR(needle) check_last_error((needle), __FILE__, __LINE__)
void check_last_error(const char *needle, const char *file, int line);

int str_eq(kestrel_str s, const char *lit);
int str_contains(kestrel_str s, const char *lit);
/* `s` as a NUL-terminated copy in `buf` (truncated to fit). */
const char *str_c(kestrel_str s, char *buf, size_t len);

/* Options for a test server: 127.0.0.1:0 (unless urls is NULL: no endpoint), 1 I/O thread,
 * `pool` handler threads (0: leave the default). */
kestrel_options *test_options(const char *urls, unsigned pool);
/* The TCP port of the server's `index`-th address (http://127.0.0.1:PORT or https://...), or -1. */
int server_port(const kestrel_server *server, size_t index);

#define LIT(s) (const uint8_t *)(s), (sizeof(s) - 1)

/* ---- HTTP/1.1 client ----------------------------------------------------------------------- */

typedef struct {
    char *raw;          /* everything received, NUL-terminated */
    size_t raw_len;
    int status;         /* status of the final (non-1xx) response, 0 if none */
    int informational;  /* status of a 1xx response seen before it, 0 if none */
    char *head;         /* status line and headers of the final response, NUL-terminated */
    char *body;         /* the body, de-chunked, NUL-terminated */
    size_t body_len;
    char *trailers;     /* the trailer section of a chunked body ("" if none), NUL-terminated */
    int chunked;        /* Transfer-Encoding: chunked */
    int complete;       /* the body was complete per its framing */
    int eof;            /* the server closed the connection */
    int timed_out;      /* a read timed out */
} http_response;

/* Connects to 127.0.0.1:port with 30 s send/receive timeouts; -1 on failure. */
int http_connect(int port);
/* Connects to a Unix socket path; -1 on failure. */
int http_connect_unix(const char *path);
/* Whether something accepts connections on 127.0.0.1:port. */
int port_accepts(int port);
/* Whether a new listening socket (SO_REUSEADDR, as a restarting server would) can take
 * 127.0.0.1:port right now. */
int port_can_listen(int port);
/* The number of server-side TCP sockets on local port `port` in CLOSE_WAIT (the peer closed, the
 * server has not): connections the server failed to close. Linux (/proc/net/tcp). */
int count_close_wait(int port);
int send_all(int fd, const void *data, size_t len);
int send_str(int fd, const char *s);
/* Reads until `needle` was received (or EOF/timeout) into buf; returns bytes read, -1 on error. */
long read_until(int fd, char *buf, size_t cap, const char *needle);
/* Reads one response with a Content-Length body (1xx responses skipped) from a connection that
 * stays open, and parses it. */
void http_read_one(int fd, http_response *r);
/* Reads everything until EOF (or a timeout) and parses it. */
void http_read_response(int fd, http_response *r);
/* Parses `raw` into an http_response (takes a copy). */
void http_parse(const char *raw, size_t len, http_response *r);
/* Connect, send `request` (add "Connection: close" yourself), read to EOF, parse, close. */
int http_request(int port, const char *request, http_response *r);
/* A simple `GET target` with Connection: close. */
int http_get(int port, const char *target, http_response *r);
/* The nth value of header `name` (case-insensitive) in the final head (or in the trailers
 * when `trailers`), copied into out; returns 1 if found. */
int http_header(const http_response *r, const char *name, int nth, char *out, size_t len);
int http_trailer(const http_response *r, const char *name, char *out, size_t len);
void http_response_free(http_response *r);

#endif
