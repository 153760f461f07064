// ServingTests.cs: requests in, responses out.

using System;
using System.Buffers;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

namespace Kestrel.Native.Tests
{
    internal static class ServingTests
    {
        [Test]
        public static void HelloFromSyncHandler()
        {
            using (var s = TestServer.Start(ctx =>
            {
                ctx.Response.SetHeader("content-type", "text/plain");
                ctx.Response.Send("Hello, World!");
            }))
            {
                RawResponse r = RawHttp.Get(s.Port, "/");
                Assert.Equal(200, r.Status, "status");
                Assert.Equal("Hello, World!", r.BodyText, "body");
                Assert.Equal("13", r.Header("content-length"), "content-length");
                Assert.Equal("text/plain", r.Header("content-type"), "content-type");
                Assert.Equal("kestrel", r.Header("server"), "server header");
                Assert.True(r.Complete, "a whole body");
            }
        }

        [Test]
        public static void HelloFromAsyncHandler()
        {
            int worker = -1, continuation = -1;
            using (var s = TestServer.StartAsync(async ctx =>
            {
                worker = Thread.CurrentThread.ManagedThreadId;
                await Task.Delay(20);
                continuation = Thread.CurrentThread.ManagedThreadId;
                ctx.Response.Send("async hello");
            }))
            {
                RawResponse r = RawHttp.Get(s.Port, "/");
                Assert.Equal(200, r.Status, "status");
                Assert.Equal("async hello", r.BodyText, "body");
                Assert.True(worker != -1 && continuation != -1, "both halves ran");
            }
        }

        [Test]
        public static void RequestHeadInOneCall()
        {
            var seen = new Dictionary<string, string>();
            IReadOnlyList<string> multi = null;
            IReadOnlyList<KeyValuePair<string, string>> all = null;
            ulong connectionId = 0;
            using (var s = TestServer.Start(ctx =>
            {
                KestrelRequest q = ctx.Request;
                seen["method"] = q.Method;
                seen["scheme"] = q.Scheme;
                seen["path"] = q.Path;
                seen["query"] = q.Query;
                seen["target"] = q.Target;
                seen["protocol"] = q.Protocol;
                seen["host"] = q.Host;
                seen["remote"] = q.RemoteAddress;
                seen["local"] = q.LocalAddress;
                seen["id"] = q.Id;
                seen["x-multi"] = q.GetHeader("X-MULTI");
                seen["x-text"] = q.GetHeader("x-text");
                seen["missing"] = q.GetHeader("x-missing") ?? "(null)";
                multi = q.GetHeaderValues("x-multi");
                all = q.Headers;
                connectionId = q.ConnectionId;
                ctx.Response.Send("ok");
            }))
            {
                RawResponse r = RawHttp.Request(s.Port, "PATCH", "/p/a%20th?x=1&y=2", null,
                    "X-Multi: a", "X-Text: h\u00e9llo", "X-Multi: b");
                Assert.Equal(200, r.Status, "status");
                Assert.Equal("PATCH", seen["method"], "method");
                Assert.Equal("http", seen["scheme"], "scheme");
                Assert.Equal("/p/a%20th", seen["path"], "path (not decoded)");
                Assert.Equal("x=1&y=2", seen["query"], "query");
                Assert.Equal("/p/a%20th?x=1&y=2", seen["target"], "target");
                Assert.Equal("HTTP/1.1", seen["protocol"], "protocol");
                Assert.Equal("127.0.0.1", seen["host"], "host");
                Assert.True(seen["remote"].StartsWith("127.0.0.1:"), "remote address " + seen["remote"]);
                Assert.Equal("127.0.0.1:" + s.Port, seen["local"], "local address");
                Assert.True(seen["id"].Length > 0, "request id");
                Assert.Equal("a", seen["x-multi"], "first value, case-insensitive lookup");
                Assert.Equal("h\u00e9llo", seen["x-text"], "UTF-8 header value");
                Assert.Equal("(null)", seen["missing"], "absent header");
                Assert.Equal("a,b", string.Join(",", multi), "every value");
                Assert.True(all.Any(h => h.Key == "x-multi" && h.Value == "b"), "headers list, lower-case names");
                Assert.True(all.Any(h => h.Key == "host"), "host header listed");
                Assert.True(connectionId > 0 || seen["id"].StartsWith("0:"), "connection id");
            }
        }

