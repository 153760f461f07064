// test_http.cpp: real HTTP traffic to 127.0.0.1 through the wrapper, in POOL mode unless said:
// hello, the request head, response headers, bodies in and out (copied, zero-copy, streamed,
// files), trailers, HTTP/2, exceptions becoming 500s, completion rules, deferred completion,
// concurrency, aborts, hooks and logging.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include "support.hpp"

using namespace testsupport;
using kestrel::Dispatch;
using kestrel::LogLevel;
using kestrel::Request;
using kestrel::Response;

/// Captures stderr for a scope (released even when the test throws).
class StderrCapture {
public:
    StderrCapture() { testing::internal::CaptureStderr(); }
    StderrCapture(const StderrCapture&) = delete;
    StderrCapture& operator=(const StderrCapture&) = delete;
    ~StderrCapture() {
        if (!taken_) testing::internal::GetCapturedStderr();
    }
    std::string take() {
        taken_ = true;
        return testing::internal::GetCapturedStderr();
    }

private:
    bool taken_ = false;
};

static std::string pattern(std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
    return s;
}

TEST(Http, Hello) {
    Running running(std::move(local_options().handler([](Request&, Response& res) {
        res.set_header("content-type", "text/plain").send_static("Hello, World!");
    })));
    auto r = testhttp::get(running.port, "/");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "Hello, World!");
    EXPECT_EQ(r.header("content-type"), "text/plain");
    EXPECT_EQ(r.header("content-length"), "13");
    EXPECT_EQ(r.header("server"), "kestrel");
    EXPECT_TRUE(r.complete);
}

TEST(Http, HeadGetsTheHeadOnly) {
    Running running(std::move(local_options().handler([](Request&, Response& res) { res.send("twelve bytes"); })));
    testhttp::Connection c(running.port);
    auto r = c.request("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", true);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.header("content-length"), "12");
    // The connection is still in sync: the next response is whole.
    auto again = c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(again.body, "twelve bytes");
}

