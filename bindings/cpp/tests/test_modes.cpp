// test_modes.cpp: the dispatch modes. POOL handlers run on handler threads (and most of
// test_http.cpp runs in POOL mode); INLINE handlers run on the I/O thread, where blocking calls
// throw KESTREL_WOULD_BLOCK and the asynchronous forms (read_async, read_all_async, try_write +
// on_writable) take over; PULL hands requests to host threads through Server::next_request.
#include <gtest/gtest.h>

#include <memory>

#include "support.hpp"

using namespace testsupport;
using kestrel::Dispatch;
using kestrel::LogLevel;
using kestrel::Request;
using kestrel::Response;

TEST(Pool, HandlersRunOnHandlerThreads) {
    std::mutex mutex;
    std::string name;
    Running running(std::move(local_options(Dispatch::Pool).handler([&](Request&, Response& res) {
        {
            std::lock_guard<std::mutex> lock(mutex);
            name = thread_name();
        }
        res.send("pooled");
    })));
    EXPECT_EQ(testhttp::get(running.port, "/").body, "pooled");
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_EQ(name.rfind("kestrel-handler", 0), 0u) << name;
}

// ---- INLINE ---------------------------------------------------------------------------------

TEST(Inline, HelloOnTheIoThread) {
    std::mutex mutex;
    std::string name;
    Running running(std::move(local_options(Dispatch::Inline).handler([&](Request& req, Response& res) {
        {
            std::lock_guard<std::mutex> lock(mutex);
            name = thread_name();
        }
        if (req.method() == "GET" && req.path() == "/") {
            res.set_header("content-type", "text/plain").send_static("Hello, World!");
        } else {
            res.status(404).send("not found\n");
        }
    })));
    auto r = testhttp::get(running.port, "/");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "Hello, World!");
    EXPECT_EQ(testhttp::get(running.port, "/nope").status, 404);
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_EQ(name.rfind("kestrel-io", 0), 0u) << name;
}

TEST(Inline, BlockingReadThrowsWouldBlockAndReadAllAsyncEchoes) {
    std::atomic<kestrel_result> blocking_code{KESTREL_OK};
    Running running(std::move(local_options(Dispatch::Inline).handler([&](Request& req, Response& res) {
        char buf[16];
        try {
            req.read(buf, sizeof buf);
        } catch (const kestrel::error& e) {
            blocking_code = e.code();
        }
        req.read_all_async(
            [res = std::move(res)](kestrel_result rc, std::string body) mutable {
                if (rc == KESTREL_BUFFER_TOO_SMALL) {
                    res.status(413).send("too big");
                } else if (rc == KESTREL_OK) {
                    res.send_owned(std::move(body));
                }  // else: the Response is destroyed, which fails it
            },
            200 * 1024);
    })));
    std::string body(150 * 1024, 'q');
    body[1234] = '!';
    auto r = testhttp::post(running.port, "/", body);
    EXPECT_EQ(r.status, 200);
    EXPECT_TRUE(r.body == body) << r.body.size();
    EXPECT_EQ(blocking_code.load(), static_cast<kestrel_result>(KESTREL_WOULD_BLOCK));
    EXPECT_EQ(testhttp::post(running.port, "/", std::string(300 * 1024, 'z')).status, 413);
    EXPECT_EQ(testhttp::post(running.port, "/", "").body, "");
}

/// Set on a thread while it is inside Request::read_async.
static thread_local bool inside_read_async = false;

TEST(Inline, ReadAsyncDeliversChunksLater) {
    struct Reader {
        Response res;
        Request req;
        char buf[7];
        std::string body;
        std::atomic<int>* reentered;

        static void next(std::unique_ptr<Reader> self) {
            Reader* r = self.get();
            inside_read_async = true;
            r->req.read_async(r->buf, sizeof r->buf, [self = std::move(self)](kestrel_result rc, std::size_t n) mutable {
                if (inside_read_async) ++*self->reentered;
                if (rc != KESTREL_OK) return;  // the Response is destroyed with `self`: failed
                if (n == 0) {
                    std::string whole = std::move(self->body);
                    self->res.send(whole);
                    return;
                }
                self->body.append(self->buf, n);
                next(std::move(self));
            });
            inside_read_async = false;  // `self` may be gone already: touch only the thread-local
        }
    };
    std::atomic<int> reentered{0};
    kestrel::Options options = local_options(Dispatch::Inline);
    options.handler([&](Request& req, Response& res) {
        auto reader = std::make_unique<Reader>();
        reader->res = std::move(res);
        reader->req = std::move(req);
        reader->reentered = &reentered;
        Reader::next(std::move(reader));
    });
    Running running(std::move(options));
    auto r = testhttp::post(running.port, "/", "the quick brown fox jumps over the lazy dog");
    EXPECT_EQ(r.body, "the quick brown fox jumps over the lazy dog");
    EXPECT_EQ(reentered.load(), 0) << "a read callback ran inside read_async";
}

