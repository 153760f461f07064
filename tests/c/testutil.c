/* testutil.c: see testutil.h. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---- assertions ---------------------------------------------------------------------------- */

static pthread_mutex_t t_lock = PTHREAD_MUTEX_INITIALIZER;
static long t_passed, t_failed;
static const char *t_name = "test";

void test_start(const char *name, unsigned seconds) {
    t_name = name;
    /* The default action of SIGALRM ends the process: a hang becomes a failure, not a stall. */
    alarm(seconds);
    setvbuf(stdout, NULL, _IOLBF, 0);
}

void t_check(int ok, const char *expr, const char *file, int line) {
    pthread_mutex_lock(&t_lock);
    if (ok) {
        t_passed++;
    } else {
        t_failed++;
        fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, expr);
    }
    pthread_mutex_unlock(&t_lock);
}

void t_check_rc(kestrel_result got, kestrel_result want, const char *expr, const char *file, int line) {
    if (got == want) {
        t_check(1, expr, file, line);
        return;
    }
    char message[512];
    last_error(message, sizeof message);
    pthread_mutex_lock(&t_lock);
    t_failed++;
    fprintf(stderr, "%s:%d: FAILED: %s returned %s (%u), expected %s (%u); last error: %s\n", file, line, expr,
            kestrel_result_name(got), got, kestrel_result_name(want), want, message);
    pthread_mutex_unlock(&t_lock);
}

void t_fatal(const char *expr, const char *file, int line) {
    fprintf(stderr, "%s:%d: FATAL: %s\n", file, line, expr);
    pthread_mutex_lock(&t_lock);
    fprintf(stderr, "%s: %ld passed, %ld failed (stopped at a fatal failure)\n", t_name, t_passed, t_failed + 1);
    pthread_mutex_unlock(&t_lock);
    _exit(1);
}

int test_finish(void) {
    pthread_mutex_lock(&t_lock);
    long passed = t_passed, failed = t_failed;
    pthread_mutex_unlock(&t_lock);
    printf("%s: %ld passed, %ld failed\n", t_name, passed, failed);
    fflush(stdout);
    return failed == 0 && passed > 0 ? 0 : 1;
}

/* ---- time ---------------------------------------------------------------------------------- */

uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void sleep_ms(unsigned ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* ---- counters ------------------------------------------------------------------------------ */

int atomic_get(const int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
int atomic_inc(int *p) { return __atomic_add_fetch(p, 1, __ATOMIC_SEQ_CST); }
void atomic_set(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
void *atomic_get_ptr(void *const *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
void atomic_set_ptr(void **p, void *v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }

/* ---- kestrel helpers ----------------------------------------------------------------------- */

const char *last_error(char *buf, size_t len) {
    size_t written = 0;
    buf[0] = '\0';
    kestrel_result rc = kestrel_last_error(buf, len, &written);
    if (rc != KESTREL_OK && rc != KESTREL_BUFFER_TOO_SMALL) snprintf(buf, len, "<kestrel_last_error: %s>", kestrel_result_name(rc));
    return buf;
}

void check_last_error(const char *needle, const char *file, int line) {
    char message[1024];
    last_error(message, sizeof message);
    int ok = message[0] != '\0' && (needle == NULL || strstr(message, needle) != NULL);
    if (!ok) {
        pthread_mutex_lock(&t_lock);
        t_failed++;
        fprintf(stderr, "%s:%d: FAILED: last error \"%s\" should be non-empty%s%s\n", file, line, message,
                needle ? " and contain " : "", needle ? needle : "");
        pthread_mutex_unlock(&t_lock);
    } else {
        t_check(1, "last error", file, line);
    }
}

int str_eq(kestrel_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.ptr != NULL && s.len == n && memcmp(s.ptr, lit, n) == 0;
}

int str_contains(kestrel_str s, const char *lit) {
    size_t n = strlen(lit);
    if (s.ptr == NULL || n > s.len) return 0;
    for (size_t i = 0; i + n <= s.len; i++) {
        if (memcmp(s.ptr + i, lit, n) == 0) return 1;
    }
    return 0;
}

const char *str_c(kestrel_str s, char *buf, size_t len) {
    size_t n = s.len < len - 1 ? s.len : len - 1;
    if (s.ptr && n) memcpy(buf, s.ptr, n);
    buf[n] = '\0';
    return buf;
}

kestrel_options *test_options(const char *urls, unsigned pool) {
    kestrel_options *options = NULL;
    REQUIRE(kestrel_options_new(&options) == KESTREL_OK && options != NULL);
    if (urls) REQUIRE(kestrel_options_add_urls(options, (const uint8_t *)urls, strlen(urls), KESTREL_PROTOCOLS_HTTP1_AND_HTTP2) == KESTREL_OK);
    REQUIRE(kestrel_options_set_io_threads(options, 1) == KESTREL_OK);
    if (pool) REQUIRE(kestrel_options_set_pool_threads(options, pool) == KESTREL_OK);
    return options;
}

int server_port(const kestrel_server *server, size_t index) {
    char url[256];
    if (kestrel_server_address(server, index, url, sizeof url, NULL) != KESTREL_OK) return -1;
    const char *colon = strrchr(url, ':');
    if (!colon || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) return -1;
    return atoi(colon + 1);
}

/* ---- HTTP client --------------------------------------------------------------------------- */

static void set_timeouts(int fd, int seconds) {
    struct timeval tv = {seconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

int http_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    set_timeouts(fd, 30);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int http_connect_unix(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    set_timeouts(fd, 30);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int port_accepts(int port) {
    int fd = http_connect(port);
    if (fd < 0) return 0;
    close(fd);
    return 1;
}

int port_can_listen(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 && listen(fd, 1) == 0;
    close(fd);
    return ok;
}

int count_close_wait(int port) {
    FILE *f = fopen("/proc/net/tcp", "r");
    if (!f) return 0;
    char line[512];
    int count = 0;
    if (!fgets(line, sizeof line, f)) {
        fclose(f);
        return 0;
    }
    while (fgets(line, sizeof line, f)) {
        unsigned local_ip, local_port, remote_ip, remote_port, state;
        if (sscanf(line, " %*d: %x:%x %x:%x %x", &local_ip, &local_port, &remote_ip, &remote_port, &state) == 5 &&
            local_port == (unsigned)port && state == 0x08 /* TCP_CLOSE_WAIT */) {
            count++;
        }
    }
    fclose(f);
    return count;
}

int send_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int send_str(int fd, const char *s) { return send_all(fd, s, strlen(s)); }

long read_until(int fd, char *buf, size_t cap, const char *needle) {
    size_t len = 0;
    buf[0] = '\0';
    while (len + 1 < cap) {
        ssize_t n = recv(fd, buf + len, 1, 0); /* byte by byte: never read past the needle */
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, needle)) return (long)len;
    }
    return len > 0 ? (long)len : -1;
}

void http_read_response(int fd, http_response *r) {
    size_t cap = 4096, len = 0;
    char *raw = malloc(cap);
    REQUIRE(raw != NULL);
    int eof = 0, timed_out = 0;
    for (;;) {
        if (len + 1024 > cap) {
            cap *= 2;
            char *grown = realloc(raw, cap);
            REQUIRE(grown != NULL);
            raw = grown;
        }
        ssize_t n = recv(fd, raw + len, cap - len - 1, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) {
            eof = 1;
            break;
        }
        if (n < 0) {
            timed_out = errno == EAGAIN || errno == EWOULDBLOCK;
            /* ECONNRESET also ends the response: the server cut the connection. */
            eof = !timed_out;
            break;
        }
        len += (size_t)n;
    }
    http_parse(raw, len, r);
    r->eof = eof;
    r->timed_out = timed_out;
    free(raw);
}

void http_read_one(int fd, http_response *r) {
    char buf[8192];
    long n = read_until(fd, buf, sizeof buf, "\r\n\r\n");
    while (n > 12 && strncmp(buf, "HTTP/1.1 1", 10) == 0) n = read_until(fd, buf, sizeof buf, "\r\n\r\n");
    if (n < 0) n = 0;
    size_t len = (size_t)n;
    const char *cl = NULL;
    for (const char *p = buf; (p = strchr(p, '\n')) != NULL; p++) {
        if (strncasecmp(p + 1, "content-length:", 15) == 0) cl = p + 16;
    }
    size_t want = cl ? (size_t)strtoull(cl, NULL, 10) : 0;
    while (want > 0 && len + 1 < sizeof buf) {
        ssize_t got = recv(fd, buf + len, want < sizeof buf - 1 - len ? want : sizeof buf - 1 - len, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        len += (size_t)got;
        want -= (size_t)got;
    }
    http_parse(buf, len, r);
}

static const char *find_bytes(const char *hay, size_t hay_len, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= hay_len; i++) {
        if (memcmp(hay + i, needle, n) == 0) return hay + i;
    }
    return NULL;
}

/* Finds header `name` in a head (lines after the first), nth occurrence. */
static int head_lookup(const char *head, const char *name, int nth, char *out, size_t len, int skip_first_line) {
    const char *line = head;
    size_t name_len = strlen(name);
    if (skip_first_line) {
        line = strstr(head, "\r\n");
        if (!line) return 0;
        line += 2;
    }
    while (*line) {
        const char *end = strstr(line, "\r\n");
        if (!end) end = line + strlen(line);
        if ((size_t)(end - line) > name_len && strncasecmp(line, name, name_len) == 0 && line[name_len] == ':') {
            if (nth-- == 0) {
                const char *v = line + name_len + 1;
                while (v < end && (*v == ' ' || *v == '\t')) v++;
                size_t n = (size_t)(end - v);
                if (out && len) {
                    if (n >= len) n = len - 1;
                    memcpy(out, v, n);
                    out[n] = '\0';
                }
                return 1;
            }
        }
        if (!*end) break;
        line = end + 2;
    }
    return 0;
}

void http_parse(const char *raw, size_t len, http_response *r) {
    memset(r, 0, sizeof *r);
    r->raw = malloc(len + 1);
    REQUIRE(r->raw != NULL);
    if (len) memcpy(r->raw, raw, len);
    r->raw[len] = '\0';
    r->raw_len = len;
    r->head = calloc(1, 1);
    r->body = calloc(1, 1);
    r->trailers = calloc(1, 1);
    REQUIRE(r->head && r->body && r->trailers);

    const char *p = r->raw, *end = r->raw + len;
    for (;;) {
        const char *head_end = find_bytes(p, (size_t)(end - p), "\r\n\r\n");
        if (!head_end || end - p < 12 || strncmp(p, "HTTP/1.", 7) != 0) return;
        int status = atoi(p + 9);
        if (status >= 100 && status < 200) {
            r->informational = status;
            p = head_end + 4;
            continue;
        }
        r->status = status;
        size_t head_len = (size_t)(head_end - p) + 2; /* keep the last CRLF for the lookup */
        free(r->head);
        r->head = malloc(head_len + 1);
        REQUIRE(r->head != NULL);
        memcpy(r->head, p, head_len);
        r->head[head_len] = '\0';
        p = head_end + 4;
        break;
    }

    char value[128];
    size_t body_cap = (size_t)(end - p) + 1;
    free(r->body);
    r->body = malloc(body_cap);
    REQUIRE(r->body != NULL);
    r->body_len = 0;
    if (head_lookup(r->head, "transfer-encoding", 0, value, sizeof value, 1) && strstr(value, "chunked")) {
        r->chunked = 1;
        for (;;) {
            const char *line_end = find_bytes(p, (size_t)(end - p), "\r\n");
            if (!line_end) break;
            unsigned long size = strtoul(p, NULL, 16);
            p = line_end + 2;
            if (size == 0) {
                const char *trailer_end = find_bytes(p, (size_t)(end - p), "\r\n");
                if (trailer_end == p) {
                    r->complete = 1;
                    break;
                }
                trailer_end = find_bytes(p, (size_t)(end - p), "\r\n\r\n");
                if (!trailer_end) break;
                size_t n = (size_t)(trailer_end - p) + 2;
                free(r->trailers);
                r->trailers = malloc(n + 1);
                REQUIRE(r->trailers != NULL);
                memcpy(r->trailers, p, n);
                r->trailers[n] = '\0';
                r->complete = 1;
                break;
            }
            if ((size_t)(end - p) < size + 2) {
                size_t n = (size_t)(end - p);
                memcpy(r->body + r->body_len, p, n);
                r->body_len += n;
                break;
            }
            memcpy(r->body + r->body_len, p, size);
            r->body_len += size;
            p += size + 2;
        }
    } else if (head_lookup(r->head, "content-length", 0, value, sizeof value, 1)) {
        size_t want = (size_t)strtoull(value, NULL, 10);
        size_t have = (size_t)(end - p);
        size_t n = have < want ? have : want;
        memcpy(r->body, p, n);
        r->body_len = n;
        r->complete = have >= want;
    } else {
        size_t n = (size_t)(end - p);
        memcpy(r->body, p, n);
        r->body_len = n;
        r->complete = 1;
    }
    r->body[r->body_len] = '\0';
}

int http_request(int port, const char *request, http_response *r) {
    memset(r, 0, sizeof *r);
    int fd = http_connect(port);
    if (fd < 0) {
        http_parse("", 0, r);
        return -1;
    }
    if (send_str(fd, request) != 0) {
        close(fd);
        http_parse("", 0, r);
        return -1;
    }
    http_read_response(fd, r);
    close(fd);
    return 0;
}

int http_get(int port, const char *target, http_response *r) {
    char request[1024];
    snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n", target, port);
    return http_request(port, request, r);
}

int http_header(const http_response *r, const char *name, int nth, char *out, size_t len) {
    return r->head ? head_lookup(r->head, name, nth, out, len, 1) : 0;
}

int http_trailer(const http_response *r, const char *name, char *out, size_t len) {
    return r->trailers ? head_lookup(r->trailers, name, 0, out, len, 0) : 0;
}

void http_response_free(http_response *r) {
    free(r->raw);
    free(r->head);
    free(r->body);
    free(r->trailers);
    memset(r, 0, sizeof *r);
}

void count_free(void *userdata) { atomic_inc(&((counter *)userdata)->freed); }
