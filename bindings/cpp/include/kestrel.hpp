// kestrel.hpp: a header-only C++17 wrapper of libkestrel's C API (kestrel.h).
//
//   #include <kestrel.hpp>
//
//   kestrel::Options options;
//   options.urls("http://127.0.0.1:8080").handler([](kestrel::Request& req, kestrel::Response& res) {
//       res.set_header("content-type", "text/plain").send("Hello from " + std::string(req.path()));
//   });
//   kestrel::Server server(std::move(options));
//   server.start();
//
// Rules of the wrapper (the C header stays the contract for everything else):
//
// * Ownership. Options, Server and Response are move-only owners of their C handles; Request is a
//   move-only view. Moved-from objects are empty and safe to destroy.
// * Errors. A failing C call throws kestrel::error, which carries the kestrel_result code and the
//   library's message (kestrel_last_error, read on the failing thread right away).
// * Handlers. Any callable invocable as `f(kestrel::Request&, kestrel::Response&)`. In POOL mode
//   it runs on several handler threads at once; in INLINE mode on an I/O thread, where it must
//   not block. An exception escaping it is caught (it never reaches the library): it is logged
//   (through Options::log, else on stderr) and a response still owned by the handler is failed,
//   i.e. a 500 if nothing was sent, else cut off. The server keeps serving.
// * Completing exactly once. The Response owns the duty to complete. Completing calls (send*,
//   end, fail) leave it empty; any other response call on an empty Response throws
//   kestrel::error(KESTREL_ALREADY_COMPLETED) without touching the C handle, which may already be
//   freed (fail() is then a no-op). A Response destroyed while still owning an uncompleted response fails it, exactly as
//   the library does for a handler that returns an error (500 if nothing was sent, else cut off).
//   To answer later or from another thread, move the Response out of the handler.
// * Completing calls return true when the response went out and false when the request had been
//   aborted (the client left or the server stopped): that still counts as the completion, so they
//   do not throw for it. write/flush throw kestrel::error(KESTREL_CANCELLED) instead, which ends a
//   streaming loop; such errors are logged at debug level only.
// * Lifetimes. Request views (std::string_view) and the Request itself are valid until the later
//   of the handler's return and the response's completion (in PULL mode: until the completion).
//   When moving work to another thread, use the Request before completing the Response.
// * Callbacks given to asynchronous calls (read_async, read_all_async, on_writable, on_abort,
//   send_owned's release) run on library threads and must not block; an exception escaping them
//   is reported on stderr and swallowed (a Response they own is then failed by its destructor).

#ifndef KESTREL_HPP
#define KESTREL_HPP

#include <kestrel.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#if __cplusplus < 201703L && !(defined(_MSVC_LANG) && _MSVC_LANG >= 201703L)
#error "kestrel.hpp needs C++17"
#endif

namespace kestrel {

/// The library version, e.g. "0.1.0".
inline std::string_view version() noexcept { return kestrel_version(); }

/// The name of a result code ("KESTREL_INVALID_URL"...).
inline std::string_view result_name(kestrel_result code) noexcept { return kestrel_result_name(code); }

/// Length meaning "to the end of the file" for Response::send_file and send_fd.
inline constexpr std::uint64_t to_end = KESTREL_TO_END;

/// Timeout meaning "wait as long as it takes" for Server::next_request.
inline constexpr std::chrono::milliseconds forever{-1};

/// Which HTTP versions an endpoint serves.
enum class Protocols : kestrel_protocols {
    Http1AndHttp2 = KESTREL_PROTOCOLS_HTTP1_AND_HTTP2,  ///< HTTP/1.1, and h2c recognised by its preface.
    Http1 = KESTREL_PROTOCOLS_HTTP1,                   ///< HTTP/1.x only.
    Http2 = KESTREL_PROTOCOLS_HTTP2,                   ///< HTTP/2 only (h2c prior knowledge).
};

/// Where handlers run.
enum class Dispatch : kestrel_dispatch {
    Pool = KESTREL_DISPATCH_POOL,      ///< Library-owned handler threads; handlers may block.
    Inline = KESTREL_DISPATCH_INLINE,  ///< The I/O thread that read the request; never block.
    Pull = KESTREL_DISPATCH_PULL,      ///< No handler: take requests with Server::next_request.
};

/// Log severity, lowest first.
enum class LogLevel : kestrel_log_level {
    Trace = KESTREL_LOG_TRACE,
    Debug = KESTREL_LOG_DEBUG,
    Info = KESTREL_LOG_INFO,
    Warn = KESTREL_LOG_WARN,
    Error = KESTREL_LOG_ERROR,
};

/// "trace", "debug", "info", "warn", "error" (or "?").
inline std::string_view to_string(LogLevel level) noexcept {
    switch (level) {
    case LogLevel::Trace: return "trace";
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warn: return "warn";
    case LogLevel::Error: return "error";
    }
    return "?";
}

/// A failed call: the kestrel_result code and the library's message.
class error : public std::runtime_error {
public:
    /// `message` is the library's text (kestrel_last_error); `function` the C function that
    /// failed, used only in what().
    error(kestrel_result code, std::string message, std::string_view function = {})
        : std::runtime_error(describe(code, message, function)), code_(code), message_(std::move(message)) {}

    /// The result code (KESTREL_INVALID_URL...), never KESTREL_OK.
    kestrel_result code() const noexcept { return code_; }
    /// The code's name ("KESTREL_INVALID_URL"...).
    std::string_view name() const noexcept { return kestrel_result_name(code_); }
    /// The library's message for the failure (may be empty).
    const std::string& message() const noexcept { return message_; }

private:
    static std::string describe(kestrel_result code, const std::string& message, std::string_view function) {
        std::string text;
        if (!function.empty()) {
            text.append(function).append(": ");
        }
        text.append(kestrel_result_name(code));
        if (!message.empty()) {
            text.append(": ").append(message);
        }
        return text;
    }

