// ErrorTests.cs: exceptions from handlers, and library errors as KestrelException.

using System;
using System.Threading.Tasks;

namespace Kestrel.Native.Tests
{
    internal static class ErrorTests
    {
        [Test]
        public static void SyncHandlerExceptionIs500AndLogged()
        {
            using (var s = TestServer.Start(ctx =>
            {
                if (ctx.Request.Path == "/boom")
                {
                    throw new InvalidOperationException("sync boom");
                }
                ctx.Response.Send("still serving");
            }))
            {
                for (int i = 0; i < 3; i++)
                {
                    RawResponse r = RawHttp.Get(s.Port, "/boom");
                    Assert.Equal(500, r.Status, "status after a throw");
                    Assert.Equal(0, r.Body.Length, "empty 500 body");
                    r = RawHttp.Get(s.Port, "/");
                    Assert.Equal("still serving", r.BodyText, "the server keeps serving");
                }
                LogRecord record = s.Log.Find(l => l.Message.Contains("sync boom"));
                Assert.True(record != null, "logged:\n" + s.Log.Dump());
                Assert.Equal(KestrelLogLevel.Error, record.Level, "level");
                Assert.Equal("Kestrel.Native", record.Category, "category");
                Assert.Contains("GET /boom", record.Message, "names the request");
            }
        }

        [Test]
        public static void AsyncHandlerExceptionsAre500()
        {
            using (var s = TestServer.StartAsync(ctx =>
            {
                switch (ctx.Request.Path)
                {
                    case "/before-await":
                        throw new InvalidOperationException("thrown before any task exists");
                    case "/after-await":
                        return ThrowLater();
                    case "/canceled":
                        return Task.FromCanceled(new System.Threading.CancellationToken(true));
                    case "/null":
                        ctx.Response.Send("null task");
                        return null;
                    default:
                        return ReplyLater(ctx);
                }
            }))
            {
                foreach (string path in new[] { "/before-await", "/after-await", "/canceled" })
                {
                    RawResponse r = RawHttp.Get(s.Port, path);
                    Assert.Equal(500, r.Status, path);
                    r = RawHttp.Get(s.Port, "/");
                    Assert.Equal("later", r.BodyText, "serving after " + path);
                }
                Assert.Equal("null task", RawHttp.Get(s.Port, "/null").BodyText, "a null task counts as done");
                Assert.True(s.Log.Find(l => l.Message.Contains("async boom")) != null, "logged:\n" + s.Log.Dump());
                Assert.True(s.Log.Find(l => l.Message.Contains("thrown before any task exists")) != null, "logged");
            }
        }

        [Test]
        public static void AsyncLambdaGetsTheTaskOverload()
        {
            // An async lambda fits Action<KestrelContext> too (as async void, whose exception would
            // take the process down); the compiler must pick the Func<KestrelContext, Task> overload.
            var options = new KestrelServerOptions().AddUrls("http://127.0.0.1:0");
            var log = new LogCapture();
            options.UseLogger(log.Write, KestrelLogLevel.Warn);
            using (var server = new KestrelServer(options, async ctx =>
            {
                await Task.Delay(10);
                throw new InvalidOperationException("from an async lambda");
            }))
            {
                server.Start();
                Assert.Equal(500, RawHttp.Get(new Uri(server.Addresses[0]).Port, "/").Status, "a 500, not a crash");
                Assert.True(log.Find(l => l.Message.Contains("from an async lambda")) != null, "logged");
            }
        }

        private static async Task ThrowLater()
        {
            await Task.Delay(10);
            throw new ApplicationException("async boom");
        }

        private static async Task ReplyLater(KestrelContext ctx)
        {
            await Task.Yield();
            ctx.Response.Send("later");
        }

        [Test]
        public static void ExceptionAfterTheResponseStartedCutsItOff()
        {
            using (var s = TestServer.Start(ctx =>
            {
                ctx.Response.Write("partial");
                ctx.Response.Flush();
                throw new InvalidOperationException("too late for a 500");
            }))
            {
                RawResponse r = RawHttp.Get(s.Port, "/");
                Assert.Equal(200, r.Status, "the head had gone out");
                Assert.Equal("partial", r.BodyText, "what was sent");
                Assert.True(!r.Complete, "cut off: no last chunk, so the client cannot take it for whole");
            }
        }