TEST(Http, RequestHead) {
    struct Seen {
        std::map<std::string, std::string> fields;
        std::vector<std::pair<std::string, std::string>> headers, ranged;
        std::size_t count = 0;
        std::uint64_t connection_id = 0;
        kestrel_result past_end = KESTREL_OK;
        bool head_agrees = false;
    };
    auto seen = std::make_shared<Seen>();
    std::mutex mutex;
    Running running(std::move(local_options().handler([seen, &mutex](Request& req, Response& res) {
        std::lock_guard<std::mutex> lock(mutex);
        auto& f = seen->fields;
        f["method"] = req.method();
        f["scheme"] = req.scheme();
        f["path"] = req.path();
        f["query"] = req.query();
        f["target"] = req.target();
        f["version"] = req.version();
        f["authority"] = req.authority();
        f["remote"] = req.remote_addr();
        f["local"] = req.local_addr();
        f["id"] = req.id();
        f["x-one"] = req.header("X-ONE").value_or("<none>");
        f["x-rep#1"] = req.header("x-rep", 1).value_or("<none>");
        f["x-rep#2"] = req.header("x-rep", 2).value_or("<none>");
        f["missing"] = req.header("missing").value_or("<none>");
        seen->connection_id = req.connection_id();
        seen->count = req.header_count();
        for (auto h : req.headers()) seen->headers.emplace_back(h.name, h.value);
        for (std::size_t i = 0; i < req.header_count(); ++i) {
            auto h = req.header_at(i);
            seen->ranged.emplace_back(h.name, h.value);
        }
        try {
            req.header_at(req.header_count());
        } catch (const kestrel::error& e) {
            seen->past_end = e.code();
        }
        kestrel::Head head = req.head();
        seen->head_agrees = head.method == req.method() && head.path == req.path() && head.query == req.query() &&
                            head.target == req.target() && head.id == req.id() &&
                            head.remote_addr == req.remote_addr() && head.connection_id == req.connection_id() &&
                            head.headers.size() == req.header_count() && head.scheme == "http" &&
                            head.version == "HTTP/1.1" && head.authority == req.authority() &&
                            head.local_addr == req.local_addr();
        res.send();
    })));
    testhttp::Connection c(running.port);
    auto r = c.request(
        "PUT /a/b%20c?x=1&y=2 HTTP/1.1\r\nHost: example.test:81\r\nX-One: first\r\nX-Rep: r0\r\n"
        "X-Rep: r1\r\nContent-Length: 0\r\n\r\n");
    EXPECT_EQ(r.status, 200);
    std::lock_guard<std::mutex> lock(mutex);
    auto& f = seen->fields;
    EXPECT_EQ(f["method"], "PUT");
    EXPECT_EQ(f["scheme"], "http");
    EXPECT_EQ(f["path"], "/a/b%20c");
    EXPECT_EQ(f["query"], "x=1&y=2");
    EXPECT_EQ(f["target"], "/a/b%20c?x=1&y=2");
    EXPECT_EQ(f["version"], "HTTP/1.1");
    EXPECT_EQ(f["authority"], "example.test:81");
    EXPECT_EQ(f["remote"].rfind("127.0.0.1:", 0), 0u) << f["remote"];
    EXPECT_EQ(f["local"], "127.0.0.1:" + std::to_string(running.port));
    EXPECT_NE(f["id"].find(':'), std::string::npos) << f["id"];
    EXPECT_EQ(f["x-one"], "first");
    EXPECT_EQ(f["x-rep#1"], "r1");
    EXPECT_EQ(f["x-rep#2"], "<none>");
    EXPECT_EQ(f["missing"], "<none>");
    EXPECT_GT(seen->connection_id, 0u);
    EXPECT_EQ(seen->count, 5u);
    ASSERT_EQ(seen->headers.size(), 5u);
    EXPECT_EQ(seen->headers, seen->ranged);
    EXPECT_EQ(seen->headers[0], std::make_pair(std::string("host"), std::string("example.test:81")));
    EXPECT_EQ(seen->headers[2], std::make_pair(std::string("x-rep"), std::string("r0")));
    EXPECT_EQ(seen->headers[3], std::make_pair(std::string("x-rep"), std::string("r1")));
    EXPECT_EQ(seen->past_end, static_cast<kestrel_result>(KESTREL_NOT_FOUND));
    EXPECT_TRUE(seen->head_agrees);
}

TEST(Http, ResponseStatusAndHeaders) {
    struct Codes {
        kestrel_result bad_name = KESTREL_OK, bad_value = KESTREL_OK, bad_status = KESTREL_OK,
                       after_start = KESTREL_OK;
    };
    auto codes = std::make_shared<Codes>();
    Running running(std::move(local_options().handler([codes](Request& req, Response& res) {
        auto code = [](const std::function<void()>& f) -> kestrel_result {
            try {
                f();
            } catch (const kestrel::error& e) {
                return e.code();
            }
            return KESTREL_OK;
        };
        if (req.path() == "/stream") {
            res.write("started");
            codes->after_start = code([&] { res.set_header("x-late", "1"); });
            res.end();
            return;
        }
        codes->bad_name = code([&] { res.set_header("bad name", "v"); });
        codes->bad_value = code([&] { res.add_header("x-bad", "a\r\nInjected: yes"); });
        codes->bad_status = code([&] { res.status(99); });
        res.status(201)
            .set_header("x-set", "old")
            .set_header("x-set", "new")
            .add_header("x-multi", "1")
            .add_header("x-multi", "2")
            .add_header("x-gone", "bye")
            .remove_header("x-gone")
            .remove_header("x-never-there")
            .send("created");
    })));
    auto r = testhttp::get(running.port, "/");
    EXPECT_EQ(r.status, 201);
    EXPECT_EQ(r.body, "created");
    EXPECT_EQ(r.header_count("x-set"), 1u);
    EXPECT_EQ(r.header("x-set"), "new");
    EXPECT_EQ(r.header_count("x-multi"), 2u);
    EXPECT_FALSE(r.has_header("x-gone"));
    EXPECT_FALSE(r.has_header("injected"));
    EXPECT_EQ(codes->bad_name, static_cast<kestrel_result>(KESTREL_INVALID_HEADER));
    EXPECT_EQ(codes->bad_value, static_cast<kestrel_result>(KESTREL_INVALID_HEADER));
    EXPECT_EQ(codes->bad_status, static_cast<kestrel_result>(KESTREL_INVALID_ARGUMENT));

    auto s = testhttp::get(running.port, "/stream");
    EXPECT_EQ(s.body, "started");
    EXPECT_FALSE(s.has_header("x-late"));
    EXPECT_EQ(codes->after_start, static_cast<kestrel_result>(KESTREL_INVALID_STATE));
}

