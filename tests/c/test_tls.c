/*
 * test_tls.c: the TLS part of the C API (https endpoints), with certificates made by the openssl
 * command at test time (in a mkdtemp directory) and curl as the HTTPS client, both run with
 * system()/popen(). Traffic stays on 127.0.0.1, ::1 and a Unix socket.
 *
 * Arguments: NULL for every TLS function, bad enum values, bad SNI names, a second default
 * certificate, http:// URLs for https endpoints, the handshake timeout and watch interval bounds.
 * Start failures (KESTREL_TLS_ERROR naming the problem, nothing left bound): missing, garbage,
 * encrypted and mismatched files, a wrong PKCS#12 password, https without certificate off
 * localhost, the development certificate turned off, client certificates with nothing to check
 * them, bad client CAs. Userdata of configs that never serve.
 * Serving: kestrel_request_get_tls (version, cipher, ALPN, SNI; versioned size; NOT_FOUND on
 * cleartext), https over TCP and a Unix socket, the handshake timeout, the minimum version,
 * PKCS#12 and in-memory PEM, an expired certificate, configs copied (freed at once, shared by
 * endpoints, changed after use), HTTPS defaults, SNI names (exact, wildcard, no default).
 * Callbacks: the certificate selector (per handshake, SNI name and address, index, REFUSE,
 * DEFAULT applying the SNI names, slower than the handshake timeout) and the client certificate
 * validator (the chain, refusal), each userdata_free called exactly once. Client certificates:
 * kestrel_request_peer_certificate against the DER made by openssl; a client CA (ALLOW,
 * REQUIRE, untrusted and expired clients).
 * Reload: kestrel_server_reload_certificates (state, new certificate, bad files keep the old one,
 * all or nothing across endpoints) and file watching. The development certificate: its PEM
 * (buffer sizes), trusted by curl over IPv4 and IPv6, its fingerprint logged, other names
 * refused.
 *
 */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Setup steps that must work; unlike REQUIRE they count no pass (only the checks count). */
