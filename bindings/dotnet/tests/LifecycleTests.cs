// LifecycleTests.cs: start, stop, dispose, aborts, and the options' ownership.

using System;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;

namespace Kestrel.Native.Tests
{
    internal static class LifecycleTests
    {
        private static bool Refused(int port)
        {
            try
            {
                using (var c = new TcpClient())
                {
                    c.Connect("127.0.0.1", port);
                }
                return false;
            }
            catch (SocketException)
            {
                return true;
            }
        }

        [Test]
        public static void AddressesAndLibraryLogs()
        {
            using (var s = TestServer.Start(ctx => ctx.Response.Send("x"), null, KestrelLogLevel.Info))
            {
                Assert.Equal(1, s.Server.Addresses.Count, "one address");
                Assert.True(s.Server.Addresses[0].StartsWith("http://127.0.0.1:") && s.Port > 0, "real port: " + s.Server.Addresses[0]);
                Assert.True(s.Log.Find(l => l.Category != "Kestrel.Native" && l.Level == KestrelLogLevel.Info) != null,
                    "an Info record from the library (log callback):\n" + s.Log.Dump());
            }
            Assert.True(!string.IsNullOrEmpty(KestrelServer.LibraryVersion), "version");
        }

        [Test]
        public static void GracefulStopLetsInFlightRequestsFinish()
        {
            using (var inHandler = new ManualResetEventSlim())
            using (var s = TestServer.Start(ctx =>
            {
                inHandler.Set();
                Thread.Sleep(300);
                ctx.Response.Send("finished");
            }))
            {
                var client = Task.Run(() => RawHttp.Get(s.Port, "/"));
                Assert.True(inHandler.Wait(10000), "request in flight");
                int aborted = s.Server.Stop(TimeSpan.FromSeconds(10));
                Assert.Equal(0, aborted, "nothing aborted");
                Assert.Equal("finished", client.Result.BodyText, "the in-flight request finished");
                Assert.True(Refused(s.Port), "no longer accepting");
                Assert.Equal(0, s.Server.Stop(TimeSpan.Zero), "stopping twice is a no-op");
                s.Server.Dispose();
                s.Server.Dispose(); // idempotent
                Assert.Throws<ObjectDisposedException>(s.Server.Start, "start after dispose");
                Assert.Throws<ObjectDisposedException>(() => s.Server.Stop(TimeSpan.Zero), "stop after dispose");
            }
        }

        [Test]
        public static void StopAbortsWhatOutlivesTheTimeout()
        {
            bool tokenFired = false;
            KestrelException writeError = null;
            using (var inHandler = new ManualResetEventSlim())
            using (var s = TestServer.StartAsync(async ctx =>
            {
                CancellationToken aborted = ctx.RequestAborted;
                inHandler.Set();
                try
                {
                    await Task.Delay(20000, aborted);
                }
                catch (OperationCanceledException)
                {
                    tokenFired = true;
                }
                try
                {
                    ctx.Response.Write("too late");
                }
                catch (KestrelException e)
                {
                    writeError = e;
                }
            }))
            {
                var client = Task.Run(() => RawHttp.Get(s.Port, "/"));
                Assert.True(inHandler.Wait(10000), "request in flight");
                int aborted = s.Server.Stop(TimeSpan.FromMilliseconds(200));
                Assert.Equal(1, aborted, "one request aborted");
                Assert.Eventually(() => writeError != null, 5000, "the handler saw the abort");
                Assert.True(tokenFired, "RequestAborted fired");
                Assert.Equal(KestrelResult.Cancelled, writeError.Result, "writes report Cancelled");
                bool clientFailed;
                try
                {
                    clientFailed = !client.Result.Complete || client.Result.Status != 200;
                }
                catch (AggregateException)
                {
                    clientFailed = true;
                }
                Assert.True(clientFailed, "the client got no whole response");
            }
        }

        [Test]
        public static void ClientLeavingFiresRequestAborted()
        {
            bool isAborted = false;
            using (var fired = new ManualResetEventSlim())
            using (var handlerDone = new ManualResetEventSlim())
            using (var inHandler = new ManualResetEventSlim())
            using (var s = TestServer.StartAsync(async ctx =>
            {
                ctx.RequestAborted.Register(fired.Set);
                inHandler.Set();
                try
                {
                    await Task.Delay(20000, ctx.RequestAborted);
                }
                catch (OperationCanceledException)
                {
                }
                isAborted = ctx.IsAborted;
                handlerDone.Set();
            }))
            {
                using (var c = new RawConnection(s.Port))
                {
                    c.Send("GET", "/");
                    Assert.True(inHandler.Wait(10000), "request in flight");
                }
                Assert.True(fired.Wait(10000), "RequestAborted fired when the client left");
                Assert.True(handlerDone.Wait(10000), "the handler finished");
                Assert.True(isAborted, "IsAborted");
            }
        }

        [Test]
        public static void StopFromInsideAHandler()
        {
            InvalidOperationException direct = null;
            Task<int> stopping = null;
            using (var s = TestServer.Start(ctx =>
            {
                direct = Assert.Throws<InvalidOperationException>(() => ctx.Server.Stop(TimeSpan.Zero), "Stop in a handler");
                stopping = ctx.Server.StopAsync(TimeSpan.FromSeconds(5));
                ctx.Response.Send("bye");
            }))
            {
                Assert.Equal("bye", RawHttp.Get(s.Port, "/").BodyText, "answered");
                Assert.True(direct != null, "Stop refused with a hint");
                Assert.Contains("StopAsync", direct.Message, "hint");
                Assert.True(stopping.Wait(10000), "StopAsync finished");
                Assert.Equal(0, stopping.Result, "the stop waited for the request");
                Assert.True(Refused(s.Port), "stopped");
            }
        }