        [Test]
        public static void EchoesTheRequestBody()
        {
            var body = new byte[300 * 1024];
            new Random(7).NextBytes(body);
            using (var s = TestServer.Start(ctx =>
            {
                var chunk = new byte[8192];
                int n;
                while ((n = ctx.Request.Read(chunk)) > 0)
                {
                    ctx.Response.Write(new ReadOnlySpan<byte>(chunk, 0, n));
                }
                ctx.Response.End();
            }))
            {
                RawResponse r = RawHttp.Request(s.Port, "POST", "/echo", body);
                Assert.Equal(200, r.Status, "status");
                Assert.True(r.Chunked && r.Complete, "streamed, whole");
                Assert.BytesEqual(body, r.Body, "echo");
            }
        }

        [Test]
        public static void EchoesThroughStreams()
        {
            byte[] body = Encoding.UTF8.GetBytes(string.Concat(Enumerable.Repeat("stream \u2713 ", 5000)));
            using (var s = TestServer.Start(ctx =>
            {
                ctx.Request.Body.CopyTo(ctx.Response.Body);
                ctx.Response.Body.Flush();
                // left open: the binding ends it when the handler returns
            }))
            {
                RawResponse r = RawHttp.Request(s.Port, "PUT", "/", body, "Expect: 100-continue");
                Assert.Equal(200, r.Status, "status (after 100 Continue)");
                Assert.True(r.Complete, "ended by the binding");
                Assert.BytesEqual(body, r.Body, "echo");
            }
        }

        [Test]
        public static void SendsUtf8Strings()
        {
            const string text = "h\u00e9llo \u2713 \U0001F600";
            string big = new string('x', 5000) + "\u00e9";
            using (var s = TestServer.Start(ctx =>
            {
                ctx.Response.AddHeader("x-note", "caf\u00e9");
                ctx.Response.Send(ctx.Request.Path == "/big" ? big : text);
            }))
            {
                RawResponse r = RawHttp.Get(s.Port, "/");
                Assert.BytesEqual(Encoding.UTF8.GetBytes(text), r.Body, "UTF-8 body");
                Assert.Equal(Encoding.UTF8.GetByteCount(text).ToString(), r.Header("content-length"), "length in bytes");
                r = RawHttp.Get(s.Port, "/big");
                Assert.Equal(big, r.BodyText, "long string (encoded off the stack)");
            }
        }

        [Test]
        public static void StreamsBeforeTheHandlerEnds()
        {
            using (var clientGotFirst = new ManualResetEventSlim())
            using (var s = TestServer.Start(ctx =>
            {
                ctx.Response.SetHeader("content-type", "text/plain");
                ctx.Response.Write("first;");
                ctx.Response.Flush();
                // The client can only set this if "first;" reached it while we wait.
                bool seen = clientGotFirst.Wait(10000);
                ctx.Response.Write(seen ? "second" : "never-streamed");
                ctx.Response.End();
            }))
            using (var c = new RawConnection(s.Port))
            {
                c.Send("GET", "/", null, "Connection: close");
                RawResponse head = c.ReadHead();
                Assert.True(head.Chunked, "chunked");
                byte[] first = c.ReadChunk(head);
                Assert.Equal("first;", Encoding.UTF8.GetString(first), "first chunk, before the handler ended");
                clientGotFirst.Set();
                var rest = new MemoryStream();
                byte[] chunk;
                while ((chunk = c.ReadChunk(head)) != null)
                {
                    rest.Write(chunk, 0, chunk.Length);
                }
                Assert.Equal("second", Encoding.UTF8.GetString(rest.ToArray()), "rest");
                Assert.True(head.Complete, "last chunk");
            }
        }

        [Test]
        public static void StreamsMegabytesWithBackpressure()
        {
            const int Chunks = 64, Size = 64 * 1024;
            using (var s = TestServer.Start(ctx =>
            {
                var chunk = new byte[Size];
                for (int i = 0; i < Chunks; i++)
                {
                    chunk[0] = (byte)i;
                    ctx.Response.Write(chunk);
                }
                ctx.Response.End();
            }, o => o.ResponseBufferSize = 16 * 1024))
            {
                RawResponse r = RawHttp.Get(s.Port, "/");
                Assert.True(r.Complete, "whole");
                Assert.Equal(Chunks * Size, r.Body.Length, "bytes");
                Assert.Equal((byte)(Chunks - 1), r.Body[(Chunks - 1) * Size], "order");
            }
        }

        /// <summary>Memory whose pins are counted, to see when the library gives a lent body back.</summary>
        private sealed unsafe class CountingMemory : MemoryManager<byte>
        {
            private readonly byte[] _bytes;
            private System.Runtime.InteropServices.GCHandle _pin;
            public int Pins;
            public int Unpins;

