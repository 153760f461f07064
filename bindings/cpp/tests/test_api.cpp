// test_api.cpp: the wrapper's types and errors: kestrel::error codes and messages for bad input,
// move-only RAII types, ownership of handlers and hooks, server lifecycle errors.
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <netinet/in.h>

#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "support.hpp"

using namespace testsupport;
using kestrel::Dispatch;

// ---- the types are move-only owners (or views) ----------------------------------------------

template <class T>
constexpr bool move_only_v = !std::is_copy_constructible_v<T> && !std::is_copy_assignable_v<T> &&
                             std::is_nothrow_move_constructible_v<T> && std::is_nothrow_move_assignable_v<T>;

static_assert(move_only_v<kestrel::Options>);
static_assert(move_only_v<kestrel::Server>);
static_assert(move_only_v<kestrel::Request>);
static_assert(move_only_v<kestrel::Response>);
static_assert(std::is_base_of_v<std::runtime_error, kestrel::error>);
static_assert(std::is_nothrow_destructible_v<kestrel::Response>);

// Zero-copy sends refuse what would dangle: a temporary std::string with a release callback, and
// a container passed by lvalue (it must be moved in).
struct Noop {
    void operator()() const {}
};
template <class T, class = void>
struct can_lend : std::false_type {};
template <class T>
struct can_lend<T, std::void_t<decltype(std::declval<kestrel::Response&>().send_owned(std::declval<T>(), Noop{}))>>
    : std::true_type {};
template <class T, class = void>
struct can_give : std::false_type {};
template <class T>
struct can_give<T, std::void_t<decltype(std::declval<kestrel::Response&>().send_owned(std::declval<T>()))>>
    : std::true_type {};
static_assert(can_lend<std::string_view>::value);
static_assert(!can_lend<std::string>::value);
static_assert(can_give<std::string>::value);
static_assert(can_give<std::vector<char>>::value);
static_assert(!can_give<std::string&>::value);

TEST(Api, VersionMatchesTheHeader) {
    EXPECT_EQ(kestrel::version(), KESTREL_VERSION_STRING);
    EXPECT_EQ(kestrel::result_name(KESTREL_INVALID_URL), "KESTREL_INVALID_URL");
    EXPECT_EQ(kestrel::to_string(kestrel::LogLevel::Warn), "warn");
}

// ---- errors carry the code and the library's message ----------------------------------------

TEST(Errors, BadUrlThrowsInvalidUrlWithTheLibraryMessage) {
    kestrel::Options options;
    try {
        options.urls("ftp://127.0.0.1:80");
        FAIL() << "a bad URL was accepted";
    } catch (const kestrel::error& e) {
        EXPECT_EQ(e.code(), static_cast<kestrel_result>(KESTREL_INVALID_URL));
        EXPECT_EQ(e.name(), "KESTREL_INVALID_URL");
        EXPECT_FALSE(e.message().empty());
        EXPECT_NE(e.message().find("ftp"), std::string::npos) << e.message();
        std::string what = e.what();
        EXPECT_NE(what.find("kestrel_options_add_urls"), std::string::npos) << what;
        EXPECT_NE(what.find("KESTREL_INVALID_URL"), std::string::npos) << what;
        EXPECT_NE(what.find(e.message()), std::string::npos) << what;
    }
    // As a std::runtime_error too.
    EXPECT_THROW(options.urls("http://[::1"), std::runtime_error);
    // The options stay usable after a failed call.
    EXPECT_NO_THROW(options.urls("http://127.0.0.1:0"));
}

static kestrel_result code_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const kestrel::error& e) {
        EXPECT_FALSE(e.message().empty()) << "no message for " << e.name();
        return e.code();
    }
    return KESTREL_OK;
}

TEST(Errors, OutOfRangeSettingsThrowInvalidArgument) {
    kestrel::Options options;
    EXPECT_EQ(code_of([&] { options.io_threads(0); }), static_cast<kestrel_result>(KESTREL_INVALID_ARGUMENT));
    EXPECT_EQ(code_of([&] { options.pool_threads(0); }), static_cast<kestrel_result>(KESTREL_INVALID_ARGUMENT));
    EXPECT_EQ(code_of([&] { options.response_buffer_size(0); }), static_cast<kestrel_result>(KESTREL_INVALID_ARGUMENT));
    EXPECT_EQ(code_of([&] { options.dispatch(static_cast<Dispatch>(7)); }),
              static_cast<kestrel_result>(KESTREL_INVALID_ARGUMENT));
    EXPECT_EQ(code_of([&] { options.listen_fd(-1); }), static_cast<kestrel_result>(KESTREL_INVALID_ARGUMENT));
    EXPECT_EQ(code_of([&] { options.io_threads(2).pool_threads(3).server_header(false).response_buffer_size(1024); }),
              static_cast<kestrel_result>(KESTREL_OK));
}