        [Test]
        public static void BadUrlIsAKestrelException()
        {
            using (var options = new KestrelServerOptions())
            {
                var e = Assert.Throws<KestrelException>(() => options.AddUrls("http://127.0.0.1:0;not a url"), "bad URL");
                Assert.Equal(KestrelResult.InvalidUrl, e.Result, "result code");
                Assert.Equal(4u, (uint)e.Result, "numeric code");
                Assert.Equal("KESTREL_INVALID_URL", e.ResultName, "name");
                Assert.Contains("not a url", e.NativeMessage, "the library's message");
                Assert.Contains("KESTREL_INVALID_URL", e.Message, "message");
                options.AddUrls("http://127.0.0.1:0"); // the options stay usable
                var range = Assert.Throws<KestrelException>(() => options.IoThreads = 5000, "too many I/O threads");
                Assert.Equal(KestrelResult.InvalidArgument, range.Result, "range check by the library");
            }
        }

        [Test]
        public static void PortInUseIsBindFailed()
        {
            using (var first = TestServer.Start(ctx => ctx.Response.Send("first")))
            {
                var options = new KestrelServerOptions().AddUrls("http://127.0.0.1:" + first.Port);
                using (var second = new KestrelServer(options, ctx => ctx.Response.Send("second")))
                {
                    var e = Assert.Throws<KestrelException>(second.Start, "second bind");
                    Assert.Equal(KestrelResult.BindFailed, e.Result, "result code");
                    Assert.Contains("127.0.0.1:" + first.Port, e.NativeMessage, "names the address");
                    Assert.Equal(0, second.Addresses.Count, "nothing stays bound");
                }
                Assert.Equal("first", RawHttp.Get(first.Port, "/").BodyText, "the first server is untouched");
            }
        }

        [Test]
        public static void ForbiddenHeaderBytesAreRefused()
        {
            using (var s = TestServer.Start(ctx =>
            {
                try
                {
                    ctx.Response.SetHeader("x-injected", "a\r\nset-cookie: evil");
                    ctx.Response.Send("accepted?!");
                }
                catch (KestrelException e)
                {
                    ctx.Response.StatusCode = 400;
                    ctx.Response.Send(e.ResultName);
                }
            }))
            {
                RawResponse r = RawHttp.Get(s.Port, "/");
                Assert.Equal(400, r.Status, "refused");
                Assert.Equal("KESTREL_INVALID_HEADER", r.BodyText, "code");
                Assert.Equal(null, r.Header("set-cookie"), "nothing injected");
            }
        }

        [Test]
        public static void MisusesAreReportedNotFatal()
        {
            string sendAfterWrite = null, afterCompletion = null, statusAfterStart = null;
            using (var handlerDone = new System.Threading.ManualResetEventSlim())
            using (var s = TestServer.Start(ctx =>
            {
                ctx.Response.Write("streamed");
                try
                {
                    ctx.Response.StatusCode = 201;
                }
                catch (KestrelException e)
                {
                    statusAfterStart = e.Result.ToString();
                }
                try
                {
                    ctx.Response.Send("whole");
                }
                catch (KestrelException e)
                {
                    sendAfterWrite = e.Result.ToString();
                }
                ctx.Response.End(); // the response stayed open
                try
                {
                    ctx.Response.Write("after end");
                }
                catch (InvalidOperationException e)
                {
                    afterCompletion = e.Message;
                }
                Assert.Throws<InvalidOperationException>(() => ctx.Request.GetHeader("host"), "views die with the request");
                Assert.Throws<InvalidOperationException>(ctx.Response.End, "second completion");
                handlerDone.Set();
            }))
            {
                RawResponse r = RawHttp.Get(s.Port, "/");
                Assert.True(handlerDone.Wait(10000), "the handler ran to its end");
                Assert.Equal("streamed", r.BodyText, "body");
                Assert.True(r.Complete, "ended");
                Assert.Equal("InvalidState", statusAfterStart, "status after start");
                Assert.Equal("InvalidState", sendAfterWrite, "send after write");
                Assert.Contains("completed", afterCompletion, "write after end");
                Assert.True(s.Log.Find(l => l.Level == KestrelLogLevel.Error) == null, "no handler error:\n" + s.Log.Dump());
            }
        }

        [Test]
        public static void ThrowingLoggerIsContained()
        {
            int calls = 0;
            var options = new KestrelServerOptions().AddUrls("http://127.0.0.1:0");
            options.UseLogger((level, category, message) =>
            {
                System.Threading.Interlocked.Increment(ref calls);
                throw new InvalidOperationException("logger failure");
            }, KestrelLogLevel.Trace);
            using (var server = new KestrelServer(options, ctx =>
            {
                if (ctx.Request.Path == "/boom")
                {
                    throw new InvalidOperationException("handler failure");
                }
                ctx.Response.Send("fine");
            }))
            {
                server.Start();
                int port = new Uri(server.Addresses[0]).Port;
                Assert.Equal(500, RawHttp.Get(port, "/boom").Status, "handler failure");
                Assert.Equal("fine", RawHttp.Get(port, "/").BodyText, "serving");
                Assert.True(calls > 0, "the logger was called");
            }
        }
    }
}