            public CountingMemory(byte[] bytes)
            {
                _bytes = bytes;
            }

            public override Span<byte> GetSpan()
            {
                return _bytes;
            }

            public override MemoryHandle Pin(int elementIndex = 0)
            {
                Interlocked.Increment(ref Pins);
                _pin = System.Runtime.InteropServices.GCHandle.Alloc(_bytes, System.Runtime.InteropServices.GCHandleType.Pinned);
                return new MemoryHandle((byte*)_pin.AddrOfPinnedObject() + elementIndex, default(System.Runtime.InteropServices.GCHandle), this);
            }

            public override void Unpin()
            {
                _pin.Free();
                Interlocked.Increment(ref Unpins);
            }

            protected override void Dispose(bool disposing)
            {
            }
        }

        [Test]
        public static void SendOwnedLendsAndGetsBackTheBody()
        {
            byte[] bytes = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("zero-copy ", 20000)));
            var memory = new CountingMemory(bytes);
            using (var s = TestServer.Start(ctx => ctx.Response.SendOwned(memory.Memory)))
            {
                RawResponse r = RawHttp.Get(s.Port, "/");
                Assert.Equal(200, r.Status, "status");
                Assert.BytesEqual(bytes, r.Body, "body");
                Assert.Equal(1, memory.Pins, "pinned once");
                Assert.Eventually(() => memory.Unpins == 1, 5000, "the library released the body (free callback)");
            }
        }

        [Test]
        public static void SendsFiles()
        {
            string path = Path.GetTempFileName();
            try
            {
                File.WriteAllText(path, "0123456789abcdef");
                string problem = null;
                using (var s = TestServer.Start(ctx =>
                {
                    if (ctx.Request.Path == "/missing")
                    {
                        try
                        {
                            ctx.Response.SendFile(path + ".missing");
                        }
                        catch (KestrelException e)
                        {
                            problem = e.Result + " " + e.NativeMessage;
                            ctx.Response.StatusCode = 404; // the response stayed open
                            ctx.Response.Send("no such file");
                        }
                        return;
                    }
                    ctx.Response.SendFile(path, 4, 6);
                }))
                {
                    RawResponse r = RawHttp.Get(s.Port, "/");
                    Assert.Equal("456789", r.BodyText, "range of the file");
                    r = RawHttp.Get(s.Port, "/missing");
                    Assert.Equal(404, r.Status, "fallback status");
                    Assert.True(problem != null && problem.StartsWith("IoError "), "IoError with a message: " + problem);
                }
            }
            finally
            {
                File.Delete(path);
            }
        }

        [Test]
        public static void LeftOpenResponsesAreEnded()
        {
            using (var s = TestServer.StartAsync(async ctx =>
            {
                if (ctx.Request.Path == "/status")
                {
                    ctx.Response.StatusCode = 204;
                    return;
                }
                ctx.Response.Write("partial");
                await Task.Yield();
                ctx.Response.Write(" and more");
            }))
            {
                RawResponse r = RawHttp.Get(s.Port, "/status");
                Assert.Equal(204, r.Status, "status set, nothing sent");
                r = RawHttp.Get(s.Port, "/");
                Assert.True(r.Complete, "ended when the task completed");
                Assert.Equal("partial and more", r.BodyText, "body");
            }
        }

        [Test]
        public static void ServerHeaderCanBeTurnedOff()
        {
            using (var s = TestServer.Start(ctx => ctx.Response.Send("x"), o => o.ServerHeader = false))
            {
                RawResponse r = RawHttp.Get(s.Port, "/");
                Assert.Equal(null, r.Header("server"), "no Server header");
            }
        }

        [Test]
        public static void TrailersReachClientsThatAskForThem()
        {
            using (var s = TestServer.Start(ctx =>
            {
                ctx.Response.AddTrailer("x-checksum", "abc123");
                ctx.Response.Write("body");
                ctx.Response.End();
            }))
            using (var c = new RawConnection(s.Port))
            {
                c.Send("GET", "/", null, "TE: trailers", "Connection: close");
                RawResponse head = c.ReadHead();
                Assert.Equal("x-checksum", head.Header("trailer"), "announced");
                Assert.Equal("body", Encoding.UTF8.GetString(c.ReadChunk(head)), "body");
                Assert.Equal(null, c.ReadChunk(head), "end");
                Assert.True(head.Complete, "last chunk");
                Assert.Equal("x-checksum=abc123", string.Join(";", head.Trailers.Select(t => t.Key + "=" + t.Value)), "trailer");
            }
        }
    }
}