        [Test]
        public static void OptionsAreConsumedByTheServer()
        {
            var options = new KestrelServerOptions().AddUrls("http://127.0.0.1:0");
            using (new KestrelServer(options, ctx => ctx.Response.Send("x")))
            {
                Assert.Throws<InvalidOperationException>(() => new KestrelServer(options, ctx => ctx.Response.Send("y")), "reuse");
                Assert.Throws<ObjectDisposedException>(() => options.AddUrls("http://127.0.0.1:0"), "options after use");
            }
            var unused = new KestrelServerOptions();
            unused.Dispose();
            unused.Dispose();
            Assert.Throws<ObjectDisposedException>(() => unused.ServerHeader = false, "after dispose");
        }

        [Test]
        public static void DisposeWithoutStopAbortsAndFrees()
        {
            using (var inHandler = new ManualResetEventSlim())
            {
                var s = TestServer.Start(ctx =>
                {
                    inHandler.Set();
                    try
                    {
                        while (true)
                        {
                            ctx.Response.Write("tick ");
                            ctx.Response.Flush();
                            Thread.Sleep(20);
                        }
                    }
                    catch (KestrelException)
                    {
                        // Cancelled: the server went away
                    }
                });
                var client = Task.Run(() => RawHttp.Get(s.Port, "/"));
                Assert.True(inHandler.Wait(10000), "streaming");
                s.Dispose(); // returns once the workers (and so the handler) are done
                Assert.True(client.Wait(10000), "the client was released");
                Assert.True(!client.Result.Complete, "cut off");
                Assert.True(Refused(s.Port), "closed");
            }
        }

        [Test]
        public static void CompletingAfterTheServerIsFreedIsHarmless()
        {
            var release = new TaskCompletionSource<bool>();
            using (var inHandler = new ManualResetEventSlim())
            {
                var s = TestServer.StartAsync(async ctx =>
                {
                    inHandler.Set();
                    await release.Task;
                    ctx.Response.SetHeader("x-late", "yes"); // throws: the request was aborted
                });
                var client = Task.Run(() => RawHttp.Get(s.Port, "/"));
                Assert.True(inHandler.Wait(10000), "request in flight");
                s.Dispose(); // kestrel_server_free while .NET still holds the request
                release.SetResult(true); // the handler goes on, throws, and the binding fails the request
                Assert.Eventually(() => s.Log.Find(l => l.Category == "Kestrel.Native") != null, 5000, "the handler's end was logged");
                LogRecord record = s.Log.Find(l => l.Category == "Kestrel.Native");
                Assert.Equal(KestrelLogLevel.Debug, record.Level, "a request aborted by the server is routine, not an Error");
                Assert.Contains("KESTREL_CANCELLED", record.Message, "the exception");
                Assert.True(client.Wait(10000), "the client was released");
            }
        }

        /// <summary>The argument that makes the test program run <see cref="LeaveAServerRunning"/>.</summary>
        internal const string ChildMode = "--child-leave-server-running";

        /// <summary>
        /// In a child process: serve a request with every kind of callback into .NET (logger,
        /// abort notice), then return from Main without disposing the server.
        /// </summary>
        internal static int LeaveAServerRunning()
        {
            var options = new KestrelServerOptions().AddUrls("http://127.0.0.1:0");
            options.UseLogger((level, category, message) => { }, KestrelLogLevel.Trace);
            var server = new KestrelServer(options, ctx =>
            {
                CancellationToken unused = ctx.RequestAborted;
                ctx.Response.Send("served");
            });
            server.Start();
            RawResponse r = RawHttp.Get(new Uri(server.Addresses[0]).Port, "/");
            return r.BodyText == "served" ? 0 : 3;
        }

        [Test]
        public static void ProcessExitsWithAServerLeftRunning()
        {
            // Library threads that called into .NET are runtime threads that Mono waits for at exit;
            // they end only when the server is freed, which the binding does at ProcessExit.
            string runtime = System.Diagnostics.Process.GetCurrentProcess().MainModule.FileName;
            string self = typeof(LifecycleTests).Assembly.Location;
            for (int i = 0; i < 3; i++)
            {
                var start = new System.Diagnostics.ProcessStartInfo(runtime, "--debug \"" + self + "\" " + ChildMode)
                {
                    UseShellExecute = false,
                };
                using (var child = System.Diagnostics.Process.Start(start))
                {
                    if (!child.WaitForExit(20000))
                    {
                        child.Kill();
                        throw new AssertionException("the child process did not exit within 20 s (run " + i + ")");
                    }
                    Assert.Equal(0, child.ExitCode, "child exit code");
                }
            }
        }

        [Test]
        public static void AbandonedRequestIsFailedByTheFinalizer()
        {
            using (var s = TestServer.StartAsync(ctx => Abandon(ctx)))
            {
                var client = Task.Run(() => RawHttp.Get(s.Port, "/"));
                // Nothing references the handler's task but the never-completed source it awaits:
                // once collected, the request handle's finalizer fails the request.
                Assert.Eventually(() =>
                {
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                    return client.IsCompleted;
                }, 20000, "the abandoned request was answered");
                Assert.Equal(500, client.Result.Status, "a 500");
            }
        }

        private static async Task Abandon(KestrelContext ctx)
        {
            await new TaskCompletionSource<bool>().Task;
            ctx.Response.Send("unreachable");
        }
    }
}
