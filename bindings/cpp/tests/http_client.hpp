// http_client.hpp: a small blocking HTTP/1.1 client over TCP or Unix sockets for the tests, plus
// helpers to run curl (HTTP/2) and to find a server's port. Responses are parsed completely:
// Content-Length, chunked bodies with trailers, or bodies up to the connection's close.
#ifndef KESTREL_CPP_TESTS_HTTP_CLIENT_HPP
#define KESTREL_CPP_TESTS_HTTP_CLIENT_HPP

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace testhttp {

inline std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return out;
}

struct Response {
    int status = 0;
    std::string version;
    std::vector<std::pair<std::string, std::string>> headers;   // names lower-case
    std::vector<std::pair<std::string, std::string>> trailers;  // names lower-case
    std::string body;
    bool chunked = false;
    bool complete = false;  // the body ended as framed (not cut off)

    /// The first value of a header, or "" (use has_header to tell an empty value apart).
    std::string header(std::string_view name) const {
        for (const auto& [n, v] : headers) {
            if (n == lower(name)) return v;
        }
        return {};
    }
    bool has_header(std::string_view name) const {
        for (const auto& h : headers) {
            if (h.first == lower(name)) return true;
        }
        return false;
    }
    std::size_t header_count(std::string_view name) const {
        std::size_t n = 0;
        for (const auto& h : headers) {
            if (h.first == lower(name)) ++n;
        }
        return n;
    }
    std::string trailer(std::string_view name) const {
        for (const auto& [n, v] : trailers) {
            if (n == lower(name)) return v;
        }
        return {};
    }
};

/// One client connection. Methods throw std::runtime_error on socket errors and timeouts.
class Connection {
public:
    /// Connects to 127.0.0.1:port.
    explicit Connection(int port, int timeout_ms = 10000) : timeout_ms_(timeout_ms) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0) throw std::runtime_error("socket failed");
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<std::uint16_t>(port));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            int err = errno;
            ::close(fd_);
            throw std::runtime_error(std::string("connect failed: ") + std::strerror(err));
        }
        int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    /// Connects to a Unix socket.
    explicit Connection(const std::string& unix_path, int timeout_ms = 10000) : timeout_ms_(timeout_ms) {
        fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0) throw std::runtime_error("socket failed");
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", unix_path.c_str());
        if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            int err = errno;
            ::close(fd_);
            throw std::runtime_error(std::string("connect failed: ") + std::strerror(err));
        }
    }
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    ~Connection() { close(); }

    void close() {
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }

    void send(std::string_view data) {
        while (!data.empty()) {
            ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) continue;
                throw std::runtime_error(std::string("send failed: ") + std::strerror(errno));
            }
            data.remove_prefix(static_cast<std::size_t>(n));
        }
    }

    /// Reads one response. `head_only` for a response to HEAD (no body whatever the headers say).
    Response read_response(bool head_only = false) {
        Response r;
        std::string head = read_until("\r\n\r\n");
        parse_head(head, r);
        if (r.status >= 100 && r.status < 200) {
            return read_response(head_only);  // skip 100 Continue
        }
        if (head_only || r.status == 204 || r.status == 304) {
            r.complete = true;
            return r;
        }
        if (lower(r.header("transfer-encoding")).find("chunked") != std::string::npos) {
            r.chunked = true;
            read_chunked(r);
        } else if (r.has_header("content-length")) {
            std::size_t len = std::stoul(r.header("content-length"));
            r.body = read_exactly(len, &r.complete);
        } else {
            r.body = read_to_close();
            r.complete = true;
        }
        return r;
    }

    /// Sends `request` and reads its response.
    Response request(std::string_view request, bool head_only = false) {
        send(request);
        return read_response(head_only);
    }

    /// Whether the server closed the connection (waits up to `ms` for an EOF or error).
    bool closed_by_peer(int ms = 2000) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, ms) <= 0) return false;
        char c;
        ssize_t n = ::recv(fd_, &c, 1, MSG_PEEK);
        return n <= 0 && buffered_.empty();
    }

    int fd() const { return fd_; }