    kestrel_result code_;
    std::string message_;
};

class Request;
class Response;

namespace detail {

inline std::string_view view(kestrel_str s) noexcept { return {s.ptr, s.len}; }

inline const std::uint8_t* bytes(std::string_view s) noexcept {
    return reinterpret_cast<const std::uint8_t*>(s.data());
}

/// The message of the last failed call on this thread.
inline std::string last_error() {
    char buf[256];
    std::size_t written = 0;
    kestrel_result rc = kestrel_last_error(buf, sizeof buf, &written);
    if (rc == KESTREL_OK) {
        return std::string(buf, written);
    }
    if (rc != KESTREL_BUFFER_TOO_SMALL) {
        return {};
    }
    std::string message(written + 1, '\0');
    if (kestrel_last_error(message.data(), message.size(), &written) != KESTREL_OK) {
        return {};
    }
    message.resize(written);
    return message;
}

/// Throws the error for `code`, with this thread's last message.
[[noreturn, gnu::cold, gnu::noinline]] inline void raise(kestrel_result code, const char* function) {
    throw error(code, last_error(), function);
}

inline void check(kestrel_result code, const char* function) {
    if (code != KESTREL_OK) {
        raise(code, function);
    }
}

/// Where the wrapper's own records (handler exceptions) and, once Options::log was called, the
/// library's records go. Written only while the options are built, read from any thread after.
struct LogSink {
    std::function<void(LogLevel, std::string_view, std::string_view)> callback;
    LogLevel min_level = LogLevel::Warn;

    static void to_stderr(LogLevel level, std::string_view category, std::string_view message) noexcept {
        std::string_view name = to_string(level);
        std::fprintf(stderr, "kestrel: %.*s: %.*s: %.*s\n", static_cast<int>(name.size()), name.data(),
                     static_cast<int>(category.size()), category.data(), static_cast<int>(message.size()),
                     message.data());
    }

    /// Delivers a record; a callback that throws is reported on stderr.
    void deliver(LogLevel level, std::string_view category, std::string_view message) const noexcept {
        try {
            callback(level, category, message);
        } catch (...) {
            to_stderr(LogLevel::Error, "kestrel.cpp", "the log callback threw an exception");
            to_stderr(level, category, message);
        }
    }

    /// A record of the wrapper itself: to the callback if one is set (and the level passes), else
    /// to stderr from Warn up.
    void write(LogLevel level, std::string_view category, std::string_view message) const noexcept {
        if (callback) {
            if (level >= min_level) {
                deliver(level, category, message);
            }
        } else if (level >= LogLevel::Warn) {
            to_stderr(level, category, message);
        }
    }
};

template <class T>
void delete_as(void* p) noexcept {
    delete static_cast<T*>(p);
}

/// The text of the exception being handled, for a log line. Call only inside a catch block.
inline std::string current_exception_text() noexcept {
    try {
        try {
            throw;
        } catch (const std::exception& e) {
            return e.what();
        } catch (...) {
            return "an exception not derived from std::exception";
        }
    } catch (...) {
        return {};
    }
}

/// Reports an exception that escaped a callback of an asynchronous call. Call only in a catch.
inline void report_callback_exception(const char* what_callback) noexcept {
    std::string text = current_exception_text();
    std::fprintf(stderr, "kestrel: error: kestrel.cpp: an exception escaped the %s callback: %s\n", what_callback,
                 text.c_str());
}

/// Calls a heap-allocated one-shot callable with `args`, then deletes it; exceptions stop here.
template <class F, class... Args>
void invoke_once(void* userdata, const char* what_callback, Args... args) noexcept {
    std::unique_ptr<F> f(static_cast<F*>(userdata));
    try {
        std::invoke(*f, args...);
    } catch (...) {
        report_callback_exception(what_callback);
    }
}

template <class F>
void release_trampoline(void* userdata) noexcept {
    invoke_once<F>(userdata, "send_owned release");
}

template <class F>
void abort_trampoline(void* userdata) noexcept {
    try {
        std::invoke(*static_cast<F*>(userdata));
    } catch (...) {
        report_callback_exception("on_abort");
    }
}

template <class F>
void writable_trampoline(void* userdata, kestrel_result result) noexcept {
    invoke_once<F>(userdata, "on_writable", result);
}

template <class F>
void read_trampoline(void* userdata, kestrel_result result, std::size_t read) noexcept {
    invoke_once<F>(userdata, "read_async", result, read);
}

template <class F>
struct HandlerState;

template <class F>
kestrel_result handler_trampoline(void* userdata, kestrel_request* request, kestrel_response* response) noexcept;

template <class F>
struct ReadAllState;

}  // namespace detail

/// A request header as two views (lower-case name, value as received).
struct Header {
    std::string_view name;
    std::string_view value;
};

/// The request headers, in order (names grouped in order of first appearance, each repeated
/// value its own entry). A view, valid as long as the request.
class Headers {
public:
    class iterator {
    public:
        using iterator_category = std::input_iterator_tag;  // yields Header by value
        using value_type = Header;
        using difference_type = std::ptrdiff_t;
        using pointer = void;
        using reference = Header;

        iterator() noexcept = default;
        explicit iterator(const kestrel_header* at) noexcept : at_(at) {}
        Header operator*() const noexcept { return {detail::view(at_->name), detail::view(at_->value)}; }
        iterator& operator++() noexcept {
            ++at_;
            return *this;
        }
        iterator operator++(int) noexcept {
            iterator before = *this;
            ++at_;
            return before;
        }
        bool operator==(const iterator& other) const noexcept { return at_ == other.at_; }
        bool operator!=(const iterator& other) const noexcept { return at_ != other.at_; }

    private:
        const kestrel_header* at_ = nullptr;
    };

    Headers() noexcept = default;
    Headers(const kestrel_header* first, std::size_t count) noexcept : first_(first), count_(count) {}

