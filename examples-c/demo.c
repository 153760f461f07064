/*
 * demo.c: a small server embedding libkestrel.
 *
 *   demo [--urls "URL[;URL...]"] [--threads N] [--pool-threads N]
 *        [--protocols http1|http2|http1and2] [--dispatch pool|inline]
 *        [--cert PATH --key PATH] [--pfx PATH [--password P]] [--sni "NAMES" CERT KEY]...
 *        [--client-cert none|allow|require] [--client-ca PATH] [--tls13] [--watch-ms N]
 *        [--handshake-timeout-ms N] [--no-dev-cert]
 *
 * HTTPS: give https:// URLs. --cert/--key or --pfx set the default certificate, --sni adds one
 * for the `;`-separated NAMES (exact or *.wildcard); with none of them, https://localhost serves
 * an in-memory development certificate. SIGHUP reloads the certificate files.
 *
 * Routes: GET / (hello), POST /echo (streams the body back), GET /stream?chunks=N&size=S,
 * GET /delay?ms=N (completed from another thread), GET /info, GET /headers, GET /status/CODE,
 * GET /trailers, ANY /drain (reads the whole body, then answers). SIGINT/SIGTERM stop it
 * gracefully.
 *
 * In INLINE mode handlers run on I/O threads and must not block, so the routes that wait
 * (/echo, /stream, /delay) hand the request to a thread of their own; the others answer inline.
 */
#define _POSIX_C_SOURCE 200809L
#include <kestrel.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char HELLO[] = "Hello, World!";

static int str_eq(kestrel_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

static int str_starts(kestrel_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.len >= n && memcmp(s.ptr, lit, n) == 0;
}

/* The value of `key` in a query string, as a non-negative number, or `fallback`. */
static long query_number(kestrel_str query, const char *key, long fallback) {
    size_t klen = strlen(key);
    size_t i = 0;
    while (i < query.len) {
        size_t end = i;
        while (end < query.len && query.ptr[end] != '&') end++;
        if (end - i > klen && memcmp(query.ptr + i, key, klen) == 0 && query.ptr[i + klen] == '=') {
            long value = 0;
            size_t j = i + klen + 1;
            if (j == end) return fallback;
            for (; j < end; j++) {
                if (query.ptr[j] < '0' || query.ptr[j] > '9' || value > 100000000L) return fallback;
                value = value * 10 + (query.ptr[j] - '0');
            }
            return value;
        }
        i = end + 1;
    }
    return fallback;
}

/* A growable buffer for JSON bodies. */
typedef struct {
    char *data;
    size_t len, cap;
} buffer;

static void buf_put(buffer *b, const char *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n) cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) abort();
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void buf_lit(buffer *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_json_string(buffer *b, const char *p, size_t n) {
    buf_lit(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            buf_put(b, esc, 2);
        } else if (c < 0x20 || c >= 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            buf_put(b, esc, 6);
        } else {
            buf_put(b, (const char *)&c, 1);
        }
    }
    buf_lit(b, "\"");
}

static void buf_field(buffer *b, const char *name, kestrel_str value, int last) {
    buf_json_string(b, name, strlen(name));
    buf_lit(b, ":");
    buf_json_string(b, value.ptr, value.len);
    if (!last) buf_lit(b, ",");
}

static void free_buffer(void *data) { free(data); }

/* Sends a JSON buffer without copying it: the library frees it when done. */
static kestrel_result send_json(kestrel_response *res, buffer *b) {
    kestrel_response_set_header(res, (const uint8_t *)"content-type", 12, (const uint8_t *)"application/json", 16);
    return kestrel_response_send_owned(res, (const uint8_t *)b->data, b->len, free_buffer, b->data);
}