TEST(Http, EchoesTheRequestBodyWithBlockingReads) {
    Running running(std::move(local_options().handler([](Request& req, Response& res) {
        if (auto type = req.header("content-type")) res.set_header("content-type", *type);
        if (req.path() == "/all") {
            res.send(req.read_all());
            return;
        }
        char buf[3000];  // odd size: many reads, many writes
        while (std::size_t n = req.read(buf, sizeof buf)) res.write(buf, n);
        res.end();
    })));
    std::string body = pattern(300 * 1024);
    auto streamed = testhttp::post(running.port, "/stream", body, "Content-Type: application/x-test\r\n");
    EXPECT_EQ(streamed.status, 200);
    EXPECT_TRUE(streamed.chunked);
    EXPECT_EQ(streamed.header("content-type"), "application/x-test");
    EXPECT_TRUE(streamed.body == body) << "echoed " << streamed.body.size() << " of " << body.size() << " bytes";

    auto whole = testhttp::post(running.port, "/all", body);
    EXPECT_EQ(whole.header("content-length"), std::to_string(body.size()));
    EXPECT_TRUE(whole.body == body);

    // A chunked request body, with Expect: 100-continue.
    testhttp::Connection c(running.port);
    auto r = c.request(
        "POST /all HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    EXPECT_EQ(r.body, "hello world");
}

TEST(Http, ReadAllEnforcesItsLimit) {
    Running running(std::move(local_options().handler([](Request& req, Response& res) {
        try {
            res.send(req.read_all(1000));
        } catch (const kestrel::error& e) {
            if (e.code() != KESTREL_BUFFER_TOO_SMALL) throw;
            res.status(413).send(e.message());
        }
    })));
    EXPECT_EQ(testhttp::post(running.port, "/", std::string(1000, 'x')).status, 200);
    auto big = testhttp::post(running.port, "/", std::string(5000, 'x'));
    EXPECT_EQ(big.status, 413);
    EXPECT_NE(big.body.find("1000"), std::string::npos) << big.body;
}

TEST(Http, StreamsWithFlushAndTrailers) {
    Running running(std::move(local_options().handler([](Request&, Response& res) {
        res.set_header("content-type", "text/plain").add_trailer("x-checksum", "abc123");
        for (int i = 0; i < 50; ++i) {
            res.write("line " + std::to_string(i) + "\n");
            if (i % 10 == 0) res.flush();
        }
        res.end();
    })));
    std::string expected;
    for (int i = 0; i < 50; ++i) expected += "line " + std::to_string(i) + "\n";

    auto plain = testhttp::get(running.port, "/");
    EXPECT_TRUE(plain.chunked);
    EXPECT_TRUE(plain.complete);
    EXPECT_EQ(plain.body, expected);
    EXPECT_EQ(plain.header("trailer"), "x-checksum");
    EXPECT_TRUE(plain.trailers.empty()) << "trailers sent to a client that did not ask";

    auto asked = testhttp::get(running.port, "/", "TE: trailers\r\n");
    EXPECT_EQ(asked.body, expected);
    EXPECT_EQ(asked.trailer("x-checksum"), "abc123");
}

TEST(Http, Http2HelloAndTrailersThroughCurl) {
    Running running(std::move(local_options().handler([](Request& req, Response& res) {
        res.set_header("x-version", req.version());
        if (req.path() == "/trailers") {
            res.write("body");
            res.add_trailer("x-after", "yes");
            res.end();
        } else {
            res.send_static("Hello, World!");
        }
    })));
    std::string base = "curl -s --max-time 10 --http2-prior-knowledge -D - http://127.0.0.1:" +
                       std::to_string(running.port);
    int status = 0;
    std::string out = testhttp::run(base + "/ 2>&1", &status);
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find("HTTP/2 200"), std::string::npos) << out;
    EXPECT_NE(out.find("x-version: HTTP/2"), std::string::npos) << out;
    EXPECT_NE(out.find("Hello, World!"), std::string::npos) << out;
    // curl prints HTTP/2 trailers after the body with -D -.
    out = testhttp::run(base + "/trailers 2>&1", &status);
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find("body"), std::string::npos) << out;
    EXPECT_NE(out.find("x-after: yes"), std::string::npos) << out;
}

