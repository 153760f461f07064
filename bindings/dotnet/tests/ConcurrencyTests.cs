// ConcurrencyTests.cs: parallel clients, and the garbage collector running all the while.

using System;
using System.Collections.Generic;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

namespace Kestrel.Native.Tests
{
    internal static class ConcurrencyTests
    {
        private const int Parallel = 32;

        [Test]
        public static void ParallelRequestsViaHttpClient()
        {
            int inFlight = 0, maxInFlight = 0;
            using (var s = TestServer.StartAsync(async ctx =>
            {
                int now = Interlocked.Increment(ref inFlight);
                int seen;
                while (now > (seen = Volatile.Read(ref maxInFlight)) && Interlocked.CompareExchange(ref maxInFlight, now, seen) != seen)
                {
                }
                await Task.Delay(300);
                Interlocked.Decrement(ref inFlight);
                ctx.Response.SetHeader("content-type", "text/plain");
                ctx.Response.Send("reply to " + ctx.Request.Query);
            }))
            {
                // The default HttpWebRequest-based handler allows 2 connections per host.
                ServicePointManager.DefaultConnectionLimit = 2 * Parallel;
                using (var client = new HttpClient())
                {
                    client.Timeout = TimeSpan.FromSeconds(30);
                    var requests = Enumerable.Range(0, Parallel)
                        .Select(i => client.GetStringAsync("http://127.0.0.1:" + s.Port + "/?n=" + i))
                        .ToArray();
                    Assert.True(Task.WaitAll(requests, 30000), "all answered");
                    for (int i = 0; i < Parallel; i++)
                    {
                        Assert.Equal("reply to n=" + i, requests[i].Result, "reply " + i);
                    }
                }
                // Four workers, yet many requests awaited at once: an awaiting handler frees its worker.
                Assert.True(maxInFlight >= 8, "at least 8 handlers in flight at once on 4 workers, saw " + maxInFlight);
            }
        }

        [Test]
        public static void ParallelSyncHandlersShareTheWorkers()
        {
            int inFlight = 0, maxInFlight = 0;
            using (var s = TestServer.Start(ctx =>
            {
                int now = Interlocked.Increment(ref inFlight);
                lock (typeof(ConcurrencyTests))
                {
                    maxInFlight = Math.Max(maxInFlight, now);
                }
                Thread.Sleep(50);
                Interlocked.Decrement(ref inFlight);
                ctx.Response.Send(ctx.Request.Query);
            }))
            {
                var results = new string[Parallel];
                var clients = Enumerable.Range(0, Parallel).Select(i => new Thread(() =>
                {
                    results[i] = RawHttp.Get(s.Port, "/?" + i).BodyText;
                })).ToList();
                clients.ForEach(t => t.Start());
                clients.ForEach(t => t.Join());
                for (int i = 0; i < Parallel; i++)
                {
                    Assert.Equal(i.ToString(), results[i], "reply " + i);
                }
                Assert.True(maxInFlight >= 2 && maxInFlight <= 4, "1 < handlers at once <= 4 workers, saw " + maxInFlight);
            }
        }

        [Test]
        public static void DelegatesStayRootedUnderGcPressure()
        {
            const int Clients = 4, PerClient = 60;
            int collections = 0;
            bool stop = false;
            var collector = new Thread(() =>
            {
                while (!Volatile.Read(ref stop))
                {
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                    Interlocked.Increment(ref collections);
                }
            });
            byte[] lent = Encoding.ASCII.GetBytes("lent without a copy");
            using (var s = TestServer.StartAsync(async ctx =>
            {
                // Each of these hands the library a callback into .NET: the logger (Trace records
                // per request), an abort notice, and the release of a lent body.
                CancellationToken aborted = ctx.RequestAborted;
                GC.Collect();
                switch (ctx.Request.Query)
                {
                    case "owned":
                        ctx.Response.SendOwned(lent);
                        break;
                    case "async":
                        await Task.Delay(1, aborted);
                        GC.Collect();
                        ctx.Response.Send("async");
                        break;
                    default:
                        ctx.Response.Write("streamed");
                        break; // ended by the binding
                }
            }, null, KestrelLogLevel.Trace))
            {
                collector.Start();
                try
                {
                    var failures = new List<string>();
                    var clients = Enumerable.Range(0, Clients).Select(c => new Thread(() =>
                    {
                        string[] kinds = { "owned", "async", "streamed" };
                        for (int i = 0; i < PerClient; i++)
                        {
                            string kind = kinds[(c + i) % kinds.Length];
                            RawResponse r = RawHttp.Get(s.Port, "/?" + kind);
                            string want = kind == "owned" ? "lent without a copy" : kind;
                            if (r.Status != 200 || r.BodyText != want || !r.Complete)
                            {
                                lock (failures)
                                {
                                    failures.Add(kind + ": " + r.Status + " " + r.BodyText);
                                }
                            }
                        }
                    })).ToList();
                    clients.ForEach(t => t.Start());
                    clients.ForEach(t => t.Join());
                    Assert.Equal(0, failures.Count, "failed requests: " + string.Join("; ", failures.Take(5)));
                }
                finally
                {
                    Volatile.Write(ref stop, true);
                    collector.Join();
                }
                Assert.True(collections >= 10, "the collector ran (" + collections + " collections)");
                Assert.True(s.Log.Count >= Clients * PerClient, "log callbacks kept coming: " + s.Log.Count);
                Assert.True(s.Log.Find(l => l.Level >= KestrelLogLevel.Warn) == null, "no warnings:\n" + s.Log.Dump());
            }
        }
    }
}