static kestrel_result route_info(kestrel_request *req, kestrel_response *res) {
    kestrel_request_head head;
    head.size = sizeof head;
    kestrel_result rc = kestrel_request_get_head(req, &head);
    if (rc != KESTREL_OK) return rc;
    buffer b = {0};
    buf_lit(&b, "{");
    buf_field(&b, "protocol", head.version, 0);
    buf_field(&b, "scheme", head.scheme, 0);
    buf_field(&b, "method", head.method, 0);
    buf_field(&b, "path", head.path, 0);
    buf_field(&b, "query", head.query, 0);
    buf_field(&b, "host", head.authority, 0);
    buf_field(&b, "remote", head.remote_addr, 0);
    buf_field(&b, "local", head.local_addr, 0);
    kestrel_tls_info tls;
    tls.size = sizeof tls;
    if (kestrel_request_get_tls(req, &tls) == KESTREL_OK) {
        buf_field(&b, "tls_version", tls.version, 0);
        buf_field(&b, "tls_cipher", tls.cipher_suite, 0);
        buf_field(&b, "alpn", tls.alpn, 0);
        buf_field(&b, "sni", tls.server_name, 0);
        buf_field(&b, "client_subject", tls.peer_subject, 0);
    }
    buf_field(&b, "id", head.id, 1);
    buf_lit(&b, "}");
    return send_json(res, &b);
}

static kestrel_result route_headers(kestrel_request *req, kestrel_response *res) {
    kestrel_request_head head;
    head.size = sizeof head;
    kestrel_result rc = kestrel_request_get_head(req, &head);
    if (rc != KESTREL_OK) return rc;
    buffer b = {0};
    buf_lit(&b, "{");
    /* Repeated names arrive as neighbours: join their values with ", " as HTTP allows. */
    for (size_t i = 0; i < head.header_count; i++) {
        const kestrel_header *h = &head.headers[i];
        if (i > 0 && head.headers[i - 1].name.len == h->name.len &&
            memcmp(head.headers[i - 1].name.ptr, h->name.ptr, h->name.len) == 0) {
            continue; /* already joined with the first value of this name */
        }
        if (i > 0) buf_lit(&b, ",");
        buf_json_string(&b, h->name.ptr, h->name.len);
        buf_lit(&b, ":");
        buffer joined = {0};
        for (size_t j = i; j < head.header_count; j++) {
            const kestrel_header *k = &head.headers[j];
            if (k->name.len != h->name.len || memcmp(k->name.ptr, h->name.ptr, h->name.len) != 0) break;
            if (j > i) buf_lit(&joined, ", ");
            buf_put(&joined, k->value.ptr, k->value.len);
        }
        buf_json_string(&b, joined.data ? joined.data : "", joined.len);
        free(joined.data);
    }
    buf_lit(&b, "}");
    return send_json(res, &b);
}

static kestrel_result route_status(kestrel_request *req, kestrel_response *res) {
    kestrel_str path = kestrel_request_path(req);
    long code = 0;
    size_t digits = 0;
    for (size_t i = strlen("/status/"); i < path.len && digits < 4; i++, digits++) {
        if (path.ptr[i] < '0' || path.ptr[i] > '9') return KESTREL_INVALID_ARGUMENT;
        code = code * 10 + (path.ptr[i] - '0');
    }
    if (digits == 0 || digits > 3 || kestrel_response_set_status(res, (uint16_t)code) != KESTREL_OK) {
        kestrel_response_set_status(res, 400);
    }
    return kestrel_response_end(res);
}

static kestrel_result route_trailers(kestrel_response *res) {
    static const char body[] = "a body followed by a trailer\n";
    /* FNV-1a of the body, sent after it. */
    uint32_t hash = 2166136261u;
    for (size_t i = 0; i < sizeof body - 1; i++) hash = (hash ^ (uint8_t)body[i]) * 16777619u;
    char hex[9];
    snprintf(hex, sizeof hex, "%08x", hash);
    kestrel_response_set_header(res, (const uint8_t *)"content-type", 12, (const uint8_t *)"text/plain", 10);
    /* Added before the body starts, the trailer is announced in a Trailer header, so HTTP/1.1
     * clients that send `TE: trailers` get it too (HTTP/2 always does). */
    kestrel_result rc = kestrel_response_add_trailer(res, (const uint8_t *)"x-checksum", 10, (const uint8_t *)hex, 8);
    if (rc != KESTREL_OK) return rc;
    rc = kestrel_response_write(res, (const uint8_t *)body, sizeof body - 1);
    if (rc != KESTREL_OK) return rc;
    return kestrel_response_end(res);
}