TEST(Errors, ServerWithoutHandlerOutsidePullMode) {
    kestrel::Options options = local_options();
    try {
        kestrel::Server server(std::move(options));
        FAIL() << "a server without a handler was built";
    } catch (const kestrel::error& e) {
        EXPECT_EQ(e.code(), static_cast<kestrel_result>(KESTREL_INVALID_ARGUMENT));
        EXPECT_NE(e.message().find("handler"), std::string::npos) << e.message();
    }
    // Consumed on the failure path too.
    EXPECT_EQ(options.native(), nullptr);
}

TEST(Errors, MovedFromOptionsThrowInsteadOfCrashing) {
    kestrel::Options options;
    kestrel::Options taken(std::move(options));
    EXPECT_EQ(options.native(), nullptr);
    EXPECT_EQ(code_of([&] { options.urls("http://127.0.0.1:0"); }), static_cast<kestrel_result>(KESTREL_NULL_ARGUMENT));
    EXPECT_EQ(code_of([&] { options.handler([](kestrel::Request&, kestrel::Response&) {}); }),
              static_cast<kestrel_result>(KESTREL_NULL_ARGUMENT));
    EXPECT_EQ(code_of([&] { kestrel::Server s(std::move(options)); }), static_cast<kestrel_result>(KESTREL_NULL_ARGUMENT));
    EXPECT_NO_THROW(taken.urls("http://127.0.0.1:0"));
}

TEST(Errors, BindFailureNamesTheAddress) {
    auto handler = [](kestrel::Request&, kestrel::Response& res) { res.send("x"); };
    Running first(std::move(local_options().handler(handler)));
    kestrel::Options options;
    options.urls("http://127.0.0.1:" + std::to_string(first.port)).handler(handler);
    kestrel::Server second(std::move(options));
    try {
        second.start();
        FAIL() << "bound a port in use";
    } catch (const kestrel::error& e) {
        EXPECT_EQ(e.code(), static_cast<kestrel_result>(KESTREL_BIND_FAILED));
        EXPECT_NE(e.message().find(std::to_string(first.port)), std::string::npos) << e.message();
    }
    EXPECT_EQ(code_of([&] { first.server.start(); }), static_cast<kestrel_result>(KESTREL_INVALID_STATE));
}

// ---- RAII: the library owns and frees what the wrapper hands it -----------------------------

/// A handler that counts its live copies.
struct CountedHandler {
    std::shared_ptr<std::atomic<int>> live;
    explicit CountedHandler(std::shared_ptr<std::atomic<int>> counter) : live(std::move(counter)) { ++*live; }
    CountedHandler(const CountedHandler& o) : live(o.live) { ++*live; }
    CountedHandler(CountedHandler&& o) noexcept : live(o.live) { ++*live; }
    ~CountedHandler() { --*live; }
    CountedHandler& operator=(const CountedHandler&) = delete;
    void operator()(kestrel::Request&, kestrel::Response& res) const { res.send("counted"); }
};

TEST(Raii, HandlerIsFreedWithTheOptions) {
    auto live = std::make_shared<std::atomic<int>>(0);
    {
        kestrel::Options options;
        options.handler(CountedHandler(live));
        EXPECT_EQ(live->load(), 1);
        options.handler(CountedHandler(live));  // the first is released when replaced
        EXPECT_EQ(live->load(), 1);
    }
    EXPECT_EQ(live->load(), 0);
}

TEST(Raii, HandlerHooksAndLoggerAreFreedWithTheServer) {
    auto live = std::make_shared<std::atomic<int>>(0);
    auto hook_state = std::make_shared<int>(0);
    auto log_state = std::make_shared<int>(0);
    {
        kestrel::Options options = local_options();
        options.handler(CountedHandler(live))
            .thread_hooks([hook_state] {}, [hook_state] {})
            .log([log_state](kestrel::LogLevel, std::string_view, std::string_view) {});
        kestrel::Server moved_from(std::move(options));
        kestrel::Server server(std::move(moved_from));
        EXPECT_EQ(moved_from.native(), nullptr);
        server.start();
        auto r = testhttp::get(testhttp::port_of(server.address()), "/");
        EXPECT_EQ(r.body, "counted");
        EXPECT_EQ(live->load(), 1);
        EXPECT_GT(hook_state.use_count(), 1);
        EXPECT_GT(log_state.use_count(), 1);
    }
    EXPECT_EQ(live->load(), 0);
    EXPECT_EQ(hook_state.use_count(), 1);
    EXPECT_EQ(log_state.use_count(), 1);
}