TEST(Http, ZeroCopySends) {
    auto released = std::make_shared<std::atomic<int>>(0);
    Running running(std::move(local_options().handler([released](Request& req, Response& res) {
        std::string_view p = req.path();
        if (p == "/string") {
            res.send_owned(std::string(100000, 's'));
        } else if (p == "/vector") {
            res.send_owned(std::vector<std::uint8_t>{'b', 'y', 't', 'e', 's'});
        } else if (p == "/release") {
            static const char text[] = "lent bytes";
            res.send_owned(std::string_view(text, sizeof text - 1), [released] { ++*released; });
        } else {
            res.send(static_cast<const void*>("raw pointer"), 11);
        }
    })));
    EXPECT_EQ(testhttp::get(running.port, "/string").body, std::string(100000, 's'));
    EXPECT_EQ(testhttp::get(running.port, "/vector").body, "bytes");
    EXPECT_EQ(testhttp::get(running.port, "/release").body, "lent bytes");
    EXPECT_TRUE(eventually([&] { return released->load() == 1; }));
    EXPECT_EQ(testhttp::get(running.port, "/").body, "raw pointer");
    EXPECT_EQ(released->load(), 1);
}

TEST(Http, SendFileAndFd) {
    std::string path = "/tmp/kestrel-cpp-file-" + std::to_string(::getpid());
    std::string content = pattern(200000);
    {
        std::ofstream out(path, std::ios::binary);
        out << content;
    }
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    auto missing_code = std::make_shared<std::atomic<kestrel_result>>(KESTREL_OK);
    Running running(std::move(local_options().handler([=](Request& req, Response& res) {
        std::string_view p = req.path();
        if (p == "/file") {
            res.send_file(path);
        } else if (p == "/range") {
            res.send_file(path, 1000, 500);
        } else if (p == "/fd") {
            res.send_fd(fd, 10);
        } else {
            try {
                res.send_file(path + ".missing");
            } catch (const kestrel::error& e) {
                *missing_code = e.code();
                EXPECT_TRUE(res.pending()) << "a failed send_file completed the response";
                res.status(404).send("no such file");
            }
        }
    })));
    auto whole = testhttp::get(running.port, "/file");
    EXPECT_EQ(whole.header("content-length"), std::to_string(content.size()));
    EXPECT_TRUE(whole.body == content);
    EXPECT_EQ(testhttp::get(running.port, "/range").body, content.substr(1000, 500));
    EXPECT_TRUE(testhttp::get(running.port, "/fd").body == content.substr(10));
    auto missing = testhttp::get(running.port, "/missing");
    EXPECT_EQ(missing.status, 404);
    EXPECT_EQ(missing.body, "no such file");
    EXPECT_EQ(missing_code->load(), static_cast<kestrel_result>(KESTREL_IO_ERROR));
    running.server.stop(1s);
    ::close(fd);
    std::remove(path.c_str());
}

// ---- exceptions and completion -------------------------------------------------------------