/* ---- routes that block: run on a handler thread (POOL) or a thread of their own (INLINE) ---- */

static void echo(kestrel_request *req, kestrel_response *res) {
    kestrel_str type;
    if (kestrel_request_header(req, (const uint8_t *)"content-type", 12, 0, &type) == KESTREL_OK) {
        kestrel_response_set_header(res, (const uint8_t *)"content-type", 12, (const uint8_t *)type.ptr, type.len);
    }
    uint8_t chunk[16384];
    for (;;) {
        size_t n = 0;
        if (kestrel_request_read(req, chunk, sizeof chunk, &n) != KESTREL_OK) {
            kestrel_response_fail(res);
            return;
        }
        if (n == 0) break;
        if (kestrel_response_write(res, chunk, n) != KESTREL_OK) {
            kestrel_response_fail(res);
            return;
        }
    }
    kestrel_response_end(res);
}

/* Reads and discards the whole request body (any method), then says how much it read: a handler
 * that answers only after the request is complete, as conformance tools expect. */
static void drain(kestrel_request *req, kestrel_response *res) {
    uint8_t chunk[16384];
    unsigned long long total = 0;
    for (;;) {
        size_t n = 0;
        if (kestrel_request_read(req, chunk, sizeof chunk, &n) != KESTREL_OK) {
            kestrel_response_fail(res);
            return;
        }
        if (n == 0) break;
        total += n;
    }
    char body[64];
    int len = snprintf(body, sizeof body, "read %llu bytes", total);
    kestrel_response_send(res, (const uint8_t *)body, (size_t)len);
}

static void stream(kestrel_request *req, kestrel_response *res) {
    kestrel_str query = kestrel_request_query(req);
    long chunks = query_number(query, "chunks", 10);
    long size = query_number(query, "size", 1024);
    if (size <= 0 || size > 16 * 1024 * 1024) size = 1024;
    uint8_t *chunk = malloc((size_t)size);
    if (!chunk) {
        kestrel_response_fail(res);
        return;
    }
    memset(chunk, 'x', (size_t)size);
    kestrel_response_set_header(res, (const uint8_t *)"content-type", 12, (const uint8_t *)"application/octet-stream", 24);
    for (long i = 0; i < chunks; i++) {
        if (kestrel_response_write(res, chunk, (size_t)size) != KESTREL_OK) {
            free(chunk);
            kestrel_response_fail(res);
            return;
        }
    }
    free(chunk);
    kestrel_response_end(res);
}

static void delay(kestrel_request *req, kestrel_response *res) {
    long ms = query_number(kestrel_request_query(req), "ms", 0);
    if (ms > 60000) ms = 60000;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
    char body[64];
    int n = snprintf(body, sizeof body, "delayed %ld", ms);
    kestrel_response_set_header(res, (const uint8_t *)"content-type", 12, (const uint8_t *)"text/plain", 10);
    kestrel_response_send(res, (const uint8_t *)body, (size_t)n);
}

typedef void (*blocking_route)(kestrel_request *, kestrel_response *);

typedef struct {
    blocking_route route;
    kestrel_request *req;
    kestrel_response *res;
} deferred;

static void *run_deferred(void *arg) {
    deferred *d = arg;
    d->route(d->req, d->res);
    free(d);
    return NULL;
}

/* Runs a route on a new detached thread; the request stays valid until it completes it. */
static kestrel_result defer(blocking_route route, kestrel_request *req, kestrel_response *res) {
    deferred *d = malloc(sizeof *d);
    if (!d) return KESTREL_IO_ERROR;
    d->route = route;
    d->req = req;
    d->res = res;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int rc = pthread_create(&thread, &attr, run_deferred, d);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        free(d);
        return KESTREL_IO_ERROR;
    }
    return KESTREL_OK;
}