private:
    /// Fills the buffer with at least one more byte; false at EOF.
    bool fill() {
        pollfd p{fd_, POLLIN, 0};
        int ready = ::poll(&p, 1, timeout_ms_);
        if (ready == 0) throw std::runtime_error("timed out waiting for the server");
        if (ready < 0) throw std::runtime_error("poll failed");
        char chunk[65536];
        ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
        if (n < 0) {
            if (errno == ECONNRESET) return false;
            throw std::runtime_error(std::string("recv failed: ") + std::strerror(errno));
        }
        if (n == 0) return false;
        buffered_.append(chunk, static_cast<std::size_t>(n));
        return true;
    }

    std::string read_until(std::string_view needle) {
        for (;;) {
            auto at = buffered_.find(needle);
            if (at != std::string::npos) {
                std::string out = buffered_.substr(0, at + needle.size());
                buffered_.erase(0, at + needle.size());
                return out;
            }
            if (!fill()) throw std::runtime_error("connection closed before \"" + std::string(needle) + "\"");
        }
    }

    std::string read_exactly(std::size_t len, bool* complete) {
        while (buffered_.size() < len) {
            if (!fill()) {
                *complete = false;
                std::string out = std::move(buffered_);
                buffered_.clear();
                return out;
            }
        }
        std::string out = buffered_.substr(0, len);
        buffered_.erase(0, len);
        *complete = true;
        return out;
    }

    std::string read_to_close() {
        while (fill()) {
        }
        std::string out = std::move(buffered_);
        buffered_.clear();
        return out;
    }

    void read_chunked(Response& r) {
        try {
            for (;;) {
                std::string line = read_until("\r\n");
                std::size_t size = std::stoul(line, nullptr, 16);
                if (size == 0) break;
                bool whole = false;
                r.body += read_exactly(size, &whole);
                if (!whole) return;
                read_until("\r\n");
            }
            for (;;) {  // trailers, then the empty line
                std::string line = read_until("\r\n");
                if (line == "\r\n") break;
                auto colon = line.find(':');
                std::string value = line.substr(colon + 1, line.size() - colon - 3);
                while (!value.empty() && value.front() == ' ') value.erase(0, 1);
                r.trailers.emplace_back(lower(line.substr(0, colon)), value);
            }
            r.complete = true;
        } catch (const std::runtime_error&) {
            r.complete = false;  // cut off
        }
    }

    static void parse_head(const std::string& head, Response& r) {
        std::size_t eol = head.find("\r\n");
        std::string status_line = head.substr(0, eol);
        auto sp = status_line.find(' ');
        r.version = status_line.substr(0, sp);
        r.status = std::stoi(status_line.substr(sp + 1, 3));
        std::size_t at = eol + 2;
        while (at < head.size()) {
            std::size_t end = head.find("\r\n", at);
            if (end == at || end == std::string::npos) break;
            std::string line = head.substr(at, end - at);
            auto colon = line.find(':');
            std::string value = line.substr(colon + 1);
            while (!value.empty() && value.front() == ' ') value.erase(0, 1);
            r.headers.emplace_back(lower(line.substr(0, colon)), value);
            at = end + 2;
        }
    }

    int fd_ = -1;
    int timeout_ms_;
    std::string buffered_;
};

/// GET `target` on a fresh connection.
inline Response get(int port, std::string_view target, std::string_view extra_headers = {}) {
    Connection c(port);
    std::string req = "GET " + std::string(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + std::string(extra_headers) +
                      "Connection: close\r\n\r\n";
    return c.request(req);
}

/// A request with a body on a fresh connection.
inline Response post(int port, std::string_view target, std::string_view body, std::string_view extra_headers = {}) {
    Connection c(port);
    std::string req = "POST " + std::string(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                      std::string(extra_headers) + "Content-Length: " + std::to_string(body.size()) +
                      "\r\nConnection: close\r\n\r\n";
    c.send(req);
    c.send(body);
    return c.read_response();
}

/// The port of a URL like http://127.0.0.1:41234.
inline int port_of(const std::string& url) {
    auto colon = url.rfind(':');
    return std::stoi(url.substr(colon + 1));
}

/// Runs a shell command and returns its standard output (exit status in *status).
inline std::string run(const std::string& command, int* status = nullptr) {
    std::string out;
    FILE* p = ::popen(command.c_str(), "r");
    if (!p) throw std::runtime_error("popen failed");
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    int rc = ::pclose(p);
    if (status) *status = rc;
    return out;
}

}  // namespace testhttp

#endif