    iterator begin() const noexcept { return iterator(first_); }
    iterator end() const noexcept { return iterator(first_ + count_); }
    std::size_t size() const noexcept { return count_; }
    bool empty() const noexcept { return count_ == 0; }
    /// The `index`-th header (unchecked; see at()).
    Header operator[](std::size_t index) const noexcept {
        return {detail::view(first_[index].name), detail::view(first_[index].value)};
    }
    /// The `index`-th header; throws std::out_of_range past the end.
    Header at(std::size_t index) const {
        if (index >= count_) {
            throw std::out_of_range("kestrel::Headers::at: index out of range");
        }
        return (*this)[index];
    }

private:
    const kestrel_header* first_ = nullptr;
    std::size_t count_ = 0;
};

/// The whole request head, read in one call (Request::head()). Views valid as long as the request.
struct Head {
    std::string_view method;       ///< GET, POST...
    std::string_view scheme;       ///< http or https.
    std::string_view path;         ///< As sent, not percent-decoded.
    std::string_view query;        ///< Without '?'; empty when absent.
    std::string_view target;       ///< The raw request target.
    std::string_view version;      ///< HTTP/1.0, HTTP/1.1 or HTTP/2.
    std::string_view authority;    ///< Host or :authority; empty when absent.
    std::string_view remote_addr;  ///< The client's address (127.0.0.1:50000, [::1]:50000, unix:).
    std::string_view local_addr;   ///< The server's address of the connection.
    std::string_view id;           ///< <connection id>:<request number>, hexadecimal.
    std::uint64_t connection_id = 0;
    Headers headers;
};

/// A request being served: a move-only view of a kestrel_request. It owns nothing (the Response
/// owns the duty to complete); it is valid until the later of the handler's return and the
/// response's completion (in PULL mode, until the completion). Methods may be called from any
/// thread while it is valid.
class Request {
public:
    Request() noexcept = default;
    /// Wraps a C handle (not taking anything over).
    explicit Request(kestrel_request* handle) noexcept : h_(handle) {}
    Request(Request&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
    Request& operator=(Request&& other) noexcept {
        h_ = std::exchange(other.h_, nullptr);
        return *this;
    }
    Request(const Request&) = delete;
    Request& operator=(const Request&) = delete;
    ~Request() = default;

    /// The C handle (NULL when moved from).
    kestrel_request* native() const noexcept { return h_; }
    /// Whether this object refers to a request (false when moved from).
    explicit operator bool() const noexcept { return h_ != nullptr; }

    // ---- head: views valid as long as the request ----
    std::string_view method() const noexcept { return detail::view(kestrel_request_method(h_)); }
    std::string_view scheme() const noexcept { return detail::view(kestrel_request_scheme(h_)); }
    /// The path as sent, not percent-decoded.
    std::string_view path() const noexcept { return detail::view(kestrel_request_path(h_)); }
    /// The query without '?'; empty when absent.
    std::string_view query() const noexcept { return detail::view(kestrel_request_query(h_)); }
    /// The raw request target (/path?query).
    std::string_view target() const noexcept { return detail::view(kestrel_request_target(h_)); }
    /// HTTP/1.0, HTTP/1.1 or HTTP/2.
    std::string_view version() const noexcept { return detail::view(kestrel_request_version(h_)); }
    /// The Host header or :authority (or the absolute target's); empty when absent.
    std::string_view authority() const noexcept { return detail::view(kestrel_request_authority(h_)); }
    /// The client's address as text.
    std::string_view remote_addr() const noexcept { return detail::view(kestrel_request_remote_addr(h_)); }
    /// The server-side address of the connection as text.
    std::string_view local_addr() const noexcept { return detail::view(kestrel_request_local_addr(h_)); }
    /// The request id (<connection id>:<request number>, hexadecimal).
    std::string_view id() const noexcept { return detail::view(kestrel_request_id(h_)); }
    /// The connection id, unique within the server.
    std::uint64_t connection_id() const noexcept { return kestrel_request_connection_id(h_); }

    /// The `nth` value (0: the first) of header `name`, looked up case-insensitively, or nullopt.
    std::optional<std::string_view> header(std::string_view name, std::size_t nth = 0) const {
        kestrel_str value;
        kestrel_result rc = kestrel_request_header(h_, detail::bytes(name), name.size(), nth, &value);
        if (rc == KESTREL_OK) {
            return detail::view(value);
        }
        if (rc == KESTREL_NOT_FOUND) {
            return std::nullopt;
        }
        detail::raise(rc, "kestrel_request_header");
    }
    /// The number of header values.
    std::size_t header_count() const noexcept { return kestrel_request_header_count(h_); }
    /// The `index`-th header; throws kestrel::error(KESTREL_NOT_FOUND) past the last one.
    Header header_at(std::size_t index) const {
        kestrel_str name, value;
        detail::check(kestrel_request_header_at(h_, index, &name, &value), "kestrel_request_header_at");
        return {detail::view(name), detail::view(value)};
    }
    /// Every header, as a range of Header views.
    Headers headers() const { return head().headers; }
    /// The whole head in one call.
    Head head() const {
        kestrel_request_head raw{};
        raw.size = sizeof raw;
        detail::check(kestrel_request_get_head(h_, &raw), "kestrel_request_get_head");
        Head head;
        head.method = detail::view(raw.method);
        head.scheme = detail::view(raw.scheme);
        head.path = detail::view(raw.path);
        head.query = detail::view(raw.query);
        head.target = detail::view(raw.target);
        head.version = detail::view(raw.version);
        head.authority = detail::view(raw.authority);
        head.remote_addr = detail::view(raw.remote_addr);
        head.local_addr = detail::view(raw.local_addr);
        head.id = detail::view(raw.id);
        head.connection_id = raw.connection_id;
        head.headers = Headers(raw.headers, raw.header_count);
        return head;
    }

    // ---- body ----

    /// Reads body bytes into `buf` (`len` > 0), blocking until some arrive; returns the count, 0 at
    /// the end of the body. Off I/O threads only: in an INLINE handler it throws
    /// kestrel::error(KESTREL_WOULD_BLOCK) (use read_async). KESTREL_CANCELLED when the client left.
    std::size_t read(void* buf, std::size_t len) {
        std::size_t n = 0;
        detail::check(kestrel_request_read(h_, static_cast<std::uint8_t*>(buf), len, &n), "kestrel_request_read");
        return n;
    }

    /// Reads the whole body (blocking, as read()). More than `limit` bytes throw
    /// kestrel::error(KESTREL_BUFFER_TOO_SMALL).
    std::string read_all(std::size_t limit = std::numeric_limits<std::size_t>::max()) {
        std::string body;
        char chunk[16384];
        for (;;) {
            std::size_t n = read(chunk, sizeof chunk);
            if (n == 0) {
                return body;
            }
            if (n > limit - body.size()) {
                throw error(KESTREL_BUFFER_TOO_SMALL,
                            "the request body is larger than the limit of " + std::to_string(limit) + " bytes",
                            "kestrel::Request::read_all");
            }
            body.append(chunk, n);
        }
    }

    /// Starts reading up to `len` body bytes into `buf` without blocking; `done(kestrel_result,
    /// std::size_t read)` runs exactly once, later, on an I/O thread (0 bytes with KESTREL_OK at the
    /// end of the body). `buf` must stay valid, and the response uncompleted, until then. Throws
    /// (and never calls `done`) if the read cannot start.
    template <class F>
    void read_async(void* buf, std::size_t len, F&& done) {
        using Fn = std::decay_t<F>;
        static_assert(std::is_invocable_v<Fn&, kestrel_result, std::size_t>,
                      "read_async callback: f(kestrel_result, std::size_t)");
        auto* callback = new Fn(std::forward<F>(done));
        kestrel_result rc = kestrel_request_read_async(h_, static_cast<std::uint8_t*>(buf), len,
                                                       &detail::read_trampoline<Fn>, callback);
        if (rc != KESTREL_OK) {
            std::string message = detail::last_error();
            delete callback;  // may fail a Response it owns, which sets the last error
            throw error(rc, std::move(message), "kestrel_request_read_async");
        }
    }

    /// Reads the whole body without blocking: `done(kestrel_result, std::string body)` runs
    /// exactly once on an I/O thread with KESTREL_OK and the body, or with the error that stopped
    /// the read (KESTREL_CANCELLED, or KESTREL_BUFFER_TOO_SMALL past `limit` bytes). The response
    /// must stay uncompleted until then. Throws (and never calls `done`) if the read cannot start.
    template <class F>
    void read_all_async(F&& done, std::size_t limit = std::numeric_limits<std::size_t>::max());

    // ---- abort ----

    /// Whether the request was aborted (client gone, stream reset, bad body framing, server
    /// stopped).
    bool is_aborted() const noexcept { return kestrel_request_is_aborted(h_); }

    /// Runs `f()` once if the request is aborted: at once, on this thread, if it already was,
    /// else on the thread that notices (usually an I/O thread; must not block). `f` is destroyed
    /// after it ran or when the request finishes without an abort.
    template <class F>
    void on_abort(F&& f) {
        using Fn = std::decay_t<F>;
        static_assert(std::is_invocable_v<Fn&>, "on_abort callback: f()");
        auto* callback = new Fn(std::forward<F>(f));
        // The library frees the userdata on every path, failure included.
        detail::check(kestrel_request_on_abort(h_, &detail::abort_trampoline<Fn>, callback, &detail::delete_as<Fn>),
                      "kestrel_request_on_abort");
    }

private:
    kestrel_request* h_ = nullptr;
};

/// The response of a request: a move-only owner of the duty to complete it exactly once.
///
/// Setters return *this for chaining. Completing calls (send, send_static, send_owned,
/// send_file, send_fd, end, fail) leave the object empty; they return false (not an exception)
/// when the request had been aborted, which still counts as the completion. Any call on an empty
/// Response throws kestrel::error(KESTREL_ALREADY_COMPLETED). Destroying a Response that still
/// owns an uncompleted response calls fail(): a 500 if nothing was sent, else the response is cut
/// off.
class Response {
public:
    Response() noexcept = default;
    /// Takes over the completion of `request`'s response.
    explicit Response(kestrel_request* request) noexcept
        : rq_(request), rs_(request ? kestrel_request_response(request) : nullptr) {}
    /// Takes over the completion of `response`, the response of `request` (as a handler gets them).
    Response(kestrel_request* request, kestrel_response* response) noexcept : rq_(request), rs_(response) {}
    Response(Response&& other) noexcept
        : rq_(std::exchange(other.rq_, nullptr)), rs_(std::exchange(other.rs_, nullptr)) {}
    /// Fails the response this object owned, if any, then takes over `other`'s.
    Response& operator=(Response&& other) noexcept {
        if (this != &other) {
            fail();
            rq_ = std::exchange(other.rq_, nullptr);
            rs_ = std::exchange(other.rs_, nullptr);
        }
        return *this;
    }
    Response(const Response&) = delete;
    Response& operator=(const Response&) = delete;
    ~Response() { fail(); }