static kestrel_result handle(void *userdata, kestrel_request *req, kestrel_response *res) {
    int inline_mode = *(const int *)userdata;
    kestrel_str method = kestrel_request_method(req);
    kestrel_str path = kestrel_request_path(req);
    int get = str_eq(method, "GET") || str_eq(method, "HEAD");

    if (get && str_eq(path, "/")) {
        kestrel_response_set_header(res, (const uint8_t *)"content-type", 12, (const uint8_t *)"text/plain", 10);
        /* Static bytes: lent without a copy and without a free callback. */
        return kestrel_response_send_owned(res, (const uint8_t *)HELLO, sizeof HELLO - 1, NULL, NULL);
    }
    blocking_route route = NULL;
    if (str_eq(method, "POST") && str_eq(path, "/echo")) route = echo;
    else if (str_eq(path, "/drain")) route = drain;
    else if (get && str_eq(path, "/stream")) route = stream;
    else if (get && str_eq(path, "/delay")) return defer(delay, req, res); /* always another thread */
    if (route) {
        if (inline_mode) return defer(route, req, res);
        route(req, res);
        return KESTREL_OK;
    }
    if (get && str_eq(path, "/info")) return route_info(req, res);
    if (get && str_eq(path, "/headers")) return route_headers(req, res);
    if (get && str_starts(path, "/status/")) return route_status(req, res);
    if (get && str_eq(path, "/trailers")) return route_trailers(res);
    kestrel_response_set_status(res, 404);
    return kestrel_response_send(res, (const uint8_t *)"not found\n", 10);
}

static void log_line(void *userdata, kestrel_log_level level, kestrel_str category, kestrel_str message) {
    (void)userdata;
    static const char *names[] = {"trace", "debug", "info", "warn", "error"};
    fprintf(stderr, "%s: %.*s: %.*s\n", level <= KESTREL_LOG_ERROR ? names[level] : "?", (int)category.len,
            category.ptr, (int)message.len, message.ptr);
}

static int fail(const char *what, kestrel_result rc) {
    char message[512];
    kestrel_last_error(message, sizeof message, NULL);
    fprintf(stderr, "demo: %s failed: %s: %s\n", what, kestrel_result_name(rc), message);
    return 1;
}

static void usage(void) {
    fprintf(stderr, "usage: demo [--urls \"URL[;URL...]\"] [--threads N] [--pool-threads N]\n"
                    "            [--protocols http1|http2|http1and2] [--dispatch pool|inline]\n"
                    "            [--cert PATH --key PATH] [--pfx PATH [--password P]] [--sni \"NAMES\" CERT KEY]...\n"
                    "            [--client-cert none|allow|require] [--client-ca PATH] [--tls13] [--watch-ms N]\n"
                    "            [--handshake-timeout-ms N] [--no-dev-cert]\n");
}

#define LEN(s) (const uint8_t *)(s), strlen(s)