TEST(Exceptions, BecomeA500AndTheServerKeepsServing) {
    LogCapture logs;
    Running running(std::move(local_options().log(logs.callback(), LogLevel::Debug).handler([](Request& req, Response& res) {
        std::string_view p = req.path();
        if (p == "/std") throw std::runtime_error("boom from the handler");
        if (p == "/int") throw 42;
        if (p == "/kestrel") res.set_header("bad header", "x");  // throws kestrel::error
        res.send("fine");
    })));
    testhttp::Connection c(running.port);
    auto r = c.request("GET /std HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(r.status, 500);
    EXPECT_EQ(r.body, "");
    EXPECT_TRUE(logs.wait_for(LogLevel::Error, {"boom from the handler", "500"}));
    // The same connection serves the next request.
    auto next = c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(next.status, 200);
    EXPECT_EQ(next.body, "fine");

    EXPECT_EQ(c.request("GET /int HTTP/1.1\r\nHost: x\r\n\r\n").status, 500);
    EXPECT_TRUE(logs.wait_for(LogLevel::Error, {"not derived from std::exception"}));
    EXPECT_EQ(c.request("GET /kestrel HTTP/1.1\r\nHost: x\r\n\r\n").status, 500);
    EXPECT_TRUE(logs.wait_for(LogLevel::Error, {"KESTREL_INVALID_HEADER"}));
    EXPECT_EQ(c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").body, "fine");
    // Records carry the request id and the application category.
    bool categorised = false;
    for (const auto& rec : logs.records())
        categorised = categorised || (rec.category == "kestrel.application" && rec.message.rfind("request ", 0) == 0);
    EXPECT_TRUE(categorised);
}

TEST(Exceptions, WithoutALogCallbackGoToStderr) {
    Running running(std::move(local_options().handler([](Request&, Response&) {
        throw std::runtime_error("stderr-bound failure");
    })));
    StderrCapture capture;
    auto r = testhttp::get(running.port, "/");
    running.server.stop(1s);
    std::string err = capture.take();
    EXPECT_EQ(r.status, 500);
    EXPECT_NE(err.find("stderr-bound failure"), std::string::npos) << err;
}

TEST(Exceptions, MidStreamCutTheResponseOff) {
    LogCapture logs;
    Running running(std::move(local_options().log(logs.callback()).handler([](Request&, Response& res) {
        res.write("partial");
        res.flush();
        throw std::runtime_error("died while streaming");
    })));
    // The connection is closed: either before the head got out (the library may cut a flushed
    // response off before the client sees it) or in the middle of the chunked body.
    bool cut_off = false;
    try {
        auto r = testhttp::get(running.port, "/");
        EXPECT_EQ(r.status, 200);
        EXPECT_TRUE(r.chunked);
        cut_off = !r.complete;
    } catch (const std::runtime_error& e) {
        cut_off = std::string(e.what()).find("connection closed") != std::string::npos;
    }
    EXPECT_TRUE(cut_off) << "a failed stream looked whole";
    EXPECT_TRUE(logs.wait_for(LogLevel::Error, {"died while streaming", "cut off"}));
}

TEST(Exceptions, AfterHandingTheResponseOffLeaveItAlone) {
    LogCapture logs;
    std::vector<std::thread> threads;
    std::mutex mutex;
    Running running(std::move(local_options().log(logs.callback()).handler([&](Request&, Response& res) {
        std::lock_guard<std::mutex> lock(mutex);
        threads.emplace_back([res = std::move(res)]() mutable {
            std::this_thread::sleep_for(50ms);
            res.send("answered by another thread");
        });
        throw std::runtime_error("thrown after the hand-off");
    })));
    auto r = testhttp::get(running.port, "/");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "answered by another thread");
    EXPECT_TRUE(logs.wait_for(LogLevel::Error, {"thrown after the hand-off", "left alone"}));
    std::lock_guard<std::mutex> lock(mutex);
    for (auto& t : threads) t.join();
}

TEST(Completion, AResponseLeftUncompletedFailsWithA500) {
    LogCapture logs;
    Running running(std::move(local_options().log(logs.callback()).handler([](Request& req, Response& res) {
        if (req.path() == "/dropped") {
            Response taken = std::move(res);  // destroyed at the end of this scope, uncompleted
            return;
        }
        res.set_header("x-ignored", "1");  // the handler forgets to complete
    })));
    auto r = testhttp::get(running.port, "/");
    EXPECT_EQ(r.status, 500);
    EXPECT_FALSE(r.has_header("x-ignored"));
    EXPECT_TRUE(logs.wait_for(LogLevel::Error, {"without completing"}));
    EXPECT_EQ(testhttp::get(running.port, "/dropped").status, 500);
}

TEST(Completion, ExactlyOnceIsEnforcedByTheType) {
    struct Seen {
        kestrel_result second_send = KESTREL_OK, header_after = KESTREL_OK, moved_from = KESTREL_OK;
        bool pending_before = false, pending_after = true, first_result = false;
    };
    auto seen = std::make_shared<Seen>();
    auto done = std::make_shared<Latch>();
    Running running(std::move(local_options().handler([seen, done](Request&, Response& res) {
        seen->pending_before = res.pending() && static_cast<bool>(res);
        seen->first_result = res.send("once");
        seen->pending_after = res.pending();
        try {
            res.send("twice");
        } catch (const kestrel::error& e) {
            seen->second_send = e.code();
        }
        try {
            res.set_header("x", "y");
        } catch (const kestrel::error& e) {
            seen->header_after = e.code();
        }
        Response empty;
        try {
            empty.end();
        } catch (const kestrel::error& e) {
            seen->moved_from = e.code();
        }
        res.fail();  // no-op on a completed response
        done->open();
    })));
    auto r = testhttp::get(running.port, "/");
    ASSERT_TRUE(done->wait());  // the handler goes on after the client got its response
    EXPECT_EQ(r.body, "once");
    EXPECT_TRUE(seen->pending_before);
    EXPECT_TRUE(seen->first_result);
    EXPECT_FALSE(seen->pending_after);
    EXPECT_EQ(seen->second_send, static_cast<kestrel_result>(KESTREL_ALREADY_COMPLETED));
    EXPECT_EQ(seen->header_after, static_cast<kestrel_result>(KESTREL_ALREADY_COMPLETED));
    EXPECT_EQ(seen->moved_from, static_cast<kestrel_result>(KESTREL_ALREADY_COMPLETED));
}

TEST(Completion, SendAfterStreamingStartedThrowsAndKeepsTheResponse) {
    auto code = std::make_shared<std::atomic<kestrel_result>>(KESTREL_OK);
    Running running(std::move(local_options().handler([code](Request&, Response& res) {
        res.write("streamed ");
        try {
            res.send("whole");
        } catch (const kestrel::error& e) {
            *code = e.code();
        }
        res.write("and ended");
        res.end();
    })));
    auto r = testhttp::get(running.port, "/");
    EXPECT_EQ(r.body, "streamed and ended");
    EXPECT_EQ(code->load(), static_cast<kestrel_result>(KESTREL_INVALID_STATE));
}

TEST(Completion, MovedRequestAndResponseCompleteLaterFromAnotherThread) {
    std::vector<std::thread> threads;
    std::mutex mutex;
    std::atomic<bool> emptied{false};
    Latch handler_done;
    Running running(std::move(local_options().handler([&](Request& req, Response& res) {
        std::lock_guard<std::mutex> lock(mutex);
        threads.emplace_back([req = std::move(req), res = std::move(res)]() mutable {
            std::this_thread::sleep_for(30ms);
            std::string body = "deferred " + std::string(req.path());  // use the request first
            Response last = std::move(res);                             // move again
            last.send(body);
        });
        emptied = !req && !res.pending() && !res;
        handler_done.open();
    })));
    auto r = testhttp::get(running.port, "/later");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "deferred /later");
    ASSERT_TRUE(handler_done.wait());
    EXPECT_TRUE(emptied.load());
    std::lock_guard<std::mutex> lock(mutex);
    for (auto& t : threads) t.join();
}