    /// Whether this object still owns an uncompleted response.
    bool pending() const noexcept { return rs_ != nullptr; }
    explicit operator bool() const noexcept { return pending(); }
    /// The C handles (NULL once completed or moved from).
    kestrel_response* native() const noexcept { return rs_; }
    kestrel_request* native_request() const noexcept { return rq_; }
    /// Gives up the duty to complete: the caller completes the returned handle with the C API.
    kestrel_response* release() noexcept {
        rq_ = nullptr;
        return std::exchange(rs_, nullptr);
    }

    // ---- head: before the response starts (first write, flush or completion) ----

    /// Sets the status code (200..=999; default 200).
    Response& status(std::uint16_t code) {
        detail::check(kestrel_response_set_status(live("kestrel_response_set_status"), code),
                      "kestrel_response_set_status");
        return *this;
    }
    /// Sets a header, replacing earlier values. Bad bytes throw KESTREL_INVALID_HEADER.
    Response& set_header(std::string_view name, std::string_view value) {
        detail::check(kestrel_response_set_header(live("kestrel_response_set_header"), detail::bytes(name),
                                                  name.size(), detail::bytes(value), value.size()),
                      "kestrel_response_set_header");
        return *this;
    }
    /// Adds a header value (repeats allowed).
    Response& add_header(std::string_view name, std::string_view value) {
        detail::check(kestrel_response_add_header(live("kestrel_response_add_header"), detail::bytes(name),
                                                  name.size(), detail::bytes(value), value.size()),
                      "kestrel_response_add_header");
        return *this;
    }
    /// Removes every value of a header (a missing one is not an error).
    Response& remove_header(std::string_view name) {
        detail::check(
            kestrel_response_remove_header(live("kestrel_response_remove_header"), detail::bytes(name), name.size()),
            "kestrel_response_remove_header");
        return *this;
    }
    /// Adds a trailer, sent after the body: always on HTTP/2; on HTTP/1.1 when the request carried
    /// `TE: trailers` (add it before the response starts so it is announced). Until completion.
    Response& add_trailer(std::string_view name, std::string_view value) {
        detail::check(kestrel_response_add_trailer(live("kestrel_response_add_trailer"), detail::bytes(name),
                                                   name.size(), detail::bytes(value), value.size()),
                      "kestrel_response_add_trailer");
        return *this;
    }