/* Builds the TLS defaults from the command line; NULL with *rc == OK when none were given. */
static kestrel_tls_config *tls_from_args(int argc, char **argv, kestrel_result *rc) {
    kestrel_tls_config *tls = NULL;
    *rc = KESTREL_OK;
    const char *cert = NULL, *key = NULL, *pfx = NULL, *password = "";
    for (int i = 1; i < argc && *rc == KESTREL_OK; i++) {
        const char *a = argv[i];
        int starts = strcmp(a, "--cert") == 0 || strcmp(a, "--key") == 0 || strcmp(a, "--pfx") == 0 ||
                     strcmp(a, "--sni") == 0 || strcmp(a, "--client-cert") == 0 ||
                     strcmp(a, "--client-ca") == 0 || strcmp(a, "--tls13") == 0 || strcmp(a, "--watch-ms") == 0 ||
                     strcmp(a, "--handshake-timeout-ms") == 0;
        if (starts && tls == NULL && (*rc = kestrel_tls_config_new(&tls)) != KESTREL_OK) return NULL;
        if (strcmp(a, "--cert") == 0) cert = argv[++i];
        else if (strcmp(a, "--key") == 0) key = argv[++i];
        else if (strcmp(a, "--pfx") == 0) pfx = argv[++i];
        else if (strcmp(a, "--password") == 0) password = argv[++i];
        else if (strcmp(a, "--sni") == 0) {
            const char *names = argv[i + 1], *c = argv[i + 2], *k = argv[i + 3];
            i += 3;
            *rc = kestrel_tls_config_add_pem_files(tls, LEN(c), LEN(k), LEN(names));
        } else if (strcmp(a, "--client-cert") == 0) {
            const char *m = argv[++i];
            kestrel_client_certificate_mode mode = strcmp(m, "require") == 0 ? KESTREL_CLIENT_CERTIFICATE_REQUIRE
                                                   : strcmp(m, "allow") == 0 ? KESTREL_CLIENT_CERTIFICATE_ALLOW
                                                                             : KESTREL_CLIENT_CERTIFICATE_NONE;
            *rc = kestrel_tls_config_set_client_certificate_mode(tls, mode);
        } else if (strcmp(a, "--client-ca") == 0) {
            const char *ca = argv[++i];
            *rc = kestrel_tls_config_set_client_ca_file(tls, LEN(ca));
        } else if (strcmp(a, "--tls13") == 0) {
            *rc = kestrel_tls_config_set_min_version(tls, KESTREL_TLS_VERSION_1_3);
        } else if (strcmp(a, "--watch-ms") == 0) {
            *rc = kestrel_tls_config_set_watch_interval(tls, strtoull(argv[++i], NULL, 10));
        } else if (strcmp(a, "--handshake-timeout-ms") == 0) {
            *rc = kestrel_tls_config_set_handshake_timeout(tls, strtoull(argv[++i], NULL, 10));
        }
    }
    if (*rc == KESTREL_OK && cert && key) *rc = kestrel_tls_config_add_pem_files(tls, LEN(cert), LEN(key), NULL, 0);
    if (*rc == KESTREL_OK && pfx) *rc = kestrel_tls_config_add_pkcs12_file(tls, LEN(pfx), LEN(password), NULL, 0);
    if (*rc != KESTREL_OK) {
        kestrel_tls_config_free(tls);
        return NULL;
    }
    return tls;
}

