// TestServer.cs: a server on 127.0.0.1 with a chosen port, and a logger that keeps what it got.

using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading.Tasks;

namespace Kestrel.Native.Tests
{
    internal sealed class LogRecord
    {
        public KestrelLogLevel Level;
        public string Category;
        public string Message;

        public override string ToString()
        {
            return Level + " " + Category + ": " + Message;
        }
    }

    /// <summary>A thread-safe log of every record a server sent.</summary>
    internal sealed class LogCapture
    {
        private readonly List<LogRecord> _records = new List<LogRecord>();

        public void Write(KestrelLogLevel level, string category, string message)
        {
            lock (_records)
            {
                _records.Add(new LogRecord { Level = level, Category = category, Message = message });
            }
        }

        public int Count
        {
            get
            {
                lock (_records)
                {
                    return _records.Count;
                }
            }
        }

        public LogRecord Find(Func<LogRecord, bool> match)
        {
            lock (_records)
            {
                return _records.FirstOrDefault(match);
            }
        }

        public string Dump()
        {
            lock (_records)
            {
                return string.Join("\n", _records.Select(r => r.ToString()));
            }
        }
    }

    /// <summary>A started server on 127.0.0.1 (port chosen by the system), disposed with the test.</summary>
    internal sealed class TestServer : IDisposable
    {
        public readonly KestrelServer Server;
        public readonly LogCapture Log = new LogCapture();
        public readonly int Port;

        private TestServer(Func<KestrelServerOptions, KestrelServer> build, Action<KestrelServerOptions> configure, KestrelLogLevel level)
        {
            var options = new KestrelServerOptions();
            options.AddUrls("http://127.0.0.1:0");
            options.IoThreads = 2;
            options.WorkerThreads = 4;
            options.UseLogger(Log.Write, level);
            if (configure != null)
            {
                configure(options);
            }
            Server = build(options);
            Server.Start();
            Port = new Uri(Server.Addresses[0]).Port;
        }

        public static TestServer Start(Action<KestrelContext> handler, Action<KestrelServerOptions> configure = null,
            KestrelLogLevel level = KestrelLogLevel.Debug)
        {
            return new TestServer(o => new KestrelServer(o, handler), configure, level);
        }

        public static TestServer StartAsync(Func<KestrelContext, Task> handler, Action<KestrelServerOptions> configure = null,
            KestrelLogLevel level = KestrelLogLevel.Debug)
        {
            return new TestServer(o => new KestrelServer(o, handler), configure, level);
        }

        public void Dispose()
        {
            Server.Dispose();
        }
    }
}