    // ---- whole bodies (completing; the response must not have started) ----

    /// Completes with a copy of `body`, with Content-Length.
    bool send(std::string_view body = {}) {
        return completed(kestrel_response_send(live("kestrel_response_send"), detail::bytes(body), body.size()),
                         "kestrel_response_send");
    }
    /// Completes with a copy of `len` bytes at `data`.
    bool send(const void* data, std::size_t len) {
        return completed(kestrel_response_send(live("kestrel_response_send"), static_cast<const std::uint8_t*>(data), len),
                         "kestrel_response_send");
    }
    /// Completes with bytes that live forever (a literal, static data), without copying them.
    bool send_static(std::string_view body) {
        return completed(kestrel_response_send_owned(live("kestrel_response_send_owned"), detail::bytes(body),
                                                     body.size(), nullptr, nullptr),
                         "kestrel_response_send_owned");
    }
    /// Completes with `body` without copying its bytes: takes the container (std::string,
    /// std::vector<char>, std::vector<std::uint8_t>... any contiguous container, moved in) and
    /// destroys it when the library is done with the bytes, on any thread.
    template <class Container, class = std::enable_if_t<!std::is_lvalue_reference_v<Container>>>
    bool send_owned(Container&& body) {
        using Held = std::decay_t<Container>;
        kestrel_response* rs = live("kestrel_response_send_owned");
        auto* held = new Held(std::move(body));
        const auto* data = reinterpret_cast<const std::uint8_t*>(std::data(*held));
        std::size_t len = std::size(*held) * sizeof(*std::data(*held));
        // The library calls delete_as exactly once, also when this call fails.
        return completed(kestrel_response_send_owned(rs, data, len, &detail::delete_as<Held>, held),
                         "kestrel_response_send_owned");
    }
    /// Completes with the bytes of `body` without copying them: they must stay valid and unchanged
    /// until `release()` runs, exactly once, on any thread (also when this call fails).
    template <class F>
    bool send_owned(std::string_view body, F&& release) {
        using Fn = std::decay_t<F>;
        static_assert(std::is_invocable_v<Fn&>, "send_owned release: f()");
        kestrel_response* rs = live("kestrel_response_send_owned");
        auto* callback = new Fn(std::forward<F>(release));
        return completed(kestrel_response_send_owned(rs, detail::bytes(body), body.size(),
                                                     &detail::release_trampoline<Fn>, callback),
                         "kestrel_response_send_owned");
    }
    /// A temporary string would die before the library is done with its bytes: move it into
    /// send_owned(std::move(body)) instead.
    template <class F>
    bool send_owned(std::string&& body, F&& release) = delete;
    /// Completes with `length` bytes (to_end: the rest) of the file at `path` from `offset`, with
    /// Content-Length. A missing or non-regular file throws KESTREL_IO_ERROR and a range past the
    /// end KESTREL_INVALID_ARGUMENT; the response then stays pending (send a 404, say).
    bool send_file(std::string_view path, std::uint64_t offset = 0, std::uint64_t length = to_end) {
        return completed(kestrel_response_send_file(live("kestrel_response_send_file"), detail::bytes(path),
                                                    path.size(), offset, length),
                         "kestrel_response_send_file");
    }
    /// Like send_file for an open descriptor of a regular file; `fd` stays the caller's.
    bool send_fd(int fd, std::uint64_t offset = 0, std::uint64_t length = to_end) {
        return completed(kestrel_response_send_fd(live("kestrel_response_send_fd"), fd, offset, length),
                         "kestrel_response_send_fd");
    }

    // ---- streaming ----

    /// Writes body bytes (copied), starting the response if needed (chunked on HTTP/1.1 unless a
    /// Content-Length was set). Off I/O threads it waits while the response buffer is full; on an
    /// I/O thread (INLINE) a buffer without room for all of it throws KESTREL_WOULD_BLOCK, having
    /// written nothing (see try_write). Throws
    /// KESTREL_CANCELLED once the client went away.
    void write(std::string_view data) {
        detail::check(kestrel_response_write(live("kestrel_response_write"), detail::bytes(data), data.size()),
                      "kestrel_response_write");
    }
    void write(const void* data, std::size_t len) {
        write(std::string_view(static_cast<const char*>(data), len));
    }
    /// Writes `data` unless that would wait, and returns the number of bytes written: all of them
    /// off I/O threads (where it waits like write). On an I/O thread (INLINE) the library takes a
    /// write whole while its response buffer is not full, so this returns `data.size()`, or 0 when
    /// the buffer is full: register on_writable (same "not full" test) and write from there.
    std::size_t try_write(std::string_view data) {
        kestrel_result rc = kestrel_response_write(live("kestrel_response_write"), detail::bytes(data), data.size());
        if (rc == KESTREL_WOULD_BLOCK) {
            return 0;
        }
        detail::check(rc, "kestrel_response_write");
        return data.size();
    }
    std::size_t try_write(const void* data, std::size_t len) {
        return try_write(std::string_view(static_cast<const char*>(data), len));
    }
    /// Runs `f(kestrel_result)` once the response buffer has room (KESTREL_OK; at once, on this
    /// thread, if it has) or the request is aborted first (KESTREL_CANCELLED). On an I/O thread;
    /// must not block. `f` may own this Response (it is destroyed after it ran).
    template <class F>
    void on_writable(F&& f) {
        using Fn = std::decay_t<F>;
        static_assert(std::is_invocable_v<Fn&, kestrel_result>, "on_writable callback: f(kestrel_result)");
        kestrel_response* rs = live("kestrel_response_on_writable");
        auto* callback = new Fn(std::forward<F>(f));
        // From here `this` may be destroyed (by the callback, or with it): touch no member.
        kestrel_result rc = kestrel_response_on_writable(rs, &detail::writable_trampoline<Fn>, callback);
        if (rc != KESTREL_OK) {
            std::string message = detail::last_error();
            delete callback;
            throw error(rc, std::move(message), "kestrel_response_on_writable");
        }
    }
    /// Starts the response if needed and, off I/O threads, waits until every byte written so far
    /// was handed to the connection.
    void flush() { detail::check(kestrel_response_flush(live("kestrel_response_flush")), "kestrel_response_flush"); }
    /// Completes: ends a streamed body (trailers follow), or sends the head with an empty body.
    bool end() { return completed(kestrel_response_end(live("kestrel_response_end")), "kestrel_response_end"); }