#define NEED(cond)                                         \
    do {                                                   \
        if (!(cond)) t_fatal(#cond, __FILE__, __LINE__);   \
    } while (0)

/* ---- files --------------------------------------------------------------------------------- */

static char g_dir[64];                 /* the mkdtemp directory holding every generated file */
static unsigned char *g_client_der;    /* client.pem as DER (openssl x509 -outform DER) */
static size_t g_client_der_len;
static unsigned char *g_ca_der;        /* ca.pem as DER */
static size_t g_ca_der_len;

/* DIR/name, in one of a few rotating buffers (main thread only). */
static const char *file(const char *name) {
    static char slots[16][256];
    static int next;
    char *out = slots[next++ % 16];
    snprintf(out, 256, "%s/%s", g_dir, name);
    return out;
}

/* char var[] = DIR/name, for a path kept across other file() calls. */
#define PATH(var, name)  \
    char var[256];       \
    snprintf(var, sizeof var, "%s/%s", g_dir, (name))

#define BYTES(s) (const uint8_t *)(s), strlen(s)

/* Reads a whole file (NUL-terminated, malloc'd); NULL when it cannot be read. */
static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *data = malloc(cap);
    NEED(data != NULL);
    for (;;) {
        if (n + 1024 + 1 > cap) {
            cap *= 2;
            data = realloc(data, cap);
            NEED(data != NULL);
        }
        size_t got = fread(data + n, 1, 1024, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    data[n] = '\0';
    if (len) *len = n;
    return data;
}

static void write_file(const char *path, const char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    NEED(f != NULL);
    NEED(fwrite(data, 1, len, f) == len);
    NEED(fclose(f) == 0);
}

/* Replaces `dst` with a copy of `src` the way certificate tools do: write aside, rename over. */
static void replace_file(const char *dst, const char *src) {
    size_t len = 0;
    char *data = read_file(src, &len);
    NEED(data != NULL);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.new", dst);
    write_file(tmp, data, len);
    NEED(rename(tmp, dst) == 0);
    free(data);
}

/* ---- shell commands ------------------------------------------------------------------------ */

/* Runs a command with /bin/sh; returns its exit status (-1 when it did not run or was killed). */
static int sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    NEED(n > 0 && (size_t)n < sizeof cmd);
    int status = system(cmd);
    if (status == -1 || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

/* Runs a command and captures its standard output into out (NUL-terminated); returns its exit
 * status as sh() does. */
static int capture(char *out, size_t cap, const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    NEED(n > 0 && (size_t)n < sizeof cmd);
    out[0] = '\0';
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t len = 0;
    for (;;) {
        size_t got = fread(out + len, 1, cap - 1 - len, p);
        len += got;
        if (got == 0 || len == cap - 1) break;
    }
    out[len] = '\0';
    char sink[256];
    while (fread(sink, 1, sizeof sink, p) > 0) {
    }
    int status = pclose(p);
    if (status == -1 || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

/* An openssl step of the certificate setup: must succeed (its output goes to DIR/openssl.log). */
#define OPENSSL(...)                                                                              \
    do {                                                                                          \
        char step_[3072];                                                                         \
        snprintf(step_, sizeof step_, __VA_ARGS__);                                               \
        if (sh("%s >>%s 2>&1", step_, file("openssl.log")) != 0) {                                \
            fprintf(stderr, "certificate setup failed: %s\n", step_);                            \
            sh("cat %s >&2", file("openssl.log"));                                                \
            t_fatal("openssl", __FILE__, __LINE__);                                               \
        }                                                                                         \
    } while (0)

/* A key and a certificate signed by the test CA: `name`.key, `name`.pem with subject `subject`,
 * extended key usage `eku` and subjectAltName `san` (NULL: none). */
static void make_signed(const char *name, const char *subject, const char *eku, const char *san) {
    char ext[512];
    snprintf(ext, sizeof ext, "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s%s%s",
             eku, san ? "subjectAltName=" : "", san ? san : "", san ? "\n" : "");
    char ext_name[64], key[64], csr[64], pem[64];
    snprintf(ext_name, sizeof ext_name, "%s.ext", name);
    snprintf(key, sizeof key, "%s.key", name);
    snprintf(csr, sizeof csr, "%s.csr", name);
    snprintf(pem, sizeof pem, "%s.pem", name);
    write_file(file(ext_name), ext, strlen(ext));
    OPENSSL("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s -out %s -subj '%s'", file(key),
            file(csr), subject);
    OPENSSL("openssl x509 -req -in %s -CA %s -CAkey %s -CAcreateserial -days 30 -extfile %s -out %s", file(csr),
            file("ca.pem"), file("ca.key"), file(ext_name), file(pem));
}

/* Like make_signed, valid only from 2020-01-01 to 2021-01-01 (expired): `openssl ca` takes
 * explicit dates on every OpenSSL version. */
static void make_expired(const char *name, const char *subject, const char *eku, const char *san) {
    char ext[512], conf[1024];
    snprintf(ext, sizeof ext, "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s%s%s",
             eku, san ? "subjectAltName=" : "", san ? san : "", san ? "\n" : "");
    char ext_name[64], key[64], csr[64], pem[64];
    snprintf(ext_name, sizeof ext_name, "%s.ext", name);
    snprintf(key, sizeof key, "%s.key", name);
    snprintf(csr, sizeof csr, "%s.csr", name);
    snprintf(pem, sizeof pem, "%s.pem", name);
    write_file(file(ext_name), ext, strlen(ext));
    OPENSSL("mkdir -p %s && : > %s && (test -f %s || echo 1000 > %s)", file("ca-db"), file("ca-db/index.txt"), file("ca-db/serial"),
            file("ca-db/serial"));
    snprintf(conf, sizeof conf,
             "[ ca ]\ndefault_ca = test_ca\n[ test_ca ]\ndatabase = %s/ca-db/index.txt\nnew_certs_dir = %s/ca-db\n"
             "serial = %s/ca-db/serial\ndefault_md = sha256\npolicy = any_policy\nunique_subject = no\n"
             "[ any_policy ]\ncommonName = supplied\norganizationName = optional\n",
             g_dir, g_dir, g_dir);
    write_file(file("ca-db/ca.cnf"), conf, strlen(conf));
    OPENSSL("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s -out %s -subj '%s'", file(key),
            file(csr), subject);
    OPENSSL("openssl ca -batch -config %s -cert %s -keyfile %s -in %s -out %s -startdate 20200101000000Z "
            "-enddate 20210101000000Z -extfile %s -notext",
            file("ca-db/ca.cnf"), file("ca.pem"), file("ca.key"), file(csr), file(pem), file(ext_name));
}

/* Every certificate the tests use, in a fresh directory:
 *   ca.pem/ca.key         the test CA (ECDSA P-256)
 *   srv.pem/srv.key       CN=localhost, SAN localhost and 127.0.0.1, signed by the CA
 *   srv2.pem/srv2.key     CN=localhost-v2, same names (the "renewed" certificate for reloads)
 *   a.pem/a.key           CN=a.example.com, SAN a.example.com and *.example.com
 *   client.pem/client.key CN=alice, O=Example, client auth, signed by the CA; client.der
 *   rogue.pem/rogue.key   a self-signed client certificate (no CA trusts it)
 *   old.pem/old.key       CN=old-alice, client auth, signed by the CA, expired (2020..2021)
 *   stale.pem/stale.key   CN=localhost-stale, server, signed by the CA, expired (2020..2021)
 *   encrypted.key         srv.key encrypted with a password (not supported)
 *   srv.p12               srv with its key and the CA, password "s3cret" (openssl's defaults)
 *   other.key             a key that matches no certificate
 *   garbage.pem           text that is no PEM at all */
static void make_certificates(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/kestrel-tls-XXXXXX");
    NEED(mkdtemp(g_dir) != NULL);
    OPENSSL("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s -out %s -days 30 "
            "-subj '/CN=kestrel test CA' -addext 'basicConstraints=critical,CA:TRUE' "
            "-addext 'keyUsage=critical,keyCertSign,cRLSign'",
            file("ca.key"), file("ca.pem"));
    make_signed("srv", "/CN=localhost", "serverAuth", "DNS:localhost,IP:127.0.0.1");
    make_signed("srv2", "/CN=localhost-v2", "serverAuth", "DNS:localhost,IP:127.0.0.1");
    make_signed("a", "/CN=a.example.com", "serverAuth", "DNS:a.example.com,DNS:*.example.com");
    make_signed("client", "/O=Example/CN=alice", "clientAuth", NULL);
    OPENSSL("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s -out %s -days 30 "
            "-subj '/CN=mallory' -addext 'extendedKeyUsage=clientAuth'",
            file("rogue.key"), file("rogue.pem"));
    make_expired("old", "/O=Example/CN=old-alice", "clientAuth", NULL);
    make_expired("stale", "/CN=localhost-stale", "serverAuth", "DNS:localhost,IP:127.0.0.1");
    OPENSSL("openssl pkey -in %s -aes256 -passout pass:key-secret -out %s", file("srv.key"), file("encrypted.key"));
    OPENSSL("openssl x509 -in %s -outform DER -out %s", file("client.pem"), file("client.der"));
    OPENSSL("openssl pkcs12 -export -in %s -inkey %s -certfile %s -passout pass:s3cret -out %s", file("srv.pem"),
            file("srv.key"), file("ca.pem"), file("srv.p12"));
    OPENSSL("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s", file("other.key"));
    const char *garbage = "this is not a certificate\nnor a key\n";
    write_file(file("garbage.pem"), garbage, strlen(garbage));
    OPENSSL("openssl x509 -in %s -outform DER -out %s", file("ca.pem"), file("ca.der"));
    g_client_der = (unsigned char *)read_file(file("client.der"), &g_client_der_len);
    NEED(g_client_der != NULL && g_client_der_len > 100);
    g_ca_der = (unsigned char *)read_file(file("ca.der"), &g_ca_der_len);
    NEED(g_ca_der != NULL && g_ca_der_len > 100);
}

/* ---- curl ---------------------------------------------------------------------------------- */

typedef struct {
    int exit;          /* curl's exit status (0: the transfer worked) */
    int status;        /* the HTTP status, 0 when there was none */
    char body[4096];
    char log[32768];   /* curl -v output: the handshake, the server certificate's subject */
} curl_result;

static curl_result g_curl; /* one at a time, from the main thread */

/* GET https://host:port/path with curl, a `host` name resolving to 127.0.0.1 (the SNI name is `host`
 * unless it is an IP address). `trust`: the CA file to verify with, NULL for -k. `extra`: more
 * curl arguments. */
static curl_result *curl_get(const char *trust, const char *host, int port, const char *path, const char *extra) {
    curl_result *r = &g_curl;
    memset(r, 0, sizeof *r);
    char resolve[128] = "";
    if (host[0] != '[' && (host[0] < '0' || host[0] > '9')) snprintf(resolve, sizeof resolve, "--resolve %s:%d:127.0.0.1", host, port);
    char trust_arg[300];
    if (trust) snprintf(trust_arg, sizeof trust_arg, "--cacert %s", trust);
    else snprintf(trust_arg, sizeof trust_arg, "-k");
    const char *body_path = file("curl.body"), *log_path = file("curl.log");
    unlink(body_path);
    unlink(log_path);
    char code[64];
    r->exit = capture(code, sizeof code,
                      "curl -q -sS -v --noproxy '*' --max-time 30 %s %s %s -o %s -w '%%{http_code}' 'https://%s:%d%s' 2>%s",
                      trust_arg, resolve, extra ? extra : "", body_path, host, port, path, log_path);
    r->status = atoi(code);
    char *body = read_file(body_path, NULL);
    if (body) {
        snprintf(r->body, sizeof r->body, "%s", body);
        free(body);
    }
    char *log = read_file(log_path, NULL);
    if (log) {
        snprintf(r->log, sizeof r->log, "%s", log);
        free(log);
    }
    return r;
}

/* Whether `text` has a line that is `line` (exact) or starts with it (prefix). */
static int find_line(const char *text, const char *line, int prefix) {
    size_t n = strlen(line);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, line, n) == 0 && (prefix || p[n] == '\n' || p[n] == '\0')) return 1;
        p = strchr(p, '\n');
        if (p) p++;
    }
    return 0;
}
static int has_line(const char *text, const char *line) { return find_line(text, line, 0); }
static int has_line_prefix(const char *text, const char *line) { return find_line(text, line, 1); }

/* A curl result that should be a 200 from the /info handler, with a message when not. */
#define CHECK_SERVED(r, what)                                                                          \
    do {                                                                                               \
        int ok_ = (r)->exit == 0 && (r)->status == 200;                                                \
        if (!ok_) fprintf(stderr, "%s: curl exit %d, status %d, body \"%s\"\n%s\n", (what), (r)->exit, \
                          (r)->status, (r)->body, (r)->log);                                           \
        t_check(ok_, (what), __FILE__, __LINE__);                                                      \
    } while (0)

/* A curl result that should have failed: no response at all. */
#define CHECK_REFUSED(r, what)                                                                              \
    do {                                                                                                    \
        int ok_ = (r)->exit != 0 && (r)->status == 0;                                                       \
        if (!ok_) fprintf(stderr, "%s: expected a failure, curl exit %d, status %d, body \"%s\"\n", (what), \
                          (r)->exit, (r)->status, (r)->body);                                               \
        t_check(ok_, (what), __FILE__, __LINE__);                                                           \
    } while (0)

/* The subject curl saw on the server certificate ("*  subject: CN=localhost"), or "". */
static const char *server_subject(const curl_result *r, char *out, size_t len) {
    out[0] = '\0';
    const char *p = strstr(r->log, "subject: ");
    if (!p) return out;
    p += strlen("subject: ");
    size_t n = strcspn(p, "\r\n");
    if (n >= len) n = len - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    return out;
}

static int subject_is(const curl_result *r, const char *cn) {
    char subject[256];
    server_subject(r, subject, sizeof subject);
    if (strcmp(subject, cn) != 0) fprintf(stderr, "server certificate subject \"%s\", expected \"%s\"\n", subject, cn);
    return strcmp(subject, cn) == 0;
}

/* ---- ports --------------------------------------------------------------------------------- */

/* Whether a new socket can bind 127.0.0.1:port without SO_REUSEADDR (nothing holds it). */
static int port_free(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    NEED(fd >= 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 && listen(fd, 1) == 0;
    close(fd);
    return ok;
}

/* A port that is free now (bound to port 0, read back, closed: nothing connected, no TIME_WAIT). */
static int pick_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    NEED(fd >= 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    NEED(bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0);
    socklen_t len = sizeof addr;
    NEED(getsockname(fd, (struct sockaddr *)&addr, &len) == 0);
    close(fd);
    return ntohs(addr.sin_port);
}

/* ---- log records --------------------------------------------------------------------------- */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static counter log_ud;
static char g_log[16384];
static size_t g_log_len;

static void log_record(void *userdata, kestrel_log_level level, kestrel_str category, kestrel_str message) {
    (void)level;
    (void)category;
    atomic_inc(&((counter *)userdata)->calls);
    pthread_mutex_lock(&lock);
    int n = snprintf(g_log + g_log_len, sizeof g_log - g_log_len, "%.*s\n", (int)message.len, message.ptr);
    if (n > 0 && g_log_len + (size_t)n < sizeof g_log) g_log_len += (size_t)n;
    pthread_mutex_unlock(&lock);
}

static int logged(const char *text) {
    pthread_mutex_lock(&lock);
    int found = strstr(g_log, text) != NULL;
    pthread_mutex_unlock(&lock);
    return found;
}

static void reset_log(void) {
    pthread_mutex_lock(&lock);
    g_log[0] = '\0';
    g_log_len = 0;
    pthread_mutex_unlock(&lock);
}

/* ---- the handler --------------------------------------------------------------------------- */

static counter handler_ud;

static kestrel_result send_text(kestrel_response *res, const char *text) {
    return kestrel_response_send(res, (const uint8_t *)text, strlen(text));
}

static int all_bytes(const void *p, size_t n, unsigned char value) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        if (b[i] != value) return 0;
    }
    return 1;
}

static int is_tls_version(kestrel_str s) { return str_eq(s, "TLSv1.2") || str_eq(s, "TLSv1.3"); }

/* /size: kestrel_request_get_tls with smaller and larger `size` values; one line per case, 1 when
 * only the fields that fit were written. */
static kestrel_result route_size(kestrel_request *req, kestrel_response *res) {
    char body[256];
    kestrel_tls_info a;
    /* a: size covers `size` and `version` only. */
    memset(&a, 0xAB, sizeof a);
    a.size = offsetof(kestrel_tls_info, cipher_suite);
    int ok_a = kestrel_request_get_tls(req, &a) == KESTREL_OK && a.size == offsetof(kestrel_tls_info, cipher_suite) &&
               is_tls_version(a.version) &&
               all_bytes((char *)&a + offsetof(kestrel_tls_info, cipher_suite), sizeof a - offsetof(kestrel_tls_info, cipher_suite), 0xAB);
    /* b: up to the cipher suite. */
    kestrel_tls_info b;
    memset(&b, 0xAB, sizeof b);
    b.size = offsetof(kestrel_tls_info, alpn);
    int ok_b = kestrel_request_get_tls(req, &b) == KESTREL_OK && is_tls_version(b.version) && b.cipher_suite.len > 0 &&
               all_bytes((char *)&b + offsetof(kestrel_tls_info, alpn), sizeof b - offsetof(kestrel_tls_info, alpn), 0xAB);
    /* c: a newer host's larger struct: everything known is filled, the rest untouched. */
    struct {
        kestrel_tls_info info;
        uint64_t newer_field;
    } c;
    memset(&c, 0xAB, sizeof c);
    c.info.size = sizeof c;
    int ok_c = kestrel_request_get_tls(req, &c.info) == KESTREL_OK && is_tls_version(c.info.version) &&
               c.info.cipher_suite.len > 0 && c.info.peer_certificate_count == 0 && all_bytes(&c.newer_field, sizeof c.newer_field, 0xAB);
    /* d: too small to hold even `size`: refused, nothing written. */
    kestrel_tls_info d;
    memset(&d, 0xAB, sizeof d);
    d.size = sizeof(size_t) - 1;
    int ok_d = kestrel_request_get_tls(req, &d) == KESTREL_INVALID_ARGUMENT && d.size == sizeof(size_t) - 1 &&
               all_bytes((char *)&d + sizeof(size_t), sizeof d - sizeof(size_t), 0xAB);
    d.size = 0;
    ok_d = ok_d && kestrel_request_get_tls(req, &d) == KESTREL_INVALID_ARGUMENT;
    /* e: just `size`: OK, nothing else written. */
    kestrel_tls_info e;
    memset(&e, 0xAB, sizeof e);
    e.size = sizeof(size_t);
    int ok_e = kestrel_request_get_tls(req, &e) == KESTREL_OK && e.size == sizeof(size_t) &&
               all_bytes((char *)&e + sizeof(size_t), sizeof e - sizeof(size_t), 0xAB);
    snprintf(body, sizeof body, "a=%d\nb=%d\nc=%d\nd=%d\ne=%d\n", ok_a, ok_b, ok_c, ok_d, ok_e);
    return send_text(res, body);
}

/* /info (any other path): what the connection's TLS session looks like, one key=value a line. */
static kestrel_result tls_handler(void *userdata, kestrel_request *req, kestrel_response *res) {
    atomic_inc(&((counter *)userdata)->calls);
    if (str_eq(kestrel_request_path(req), "/size")) return route_size(req, res);
    CHECK_RC(kestrel_request_get_tls(req, NULL), KESTREL_NULL_ARGUMENT);
    CHECK_RC(kestrel_request_peer_certificate(req, 0, NULL), KESTREL_NULL_ARGUMENT);

    char body[2048];
    kestrel_str scheme = kestrel_request_scheme(req), http = kestrel_request_version(req);
    kestrel_tls_info info;
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    kestrel_result rc = kestrel_request_get_tls(req, &info);
    kestrel_str der = {NULL, 0};
    kestrel_result leaf_rc = kestrel_request_peer_certificate(req, 0, &der);
    if (rc == KESTREL_NOT_FOUND) {
        snprintf(body, sizeof body, "cleartext\nscheme=%.*s\npeer=%s\n", (int)scheme.len, scheme.ptr,
                 leaf_rc == KESTREL_NOT_FOUND ? "notfound" : kestrel_result_name(leaf_rc));
        return send_text(res, body);
    }
    if (rc != KESTREL_OK) {
        snprintf(body, sizeof body, "error=%s\n", kestrel_result_name(rc));
        return send_text(res, body);
    }
    const char *leaf;
    if (info.peer_certificate_count == 0) leaf = leaf_rc == KESTREL_NOT_FOUND ? "none" : "unexpected";
    else if (leaf_rc != KESTREL_OK) leaf = "error";
    else leaf = der.len == g_client_der_len && memcmp(der.ptr, g_client_der, der.len) == 0 ? "match" : "mismatch";
    /* Every index below the count is readable; the second one, when sent, is the test CA. */
    const char *second = info.peer_certificate_count < 2 ? "none" : "other";
    for (size_t i = 0; i < info.peer_certificate_count; i++) {
        kestrel_str cert = {NULL, 0};
        if (kestrel_request_peer_certificate(req, i, &cert) != KESTREL_OK || cert.len == 0) second = "unreadable";
        else if (i == 1 && cert.len == g_ca_der_len && memcmp(cert.ptr, g_ca_der, cert.len) == 0) second = "ca";
    }
    kestrel_str past = {NULL, 0};
    kestrel_result end_rc = kestrel_request_peer_certificate(req, info.peer_certificate_count, &past);
    snprintf(body, sizeof body,
             "scheme=%.*s\nhttp=%.*s\nversion=%.*s\ncipher=%.*s\nalpn=%.*s\nsni=%.*s\nsubject=%.*s\ncount=%zu\nleaf=%s\nsecond=%s\nend=%s\n",
             (int)scheme.len, scheme.ptr, (int)http.len, http.ptr, (int)info.version.len, info.version.ptr,
             (int)info.cipher_suite.len, info.cipher_suite.ptr, (int)info.alpn.len, info.alpn.ptr, (int)info.server_name.len,
             info.server_name.ptr, (int)info.peer_subject.len, info.peer_subject.ptr, info.peer_certificate_count, leaf, second,
             end_rc == KESTREL_NOT_FOUND && past.ptr == NULL ? "notfound" : "found");
    return send_text(res, body);
}

/* ---- server helpers ------------------------------------------------------------------------ */

/* Options with no endpoint yet, 1 I/O thread, 2 handler threads, the TLS handler. */
static kestrel_options *tls_options(void) {
    kestrel_options *options = test_options(NULL, 2);
    NEED(kestrel_options_set_handler(options, tls_handler, &handler_ud, NULL) == KESTREL_OK);
    return options;
}

static kestrel_tls_config *new_config(void) {
    kestrel_tls_config *config = NULL;
    NEED(kestrel_tls_config_new(&config) == KESTREL_OK && config != NULL);
    return config;
}

/* A config serving DIR/cert with DIR/key for `names` ("" for the default certificate). */
static kestrel_tls_config *config_with(const char *cert, const char *key, const char *names) {
    kestrel_tls_config *config = new_config();
    const char *cert_path = file(cert), *key_path = file(key);
    NEED(kestrel_tls_config_add_pem_files(config, BYTES(cert_path), BYTES(key_path), BYTES(names)) == KESTREL_OK);
    return config;
}

static void add_https(kestrel_options *options, const char *urls, const kestrel_tls_config *config) {
    NEED(kestrel_options_add_https_urls(options, BYTES(urls), KESTREL_PROTOCOLS_HTTP1_AND_HTTP2, config) == KESTREL_OK);
}

static kestrel_server *start_server(kestrel_options *options) {
    kestrel_server *server = NULL;
    NEED(kestrel_server_new(options, &server) == KESTREL_OK && server != NULL);
    kestrel_result rc = kestrel_server_start(server);
    if (rc != KESTREL_OK) {
        char message[1024];
        fprintf(stderr, "start: %s: %s\n", kestrel_result_name(rc), last_error(message, sizeof message));
    }
    NEED(rc == KESTREL_OK);
    return server;
}

static void stop_and_free(kestrel_server *server) {
    CHECK_RC(kestrel_server_stop(server, 2000, NULL), KESTREL_OK);
    kestrel_server_free(server);
}

/* ---- NULL arguments ------------------------------------------------------------------------ */

static int32_t never_select(void *userdata, const kestrel_client_hello *hello) {
    (void)hello;
    atomic_inc(&((counter *)userdata)->calls);
    return KESTREL_SELECT_DEFAULT;
}

static bool never_validate(void *userdata, const kestrel_str *chain, size_t count) {
    (void)chain;
    (void)count;
    atomic_inc(&((counter *)userdata)->calls);
    return true;
}

static void test_null_arguments(void) {
    kestrel_tls_config *config = new_config();
    counter c = {0, 0};

    CHECK_RC(kestrel_tls_config_new(NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("out");
    kestrel_tls_config_free(NULL); /* no-op */

    CHECK_RC(kestrel_tls_config_add_pem_files(NULL, LIT("/a.pem"), LIT("/a.key"), NULL, 0), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("config");
    CHECK_RC(kestrel_tls_config_add_pem_files(config, NULL, 6, LIT("/a.key"), NULL, 0), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("cert_path");
    CHECK_RC(kestrel_tls_config_add_pem_files(config, LIT("/a.pem"), NULL, 6, NULL, 0), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("key_path");
    CHECK_RC(kestrel_tls_config_add_pem_files(config, LIT("/a.pem"), LIT("/a.key"), NULL, 5), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("names");

    CHECK_RC(kestrel_tls_config_add_pem(NULL, LIT("cert"), LIT("key"), NULL, 0), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("config");
    CHECK_RC(kestrel_tls_config_add_pem(config, NULL, 4, LIT("key"), NULL, 0), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("cert_pem");
    CHECK_RC(kestrel_tls_config_add_pem(config, LIT("cert"), NULL, 3, NULL, 0), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("key_pem");
    CHECK_RC(kestrel_tls_config_add_pem(config, LIT("cert"), LIT("key"), NULL, 3), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("names");

    CHECK_RC(kestrel_tls_config_add_pkcs12_file(NULL, LIT("/a.p12"), LIT("pw"), NULL, 0), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("config");
    CHECK_RC(kestrel_tls_config_add_pkcs12_file(config, NULL, 6, LIT("pw"), NULL, 0), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("pfx_path");
    CHECK_RC(kestrel_tls_config_add_pkcs12_file(config, LIT("/a.p12"), NULL, 2, NULL, 0), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("password");
    CHECK_RC(kestrel_tls_config_add_pkcs12_file(config, LIT("/a.p12"), LIT("pw"), NULL, 4), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("names");

    /* Callbacks: a refused registration releases its userdata exactly once, before returning. */
    CHECK_RC(kestrel_tls_config_set_certificate_selector(NULL, never_select, &c, count_free), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("config");
    CHECK(atomic_get(&c.freed) == 1);
    CHECK_RC(kestrel_tls_config_set_certificate_selector(config, NULL, &c, count_free), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("selector");
    CHECK(atomic_get(&c.freed) == 2);
    CHECK_RC(kestrel_tls_config_set_client_certificate_validator(NULL, never_validate, &c, count_free), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("config");
    CHECK(atomic_get(&c.freed) == 3);
    CHECK_RC(kestrel_tls_config_set_client_certificate_validator(config, NULL, &c, count_free), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("validator");
    CHECK(atomic_get(&c.freed) == 4);
    /* NULL userdata_free is allowed with a NULL config too (nothing to call). */
    CHECK_RC(kestrel_tls_config_set_certificate_selector(NULL, never_select, NULL, NULL), KESTREL_NULL_ARGUMENT);
    CHECK(atomic_get(&c.calls) == 0);

    CHECK_RC(kestrel_tls_config_set_client_certificate_mode(NULL, KESTREL_CLIENT_CERTIFICATE_NONE), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("config");
    CHECK_RC(kestrel_tls_config_set_client_ca_file(NULL, LIT("/ca.pem")), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("config");
    CHECK_RC(kestrel_tls_config_set_client_ca_file(config, NULL, 7), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("ca_path");
    CHECK_RC(kestrel_tls_config_set_client_ca_pem(NULL, LIT("pem")), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("config");
    CHECK_RC(kestrel_tls_config_set_client_ca_pem(config, NULL, 3), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("ca_pem");
    CHECK_RC(kestrel_tls_config_set_min_version(NULL, KESTREL_TLS_VERSION_1_2), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("config");
    CHECK_RC(kestrel_tls_config_set_handshake_timeout(NULL, 1000), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("config");
    CHECK_RC(kestrel_tls_config_set_watch_interval(NULL, 1000), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("config");

    kestrel_options *options = test_options(NULL, 0);
    CHECK_RC(kestrel_options_add_https_urls(NULL, LIT("https://127.0.0.1:0"), KESTREL_PROTOCOLS_HTTP1, config), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("options");
    CHECK_RC(kestrel_options_add_https_urls(options, LIT("https://127.0.0.1:0"), KESTREL_PROTOCOLS_HTTP1, NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("config");
    CHECK_RC(kestrel_options_add_https_urls(options, NULL, 5, KESTREL_PROTOCOLS_HTTP1, config), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("urls");
    CHECK_RC(kestrel_options_set_https_defaults(NULL, config), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("options");
    CHECK_RC(kestrel_options_set_https_defaults(options, NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("config");
    CHECK_RC(kestrel_options_set_dev_certificate(NULL, true), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("options");
    kestrel_options_free(options);

    CHECK_RC(kestrel_server_reload_certificates(NULL), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("server");
    char buf[64];
    size_t written = 42;
    CHECK_RC(kestrel_server_dev_certificate_pem(NULL, buf, sizeof buf, &written), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("server");
    CHECK(written == 42);
    kestrel_tls_info info;
    info.size = sizeof info;
    CHECK_RC(kestrel_request_get_tls(NULL, &info), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("request");
    kestrel_str der = {NULL, 0};
    CHECK_RC(kestrel_request_peer_certificate(NULL, 0, &der), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("request");
    CHECK(der.ptr == NULL);

    /* A built, never started server for the second arguments (and the "before start" answers). */
    options = test_options("http://127.0.0.1:0", 1);
    CHECK_RC(kestrel_options_set_handler(options, tls_handler, &handler_ud, NULL), KESTREL_OK);
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    CHECK_RC(kestrel_server_dev_certificate_pem(server, NULL, 10, &written), KESTREL_NULL_ARGUMENT);
    CHECK_LAST_ERROR("buf");
    CHECK(written == 42);
    CHECK_RC(kestrel_server_dev_certificate_pem(server, buf, sizeof buf, &written), KESTREL_NOT_FOUND);
    CHECK_LAST_ERROR("development certificate");
    CHECK_RC(kestrel_server_reload_certificates(server), KESTREL_INVALID_STATE);
    CHECK_LAST_ERROR(NULL);
    kestrel_server_free(server);

    kestrel_tls_config_free(config);
    CHECK(atomic_get(&c.freed) == 4);
    CHECK(atomic_get(&c.calls) == 0);
    CHECK(strcmp(kestrel_result_name(KESTREL_TLS_ERROR), "KESTREL_TLS_ERROR") == 0);
}

/* ---- argument checks ----------------------------------------------------------------------- */

static void test_argument_checks(void) {
    kestrel_tls_config *config = new_config();

    /* Enums out of range. */
    CHECK_RC(kestrel_tls_config_set_client_certificate_mode(config, 3), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("3");
    CHECK_RC(kestrel_tls_config_set_client_certificate_mode(config, 0xFFFFFFFFu), KESTREL_INVALID_ARGUMENT);
    CHECK_RC(kestrel_tls_config_set_client_certificate_mode(config, KESTREL_CLIENT_CERTIFICATE_REQUIRE), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_client_certificate_mode(config, KESTREL_CLIENT_CERTIFICATE_ALLOW), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_client_certificate_mode(config, KESTREL_CLIENT_CERTIFICATE_NONE), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_min_version(config, 2), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("2");
    CHECK_RC(kestrel_tls_config_set_min_version(config, KESTREL_TLS_VERSION_1_3), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_min_version(config, KESTREL_TLS_VERSION_1_2), KESTREL_OK);

    /* Handshake timeout: 0 is invalid, 1 ms is not. */
    CHECK_RC(kestrel_tls_config_set_handshake_timeout(config, 0), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("timeout");
    CHECK_RC(kestrel_tls_config_set_handshake_timeout(config, 1), KESTREL_OK);
    /* Watch interval: at least 10 ms; 0 turns watching off. */
    CHECK_RC(kestrel_tls_config_set_watch_interval(config, 9), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("10");
    CHECK_RC(kestrel_tls_config_set_watch_interval(config, 1), KESTREL_INVALID_ARGUMENT);
    CHECK_RC(kestrel_tls_config_set_watch_interval(config, 10), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_watch_interval(config, 0), KESTREL_OK);

    /* Paths: empty or with a NUL byte. */
    CHECK_RC(kestrel_tls_config_add_pem_files(config, (const uint8_t *)"", 0, LIT("/a.key"), NULL, 0), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("cert_path");
    CHECK_RC(kestrel_tls_config_add_pem_files(config, LIT("/a.pem"), (const uint8_t *)"/a\0.key", 7, NULL, 0), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("key_path");
    CHECK_RC(kestrel_tls_config_add_pkcs12_file(config, (const uint8_t *)"", 0, LIT("pw"), NULL, 0), KESTREL_INVALID_ARGUMENT);
    CHECK_RC(kestrel_tls_config_set_client_ca_file(config, (const uint8_t *)"/c\0a", 4), KESTREL_INVALID_ARGUMENT);

    /* SNI names: each bad pattern refused, and the certificate is not added. */
    static const char *bad_names[] = {
        "*", "*.com", "a..b", "a.*.b", "-a.example.com", "a-.example.com", "a b.example.com", "a_b.example.com",
        "**.example.com", "*.", "ok.example.com;*.com", "caf\xc3\xa9.example.com",
    };
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        kestrel_result rc = kestrel_tls_config_add_pem_files(config, LIT("/a.pem"), LIT("/a.key"), BYTES(bad_names[i]));
        if (rc != KESTREL_INVALID_ARGUMENT) fprintf(stderr, "SNI name \"%s\": %s\n", bad_names[i], kestrel_result_name(rc));
        CHECK(rc == KESTREL_INVALID_ARGUMENT);
        CHECK_LAST_ERROR(NULL);
    }
    CHECK_RC(kestrel_tls_config_add_pem(config, LIT("c"), LIT("k"), LIT("*.com")), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("*.com");
    CHECK_RC(kestrel_tls_config_add_pkcs12_file(config, LIT("/a.p12"), LIT(""), LIT("a..b")), KESTREL_INVALID_ARGUMENT);
    /* Names that are not UTF-8. */
    CHECK_RC(kestrel_tls_config_add_pem_files(config, LIT("/a.pem"), LIT("/a.key"), LIT("\xff.example.com")), KESTREL_INVALID_ARGUMENT);
    CHECK_RC(kestrel_tls_config_add_pkcs12_file(config, LIT("/a.p12"), LIT("\xff"), NULL, 0), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("password");
    /* Good names: exact, wildcard, several, mixed case, trailing dot, spaces around. */
    CHECK_RC(kestrel_tls_config_add_pem_files(config, LIT("/a.pem"), LIT("/a.key"), LIT("api.example.com")), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_add_pem_files(config, LIT("/b.pem"), LIT("/b.key"), LIT("*.example.com; WWW.Example.org. ;x-1.test")), KESTREL_OK);

    /* The default certificate (no names): one. None was added above, since every refused call
     * added nothing: the first default is accepted, the second refused whatever its kind. */
    CHECK_RC(kestrel_tls_config_add_pem_files(config, LIT("/d.pem"), LIT("/d.key"), NULL, 0), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_add_pem_files(config, LIT("/e.pem"), LIT("/e.key"), NULL, 0), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("default");
    CHECK_RC(kestrel_tls_config_add_pem(config, LIT("c"), LIT("k"), NULL, 0), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("default");
    CHECK_RC(kestrel_tls_config_add_pkcs12_file(config, LIT("/a.p12"), LIT(""), LIT(" ; ")), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("default");
    /* Named ones are still welcome. */
    CHECK_RC(kestrel_tls_config_add_pem(config, LIT("c"), LIT("k"), LIT("mem.example.net")), KESTREL_OK);

    /* https URLs: http:// refused, also in a list (nothing added), bad URLs, bad protocols. */
    kestrel_options *options = test_options(NULL, 0);
    CHECK_RC(kestrel_options_add_https_urls(options, LIT("http://127.0.0.1:0"), KESTREL_PROTOCOLS_HTTP1, config), KESTREL_INVALID_URL);
    CHECK_LAST_ERROR("http://127.0.0.1:0");
    CHECK_RC(kestrel_options_add_https_urls(options, LIT("https://127.0.0.1:0;http://127.0.0.1:0"), KESTREL_PROTOCOLS_HTTP1, config),
             KESTREL_INVALID_URL);
    CHECK_LAST_ERROR(NULL);
    CHECK_RC(kestrel_options_add_https_urls(options, LIT("https://127.0.0.1:99999"), KESTREL_PROTOCOLS_HTTP1, config), KESTREL_INVALID_URL);
    CHECK_RC(kestrel_options_add_https_urls(options, LIT("ftp://127.0.0.1:1"), KESTREL_PROTOCOLS_HTTP1, config), KESTREL_INVALID_URL);
    CHECK_RC(kestrel_options_add_https_urls(options, LIT("https://127.0.0.1:0"), 7, config), KESTREL_INVALID_ARGUMENT);
    CHECK_LAST_ERROR("7");
    /* https:// is a valid scheme for kestrel_options_add_urls too (endpoint without its own config). */
    CHECK_RC(kestrel_options_add_urls(options, LIT("https://localhost:0"), KESTREL_PROTOCOLS_HTTP1), KESTREL_OK);
    CHECK_RC(kestrel_options_add_https_urls(options, LIT("https://127.0.0.1:0;https://[::1]:0"), KESTREL_PROTOCOLS_HTTP2, config), KESTREL_OK);
    CHECK_RC(kestrel_options_set_https_defaults(options, config), KESTREL_OK);
    CHECK_RC(kestrel_options_set_dev_certificate(options, false), KESTREL_OK);
    CHECK_RC(kestrel_options_set_dev_certificate(options, true), KESTREL_OK);
    /* The options with their copies of the config build a server (and are released with it). */
    CHECK_RC(kestrel_options_set_handler(options, tls_handler, &handler_ud, NULL), KESTREL_OK);
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    kestrel_server_free(server);
    kestrel_tls_config_free(config);

    /* A replaced selector's userdata is released when no copy of the config holds it any more. */
    counter first = {0, 0}, second = {0, 0}, validator = {0, 0};
    config = new_config();
    CHECK_RC(kestrel_tls_config_set_certificate_selector(config, never_select, &first, count_free), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_certificate_selector(config, never_select, &second, count_free), KESTREL_OK);
    CHECK(atomic_get(&first.freed) == 1); /* only this config held it */
    options = test_options(NULL, 0);
    CHECK_RC(kestrel_options_add_https_urls(options, LIT("https://127.0.0.1:0"), KESTREL_PROTOCOLS_HTTP1, config), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_client_certificate_validator(config, never_validate, &validator, count_free), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_certificate_selector(config, never_select, &first, count_free), KESTREL_OK);
    CHECK(atomic_get(&second.freed) == 0); /* the options' copy still holds it */
    kestrel_tls_config_free(config);
    CHECK(atomic_get(&first.freed) == 2);
    CHECK(atomic_get(&validator.freed) == 1);
    CHECK(atomic_get(&second.freed) == 0);
    kestrel_options_free(options);
    CHECK(atomic_get(&second.freed) == 1);
    CHECK(atomic_get(&validator.freed) == 1);
    CHECK(first.calls == 0 && second.calls == 0 && validator.calls == 0);
}

/* ---- start failures ------------------------------------------------------------------------ */

/* A selector's userdata when the server never serves: server_new refusing the options, a start
 * failing on the certificate, a server built and freed without a start. */
static void test_userdata_without_serving(void) {
    counter sel = {0, 0}, val = {0, 0};
    kestrel_tls_config *config = config_with("missing.pem", "srv.key", "");
    CHECK_RC(kestrel_tls_config_set_certificate_selector(config, never_select, &sel, count_free), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_client_certificate_validator(config, never_validate, &val, count_free), KESTREL_OK);

    /* kestrel_server_new refuses options without a handler: the options (and the copy) go. */
    kestrel_options *options = test_options(NULL, 1);
    CHECK_RC(kestrel_options_add_https_urls(options, LIT("https://127.0.0.1:0"), KESTREL_PROTOCOLS_HTTP1, config), KESTREL_OK);
    kestrel_server *server = NULL;
    CHECK_RC(kestrel_server_new(options, &server), KESTREL_INVALID_ARGUMENT);
    CHECK(server == NULL);
    CHECK(atomic_get(&sel.freed) == 0 && atomic_get(&val.freed) == 0); /* the config still holds them */

    /* A start that fails on the missing file, then free. */
    options = tls_options();
    CHECK_RC(kestrel_options_add_https_urls(options, LIT("https://127.0.0.1:0"), KESTREL_PROTOCOLS_HTTP1, config), KESTREL_OK);
    CHECK_RC(kestrel_options_set_https_defaults(options, config), KESTREL_OK);
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    CHECK_RC(kestrel_server_start(server), KESTREL_TLS_ERROR);
    CHECK_LAST_ERROR("missing.pem");
    kestrel_tls_config_free(config);
    CHECK(atomic_get(&sel.freed) == 0 && atomic_get(&val.freed) == 0); /* the server's copies */
    kestrel_server_free(server);
    CHECK(atomic_get(&sel.freed) == 1 && atomic_get(&val.freed) == 1);
    CHECK(sel.calls == 0 && val.calls == 0);

    /* Built, never started. */
    counter other = {0, 0};
    config = new_config();
    CHECK_RC(kestrel_tls_config_set_certificate_selector(config, never_select, &other, count_free), KESTREL_OK);
    options = tls_options();
    CHECK_RC(kestrel_options_set_https_defaults(options, config), KESTREL_OK);
    kestrel_tls_config_free(config);
    CHECK(atomic_get(&other.freed) == 0);
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    kestrel_server_free(server);
    CHECK(atomic_get(&other.freed) == 1);
}

/* Starts a server with a cleartext endpoint on a free port plus whatever `options` has (an https
 * endpoint on `https_port`); the start must fail with KESTREL_TLS_ERROR whose message contains
 * `needle` and `needle2` (may be NULL), binding nothing, and fail the same way a second time. */
static void expect_tls_error(const char *what, kestrel_options *options, int plain_port, int https_port, const char *needle,
                             const char *needle2) {
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    kestrel_result rc = kestrel_server_start(server);
    char message[1024];
    last_error(message, sizeof message);
    int ok = rc == KESTREL_TLS_ERROR && strstr(message, needle) != NULL && (needle2 == NULL || strstr(message, needle2) != NULL);
    if (!ok) fprintf(stderr, "%s: start returned %s, last error \"%s\" (wanted \"%s\"%s%s)\n", what, kestrel_result_name(rc), message,
                     needle, needle2 ? " and " : "", needle2 ? needle2 : "");
    t_check(ok, what, __FILE__, __LINE__);
    CHECK(kestrel_server_address_count(server) == 0);
    /* Nothing stays bound: both ports can be taken. */
    CHECK(port_free(plain_port));
    CHECK(port_free(https_port));
    CHECK(!port_accepts(plain_port));
    CHECK_RC(kestrel_server_start(server), KESTREL_TLS_ERROR);
    CHECK(port_free(plain_port));
    kestrel_server_free(server);
}

/* Options with http://127.0.0.1:plain and an https endpoint `https_url` configured by `config`
 * (NULL: added with kestrel_options_add_urls, no config of its own). */
static kestrel_options *failing_options(int plain_port, const char *https_url, const kestrel_tls_config *config) {
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", plain_port);
    kestrel_options *options = tls_options();
    REQUIRE(kestrel_options_add_urls(options, BYTES(url), KESTREL_PROTOCOLS_HTTP1_AND_HTTP2) == KESTREL_OK);
    if (config) add_https(options, https_url, config);
    else REQUIRE(kestrel_options_add_urls(options, BYTES(https_url), KESTREL_PROTOCOLS_HTTP1_AND_HTTP2) == KESTREL_OK);
    return options;
}

static void test_start_failures(void) {
    int plain = pick_port(), port = pick_port();
    char url[64];
    snprintf(url, sizeof url, "https://127.0.0.1:%d", port);
    kestrel_tls_config *config;

    /* A missing certificate file, a missing key file. */
    config = config_with("missing.pem", "srv.key", "");
    expect_tls_error("missing certificate file", failing_options(plain, url, config), plain, port, "missing.pem", "certificate");
    kestrel_tls_config_free(config);
    config = config_with("srv.pem", "missing.key", "");
    expect_tls_error("missing key file", failing_options(plain, url, config), plain, port, "missing.key", "key");
    kestrel_tls_config_free(config);

    /* Garbage instead of the certificate, instead of the key. */
    config = config_with("garbage.pem", "srv.key", "");
    expect_tls_error("garbage certificate", failing_options(plain, url, config), plain, port, "garbage.pem", "CERTIFICATE");
    kestrel_tls_config_free(config);
    config = config_with("srv.pem", "garbage.pem", "");
    expect_tls_error("garbage key", failing_options(plain, url, config), plain, port, "garbage.pem", "private key");
    kestrel_tls_config_free(config);
    /* An encrypted key. */
    config = config_with("srv.pem", "encrypted.key", "");
    expect_tls_error("encrypted key", failing_options(plain, url, config), plain, port, "encrypted.key", "encrypted");
    kestrel_tls_config_free(config);
    /* The same in memory. */
    config = new_config();
    CHECK_RC(kestrel_tls_config_add_pem(config, LIT("garbage"), LIT("garbage"), NULL, 0), KESTREL_OK);
    expect_tls_error("garbage PEM in memory", failing_options(plain, url, config), plain, port, "certificate PEM", NULL);
    kestrel_tls_config_free(config);

    /* A key that does not match its certificate. The bad one is the second certificate: every
     * certificate is checked, not only the first. */
    config = config_with("srv.pem", "srv.key", "");
    const char *a_pem = file("a.pem"), *other_key = file("other.key");
    CHECK_RC(kestrel_tls_config_add_pem_files(config, BYTES(a_pem), BYTES(other_key), LIT("a.example.com")), KESTREL_OK);
    expect_tls_error("mismatched key", failing_options(plain, url, config), plain, port, "does not match", "other.key");
    kestrel_tls_config_free(config);

    /* PKCS#12: a wrong password, a file that is not PKCS#12. */
    config = new_config();
    const char *p12 = file("srv.p12");
    CHECK_RC(kestrel_tls_config_add_pkcs12_file(config, BYTES(p12), LIT("wrong"), NULL, 0), KESTREL_OK);
    expect_tls_error("wrong PKCS#12 password", failing_options(plain, url, config), plain, port, "wrong password", "srv.p12");
    kestrel_tls_config_free(config);
    config = new_config();
    PATH(garbage, "garbage.pem");
    CHECK_RC(kestrel_tls_config_add_pkcs12_file(config, BYTES(garbage), LIT("s3cret"), NULL, 0), KESTREL_OK);
    expect_tls_error("garbage PKCS#12", failing_options(plain, url, config), plain, port, "garbage.pem", "PKCS#12");
    kestrel_tls_config_free(config);

    /* https off localhost without any certificate: the development certificate does not apply. */
    char any[64];
    snprintf(any, sizeof any, "https://0.0.0.0:%d", port);
    expect_tls_error("https on 0.0.0.0 without certificate", failing_options(plain, any, NULL), plain, port, "no certificate",
                     "0.0.0.0");
    /* A config without any certificate. */
    config = new_config();
    expect_tls_error("https with an empty config", failing_options(plain, url, config), plain, port, "no certificate", NULL);
    /* ... also as the HTTPS defaults. */
    kestrel_options *options = failing_options(plain, any, NULL);
    CHECK_RC(kestrel_options_set_https_defaults(options, config), KESTREL_OK);
    expect_tls_error("https defaults without certificate", options, plain, port, "no certificate", NULL);
    kestrel_tls_config_free(config);

    /* localhost without certificate, the development certificate turned off. */
    options = failing_options(plain, url, NULL);
    CHECK_RC(kestrel_options_set_dev_certificate(options, false), KESTREL_OK);
    expect_tls_error("development certificate off", options, plain, port, "development certificate", "turned off");
    char localhost[64];
    snprintf(localhost, sizeof localhost, "https://localhost:%d", port);
    options = failing_options(plain, localhost, NULL);
    CHECK_RC(kestrel_options_set_dev_certificate(options, false), KESTREL_OK);
    expect_tls_error("development certificate off (localhost)", options, plain, port, "no certificate", "localhost");

    /* Client certificates required or allowed, with nothing to check them; a bad client CA. */
    config = config_with("srv.pem", "srv.key", "");
    CHECK_RC(kestrel_tls_config_set_client_certificate_mode(config, KESTREL_CLIENT_CERTIFICATE_REQUIRE), KESTREL_OK);
    expect_tls_error("client certificates required, no CA", failing_options(plain, url, config), plain, port, "client CA", NULL);
    CHECK_RC(kestrel_tls_config_set_client_certificate_mode(config, KESTREL_CLIENT_CERTIFICATE_ALLOW), KESTREL_OK);
    expect_tls_error("client certificates allowed, no CA", failing_options(plain, url, config), plain, port, "client CA", NULL);
    const char *missing_ca = file("missing-ca.pem");
    CHECK_RC(kestrel_tls_config_set_client_ca_file(config, BYTES(missing_ca)), KESTREL_OK);
    expect_tls_error("missing client CA file", failing_options(plain, url, config), plain, port, "missing-ca.pem", NULL);
    CHECK_RC(kestrel_tls_config_set_client_ca_file(config, BYTES(garbage)), KESTREL_OK);
    expect_tls_error("garbage client CA file", failing_options(plain, url, config), plain, port, "garbage.pem", NULL);
    CHECK_RC(kestrel_tls_config_set_client_ca_pem(config, LIT("no pem here")), KESTREL_OK);
    expect_tls_error("garbage client CA PEM", failing_options(plain, url, config), plain, port, "client CA", NULL);
    kestrel_tls_config_free(config);

    /* The good files on the same ports: the start works (the failures were the files'). */
    config = config_with("srv.pem", "srv.key", "");
    kestrel_server *server = start_server(failing_options(plain, url, config));
    kestrel_tls_config_free(config);
    CHECK(server_port(server, 0) == plain && server_port(server, 1) == port);
    curl_result *r = curl_get(file("ca.pem"), "localhost", port, "/info", "");
    CHECK_SERVED(r, "served once the files are good");
    stop_and_free(server);
}

/* ---- serving: the request's TLS facts ------------------------------------------------------ */

/* Whether a raw TCP connection that sends nothing is closed by the server, and after how long. */
static int closed_after_ms(int port, uint64_t *ms) {
    int fd = http_connect(port);
    if (fd < 0) return 0;
    uint64_t t0 = now_ms();
    char buf[256];
    ssize_t n;
    do {
        n = recv(fd, buf, sizeof buf, 0);
    } while (n < 0 && errno == EINTR);
    *ms = now_ms() - t0;
    int closed = n == 0 || (n < 0 && errno == ECONNRESET);
    close(fd);
    return closed;
}

static void test_serving(void) {
    memset(&handler_ud, 0, sizeof handler_ud);
    kestrel_options *options = tls_options();
    CHECK_RC(kestrel_options_add_urls(options, LIT("http://127.0.0.1:0"), KESTREL_PROTOCOLS_HTTP1_AND_HTTP2), KESTREL_OK);
    kestrel_tls_config *config = config_with("srv.pem", "srv.key", "");
    CHECK_RC(kestrel_tls_config_set_handshake_timeout(config, 500), KESTREL_OK);
    add_https(options, "https://127.0.0.1:0", config);
    CHECK_RC(kestrel_options_add_https_urls(options, LIT("https://127.0.0.1:0"), KESTREL_PROTOCOLS_HTTP1, config), KESTREL_OK);
    char sock[128], sock_url[160];
    snprintf(sock, sizeof sock, "%s/tls.sock", g_dir);
    snprintf(sock_url, sizeof sock_url, "https://unix:%s", sock);
    add_https(options, sock_url, config);
    kestrel_tls_config_free(config);
    kestrel_server *server = start_server(options);
    CHECK(kestrel_server_address_count(server) == 4);
    char url[128];
    CHECK_RC(kestrel_server_address(server, 1, url, sizeof url, NULL), KESTREL_OK);
    CHECK(strncmp(url, "https://127.0.0.1:", 18) == 0);
    int plain = server_port(server, 0), port = server_port(server, 1), h1_port = server_port(server, 2);
    CHECK(plain > 0 && port > 0 && h1_port > 0);
    PATH(ca, "ca.pem");

    /* HTTP/2 over TLS 1.3 with SNI. */
    curl_result *r = curl_get(ca, "localhost", port, "/info", "--http2");
    CHECK_SERVED(r, "GET https://localhost/info over HTTP/2");
    CHECK(has_line(r->body, "scheme=https"));
    CHECK(has_line(r->body, "http=HTTP/2"));
    CHECK(has_line(r->body, "version=TLSv1.3"));
    CHECK(has_line_prefix(r->body, "cipher=TLS13_"));
    CHECK(has_line(r->body, "alpn=h2"));
    CHECK(has_line(r->body, "sni=localhost"));
    CHECK(has_line(r->body, "subject="));
    CHECK(has_line(r->body, "count=0"));
    CHECK(has_line(r->body, "leaf=none"));
    CHECK(has_line(r->body, "end=notfound"));
    CHECK(subject_is(r, "CN=localhost"));

    /* HTTP/1.1 over TLS 1.2. */
    r = curl_get(ca, "localhost", port, "/info", "--http1.1 --tls-max 1.2");
    CHECK_SERVED(r, "GET https://localhost/info over HTTP/1.1 and TLS 1.2");
    CHECK(has_line(r->body, "http=HTTP/1.1"));
    CHECK(has_line(r->body, "version=TLSv1.2"));
    CHECK(has_line_prefix(r->body, "cipher=TLS_ECDHE_ECDSA_WITH_"));
    CHECK(has_line(r->body, "alpn=http/1.1"));
    CHECK(has_line(r->body, "sni=localhost"));

    /* By IP address: no SNI name. */
    r = curl_get(ca, "127.0.0.1", port, "/info", "");
    CHECK_SERVED(r, "GET https://127.0.0.1/info");
    CHECK(has_line(r->body, "sni="));
    CHECK(has_line(r->body, "version=TLSv1.3"));

    /* Without ALPN: HTTP/1.1 (curl's --no-alpn). */
    r = curl_get(ca, "localhost", port, "/info", "--http1.1 --no-alpn");
    CHECK_SERVED(r, "GET without ALPN");
    CHECK(has_line(r->body, "alpn="));
    CHECK(has_line(r->body, "http=HTTP/1.1"));

    /* An HTTP/1-only endpoint offers only http/1.1, even to a client asking for h2. */
    r = curl_get(ca, "localhost", h1_port, "/info", "--http2");
    CHECK_SERVED(r, "GET on an HTTP/1-only https endpoint");
    CHECK(has_line(r->body, "alpn=http/1.1"));
    CHECK(has_line(r->body, "http=HTTP/1.1"));

    /* https over a Unix socket. */
    char unix_arg[200];
    snprintf(unix_arg, sizeof unix_arg, "--unix-socket %s", sock);
    r = curl_get(ca, "localhost", 443, "/info", unix_arg);
    CHECK_SERVED(r, "GET https over a Unix socket");
    CHECK(has_line(r->body, "version=TLSv1.3") && has_line(r->body, "sni=localhost"));
    CHECK_RC(kestrel_server_address(server, 3, url, sizeof url, NULL), KESTREL_OK);
    CHECK(strcmp(url, sock_url) == 0);
    if (strcmp(url, sock_url) != 0) fprintf(stderr, "address 3: %s, expected %s\n", url, sock_url);

    /* The versioned size. */
    r = curl_get(ca, "localhost", port, "/size", "");
    CHECK_SERVED(r, "GET /size");
    CHECK(strcmp(r->body, "a=1\nb=1\nc=1\nd=1\ne=1\n") == 0);
    if (strcmp(r->body, "a=1\nb=1\nc=1\nd=1\ne=1\n") != 0) fprintf(stderr, "/size: %s", r->body);

    /* A client that does not trust the CA refuses the certificate (it is really served). */
    r = curl_get(file("rogue.pem"), "localhost", port, "/info", "");
    CHECK_REFUSED(r, "curl trusting another CA");
    CHECK(r->exit == 60); /* CURLE_PEER_FAILED_VERIFICATION */

    /* Cleartext: kestrel_request_get_tls and _peer_certificate say NOT_FOUND. */
    http_response h;
    http_get(plain, "/info", &h);
    CHECK(h.status == 200);
    CHECK(has_line(h.body, "cleartext"));
    CHECK(has_line(h.body, "scheme=http"));
    CHECK(has_line(h.body, "peer=notfound"));
    http_response_free(&h);
    /* Cleartext HTTP to the https port is not served as HTTP. */
    http_get(port, "/info", &h);
    CHECK(h.status == 0);
    http_response_free(&h);

    /* A TLS 1.2 client of a TLS 1.3-only config: see test_copies. The handshake timeout (500 ms):
     * a client that sends nothing is disconnected, not before the timeout, long before the
     * socket's own 30 s. */
    uint64_t ms = 0;
    int closed = closed_after_ms(port, &ms);
    if (!closed || ms < 400 || ms > 15000) fprintf(stderr, "handshake timeout: closed %d after %llu ms\n", closed, (unsigned long long)ms);
    CHECK(closed);
    CHECK(ms >= 400 && ms <= 15000);
    /* The server still serves. */
    r = curl_get(ca, "localhost", port, "/info", "");
    CHECK_SERVED(r, "GET after a handshake timeout");

    /* A configured certificate: no development certificate. */
    char pem[64];
    size_t written = 7;
    CHECK_RC(kestrel_server_dev_certificate_pem(server, pem, sizeof pem, &written), KESTREL_NOT_FOUND);
    CHECK_LAST_ERROR(NULL);
    CHECK(written == 7);
    CHECK(atomic_get(&handler_ud.calls) == 9);
    stop_and_free(server);
}

/* ---- PKCS#12 and PEM in memory ------------------------------------------------------------- */

static void test_pkcs12_and_pem(void) {
    kestrel_options *options = tls_options();
    kestrel_tls_config *config = new_config();
    const char *p12 = file("srv.p12");
    CHECK_RC(kestrel_tls_config_add_pkcs12_file(config, BYTES(p12), LIT("s3cret"), NULL, 0), KESTREL_OK);
    add_https(options, "https://127.0.0.1:0", config);
    kestrel_tls_config_free(config);

    size_t cert_len = 0, key_len = 0;
    char *cert = read_file(file("a.pem"), &cert_len), *key = read_file(file("a.key"), &key_len);
    REQUIRE(cert && key);
    config = new_config();
    CHECK_RC(kestrel_tls_config_add_pem(config, (const uint8_t *)cert, cert_len, (const uint8_t *)key, key_len, NULL, 0), KESTREL_OK);
    /* Copied: the host's buffers can go at once. */
    memset(cert, 'x', cert_len);
    memset(key, 'x', key_len);
    free(cert);
    free(key);
    add_https(options, "https://127.0.0.1:0", config);
    kestrel_tls_config_free(config);

    kestrel_server *server = start_server(options);
    int p12_port = server_port(server, 0), pem_port = server_port(server, 1);
    curl_result *r = curl_get(file("ca.pem"), "localhost", p12_port, "/info", "");
    CHECK_SERVED(r, "GET over the PKCS#12 certificate");
    CHECK(subject_is(r, "CN=localhost"));
    r = curl_get(file("ca.pem"), "a.example.com", pem_port, "/info", "");
    CHECK_SERVED(r, "GET over the in-memory PEM certificate");
    CHECK(subject_is(r, "CN=a.example.com"));
    CHECK(has_line(r->body, "sni=a.example.com"));
    /* Reload: nothing to read again for these (a PKCS#12 file that did not change, PEM in
     * memory), and it works. */
    CHECK_RC(kestrel_server_reload_certificates(server), KESTREL_OK);
    r = curl_get(file("ca.pem"), "localhost", p12_port, "/info", "");
    CHECK_SERVED(r, "GET over the PKCS#12 certificate after a reload");
    stop_and_free(server);
}

/* An expired certificate does not stop the start: it is served, with a warning naming it. */
static void test_expired_certificate(void) {
    reset_log();
    kestrel_options *options = tls_options();
    CHECK_RC(kestrel_options_set_log_callback(options, log_record, KESTREL_LOG_WARN, &log_ud, NULL), KESTREL_OK);
    kestrel_tls_config *config = config_with("stale.pem", "stale.key", "");
    add_https(options, "https://127.0.0.1:0", config);
    kestrel_tls_config_free(config);
    kestrel_server *server = start_server(options);
    int port = server_port(server, 0);
    CHECK(logged("CN=localhost-stale") && logged("expired"));
    if (!logged("expired")) fprintf(stderr, "log:\n%s", g_log);
    curl_result *r = curl_get(file("ca.pem"), "localhost", port, "/info", "");
    CHECK_REFUSED(r, "expired server certificate refused by curl");
    CHECK(r->exit == 60);
    r = curl_get(NULL, "localhost", port, "/info", "");
    CHECK_SERVED(r, "expired server certificate served (curl -k)");
    CHECK(subject_is(r, "CN=localhost-stale"));
    stop_and_free(server);
}

/* ---- configs are copied -------------------------------------------------------------------- */

static counter copy_selector_ud;

static int32_t count_select(void *userdata, const kestrel_client_hello *hello) {
    (void)hello;
    atomic_inc(&((counter *)userdata)->calls);
    return KESTREL_SELECT_DEFAULT;
}

static void test_copies(void) {
    memset(&copy_selector_ud, 0, sizeof copy_selector_ud);
    kestrel_options *options = tls_options();
    kestrel_tls_config *config = config_with("srv.pem", "srv.key", "");
    CHECK_RC(kestrel_tls_config_set_certificate_selector(config, count_select, &copy_selector_ud, count_free), KESTREL_OK);
    /* The same config for two endpoints (two URLs in one call, then a third endpoint). */
    add_https(options, "https://127.0.0.1:0;https://127.0.0.1:0", config);
    /* Changed after use: only later uses see the change. */
    CHECK_RC(kestrel_tls_config_set_min_version(config, KESTREL_TLS_VERSION_1_3), KESTREL_OK);
    add_https(options, "https://127.0.0.1:0", config);
    /* Freed at once: the endpoints keep their copies (and the selector's userdata). */
    kestrel_tls_config_free(config);
    CHECK(atomic_get(&copy_selector_ud.freed) == 0);
    /* HTTPS defaults: for an https endpoint added without a config of its own. */
    kestrel_tls_config *defaults = config_with("a.pem", "a.key", "");
    counter defaults_selector = {0, 0};
    CHECK_RC(kestrel_tls_config_set_certificate_selector(defaults, count_select, &defaults_selector, count_free), KESTREL_OK);
    CHECK_RC(kestrel_options_set_https_defaults(options, defaults), KESTREL_OK);
    kestrel_tls_config_free(defaults);
    CHECK(atomic_get(&defaults_selector.freed) == 0);
    CHECK_RC(kestrel_options_add_urls(options, LIT("https://127.0.0.1:0"), KESTREL_PROTOCOLS_HTTP1_AND_HTTP2), KESTREL_OK);

    kestrel_server *server = start_server(options);
    REQUIRE(kestrel_server_address_count(server) == 4);
    int first = server_port(server, 0), second = server_port(server, 1), strict = server_port(server, 2), dflt = server_port(server, 3);
    PATH(ca, "ca.pem");
    curl_result *r = curl_get(ca, "localhost", first, "/info", "--tls-max 1.2");
    CHECK_SERVED(r, "first endpoint of a shared config, TLS 1.2");
    CHECK(has_line(r->body, "version=TLSv1.2"));
    r = curl_get(ca, "localhost", second, "/info", "");
    CHECK_SERVED(r, "second endpoint of a shared config");
    CHECK(has_line(r->body, "version=TLSv1.3"));
    /* The endpoint added after set_min_version(1.3) refuses TLS 1.2 and serves TLS 1.3. */
    r = curl_get(ca, "localhost", strict, "/info", "--tls-max 1.2");
    CHECK_REFUSED(r, "TLS 1.2 client of a TLS 1.3-only endpoint");
    r = curl_get(ca, "localhost", strict, "/info", "");
    CHECK_SERVED(r, "TLS 1.3 client of a TLS 1.3-only endpoint");
    CHECK(has_line(r->body, "version=TLSv1.3"));
    /* The defaults endpoint serves the defaults' certificate (a.example.com, also for IPs). */
    r = curl_get(NULL, "127.0.0.1", dflt, "/info", "");
    CHECK_SERVED(r, "endpoint served with the HTTPS defaults");
    CHECK(subject_is(r, "CN=a.example.com"));
    r = curl_get(ca, "b.example.com", dflt, "/info", "");
    CHECK_SERVED(r, "HTTPS defaults: verified for b.example.com");
    /* One per handshake on the three endpoints (the TLS 1.2 one refused after the selection). */
    CHECK(atomic_get(&copy_selector_ud.calls) == 4);
    CHECK(atomic_get(&copy_selector_ud.freed) == 0);
    CHECK(atomic_get(&defaults_selector.calls) == 2);
    stop_and_free(server);
    /* Three copies, one userdata: released once. */
    CHECK(atomic_get(&copy_selector_ud.freed) == 1);
    CHECK(atomic_get(&defaults_selector.freed) == 1);
}

/* ---- SNI names without a selector ---------------------------------------------------------- */

static void test_sni(void) {
    PATH(ca, "ca.pem");
    kestrel_options *options = tls_options();
    /* No default certificate: *.example.com, then localhost, then an exact name added last. */
    kestrel_tls_config *config = config_with("a.pem", "a.key", "*.example.com");
    const char *srv_pem = file("srv.pem"), *srv_key = file("srv.key");
    CHECK_RC(kestrel_tls_config_add_pem_files(config, BYTES(srv_pem), BYTES(srv_key), LIT("localhost")), KESTREL_OK);
    const char *srv2_pem = file("srv2.pem"), *srv2_key = file("srv2.key");
    CHECK_RC(kestrel_tls_config_add_pem_files(config, BYTES(srv2_pem), BYTES(srv2_key), LIT("Exact.Example.COM.")), KESTREL_OK);
    add_https(options, "https://127.0.0.1:0", config);
    kestrel_tls_config_free(config);
    kestrel_server *server = start_server(options);
    int port = server_port(server, 0);

    curl_result *r = curl_get(ca, "b.example.com", port, "/info", "");
    CHECK_SERVED(r, "SNI: wildcard name");
    CHECK(subject_is(r, "CN=a.example.com"));
    r = curl_get(ca, "localhost", port, "/info", "");
    CHECK_SERVED(r, "SNI: exact name");
    CHECK(subject_is(r, "CN=localhost"));
    /* An exact name wins over a wildcard added before it; names are case-insensitive. */
    r = curl_get(NULL, "exact.example.com", port, "/info", "");
    CHECK_SERVED(r, "SNI: exact name over wildcard");
    CHECK(subject_is(r, "CN=localhost-v2"));
    /* A wildcard covers one label only. */
    r = curl_get(NULL, "x.b.example.com", port, "/info", "");
    CHECK_REFUSED(r, "SNI: two labels under a one-label wildcard, no default");
    /* No default certificate: unknown names and clients without SNI are refused. */
    r = curl_get(NULL, "other.test", port, "/info", "");
    CHECK_REFUSED(r, "SNI: unknown name, no default");
    r = curl_get(NULL, "127.0.0.1", port, "/info", "");
    CHECK_REFUSED(r, "no SNI, no default");
    r = curl_get(ca, "localhost", port, "/info", "");
    CHECK_SERVED(r, "SNI: served after refusals");
    stop_and_free(server);
}

/* ---- the certificate selector -------------------------------------------------------------- */

#define MAX_HELLOS 64
static struct {
    char name[128];
    char remote[64];
    size_t size;
} hellos[MAX_HELLOS];
static int hello_count;
static counter selector_ud;
static int g_swap;           /* a.example.com gets certificate 0 instead of 1 */
static int g_slow_done;      /* the slow selection returned */
static pthread_t main_thread;

/* a.example.com: 1 (0 when g_swap); refuse.*: REFUSE; seven.*: 7 (no such certificate); minus.*:
 * -5 (another negative value); slow.*: DEFAULT after 2.5 s; anything else: DEFAULT. */
static int32_t select_certificate(void *userdata, const kestrel_client_hello *hello) {
    CHECK(userdata == &selector_ud);
    CHECK(!pthread_equal(pthread_self(), main_thread));
    atomic_inc(&selector_ud.calls);
    char name[128];
    str_c(hello->server_name, name, sizeof name);
    pthread_mutex_lock(&lock);
    if (hello_count < MAX_HELLOS) {
        snprintf(hellos[hello_count].name, sizeof hellos[hello_count].name, "%s", name);
        str_c(hello->remote_addr, hellos[hello_count].remote, sizeof hellos[hello_count].remote);
        hellos[hello_count].size = hello->size;
        hello_count++;
    }
    pthread_mutex_unlock(&lock);
    if (strcmp(name, "a.example.com") == 0) return atomic_get(&g_swap) ? 0 : 1;
    if (strcmp(name, "refuse.example.com") == 0) return KESTREL_SELECT_REFUSE;
    if (strcmp(name, "seven.example.com") == 0) return 7;
    if (strcmp(name, "minus.example.com") == 0) return -5;
    if (strcmp(name, "slow.example.com") == 0) {
        sleep_ms(2500);
        atomic_set(&g_slow_done, 1);
    }
    return KESTREL_SELECT_DEFAULT;
}

/* The last hello the selector saw: its name equals `name` and its address is the client's. */
static int last_hello_was(const char *name) {
    pthread_mutex_lock(&lock);
    int ok = hello_count > 0 && strcmp(hellos[hello_count - 1].name, name) == 0 &&
             strncmp(hellos[hello_count - 1].remote, "127.0.0.1:", 10) == 0 && atoi(hellos[hello_count - 1].remote + 10) > 0 &&
             hellos[hello_count - 1].size >= sizeof(kestrel_client_hello);
    if (!ok && hello_count > 0)
        fprintf(stderr, "last hello: name \"%s\" remote \"%s\" size %zu; expected name \"%s\"\n", hellos[hello_count - 1].name,
                hellos[hello_count - 1].remote, hellos[hello_count - 1].size, name);
    pthread_mutex_unlock(&lock);
    return ok;
}

static void test_selector(void) {
    memset(&selector_ud, 0, sizeof selector_ud);
    atomic_set(&g_swap, 0);
    kestrel_options *options = tls_options();
    kestrel_tls_config *config = config_with("srv.pem", "srv.key", ""); /* 0: default */
    const char *a_pem = file("a.pem"), *a_key = file("a.key");
    CHECK_RC(kestrel_tls_config_add_pem_files(config, BYTES(a_pem), BYTES(a_key), LIT("a.example.com;*.example.com")), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_certificate_selector(config, select_certificate, &selector_ud, count_free), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_handshake_timeout(config, 1500), KESTREL_OK);
    add_https(options, "https://127.0.0.1:0", config);
    kestrel_tls_config_free(config);
    CHECK(atomic_get(&selector_ud.freed) == 0);
    kestrel_server *server = start_server(options);
    int port = server_port(server, 0);
    PATH(ca, "ca.pem");
    CHECK(atomic_get(&selector_ud.calls) == 0); /* nothing before a handshake */

    /* Index 1 for a.example.com: verified by curl, subject seen, SNI name and address passed. */
    curl_result *r = curl_get(ca, "a.example.com", port, "/info", "");
    CHECK_SERVED(r, "selector picks certificate 1");
    CHECK(subject_is(r, "CN=a.example.com"));
    CHECK(has_line(r->body, "sni=a.example.com"));
    CHECK(atomic_get(&selector_ud.calls) == 1);
    CHECK(last_hello_was("a.example.com"));

    /* Index 0 for the same name: the localhost certificate is served, curl rejects it. */
    atomic_set(&g_swap, 1);
    r = curl_get(ca, "a.example.com", port, "/info", "");
    CHECK_REFUSED(r, "selector picks certificate 0 for a.example.com");
    CHECK(r->exit == 60);
    r = curl_get(NULL, "a.example.com", port, "/info", "");
    CHECK_SERVED(r, "selector picks certificate 0 (curl -k)");
    CHECK(subject_is(r, "CN=localhost"));
    CHECK(atomic_get(&selector_ud.calls) == 3);
    atomic_set(&g_swap, 0);

    /* DEFAULT applies the SNI names: b.example.com matches *.example.com (certificate 1). */
    r = curl_get(ca, "b.example.com", port, "/info", "");
    CHECK_SERVED(r, "SELECT_DEFAULT applies the wildcard name");
    CHECK(subject_is(r, "CN=a.example.com"));
    CHECK(last_hello_was("b.example.com"));
    /* ... and a name nobody claims gets the default certificate. */
    r = curl_get(NULL, "other.test", port, "/info", "");
    CHECK_SERVED(r, "SELECT_DEFAULT falls back to the default certificate");
    CHECK(subject_is(r, "CN=localhost"));
    CHECK(last_hello_was("other.test"));
    r = curl_get(ca, "localhost", port, "/info", "");
    CHECK_SERVED(r, "SELECT_DEFAULT for localhost");
    /* No SNI (an IP address): an empty name. */
    r = curl_get(ca, "127.0.0.1", port, "/info", "");
    CHECK_SERVED(r, "selector without SNI");
    CHECK(last_hello_was(""));
    CHECK(atomic_get(&selector_ud.calls) == 7);

    /* REFUSE, an index past the certificates, another negative value: the handshake fails. */
    r = curl_get(NULL, "refuse.example.com", port, "/info", "");
    CHECK_REFUSED(r, "SELECT_REFUSE");
    CHECK(last_hello_was("refuse.example.com"));
    r = curl_get(NULL, "seven.example.com", port, "/info", "");
    CHECK_REFUSED(r, "selector index 7 of 2 certificates");
    r = curl_get(NULL, "minus.example.com", port, "/info", "");
    CHECK_REFUSED(r, "selector answer -5");
    CHECK(atomic_get(&selector_ud.calls) == 10);

    /* A selector slower than the handshake timeout (1.5 s): the client is disconnected when the
     * timeout expires, before the selector (2.5 s) returns. */
    atomic_set(&g_slow_done, 0);
    uint64_t t0 = now_ms();
    r = curl_get(ca, "slow.example.com", port, "/info", "");
    uint64_t took = now_ms() - t0;
    CHECK_REFUSED(r, "selector slower than the handshake timeout");
    if (atomic_get(&g_slow_done) || took < 1400) fprintf(stderr, "slow selector: curl ended after %llu ms, selector done %d\n", (unsigned long long)took, atomic_get(&g_slow_done));
    CHECK(!atomic_get(&g_slow_done));
    CHECK(took >= 1400);
    WAIT_FOR(atomic_get(&g_slow_done), WAIT_MS);
    CHECK(atomic_get(&g_slow_done));

    /* Still serving after refusals. */
    r = curl_get(ca, "a.example.com", port, "/info", "");
    CHECK_SERVED(r, "served after refused handshakes");
    CHECK(atomic_get(&selector_ud.calls) == 12);

    CHECK_RC(kestrel_server_stop(server, 2000, NULL), KESTREL_OK);
    CHECK(atomic_get(&selector_ud.freed) == 0);
    kestrel_server_free(server);
    CHECK(atomic_get(&selector_ud.freed) == 1);
    CHECK(atomic_get(&selector_ud.calls) == 12);
}

/* ---- client certificates ------------------------------------------------------------------- */

static counter validator_ud;
static int g_accept = 1;
static int g_chain_count = -1;
static int g_leaf_match = -1;

static bool validate_client(void *userdata, const kestrel_str *chain, size_t count) {
    CHECK(userdata == &validator_ud);
    CHECK(!pthread_equal(pthread_self(), main_thread));
    atomic_inc(&validator_ud.calls);
    int match = count >= 1 && chain != NULL && chain[0].len == g_client_der_len && memcmp(chain[0].ptr, g_client_der, g_client_der_len) == 0;
    for (size_t i = 0; chain && i < count; i++) CHECK(chain[i].ptr != NULL && chain[i].len > 0);
    atomic_set(&g_leaf_match, match);
    atomic_set(&g_chain_count, (int)count);
    return atomic_get(&g_accept) != 0;
}

/* The client chain the handler reported: 1 certificate (the leaf), or 2 when the client also
 * sent its CA (curl with OpenSSL completes the chain from its trust store); the same count the
 * validator saw (`validator_count`, -1: no validator). */
static int client_chain_ok(const char *body, int validator_count) {
    int one = has_line(body, "count=1") && has_line(body, "second=none");
    int two = has_line(body, "count=2") && has_line(body, "second=ca");
    int same = validator_count < 0 || (one && validator_count == 1) || (two && validator_count == 2);
    if (!(one || two) || !same) fprintf(stderr, "client chain: validator saw %d, handler reported:\n%s", validator_count, body);
    return (one || two) && same;
}

static char g_client_args[1024];

static const char *client_args(const char *name) {
    snprintf(g_client_args, sizeof g_client_args, "--cert %s/%s.pem --key %s/%s.key", g_dir, name, g_dir, name);
    return g_client_args;
}

static void test_client_certificates(void) {
    memset(&validator_ud, 0, sizeof validator_ud);
    atomic_set(&g_accept, 1);
    PATH(ca, "ca.pem");

    kestrel_options *options = tls_options();
    /* 0: REQUIRE, no CA, the validator decides. */
    kestrel_tls_config *config = config_with("srv.pem", "srv.key", "");
    CHECK_RC(kestrel_tls_config_set_client_certificate_mode(config, KESTREL_CLIENT_CERTIFICATE_REQUIRE), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_client_certificate_validator(config, validate_client, &validator_ud, count_free), KESTREL_OK);
    add_https(options, "https://127.0.0.1:0", config);
    kestrel_tls_config_free(config);
    /* 1: ALLOW with the CA as PEM text. */
    config = config_with("srv.pem", "srv.key", "");
    size_t ca_len = 0;
    char *ca_pem = read_file(ca, &ca_len);
    REQUIRE(ca_pem != NULL);
    CHECK_RC(kestrel_tls_config_set_client_certificate_mode(config, KESTREL_CLIENT_CERTIFICATE_ALLOW), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_client_ca_pem(config, (const uint8_t *)ca_pem, ca_len), KESTREL_OK);
    free(ca_pem);
    add_https(options, "https://127.0.0.1:0", config);
    kestrel_tls_config_free(config);
    /* 2: REQUIRE with the CA file and the validator after the CA's checks. */
    config = config_with("srv.pem", "srv.key", "");
    CHECK_RC(kestrel_tls_config_set_client_certificate_mode(config, KESTREL_CLIENT_CERTIFICATE_REQUIRE), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_client_ca_file(config, BYTES(ca)), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_client_certificate_validator(config, validate_client, &validator_ud, count_free), KESTREL_OK);
    add_https(options, "https://127.0.0.1:0", config);
    kestrel_tls_config_free(config);
    /* 3: ALLOW, no CA, the validator decides. */
    config = config_with("srv.pem", "srv.key", "");
    CHECK_RC(kestrel_tls_config_set_client_certificate_mode(config, KESTREL_CLIENT_CERTIFICATE_ALLOW), KESTREL_OK);
    CHECK_RC(kestrel_tls_config_set_client_certificate_validator(config, validate_client, &validator_ud, count_free), KESTREL_OK);
    add_https(options, "https://127.0.0.1:0", config);
    kestrel_tls_config_free(config);
    CHECK(atomic_get(&validator_ud.freed) == 0);

    kestrel_server *server = start_server(options);
    int host_decides = server_port(server, 0), allow = server_port(server, 1), with_ca = server_port(server, 2);
    int allow_host_decides = server_port(server, 3);

    /* The validator accepts: served; it saw the chain; the handler sees the same certificate. */
    curl_result *r = curl_get(ca, "localhost", host_decides, "/info", client_args("client"));
    CHECK_SERVED(r, "client certificate accepted by the validator");
    CHECK(atomic_get(&validator_ud.calls) == 1);
    CHECK(atomic_get(&g_chain_count) >= 1);
    CHECK(atomic_get(&g_leaf_match) == 1);
    CHECK(client_chain_ok(r->body, atomic_get(&g_chain_count)));
    CHECK(has_line(r->body, "leaf=match"));
    CHECK(has_line(r->body, "end=notfound"));
    CHECK(has_line_prefix(r->body, "subject=") && strstr(r->body, "CN=alice") && strstr(r->body, "O=Example"));
    /* The validator refuses: no response. */
    atomic_set(&g_accept, 0);
    r = curl_get(ca, "localhost", host_decides, "/info", client_args("client"));
    CHECK_REFUSED(r, "client certificate refused by the validator");
    CHECK(atomic_get(&validator_ud.calls) == 2);
    /* No CA: the validator also decides on a certificate no CA signed. */
    r = curl_get(ca, "localhost", host_decides, "/info", client_args("rogue"));
    CHECK_REFUSED(r, "self-signed client certificate refused by the validator");
    CHECK(atomic_get(&validator_ud.calls) == 3);
    CHECK(atomic_get(&g_leaf_match) == 0);
    atomic_set(&g_accept, 1);
    r = curl_get(ca, "localhost", host_decides, "/info", client_args("rogue"));
    CHECK_SERVED(r, "self-signed client certificate accepted by the validator");
    CHECK(has_line(r->body, "leaf=mismatch") && strstr(r->body, "CN=mallory"));
    CHECK(atomic_get(&validator_ud.calls) == 4);
    /* REQUIRE: a client without a certificate is refused (the validator is not asked). */
    r = curl_get(ca, "localhost", host_decides, "/info", "");
    CHECK_REFUSED(r, "no client certificate where one is required");
    CHECK(atomic_get(&validator_ud.calls) == 4);

    /* ALLOW with a CA: without a certificate, served without one; with the CA's, served with it;
     * with an untrusted one, refused. */
    r = curl_get(ca, "localhost", allow, "/info", "");
    CHECK_SERVED(r, "ALLOW without a client certificate");
    CHECK(has_line(r->body, "count=0") && has_line(r->body, "leaf=none") && has_line(r->body, "subject=") &&
          has_line(r->body, "end=notfound"));
    r = curl_get(ca, "localhost", allow, "/info", client_args("client"));
    CHECK_SERVED(r, "ALLOW with a trusted client certificate");
    CHECK(client_chain_ok(r->body, -1) && has_line(r->body, "leaf=match") && strstr(r->body, "CN=alice"));
    r = curl_get(ca, "localhost", allow, "/info", client_args("rogue"));
    CHECK_REFUSED(r, "ALLOW with an untrusted client certificate");
    r = curl_get(ca, "localhost", allow, "/info", client_args("old"));
    CHECK_REFUSED(r, "ALLOW with an expired client certificate");
    /* The server's own certificate is no client certificate (server auth only). */
    CHECK(atomic_get(&validator_ud.calls) == 4);

    /* REQUIRE with a CA and a validator: the CA's checks first, then the validator. */
    r = curl_get(ca, "localhost", with_ca, "/info", client_args("client"));
    CHECK_SERVED(r, "REQUIRE with CA: trusted client certificate");
    CHECK(has_line(r->body, "leaf=match"));
    CHECK(atomic_get(&validator_ud.calls) == 5);
    r = curl_get(ca, "localhost", with_ca, "/info", client_args("rogue"));
    CHECK_REFUSED(r, "REQUIRE with CA: untrusted client certificate");
    CHECK(atomic_get(&validator_ud.calls) == 5); /* refused before the validator */
    atomic_set(&g_accept, 0);
    r = curl_get(ca, "localhost", with_ca, "/info", client_args("client"));
    CHECK_REFUSED(r, "REQUIRE with CA: validator refuses a trusted certificate");
    CHECK(atomic_get(&validator_ud.calls) == 6);
    atomic_set(&g_accept, 1);
    r = curl_get(ca, "localhost", with_ca, "/info", "");
    CHECK_REFUSED(r, "REQUIRE with CA: no client certificate");

    /* ALLOW without a CA: no certificate, served (nothing to validate); with one, the validator
     * decides. */
    r = curl_get(ca, "localhost", allow_host_decides, "/info", "");
    CHECK_SERVED(r, "ALLOW, validator only: no client certificate");
    CHECK(has_line(r->body, "count=0"));
    CHECK(atomic_get(&validator_ud.calls) == 6);
    r = curl_get(ca, "localhost", allow_host_decides, "/info", client_args("client"));
    CHECK_SERVED(r, "ALLOW, validator only: accepted");
    CHECK(has_line(r->body, "leaf=match"));
    CHECK(atomic_get(&validator_ud.calls) == 7);
    atomic_set(&g_accept, 0);
    r = curl_get(ca, "localhost", allow_host_decides, "/info", client_args("client"));
    CHECK_REFUSED(r, "ALLOW, validator only: refused");
    CHECK(atomic_get(&validator_ud.calls) == 8);
    atomic_set(&g_accept, 1);

    CHECK(atomic_get(&validator_ud.freed) == 0);
    stop_and_free(server);
    /* Three configs registered the same userdata: each registration releases it once. */
    CHECK(atomic_get(&validator_ud.freed) == 3);
}

/* ---- reload -------------------------------------------------------------------------------- */

static void test_reload(void) {
    reset_log();
    PATH(ca, "ca.pem");
    REQUIRE(sh("mkdir -p %s %s", file("r1"), file("r2")) == 0);
    replace_file(file("r1/cert.pem"), file("srv.pem"));
    replace_file(file("r1/key.pem"), file("srv.key"));
    replace_file(file("r2/cert.pem"), file("a.pem"));
    replace_file(file("r2/key.pem"), file("a.key"));

    kestrel_options *options = tls_options();
    CHECK_RC(kestrel_options_set_log_callback(options, log_record, KESTREL_LOG_INFO, &log_ud, NULL), KESTREL_OK);
    kestrel_tls_config *config = config_with("r1/cert.pem", "r1/key.pem", "");
    add_https(options, "https://127.0.0.1:0", config);
    kestrel_tls_config_free(config);
    config = config_with("r2/cert.pem", "r2/key.pem", "");
    add_https(options, "https://127.0.0.1:0", config);
    kestrel_tls_config_free(config);
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    /* Not running yet. */
    CHECK_RC(kestrel_server_reload_certificates(server), KESTREL_INVALID_STATE);
    CHECK_LAST_ERROR("not running");
    REQUIRE(kestrel_server_start(server) == KESTREL_OK);
    int p1 = server_port(server, 0), p2 = server_port(server, 1);

    curl_result *r = curl_get(ca, "localhost", p1, "/info", "");
    CHECK_SERVED(r, "before reload");
    CHECK(subject_is(r, "CN=localhost"));

    /* New files: not used until the reload (no watching), then used by new connections. */
    replace_file(file("r1/cert.pem"), file("srv2.pem"));
    replace_file(file("r1/key.pem"), file("srv2.key"));
    r = curl_get(ca, "localhost", p1, "/info", "");
    CHECK_SERVED(r, "files replaced, not reloaded");
    CHECK(subject_is(r, "CN=localhost"));
    CHECK_RC(kestrel_server_reload_certificates(server), KESTREL_OK);
    r = curl_get(ca, "localhost", p1, "/info", "");
    CHECK_SERVED(r, "after reload");
    CHECK(subject_is(r, "CN=localhost-v2"));
    CHECK(logged("certificates reloaded"));

    /* A bad replacement: KESTREL_TLS_ERROR naming the file, the current certificate stays. */
    PATH(garbage, "garbage.pem");
    replace_file(file("r1/cert.pem"), garbage);
    CHECK_RC(kestrel_server_reload_certificates(server), KESTREL_TLS_ERROR);
    CHECK_LAST_ERROR("r1/cert.pem");
    r = curl_get(ca, "localhost", p1, "/info", "");
    CHECK_SERVED(r, "after a failed reload (garbage)");
    CHECK(subject_is(r, "CN=localhost-v2"));
    /* A key that does not match. */
    replace_file(file("r1/cert.pem"), file("srv.pem"));
    CHECK_RC(kestrel_server_reload_certificates(server), KESTREL_TLS_ERROR);
    CHECK_LAST_ERROR("does not match");
    r = curl_get(ca, "localhost", p1, "/info", "");
    CHECK_SERVED(r, "after a failed reload (mismatched key)");
    CHECK(subject_is(r, "CN=localhost-v2"));
    /* A missing file. */
    REQUIRE(unlink(file("r1/key.pem")) == 0);
    CHECK_RC(kestrel_server_reload_certificates(server), KESTREL_TLS_ERROR);
    CHECK_LAST_ERROR("r1/key.pem");
    r = curl_get(ca, "localhost", p1, "/info", "");
    CHECK_SERVED(r, "after a failed reload (missing key)");
    CHECK(subject_is(r, "CN=localhost-v2"));

    /* All or nothing: endpoint 1 gets good new files, endpoint 2 bad ones: neither changes. */
    replace_file(file("r1/cert.pem"), file("srv.pem"));
    replace_file(file("r1/key.pem"), file("srv.key"));
    replace_file(file("r2/cert.pem"), garbage);
    CHECK_RC(kestrel_server_reload_certificates(server), KESTREL_TLS_ERROR);
    CHECK_LAST_ERROR("r2/cert.pem");
    r = curl_get(ca, "localhost", p1, "/info", "");
    CHECK_SERVED(r, "all-or-nothing reload: endpoint 1");
    CHECK(subject_is(r, "CN=localhost-v2"));
    r = curl_get(ca, "a.example.com", p2, "/info", "");
    CHECK_SERVED(r, "all-or-nothing reload: endpoint 2");
    CHECK(subject_is(r, "CN=a.example.com"));
    /* Fixed: both reload. */
    replace_file(file("r2/cert.pem"), file("a.pem"));
    CHECK_RC(kestrel_server_reload_certificates(server), KESTREL_OK);
    r = curl_get(ca, "localhost", p1, "/info", "");
    CHECK_SERVED(r, "reload after the fix");
    CHECK(subject_is(r, "CN=localhost"));

    CHECK_RC(kestrel_server_stop(server, 2000, NULL), KESTREL_OK);
    CHECK_RC(kestrel_server_reload_certificates(server), KESTREL_INVALID_STATE);
    CHECK_LAST_ERROR(NULL);
    kestrel_server_free(server);
}

/* Watching: replaced files are picked up by themselves; bad ones are not. */
static void test_watch(void) {
    reset_log();
    PATH(ca, "ca.pem");
    REQUIRE(sh("mkdir -p %s", file("w")) == 0);
    replace_file(file("w/cert.pem"), file("srv.pem"));
    replace_file(file("w/key.pem"), file("srv.key"));
    kestrel_options *options = tls_options();
    CHECK_RC(kestrel_options_set_log_callback(options, log_record, KESTREL_LOG_INFO, &log_ud, NULL), KESTREL_OK);
    kestrel_tls_config *config = config_with("w/cert.pem", "w/key.pem", "");
    CHECK_RC(kestrel_tls_config_set_watch_interval(config, 50), KESTREL_OK);
    add_https(options, "https://127.0.0.1:0", config);
    kestrel_tls_config_free(config);
    kestrel_server *server = start_server(options);
    int port = server_port(server, 0);
    curl_result *r = curl_get(ca, "localhost", port, "/info", "");
    CHECK_SERVED(r, "watched: before the change");
    CHECK(subject_is(r, "CN=localhost"));

    replace_file(file("w/key.pem"), file("srv2.key"));
    replace_file(file("w/cert.pem"), file("srv2.pem"));
    WAIT_FOR(logged("reloaded"), WAIT_MS);
    CHECK(logged("certificate files changed, reloaded"));
    r = curl_get(ca, "localhost", port, "/info", "");
    CHECK_SERVED(r, "watched: after the change");
    CHECK(subject_is(r, "CN=localhost-v2"));

    /* A bad change is logged and changes nothing. */
    replace_file(file("w/cert.pem"), file("garbage.pem"));
    WAIT_FOR(logged("cannot be used"), WAIT_MS);
    CHECK(logged("cannot be used"));
    r = curl_get(ca, "localhost", port, "/info", "");
    CHECK_SERVED(r, "watched: after a bad change");
    CHECK(subject_is(r, "CN=localhost-v2"));
    stop_and_free(server);
}

/* ---- the development certificate ---------------------------------------------------------- */

static void test_dev_certificate(void) {
    reset_log();
    kestrel_options *options = tls_options();
    CHECK_RC(kestrel_options_set_log_callback(options, log_record, KESTREL_LOG_WARN, &log_ud, NULL), KESTREL_OK);
    CHECK_RC(kestrel_options_add_urls(options, LIT("https://localhost:0"), KESTREL_PROTOCOLS_HTTP1_AND_HTTP2), KESTREL_OK);
    kestrel_server *server = NULL;
    REQUIRE(kestrel_server_new(options, &server) == KESTREL_OK);
    char small[16];
    size_t written = 0;
    CHECK_RC(kestrel_server_dev_certificate_pem(server, small, sizeof small, &written), KESTREL_NOT_FOUND); /* not started */
    REQUIRE(kestrel_server_start(server) == KESTREL_OK);
    size_t count = kestrel_server_address_count(server);
    CHECK(count == 1 || count == 2);
    int port = server_port(server, 0);
    CHECK(port > 0);

    /* Too small: a NUL-terminated prefix, the full length. */
    memset(small, 'x', sizeof small);
    CHECK_RC(kestrel_tls_config_new(NULL), KESTREL_NULL_ARGUMENT); /* a different last error first */
    CHECK_RC(kestrel_server_dev_certificate_pem(server, small, sizeof small, &written), KESTREL_BUFFER_TOO_SMALL);
    /* Like every failure (and kestrel_server_address's BUFFER_TOO_SMALL), it says why in the last
     * error, replacing the previous call's message. */
    {
        char message[512];
        last_error(message, sizeof message);
        CHECK(message[0] != '\0' && strstr(message, "`out`") == NULL && strstr(message, "buffer") != NULL);
    }
    CHECK(small[15] == '\0' && strcmp(small, "-----BEGIN CERT") == 0);
    CHECK(written > 200 && written < 4000);
    size_t full = written;
    small[0] = 'y';
    CHECK_RC(kestrel_server_dev_certificate_pem(server, small, 0, NULL), KESTREL_BUFFER_TOO_SMALL);
    CHECK(small[0] == 'y');
    char *pem = malloc(full + 1);
    REQUIRE(pem != NULL);
    /* One byte short: still too small. */
    CHECK_RC(kestrel_server_dev_certificate_pem(server, pem, full, &written), KESTREL_BUFFER_TOO_SMALL);
    CHECK(written == full && strlen(pem) == full - 1);
    /* Exactly fitting. */
    written = 0;
    CHECK_RC(kestrel_server_dev_certificate_pem(server, pem, full + 1, &written), KESTREL_OK);
    CHECK(written == full && strlen(pem) == full);
    CHECK(strncmp(pem, "-----BEGIN CERTIFICATE-----", 27) == 0);
    CHECK(strstr(pem, "-----END CERTIFICATE-----") != NULL);
    CHECK(strstr(pem, "PRIVATE KEY") == NULL);
    write_file(file("dev.pem"), pem, strlen(pem));
    /* The same every time. */
    char *again = malloc(full + 1);
    REQUIRE(again != NULL);
    CHECK_RC(kestrel_server_dev_certificate_pem(server, again, full + 1, NULL), KESTREL_OK);
    CHECK(strcmp(again, pem) == 0);
    free(again);
    free(pem);

    /* curl trusts it with --cacert: by name and by IP. */
    PATH(dev, "dev.pem");
    curl_result *r = curl_get(dev, "localhost", port, "/info", "");
    CHECK_SERVED(r, "development certificate trusted by curl");
    CHECK(has_line(r->body, "sni=localhost"));
    CHECK(has_line(r->body, "scheme=https"));
    r = curl_get(dev, "127.0.0.1", port, "/info", "");
    CHECK_SERVED(r, "development certificate by IP");
    if (count == 2) {
        /* ::1 too (its address and the certificate's names). */
        char v6[128];
        CHECK_RC(kestrel_server_address(server, 1, v6, sizeof v6, NULL), KESTREL_OK);
        CHECK(strncmp(v6, "https://[::1]:", 14) == 0);
        r = curl_get(dev, "[::1]", port, "/info", "-g");
        CHECK_SERVED(r, "development certificate over IPv6");
    }
    /* Not signed by the test CA; not for other names. */
    r = curl_get(file("ca.pem"), "localhost", port, "/info", "");
    CHECK_REFUSED(r, "development certificate is not the CA's");
    r = curl_get(NULL, "other.example.com", port, "/info", "");
    CHECK_REFUSED(r, "development certificate refuses other SNI names");

    /* The fingerprint is logged as a warning. */
    char fingerprint[256];
    CHECK(capture(fingerprint, sizeof fingerprint, "openssl x509 -in %s -noout -fingerprint -sha256", dev) == 0);
    char *eq = strchr(fingerprint, '=');
    CHECK(eq != NULL);
    if (eq) {
        eq[strcspn(eq, "\r\n")] = '\0';
        if (!logged(eq + 1)) fprintf(stderr, "fingerprint %s not in the log:\n%s", eq + 1, g_log);
        CHECK(strlen(eq + 1) == 95 && logged(eq + 1));
    }
    CHECK(logged("development certificate"));
    /* Reloading a development certificate keeps it. */
    CHECK_RC(kestrel_server_reload_certificates(server), KESTREL_OK);
    r = curl_get(dev, "localhost", port, "/info", "");
    CHECK_SERVED(r, "development certificate after a reload");
    stop_and_free(server);
}

int main(void) {
    test_start("test_tls", 300);
    main_thread = pthread_self();
    make_certificates();
    test_null_arguments();
    test_argument_checks();
    test_userdata_without_serving();
    test_start_failures();
    test_serving();
    test_pkcs12_and_pem();
    test_expired_certificate();
    test_copies();
    test_sni();
    test_selector();
    test_client_certificates();
    test_reload();
    test_watch();
    test_dev_certificate();
    free(g_client_der);
    free(g_ca_der);
    sh("rm -rf %s", g_dir);
    return test_finish();
}
