// echo.cpp: request bodies in, response bodies out, in each dispatch mode.
//
//   echo [--urls "URL[;URL...]"] [--dispatch pool|inline|pull] [--workers N]
//
// POST /echo answers with the request body; GET /stream?n=N streams N numbered lines with a
// trailer (x-lines) for clients that send `TE: trailers`; anything else is a 404.
//
// POOL: blocking reads and writes on the handler threads. INLINE: handlers run on I/O threads and
// must not block, so the body is read with read_all_async and /stream moves its Response to a
// thread of its own. PULL: N host threads take requests with next_request and run the POOL code.
#include <kestrel.hpp>

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

long query_number(std::string_view query, std::string_view key, long fallback) {
    while (!query.empty()) {
        std::string_view pair = query.substr(0, query.find('&'));
        query.remove_prefix(std::min(query.size(), pair.size() + 1));
        if (pair.size() > key.size() && pair.substr(0, key.size()) == key && pair[key.size()] == '=') {
            return std::strtol(std::string(pair.substr(key.size() + 1)).c_str(), nullptr, 10);
        }
    }
    return fallback;
}

/// Streams `n` lines, then a trailer (blocking writes: not on an I/O thread).
void stream(kestrel::Response& res, long n) {
    res.set_header("content-type", "text/plain").add_trailer("x-lines", std::to_string(n));
    for (long i = 1; i <= n; ++i) res.write("line " + std::to_string(i) + "\n");
    res.end();
}

/// The blocking handler (POOL threads and PULL workers).
void handle_blocking(kestrel::Request& req, kestrel::Response& res) {
    if (req.method() == "POST" && req.path() == "/echo") {
        if (auto type = req.header("content-type")) res.set_header("content-type", *type);
        char chunk[16384];
        while (std::size_t n = req.read(chunk, sizeof chunk)) res.write(chunk, n);
        res.end();
    } else if (req.method() == "GET" && req.path() == "/stream") {
        stream(res, query_number(req.query(), "n", 10));
    } else {
        res.status(404).send("not found\n");
    }
}

/// The non-blocking handler (INLINE: on an I/O thread).
void handle_inline(kestrel::Request& req, kestrel::Response& res) {
    if (req.method() == "POST" && req.path() == "/echo") {
        if (auto type = req.header("content-type")) res.set_header("content-type", *type);
        req.read_all_async(
            [res = std::move(res)](kestrel_result rc, std::string body) mutable {
                if (rc == KESTREL_OK) res.send_owned(std::move(body));  // no copy
                else if (rc == KESTREL_BUFFER_TOO_SMALL) res.status(413).send("too large\n");
                // else the client left: destroying `res` completes it
            },
            16 * 1024 * 1024);
    } else if (req.method() == "GET" && req.path() == "/stream") {
        long n = query_number(req.query(), "n", 10);
        std::thread([res = std::move(res), n]() mutable {
            try {
                stream(res, n);
            } catch (const kestrel::error& e) {
                if (e.code() != KESTREL_CANCELLED) std::fprintf(stderr, "echo: %s\n", e.what());
            }
        }).detach();
    } else {
        res.status(404).send("not found\n");
    }
}

int usage() {
    std::fprintf(stderr, "usage: echo [--urls \"URL[;URL...]\"] [--dispatch pool|inline|pull] [--workers N]\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::string urls = "http://localhost:5000";
    std::string mode = "pool";
    long workers = 4;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "--urls" && i + 1 < argc) urls = argv[++i];
        else if (arg == "--dispatch" && i + 1 < argc) mode = argv[++i];
        else if (arg == "--workers" && i + 1 < argc) workers = std::strtol(argv[++i], nullptr, 10);
        else return usage();
    }
    if ((mode != "pool" && mode != "inline" && mode != "pull") || workers <= 0) return usage();

    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    try {
        kestrel::Options options;
        options.urls(urls);
        if (mode == "pool") {
            options.dispatch(kestrel::Dispatch::Pool).handler(handle_blocking);
        } else if (mode == "inline") {
            options.dispatch(kestrel::Dispatch::Inline).handler(handle_inline);
        } else {
            options.dispatch(kestrel::Dispatch::Pull);
        }
        kestrel::Server server(std::move(options));
        server.start();
        for (const std::string& url : server.addresses()) std::printf("listening on %s (%s)\n", url.c_str(), mode.c_str());
        std::fflush(stdout);

        std::vector<std::thread> pullers;
        if (mode == "pull") {
            for (long i = 0; i < workers; ++i) {
                pullers.emplace_back([&server] {
                    while (kestrel::Next next = server.next_request()) {  // false once stopped
                        auto& [req, res] = *next;
                        try {
                            handle_blocking(req, res);
                        } catch (const std::exception& e) {
                            std::fprintf(stderr, "echo: %s\n", e.what());  // `res` fails: a 500
                        }
                    }
                });
            }
        }

        int sig = 0;
        sigwait(&stop_signals, &sig);
        server.stop(std::chrono::seconds(5));
        for (auto& t : pullers) t.join();
    } catch (const kestrel::error& e) {
        std::fprintf(stderr, "echo: %s\n", e.what());
        return 1;
    }
    return 0;
}
