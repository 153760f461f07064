// support.hpp: shared pieces of the C++ binding's tests: a log capture, servers on 127.0.0.1 with
// a port chosen by the system, and waiting helpers.
#ifndef KESTREL_CPP_TESTS_SUPPORT_HPP
#define KESTREL_CPP_TESTS_SUPPORT_HPP

#include <kestrel.hpp>

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "http_client.hpp"

namespace testsupport {

using namespace std::chrono_literals;

struct LogRecord {
    kestrel::LogLevel level;
    std::string category;
    std::string message;
};

/// Collects log records from any thread.
class LogCapture {
public:
    /// The callback for Options::log.
    std::function<void(kestrel::LogLevel, std::string_view, std::string_view)> callback() {
        return [this](kestrel::LogLevel level, std::string_view category, std::string_view message) {
            std::lock_guard<std::mutex> lock(mutex_);
            records_.push_back({level, std::string(category), std::string(message)});
            changed_.notify_all();
        };
    }

    /// Waits up to `timeout` for a record at `level` whose message contains every needle.
    bool wait_for(kestrel::LogLevel level, const std::vector<std::string>& needles,
                  std::chrono::milliseconds timeout = 5s) {
        std::unique_lock<std::mutex> lock(mutex_);
        return changed_.wait_for(lock, timeout, [&] { return find(level, needles); });
    }

    /// Whether a record containing `needle` exists, at any level.
    bool any(const std::string& needle) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto& r : records_) {
            if (r.message.find(needle) != std::string::npos) return true;
        }
        return false;
    }

    std::vector<LogRecord> records() {
        std::lock_guard<std::mutex> lock(mutex_);
        return records_;
    }

private:
    bool find(kestrel::LogLevel level, const std::vector<std::string>& needles) const {
        for (const auto& r : records_) {
            if (r.level != level) continue;
            bool all = true;
            for (const auto& n : needles) all = all && r.message.find(n) != std::string::npos;
            if (all) return true;
        }
        return false;
    }

    std::mutex mutex_;
    std::condition_variable changed_;
    std::vector<LogRecord> records_;
};

/// Options for a test server: one endpoint on 127.0.0.1 with a free port, one I/O thread, and
/// (in POOL mode) four handler threads.
inline kestrel::Options local_options(kestrel::Dispatch mode = kestrel::Dispatch::Pool) {
    kestrel::Options options;
    options.urls("http://127.0.0.1:0").io_threads(1).dispatch(mode);
    if (mode == kestrel::Dispatch::Pool) options.pool_threads(4);
    return options;
}

/// A started server and its port.
struct Running {
    explicit Running(kestrel::Options&& options) : server(std::move(options)) {
        server.start();
        port = testhttp::port_of(server.address(0));
    }
    kestrel::Server server;
    int port = 0;
};

/// Polls `condition` until it holds or `timeout` passes.
inline bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 5s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!condition()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(5ms);
    }
    return true;
}

/// A one-shot flag threads can wait on.
class Latch {
public:
    void open() {
        std::lock_guard<std::mutex> lock(mutex_);
        open_ = true;
        cv_.notify_all();
    }
    bool wait(std::chrono::milliseconds timeout = 5s) {
        std::unique_lock<std::mutex> lock(mutex_);
        return cv_.wait_for(lock, timeout, [&] { return open_; });
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool open_ = false;
};

/// The name of the calling thread.
inline std::string thread_name() {
    char name[32] = {0};
    pthread_getname_np(pthread_self(), name, sizeof name);
    return name;
}

}  // namespace testsupport

#endif