TEST(Raii, ServerMoveAssignmentReleasesTheOldServer) {
    auto live = std::make_shared<std::atomic<int>>(0);
    kestrel::Options a = local_options();
    a.handler(CountedHandler(live));
    kestrel::Server server(std::move(a));
    EXPECT_EQ(live->load(), 1);
    kestrel::Options b = local_options();
    b.handler([](kestrel::Request&, kestrel::Response& res) { res.send("second"); });
    server = kestrel::Server(std::move(b));
    EXPECT_EQ(live->load(), 0);  // the first server (and its handler) is gone
    server.start();
    EXPECT_EQ(testhttp::get(testhttp::port_of(server.address()), "/").body, "second");
}

TEST(Raii, OptionsMoveAssignmentFreesTheTarget) {
    auto live = std::make_shared<std::atomic<int>>(0);
    kestrel::Options target;
    target.handler(CountedHandler(live));
    kestrel::Options source;
    target = std::move(source);
    EXPECT_EQ(live->load(), 0);
    EXPECT_NE(target.native(), nullptr);
    EXPECT_EQ(source.native(), nullptr);
}

// ---- addresses, endpoints ------------------------------------------------------------------

TEST(Server, AddressesAndListenFd) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(fd, 16), 0);
    socklen_t len = sizeof addr;
    ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    int fd_port = ntohs(addr.sin_port);

    kestrel::Options options = local_options();
    options.listen_fd(fd, kestrel::Protocols::Http1).handler([](kestrel::Request& req, kestrel::Response& res) {
        res.send(req.local_addr());
    });
    kestrel::Server server(std::move(options));
    EXPECT_EQ(server.address_count(), 0u);
    server.start();
    ::close(fd);  // the library works on a duplicate
    auto all = server.addresses();
    ASSERT_EQ(all.size(), 2u);
    EXPECT_EQ(all[0].rfind("http://127.0.0.1:", 0), 0u) << all[0];
    EXPECT_EQ(all[1], "http://127.0.0.1:" + std::to_string(fd_port));
    EXPECT_EQ(code_of([&] { server.address(2); }), static_cast<kestrel_result>(KESTREL_NOT_FOUND));
    EXPECT_EQ(testhttp::get(fd_port, "/").body, "127.0.0.1:" + std::to_string(fd_port));
}

TEST(Server, UnixSocketEndpoint) {
    std::string path = "/tmp/kestrel-cpp-test-" + std::to_string(::getpid()) + ".sock";
    kestrel::Options options;
    options.urls("http://unix:" + path).io_threads(1).handler([](kestrel::Request& req, kestrel::Response& res) {
        res.send(std::string("over ") + std::string(req.remote_addr()));
    });
    kestrel::Server server(std::move(options));
    server.start();
    EXPECT_EQ(server.address(), "http://unix:" + path);
    testhttp::Connection c(path);
    auto r = c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "over unix:");
    c.close();
    server.stop(1s);
    EXPECT_NE(::access(path.c_str(), F_OK), 0) << "the socket file stays after stop";
}

TEST(Server, StopIsIdempotentAndNextRequestNeedsPullMode) {
    Running running(std::move(local_options().handler([](kestrel::Request&, kestrel::Response& res) { res.send(); })));
    EXPECT_EQ(code_of([&] { running.server.next_request(10ms); }), static_cast<kestrel_result>(KESTREL_INVALID_STATE));
    EXPECT_EQ(running.server.stop(1s), 0u);
    EXPECT_EQ(running.server.stop(1s), 0u);
}

TEST(Server, ServerHeaderCanBeTurnedOff) {
    kestrel::Options options = local_options();
    options.server_header(false).handler([](kestrel::Request&, kestrel::Response& res) { res.send("anonymous"); });
    Running running(std::move(options));
    auto r = testhttp::get(running.port, "/");
    EXPECT_EQ(r.body, "anonymous");
    EXPECT_FALSE(r.has_header("server"));
}