TEST(Completion, MoveAssigningOverAPendingResponseFailsIt) {
    // Two requests in flight; the second handler's Response is assigned over the first's.
    std::mutex mutex;
    Response parked;
    Latch first_parked;
    Running running(std::move(local_options().handler([&](Request& req, Response& res) {
        if (req.path() == "/first") {
            std::lock_guard<std::mutex> lock(mutex);
            parked = std::move(res);
            first_parked.open();
            return;
        }
        first_parked.wait();
        std::lock_guard<std::mutex> lock(mutex);
        parked = std::move(res);  // fails /first (500), takes /second
        parked.send("second");
    })));
    std::thread first([&] { EXPECT_EQ(testhttp::get(running.port, "/first").status, 500); });
    auto second = testhttp::get(running.port, "/second");
    first.join();
    EXPECT_EQ(second.body, "second");
}

// ---- concurrency, aborts, stop --------------------------------------------------------------

TEST(Concurrency, ManyClientsAtOnce) {
    std::atomic<int> in_flight{0}, most{0};
    Running running(std::move(local_options().handler([&](Request& req, Response& res) {
        int now = ++in_flight;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        std::this_thread::sleep_for(5ms);
        --in_flight;
        res.send("echo " + std::string(req.query()));
    })));
    constexpr int clients = 8, per_client = 20;
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < clients; ++t) {
        threads.emplace_back([&, t] {
            testhttp::Connection c(running.port);
            for (int i = 0; i < per_client; ++i) {
                std::string q = std::to_string(t) + "-" + std::to_string(i);
                auto r = c.request("GET /?" + q + " HTTP/1.1\r\nHost: x\r\n\r\n");
                if (r.status == 200 && r.body == "echo " + q) ++ok;
            }
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok.load(), clients * per_client);
    EXPECT_GT(most.load(), 1) << "handlers never overlapped";
    EXPECT_LE(most.load(), 4) << "more handlers at once than pool threads";
}

TEST(Abort, NotifiedWhenTheClientLeaves) {
    Latch entered, notified;
    std::atomic<bool> saw_aborted{false}, completion_result{true}, ran_at_once{false};
    std::atomic<kestrel_result> write_code{KESTREL_OK};
    Running running(std::move(local_options().handler([&](Request& req, Response& res) {
        req.on_abort([&notified] { notified.open(); });
        entered.open();
        if (!notified.wait()) return;
        saw_aborted = req.is_aborted() && res.is_aborted();
        bool ran = false;
        req.on_abort([&ran] { ran = true; });  // already aborted: runs now, on this thread
        ran_at_once = ran;
        try {
            res.write("too late");
        } catch (const kestrel::error& e) {
            write_code = e.code();
        }
        completion_result = res.end();  // counts as the completion, returns false
    })));
    {
        testhttp::Connection c(running.port);
        c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        ASSERT_TRUE(entered.wait());
    }  // the client leaves
    ASSERT_TRUE(eventually([&] { return write_code.load() != KESTREL_OK; }));
    EXPECT_TRUE(saw_aborted.load());
    EXPECT_TRUE(ran_at_once.load());
    EXPECT_EQ(write_code.load(), static_cast<kestrel_result>(KESTREL_CANCELLED));
    EXPECT_TRUE(eventually([&] { return !completion_result.load(); }));
}

TEST(Abort, OnAbortCallbacksAreFreedWhenTheRequestCompletes) {
    auto token = std::make_shared<int>(0);
    Running running(std::move(local_options().handler([token](Request& req, Response& res) {
        req.on_abort([token] {});  // never runs: the request completes normally
        res.on_abort([token] {});
        res.send("ok");
    })));
    EXPECT_EQ(testhttp::get(running.port, "/").body, "ok");
    EXPECT_TRUE(eventually([&] { return token.use_count() == 2; }));  // the test's and the handler's
}

TEST(Abort, StopAbortsRequestsThatOutliveTheTimeout) {
    Latch entered;
    std::atomic<bool> finished{false};
    LogCapture logs;
    Running running(std::move(local_options().log(logs.callback(), LogLevel::Debug).handler([&](Request& req, Response& res) {
        entered.open();
        eventually([&] { return req.is_aborted(); }, 10s);
        res.write("cancelled?");  // throws KESTREL_CANCELLED: logged at debug level only
        finished = true;
    })));
    std::thread client([&] {
        try {
            testhttp::get(running.port, "/");
        } catch (const std::exception&) {
        }
    });
    ASSERT_TRUE(entered.wait());
    EXPECT_EQ(running.server.stop(100ms), 1u);
    client.join();
    EXPECT_TRUE(logs.wait_for(LogLevel::Debug, {"KESTREL_CANCELLED"}));
    EXPECT_FALSE(finished.load());
    for (const auto& rec : logs.records()) {
        EXPECT_FALSE(rec.level == LogLevel::Error && rec.message.find("KESTREL_CANCELLED") != std::string::npos)
            << rec.message;
    }
}

TEST(Abort, StopFromInsideAHandler) {
    kestrel::Server* self = nullptr;
    Latch stopped;
    Running running(std::move(local_options().handler([&](Request&, Response& res) {
        res.send("stopping");
        self->stop(1s);  // scheduled, returns at once
        stopped.open();
    })));
    self = &running.server;
    EXPECT_EQ(testhttp::get(running.port, "/").body, "stopping");
    EXPECT_TRUE(stopped.wait());
    EXPECT_TRUE(eventually([&] {
        try {
            testhttp::Connection c(running.port, 500);
            return false;
        } catch (const std::runtime_error&) {
            return true;  // refused: the listener is gone
        }
    }));
}

// ---- hooks and logging ----------------------------------------------------------------------

TEST(Hooks, RunOncePerPoolThreadAndExceptionsAreLogged) {
    std::atomic<int> started{0}, stopped{0};
    std::mutex mutex;
    std::set<std::string> hook_threads, handler_threads;
    LogCapture logs;
    {
        kestrel::Options options = local_options();
        options.pool_threads(3)
            .log(logs.callback())
            .thread_hooks(
                [&] {
                    std::lock_guard<std::mutex> lock(mutex);
                    hook_threads.insert(thread_name());
                    if (++started == 1) throw std::runtime_error("hook trouble");
                },
                [&] { ++stopped; })
            .handler([&](Request&, Response& res) {
                {
                    std::lock_guard<std::mutex> lock(mutex);
                    handler_threads.insert(thread_name());
                }
                res.send("hooked");
            });
        Running running(std::move(options));
        EXPECT_EQ(testhttp::get(running.port, "/").body, "hooked");
        EXPECT_TRUE(eventually([&] { return started.load() == 3; }));
        EXPECT_EQ(stopped.load(), 0);
    }
    EXPECT_EQ(started.load(), 3);
    EXPECT_EQ(stopped.load(), 3);
    EXPECT_TRUE(logs.wait_for(LogLevel::Error, {"on_start", "hook trouble"}));
    for (const auto& name : hook_threads) EXPECT_EQ(name.rfind("kestrel-handler", 0), 0u) << name;
    ASSERT_EQ(handler_threads.size(), 1u);
    EXPECT_TRUE(hook_threads.count(*handler_threads.begin()));
}

TEST(Logging, LibraryRecordsReachTheCallbackAboveTheMinimum) {
    LogCapture info, errors;
    {
        Running running(std::move(local_options().log(info.callback(), LogLevel::Info).handler([](Request&, Response& res) {
            res.send();
        })));
        EXPECT_TRUE(info.wait_for(LogLevel::Info, {"listening on", std::to_string(running.port)}));
    }
    EXPECT_TRUE(info.wait_for(LogLevel::Info, {"stopped"}));
    {
        Running running(std::move(local_options().log(errors.callback(), LogLevel::Error).handler([](Request&, Response& res) {
            res.send();
        })));
        testhttp::get(running.port, "/");
    }
    for (const auto& rec : errors.records()) EXPECT_EQ(rec.level, LogLevel::Error) << rec.message;
}

TEST(Logging, AThrowingLogCallbackDoesNotHurtTheServer) {
    StderrCapture capture;
    Running running(std::move(local_options()
                                  .log([](LogLevel, std::string_view, std::string_view) { throw std::runtime_error("bad logger"); },
                                       LogLevel::Trace)
                                  .handler([](Request&, Response& res) { res.send("still fine"); })));
    auto r = testhttp::get(running.port, "/");
    running.server.stop(1s);
    std::string err = capture.take();
    EXPECT_EQ(r.body, "still fine");
    EXPECT_NE(err.find("the log callback threw"), std::string::npos) << err;
}