TEST(Inline, StreamingWithBackpressure) {
    // 200 writes of 10 bytes through a 16-byte buffer: most writes fit only in part.
    struct Pump {
        Response res;
        int left = 200;
        std::string_view rest;
        std::atomic<int>* waits;
        std::atomic<kestrel_result>* write_code;

        static void run(std::unique_ptr<Pump> self) {
            while (self->left > 0 || !self->rest.empty()) {
                if (self->rest.empty()) {
                    self->rest = "0123456789";
                    --self->left;
                }
                self->rest.remove_prefix(self->res.try_write(self->rest));
                if (!self->rest.empty()) {  // the buffer is full
                    if (self->waits->fetch_add(1) == 0) {
                        try {
                            self->res.write("x");  // the throwing form says the same
                        } catch (const kestrel::error& e) {
                            *self->write_code = e.code();
                        }
                    }
                    Response& res = self->res;
                    res.on_writable([self = std::move(self)](kestrel_result rc) mutable {
                        if (rc == KESTREL_OK) run(std::move(self));
                    });
                    return;
                }
            }
            self->res.end();
        }
    };
    std::atomic<int> waits{0};
    std::atomic<kestrel_result> write_code{KESTREL_OK};
    kestrel::Options options = local_options(Dispatch::Inline);
    options.response_buffer_size(16).handler([&](Request&, Response& res) {
        auto pump = std::make_unique<Pump>();
        pump->res = std::move(res);
        pump->waits = &waits;
        pump->write_code = &write_code;
        pump->res.flush();  // on an I/O thread: only starts the response
        Pump::run(std::move(pump));
    });
    Running running(std::move(options));
    std::string expected;
    for (int i = 0; i < 200; ++i) expected += "0123456789";
    auto r = testhttp::get(running.port, "/");
    EXPECT_TRUE(r.complete);
    EXPECT_EQ(r.body, expected);
    EXPECT_GT(waits.load(), 0) << "the 16-byte buffer never filled";
    EXPECT_EQ(write_code.load(), static_cast<kestrel_result>(KESTREL_WOULD_BLOCK));
}

TEST(Inline, ExceptionsBecome500s) {
    LogCapture logs;
    Running running(std::move(local_options(Dispatch::Inline).log(logs.callback()).handler([](Request& req, Response& res) {
        if (req.path() == "/throw") throw std::logic_error("inline failure");
        res.send("ok");
    })));
    testhttp::Connection c(running.port);
    EXPECT_EQ(c.request("GET /throw HTTP/1.1\r\nHost: x\r\n\r\n").status, 500);
    EXPECT_EQ(c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").body, "ok");
    EXPECT_TRUE(logs.wait_for(LogLevel::Error, {"inline failure"}));
}

TEST(Inline, BlockingWorkMovesToAHostThread) {
    std::mutex mutex;
    std::vector<std::thread> threads;
    Running running(std::move(local_options(Dispatch::Inline).handler([&](Request& req, Response& res) {
        std::lock_guard<std::mutex> lock(mutex);
        threads.emplace_back([req = std::move(req), res = std::move(res)]() mutable {
            std::string body = req.read_all();  // blocking is fine on a host thread
            res.write("echo: ");
            res.write(body);
            res.end();
        });
    })));
    auto r = testhttp::post(running.port, "/", "from a host thread");
    EXPECT_EQ(r.body, "echo: from a host thread");
    std::lock_guard<std::mutex> lock(mutex);
    for (auto& t : threads) t.join();
}

// ---- PULL -----------------------------------------------------------------------------------

TEST(Pull, HostThreadsServeUntilTheServerStops) {
    Running running(local_options(Dispatch::Pull));
    std::atomic<int> served{0};
    std::atomic<int> ended_by_stop{0};
    std::vector<std::thread> workers;
    for (int i = 0; i < 2; ++i) {
        workers.emplace_back([&] {
            for (;;) {
                kestrel::Next next = running.server.next_request();
                if (!next) {
                    if (next.stopped()) ++ended_by_stop;
                    return;
                }
                auto& [req, res] = *next;
                std::string body = req.read_all();
                res.set_header("x-method", req.method()).send(std::string(req.path()) + ":" + body);
                ++served;
            }
        });
    }
    std::vector<std::thread> clients;
    std::atomic<int> ok{0};
    for (int c = 0; c < 4; ++c) {
        clients.emplace_back([&, c] {
            for (int i = 0; i < 10; ++i) {
                std::string path = "/c" + std::to_string(c);
                auto r = testhttp::post(running.port, path, std::to_string(i));
                if (r.body == path + ":" + std::to_string(i) && r.header("x-method") == "POST") ++ok;
            }
        });
    }
    for (auto& t : clients) t.join();
    EXPECT_EQ(ok.load(), 40);
    EXPECT_EQ(served.load(), 40);
    running.server.stop(1s);
    for (auto& t : workers) t.join();
    EXPECT_EQ(ended_by_stop.load(), 2);
}

TEST(Pull, TimeoutsAndUncompletedExchanges) {
    Running running(local_options(Dispatch::Pull));
    kestrel::Next idle = running.server.next_request(std::chrono::milliseconds(30));
    EXPECT_FALSE(idle);
    EXPECT_TRUE(idle.timed_out());
    EXPECT_FALSE(idle.stopped());

    std::thread client([&] {
        EXPECT_EQ(testhttp::get(running.port, "/dropped").status, 500);
        EXPECT_EQ(testhttp::get(running.port, "/moved").body, "answered elsewhere");
    });
    {
        kestrel::Next next = running.server.next_request(5s);
        ASSERT_TRUE(next);
        EXPECT_EQ(next->request.path(), "/dropped");
    }  // dropped uncompleted: the Response fails it
    kestrel::Next next = running.server.next_request(5s);
    ASSERT_TRUE(next);
    kestrel::Exchange exchange = std::move(*next);
    EXPECT_FALSE(next->response.pending());
    std::thread elsewhere([exchange = std::move(exchange)]() mutable {
        EXPECT_EQ(exchange.request.path(), "/moved");
        exchange.response.send("answered elsewhere");
    });
    elsewhere.join();
    client.join();
    running.server.stop(1s);
    kestrel::Next after = running.server.next_request(5s);
    EXPECT_FALSE(after);
    EXPECT_TRUE(after.stopped());
}