    /// Completes as failed: a 500 with an empty body when nothing was sent, else the response is
    /// cut off (HTTP/1.1 closes the connection, HTTP/2 resets the stream). A no-op on an empty
    /// Response; never throws.
    void fail() noexcept {
        if (rs_ != nullptr) {
            kestrel_response* rs = std::exchange(rs_, nullptr);
            rq_ = nullptr;
            kestrel_response_fail(rs);  // completes on every path (OK, or CANCELLED after an abort)
        }
    }

    // ---- abort (the same request) ----

    /// Whether the request was aborted (false for an empty Response).
    bool is_aborted() const noexcept { return rq_ != nullptr && kestrel_request_is_aborted(rq_); }
    /// Request::on_abort for this response's request.
    template <class F>
    void on_abort(F&& f) {
        live("kestrel_request_on_abort");
        Request(rq_).on_abort(std::forward<F>(f));
    }

private:
    kestrel_response* live(const char* function) const {
        if (rs_ == nullptr) {
            throw error(KESTREL_ALREADY_COMPLETED, "this kestrel::Response was already completed (or moved from)",
                        function);
        }
        return rs_;
    }

    /// Books the outcome of a completing call: on success or after an abort the response is
    /// completed (and the handle may be gone); errors that leave it open throw and keep it.
    bool completed(kestrel_result rc, const char* function) {
        switch (rc) {
        case KESTREL_OK:
            rq_ = nullptr;
            rs_ = nullptr;
            return true;
        case KESTREL_CANCELLED:
            rq_ = nullptr;
            rs_ = nullptr;
            return false;
        case KESTREL_ALREADY_COMPLETED:  // completed behind our back (through native())
        case KESTREL_PANIC:              // state unknown: never touch the handle again
            rq_ = nullptr;
            rs_ = nullptr;
            detail::raise(rc, function);
        default:  // INVALID_STATE, IO_ERROR, INVALID_ARGUMENT...: the response stays open
            detail::raise(rc, function);
        }
    }

    kestrel_request* rq_ = nullptr;
    kestrel_response* rs_ = nullptr;
};

/// A request taken in PULL mode: the request and the duty to answer it.
struct Exchange {
    Request request;
    Response response;
};

/// The outcome of Server::next_request: a request (true), or a timeout or the server's stop
/// (false).
class Next {
public:
    explicit operator bool() const noexcept { return exchange_.has_value(); }
    /// Whether no request came in time.
    bool timed_out() const noexcept { return status_ == KESTREL_TIMEOUT; }
    /// Whether the server stopped (the pull loop's end).
    bool stopped() const noexcept { return status_ == KESTREL_STOPPED; }
    Exchange& operator*() & { return *exchange_; }
    Exchange&& operator*() && { return std::move(*exchange_); }
    Exchange* operator->() { return &*exchange_; }

private:
    friend class Server;
    explicit Next(kestrel_result status) noexcept : status_(status) {}
    explicit Next(kestrel_request* request) noexcept
        : exchange_(Exchange{Request(request), Response(request)}), status_(KESTREL_OK) {}

    std::optional<Exchange> exchange_;
    kestrel_result status_;
};

namespace detail {

template <class F>
struct HandlerState {
    F handler;
    std::shared_ptr<LogSink> sink;
};

/// The C handler: runs the C++ handler, turns what escapes it into a logged, failed response.
template <class F>
kestrel_result handler_trampoline(void* userdata, kestrel_request* request, kestrel_response* response) noexcept {
    auto& state = *static_cast<HandlerState<F>*>(userdata);
    Request req(request);
    Response res(request, response);
    LogLevel level = LogLevel::Error;
    std::string what;
    try {
        std::invoke(state.handler, req, res);
        if (!res.pending()) {
            return KESTREL_OK;
        }
        what = "the handler returned without completing or moving the Response";
    } catch (const error& e) {
        level = e.code() == KESTREL_CANCELLED ? LogLevel::Debug : LogLevel::Error;
        what = std::string("the handler threw kestrel::error: ") + e.what();
    } catch (const std::exception& e) {
        what = std::string("the handler threw: ") + e.what();
    } catch (...) {
        what = "the handler threw an exception not derived from std::exception";
    }
    try {
        // `request` is valid until this function returns, whatever happened to `res`.
        std::string line = "request ";
        line.append(detail::view(kestrel_request_id(request)));
        line.append(": ").append(what);
        line.append(res.pending() ? "; the response is failed (500 if nothing was sent, else cut off)"
                                  : "; the response was completed or moved, so it is left alone");
        state.sink->write(level, "kestrel.application", line);
    } catch (...) {  // std::bad_alloc while logging: the response is still failed below
    }
    return KESTREL_OK;  // `res` fails the response in its destructor if it still owns it
}

template <class F>
struct ReadAllState {
    kestrel_request* request;
    F done;
    std::size_t limit;
    std::string body;
    char buf[16384];

