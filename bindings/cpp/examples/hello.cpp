// hello.cpp: a kestrel server in C++ that answers "Hello, World!".
//
//   hello [--urls "URL[;URL...]"] [--threads N] [--dispatch pool|inline]
//
// GET or HEAD / answers "Hello, World!" (text/plain), anything else a 404, byte for byte like the
// C demo's routes for them (examples-c/demo.c), so bench/cpp.sh can compare the two.
// SIGINT/SIGTERM stop it gracefully.
#include <kestrel.hpp>

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

static int usage() {
    std::fprintf(stderr, "usage: hello [--urls \"URL[;URL...]\"] [--threads N] [--dispatch pool|inline]\n");
    return 2;
}

int main(int argc, char** argv) {
    std::string urls = "http://localhost:5000";
    long threads = 0;
    kestrel::Dispatch dispatch = kestrel::Dispatch::Pool;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "--urls" && i + 1 < argc) {
            urls = argv[++i];
        } else if (arg == "--threads" && i + 1 < argc) {
            threads = std::strtol(argv[++i], nullptr, 10);
            if (threads <= 0) return usage();
        } else if (arg == "--dispatch" && i + 1 < argc) {
            std::string mode = argv[++i];
            if (mode == "inline") dispatch = kestrel::Dispatch::Inline;
            else if (mode != "pool") return usage();
        } else {
            return usage();
        }
    }

    // Block the stop signals before any library thread exists, so only sigwait sees them.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    try {
        kestrel::Options options;
        options.urls(urls).dispatch(dispatch);
        if (threads > 0) options.io_threads(static_cast<std::uint32_t>(threads));
        options.log(
            [](kestrel::LogLevel level, std::string_view category, std::string_view message) {
                std::fprintf(stderr, "%s: %.*s: %.*s\n", kestrel::to_string(level).data(),
                             static_cast<int>(category.size()), category.data(), static_cast<int>(message.size()),
                             message.data());
            },
            kestrel::LogLevel::Warn);
        options.handler([](kestrel::Request& req, kestrel::Response& res) {
            std::string_view method = req.method();
            if ((method == "GET" || method == "HEAD") && req.path() == "/") {
                // A literal lives forever: lent to the library without a copy.
                res.set_header("content-type", "text/plain").send_static("Hello, World!");
            } else {
                res.status(404).send("not found\n");
            }
        });

        kestrel::Server server(std::move(options));
        server.start();
        for (const std::string& url : server.addresses()) std::printf("listening on %s\n", url.c_str());
        std::fflush(stdout);

        int sig = 0;
        sigwait(&stop_signals, &sig);
        std::fprintf(stderr, "hello: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        std::size_t aborted = server.stop(std::chrono::seconds(5));
        std::fprintf(stderr, "hello: stopped (%zu requests aborted)\n", aborted);
    } catch (const kestrel::error& e) {
        std::fprintf(stderr, "hello: %s\n", e.what());
        return 1;
    }
    return 0;
}