int main(int argc, char **argv) {
    const char *urls = "http://localhost:5000";
    long threads = 0;
    long pool_threads = 0;
    kestrel_protocols protocols = KESTREL_PROTOCOLS_HTTP1_AND_HTTP2;
    static int inline_mode = 0;
    int no_dev_cert = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--urls") == 0 && i + 1 < argc) {
            urls = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = strtol(argv[++i], NULL, 10);
            if (threads <= 0) {
                usage();
                return 2;
            }
        } else if (strcmp(argv[i], "--pool-threads") == 0 && i + 1 < argc) {
            pool_threads = strtol(argv[++i], NULL, 10);
            if (pool_threads <= 0) {
                usage();
                return 2;
            }
        } else if (strcmp(argv[i], "--protocols") == 0 && i + 1 < argc) {
            const char *p = argv[++i];
            if (strcmp(p, "http1") == 0) protocols = KESTREL_PROTOCOLS_HTTP1;
            else if (strcmp(p, "http2") == 0) protocols = KESTREL_PROTOCOLS_HTTP2;
            else if (strcmp(p, "http1and2") == 0) protocols = KESTREL_PROTOCOLS_HTTP1_AND_HTTP2;
            else {
                usage();
                return 2;
            }
        } else if ((strcmp(argv[i], "--cert") == 0 || strcmp(argv[i], "--key") == 0 ||
                    strcmp(argv[i], "--pfx") == 0 || strcmp(argv[i], "--password") == 0 ||
                    strcmp(argv[i], "--client-cert") == 0 || strcmp(argv[i], "--client-ca") == 0 ||
                    strcmp(argv[i], "--watch-ms") == 0 || strcmp(argv[i], "--handshake-timeout-ms") == 0) &&
                   i + 1 < argc) {
            i++; /* read by tls_from_args */
        } else if (strcmp(argv[i], "--sni") == 0 && i + 3 < argc) {
            i += 3;
        } else if (strcmp(argv[i], "--tls13") == 0) {
        } else if (strcmp(argv[i], "--no-dev-cert") == 0) {
            no_dev_cert = 1;
        } else if (strcmp(argv[i], "--dispatch") == 0 && i + 1 < argc) {
            const char *mode = argv[++i];
            if (strcmp(mode, "inline") == 0) inline_mode = 1;
            else if (strcmp(mode, "pool") != 0) {
                usage();
                return 2;
            }
        } else {
            usage();
            return 2;
        }
    }

    /* Block the stop signals before any library thread exists, so only sigwait sees them. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    kestrel_options *options = NULL;
    kestrel_result rc = kestrel_options_new(&options);
    if (rc != KESTREL_OK) return fail("kestrel_options_new", rc);
    kestrel_tls_config *tls = tls_from_args(argc, argv, &rc);
    if (rc != KESTREL_OK) {
        kestrel_options_free(options);
        return fail("TLS options", rc);
    }
    if (tls != NULL) {
        rc = kestrel_options_set_https_defaults(options, tls);
        kestrel_tls_config_free(tls);
        if (rc != KESTREL_OK) {
            kestrel_options_free(options);
            return fail("kestrel_options_set_https_defaults", rc);
        }
    }
    if (no_dev_cert) kestrel_options_set_dev_certificate(options, false);
    if ((rc = kestrel_options_add_urls(options, (const uint8_t *)urls, strlen(urls), protocols)) != KESTREL_OK) {
        kestrel_options_free(options);
        return fail("--urls", rc);
    }
    if (threads > 0 && (rc = kestrel_options_set_io_threads(options, (uint32_t)threads)) != KESTREL_OK) {
        kestrel_options_free(options);
        return fail("--threads", rc);
    }
    if (pool_threads > 0 && (rc = kestrel_options_set_pool_threads(options, (uint32_t)pool_threads)) != KESTREL_OK) {
        kestrel_options_free(options);
        return fail("--pool-threads", rc);
    }
    kestrel_options_set_dispatch(options, inline_mode ? KESTREL_DISPATCH_INLINE : KESTREL_DISPATCH_POOL);
    kestrel_options_set_handler(options, handle, &inline_mode, NULL);
    kestrel_options_set_log_callback(options, log_line, KESTREL_LOG_WARN, NULL, NULL);

    kestrel_server *server = NULL;
    if ((rc = kestrel_server_new(options, &server)) != KESTREL_OK) return fail("kestrel_server_new", rc);
    if ((rc = kestrel_server_start(server)) != KESTREL_OK) {
        kestrel_server_free(server);
        return fail("start", rc);
    }
    for (size_t i = 0; i < kestrel_server_address_count(server); i++) {
        char url[256];
        if (kestrel_server_address(server, i, url, sizeof url, NULL) == KESTREL_OK) printf("listening on %s\n", url);
    }
    fflush(stdout);

    int sig = 0;
    for (;;) {
        sigwait(&stop_signals, &sig);
        if (sig != SIGHUP) break;
        rc = kestrel_server_reload_certificates(server);
        if (rc == KESTREL_OK) fprintf(stderr, "demo: certificates reloaded\n");
        else fail("reload", rc);
    }
    fprintf(stderr, "demo: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    size_t aborted = 0;
    kestrel_server_stop(server, 5000, &aborted);
    kestrel_server_free(server);
    fprintf(stderr, "demo: stopped (%zu requests aborted)\n", aborted);
    return 0;
}