    static void on_read(void* userdata, kestrel_result rc, std::size_t n) noexcept {
        auto* state = static_cast<ReadAllState*>(userdata);
        if (rc == KESTREL_OK && n > 0) {
            if (n > state->limit - state->body.size()) {
                rc = KESTREL_BUFFER_TOO_SMALL;
            } else {
                try {
                    state->body.append(state->buf, n);
                    rc = kestrel_request_read_async(state->request, reinterpret_cast<std::uint8_t*>(state->buf),
                                                    sizeof state->buf, &ReadAllState::on_read, state);
                    if (rc == KESTREL_OK) {
                        return;  // the next chunk calls back
                    }
                } catch (...) {  // std::bad_alloc
                    rc = KESTREL_IO_ERROR;
                }
            }
        }
        std::unique_ptr<ReadAllState> owned(state);
        try {
            std::invoke(owned->done, rc, std::move(owned->body));
        } catch (...) {
            report_callback_exception("read_all_async");
        }
    }
};

}  // namespace detail

template <class F>
void Request::read_all_async(F&& done, std::size_t limit) {
    using State = detail::ReadAllState<std::decay_t<F>>;
    static_assert(std::is_invocable_v<std::decay_t<F>&, kestrel_result, std::string&&>,
                  "read_all_async callback: f(kestrel_result, std::string)");
    auto* state = new State{h_, std::forward<F>(done), limit, {}, {}};
    kestrel_result rc = kestrel_request_read_async(h_, reinterpret_cast<std::uint8_t*>(state->buf), sizeof state->buf,
                                                   &State::on_read, state);
    if (rc != KESTREL_OK) {
        std::string message = detail::last_error();
        delete state;
        throw error(rc, std::move(message), "kestrel_request_read_async");
    }
}

/// Server options: endpoints, threads, dispatch mode, handler, hooks, logging. Move-only owner of
/// a kestrel_options; consumed by the Server constructor. Setters return *this and throw
/// kestrel::error on bad input (e.g. KESTREL_INVALID_URL).
class Options {
public:
    /// Kestrel's defaults: http://localhost:5000 when no endpoint is added, one I/O thread per
    /// core, POOL dispatch with 2 x cores (at least 4) handler threads, `Server: kestrel`.
    Options() : sink_(std::make_shared<detail::LogSink>()) {
        detail::check(kestrel_options_new(&h_), "kestrel_options_new");
    }
    Options(Options&& other) noexcept : h_(std::exchange(other.h_, nullptr)), sink_(std::move(other.sink_)) {}
    Options& operator=(Options&& other) noexcept {
        if (this != &other) {
            kestrel_options_free(h_);
            h_ = std::exchange(other.h_, nullptr);
            sink_ = std::move(other.sink_);
        }
        return *this;
    }
    Options(const Options&) = delete;
    Options& operator=(const Options&) = delete;
    ~Options() { kestrel_options_free(h_); }

    /// The C handle (NULL once moved from or consumed).
    kestrel_options* native() const noexcept { return h_; }
    /// Gives up the handle (for kestrel_server_new or kestrel_options_free by the caller).
    kestrel_options* release() noexcept {
        sink_.reset();
        return std::exchange(h_, nullptr);
    }

    /// Adds endpoints from Kestrel-style URLs separated by ';' (http://127.0.0.1:0, http://+:8080,
    /// http://[::1]:0, http://unix:/path.sock...). A bad URL throws KESTREL_INVALID_URL.
    Options& urls(std::string_view urls, Protocols protocols = Protocols::Http1AndHttp2) {
        detail::check(kestrel_options_add_urls(h_, detail::bytes(urls), urls.size(),
                                               static_cast<kestrel_protocols>(protocols)),
                      "kestrel_options_add_urls");
        return *this;
    }
    /// Adds an endpoint on an already-listening socket; the library uses a duplicate of `fd`.
    Options& listen_fd(int fd, Protocols protocols = Protocols::Http1AndHttp2) {
        detail::check(kestrel_options_add_listen_fd(h_, fd, static_cast<kestrel_protocols>(protocols)),
                      "kestrel_options_add_listen_fd");
        return *this;
    }
    /// The number of I/O threads (1..=1024).
    Options& io_threads(std::uint32_t threads) {
        detail::check(kestrel_options_set_io_threads(h_, threads), "kestrel_options_set_io_threads");
        return *this;
    }
    /// The dispatch mode.
    Options& dispatch(Dispatch mode) {
        detail::check(kestrel_options_set_dispatch(h_, static_cast<kestrel_dispatch>(mode)),
                      "kestrel_options_set_dispatch");
        return *this;
    }
    /// The number of POOL handler threads (1..=4096).
    Options& pool_threads(std::uint32_t threads) {
        detail::check(kestrel_options_set_pool_threads(h_, threads), "kestrel_options_set_pool_threads");
        return *this;
    }
    /// Turns the `Server: kestrel` header on (default) or off.
    Options& server_header(bool enabled) {
        detail::check(kestrel_options_set_server_header(h_, enabled), "kestrel_options_set_server_header");
        return *this;
    }
    /// How many bytes a streamed response may buffer before write waits (default 65536; not 0).
    Options& response_buffer_size(std::size_t bytes) {
        detail::check(kestrel_options_set_response_buffer_size(h_, bytes), "kestrel_options_set_response_buffer_size");
        return *this;
    }

    /// Installs the request handler: any callable invocable as `f(Request&, Response&)` (a lambda,
    /// a function, a functor), copied or moved into the options. It may run on several threads at
    /// once (POOL). Required unless the dispatch mode is Pull. See the top of this file for what
    /// happens to exceptions and to a Response that is not completed.
    template <class F>
    Options& handler(F&& f) {
        using Fn = std::decay_t<F>;
        static_assert(std::is_invocable_v<Fn&, Request&, Response&>, "a handler is called as f(Request&, Response&)");
        auto* state = new detail::HandlerState<Fn>{std::forward<F>(f), sink()};
        // The library frees the state exactly once, also when this call fails.
        detail::check(kestrel_options_set_handler(h_, &detail::handler_trampoline<Fn>, state,
                                                  &detail::delete_as<detail::HandlerState<Fn>>),
                      "kestrel_options_set_handler");
        return *this;
    }

    /// Hooks run on each POOL handler thread as it starts and before it exits (either may be
    /// empty). An exception escaping a hook is logged and swallowed.
    Options& thread_hooks(std::function<void()> on_start, std::function<void()> on_stop = {}) {
        auto* hooks = new Hooks{std::move(on_start), std::move(on_stop), sink()};
        detail::check(kestrel_options_set_thread_hooks(h_, hooks->on_start ? &Hooks::start : nullptr,
                                                       hooks->on_stop ? &Hooks::stop : nullptr, hooks,
                                                       &detail::delete_as<Hooks>),
                      "kestrel_options_set_thread_hooks");
        return *this;
    }

    /// Sends the library's log records at or above `min_level` to `callback(level, category,
    /// message)`, and the wrapper's own (handler exceptions) too. It runs on any library thread,
    /// I/O threads included: it must not block; the views live during the call. Without it, the
    /// wrapper's records go to stderr and the library's nowhere.
    Options& log(std::function<void(LogLevel, std::string_view, std::string_view)> callback,
                 LogLevel min_level = LogLevel::Info) {
        if (!callback) {
            throw error(KESTREL_NULL_ARGUMENT, "the log callback is empty", "kestrel::Options::log");
        }
        auto* userdata = new std::shared_ptr<detail::LogSink>(sink());
        detail::check(kestrel_options_set_log_callback(h_, &log_trampoline,
                                                       static_cast<kestrel_log_level>(min_level), userdata,
                                                       &detail::delete_as<std::shared_ptr<detail::LogSink>>),
                      "kestrel_options_set_log_callback");
        (*userdata)->callback = std::move(callback);
        (*userdata)->min_level = min_level;
        return *this;
    }

private:
    struct Hooks {
        std::function<void()> on_start, on_stop;
        std::shared_ptr<detail::LogSink> sink;

        void run(const std::function<void()>& hook, const char* which) noexcept {
            try {
                hook();
            } catch (...) {
                std::string line = std::string("the ") + which + " thread hook threw: " + detail::current_exception_text();
                sink->write(LogLevel::Error, "kestrel.application", line);
            }
        }
        static void start(void* userdata) noexcept {
            auto* hooks = static_cast<Hooks*>(userdata);
            hooks->run(hooks->on_start, "on_start");
        }
        static void stop(void* userdata) noexcept {
            auto* hooks = static_cast<Hooks*>(userdata);
            hooks->run(hooks->on_stop, "on_stop");
        }
    };

    static void log_trampoline(void* userdata, kestrel_log_level level, kestrel_str category,
                               kestrel_str message) noexcept {
        (*static_cast<std::shared_ptr<detail::LogSink>*>(userdata))
            ->deliver(static_cast<LogLevel>(level), detail::view(category), detail::view(message));
    }

    const std::shared_ptr<detail::LogSink>& sink() const {
        if (!sink_) {
            throw error(KESTREL_NULL_ARGUMENT, "these kestrel::Options were moved from or consumed", "kestrel::Options");
        }
        return sink_;
    }

    kestrel_options* h_ = nullptr;
    std::shared_ptr<detail::LogSink> sink_;
};

/// A server: move-only owner of a kestrel_server. Its methods may be called from any thread;
/// the destructor stops it at once (aborting requests in flight; call stop() first for a graceful
/// stop) and returns once every library thread has exited. Do not destroy it on a library thread
/// (in a handler or callback).
class Server {
public:
    /// Builds a server from `options`, which are consumed on every path. Throws
    /// KESTREL_INVALID_ARGUMENT when no handler was set outside PULL mode.
    explicit Server(Options&& options) {
        kestrel_options* raw = options.release();
        if (raw == nullptr) {
            throw error(KESTREL_NULL_ARGUMENT, "the kestrel::Options were moved from or already used",
                        "kestrel_server_new");
        }
        detail::check(kestrel_server_new(raw, &h_), "kestrel_server_new");
    }
    Server(Server&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
    Server& operator=(Server&& other) noexcept {
        if (this != &other) {
            kestrel_server_free(h_);
            h_ = std::exchange(other.h_, nullptr);
        }
        return *this;
    }
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;
    ~Server() { kestrel_server_free(h_); }

    /// The C handle (NULL once moved from).
    kestrel_server* native() const noexcept { return h_; }

    /// Binds every endpoint and starts serving; returns once listening. KESTREL_BIND_FAILED names
    /// the address and OS error (nothing stays bound; start may be retried).
    void start() { detail::check(kestrel_server_start(h_), "kestrel_server_start"); }

    /// The number of bound addresses (localhost counts twice).
    std::size_t address_count() const noexcept { return kestrel_server_address_count(h_); }
    /// The `index`-th bound address as a URL with its real port (http://127.0.0.1:41234).
    std::string address(std::size_t index = 0) const {
        std::string url(64, '\0');
        std::size_t written = 0;
        kestrel_result rc = kestrel_server_address(h_, index, url.data(), url.size(), &written);
        if (rc == KESTREL_BUFFER_TOO_SMALL) {
            url.assign(written + 1, '\0');
            rc = kestrel_server_address(h_, index, url.data(), url.size(), &written);
        }
        detail::check(rc, "kestrel_server_address");
        url.resize(written);
        return url;
    }
    /// Every bound address.
    std::vector<std::string> addresses() const {
        std::vector<std::string> all;
        std::size_t count = address_count();
        all.reserve(count);
        for (std::size_t i = 0; i < count; ++i) {
            all.push_back(address(i));
        }
        return all;
    }

    /// Stops gracefully: stops accepting, lets requests in flight finish for up to `timeout`, then
    /// aborts the rest; returns the number aborted. From a handler it only schedules the stop.
    std::size_t stop(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
        auto ms = timeout.count();
        std::uint32_t clamped = ms <= 0 ? 0u
                                : static_cast<unsigned long long>(ms) > std::numeric_limits<std::uint32_t>::max()
                                    ? std::numeric_limits<std::uint32_t>::max()
                                    : static_cast<std::uint32_t>(ms);
        std::size_t aborted = 0;
        detail::check(kestrel_server_stop(h_, clamped, &aborted), "kestrel_server_stop");
        return aborted;
    }

    /// PULL mode: waits up to `timeout` (forever by default) for the next request. Returns a Next
    /// holding the request and its response, or an empty one that says whether it timed_out() or
    /// the server stopped(). Never call it on a library thread.
    ///
    ///     while (auto next = server.next_request()) {
    ///         auto& [req, res] = *next;
    ///         res.send("hi");
    ///     }
    Next next_request(std::chrono::milliseconds timeout = forever) {
        kestrel_request* request = nullptr;
        std::int64_t ms = timeout.count() < 0 ? -1 : static_cast<std::int64_t>(timeout.count());
        kestrel_result rc = kestrel_server_next_request(h_, ms, &request);
        if (rc == KESTREL_OK) {
            return Next(request);
        }
        if (rc == KESTREL_TIMEOUT || rc == KESTREL_STOPPED) {
            return Next(rc);
        }
        detail::raise(rc, "kestrel_server_next_request");
    }

private:
    kestrel_server* h_ = nullptr;
};

}  // namespace kestrel

#endif  // KESTREL_HPP
