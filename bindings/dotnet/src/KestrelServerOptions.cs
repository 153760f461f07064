// KestrelServerOptions.cs: endpoints, threads and logging of a server (wraps kestrel_options).

using System;
using System.Runtime.InteropServices;
using System.Threading;

namespace Kestrel.Native
{
    /// <summary>Which HTTP versions an endpoint serves (<c>KESTREL_PROTOCOLS_*</c>).</summary>
    public enum KestrelProtocols : uint
    {
        /// <summary>HTTP/1.1 and HTTP/2 (h2c recognised by its preface on cleartext endpoints). The default.</summary>
        Http1AndHttp2 = 0,
        /// <summary>HTTP/1.x only.</summary>
        Http1 = 1,
        /// <summary>HTTP/2 only (h2c with prior knowledge on cleartext endpoints).</summary>
        Http2 = 2,
    }

    /// <summary>Log severity (<c>KESTREL_LOG_*</c>), lowest first.</summary>
    public enum KestrelLogLevel : uint
    {
        /// <summary>Per-request detail.</summary>
        Trace = 0,
        /// <summary>Per-connection detail.</summary>
        Debug = 1,
        /// <summary>Lifecycle: endpoints bound, server stopped.</summary>
        Info = 2,
        /// <summary>Worth an operator's look; the server keeps working.</summary>
        Warn = 3,
        /// <summary>A failure (a handler that threw, an endpoint that stopped accepting).</summary>
        Error = 4,
    }

    /// <summary>
    /// Receives a log record, from the library or from the binding (category
    /// <c>Kestrel.Native</c>: handlers that threw). It runs on any thread, the library's I/O
    /// threads included, possibly concurrently: it must be thread-safe, quick and must not block.
    /// An exception it throws is swallowed.
    /// </summary>
    public delegate void KestrelLogger(KestrelLogLevel level, string category, string message);

    /// <summary>
    /// The options of a <see cref="KestrelServer"/>: endpoints, threads, logging. Each setter is
    /// checked by the library at once (a bad URL throws <see cref="KestrelException"/> from
    /// <see cref="AddUrls"/>). A <see cref="KestrelServer"/> built from the options consumes them;
    /// options never given to a server should be disposed. Not thread-safe.
    /// </summary>
    public sealed class KestrelServerOptions : IDisposable
    {
        private readonly OptionsHandle _handle;
        private int _ioThreads;
        private int _workerThreads;
        private bool _serverHeader = true;
        private int _responseBufferSize = 65536;

        /// <summary>Makes options with the library's defaults (<c>http://localhost:5000</c> when no URL is added).</summary>
        public KestrelServerOptions()
        {
            Errors.Check(NativeMethods.kestrel_options_new(out _handle));
            // The binding serves requests on .NET threads that pull them (see KestrelServer).
            Errors.Check(NativeMethods.kestrel_options_set_dispatch(_handle, NativeMethods.DispatchPull));
            _workerThreads = Math.Max(4, 2 * Environment.ProcessorCount);
        }

        /// <summary>
        /// Adds endpoints from Kestrel-style URLs separated by <c>;</c>: <c>http://localhost:5000</c>,
        /// <c>http://+:8080</c>, <c>http://127.0.0.1:0</c> (port chosen at start),
        /// <c>http://[::1]:0</c>, <c>http://unix:/path.sock</c>.
        /// </summary>
        /// <exception cref="KestrelException">A URL is invalid (<see cref="KestrelResult.InvalidUrl"/>); nothing was added.</exception>
        public unsafe KestrelServerOptions AddUrls(string urls, KestrelProtocols protocols = KestrelProtocols.Http1AndHttp2)
        {
            if (urls == null)
            {
                throw new ArgumentNullException("urls");
            }
            byte[] bytes = Utf8.ToArray(urls);
            fixed (byte* p = bytes)
            {
                Errors.Check(NativeMethods.kestrel_options_add_urls(_handle, p, (UIntPtr)bytes.Length, (uint)protocols));
            }
            return this;
        }

        /// <summary>
        /// Adds an endpoint on an already-listening socket (e.g. inherited from systemd). The library
        /// works on a duplicate: <paramref name="fd"/> stays the caller's to close.
        /// </summary>
        public KestrelServerOptions AddListenFd(int fd, KestrelProtocols protocols = KestrelProtocols.Http1AndHttp2)
        {
            Errors.Check(NativeMethods.kestrel_options_add_listen_fd(_handle, fd, (uint)protocols));
            return this;
        }

        /// <summary>The number of library I/O threads (1..1024); 0, the default, means one per core.</summary>
        public int IoThreads
        {
            get { return _ioThreads; }
            set
            {
                if (value < 0)
                {
                    throw new ArgumentOutOfRangeException("value");
                }
                int threads = value == 0 ? Math.Min(1024, Environment.ProcessorCount) : value;
                Errors.Check(NativeMethods.kestrel_options_set_io_threads(_handle, (uint)threads));
                _ioThreads = value;
            }
        }

        /// <summary>
        /// The number of .NET threads that take requests and run handlers (default: twice the
        /// number of cores, at least 4). A synchronous handler holds its thread until it returns;
        /// an asynchronous one only until its first incomplete await.
        /// </summary>
        public int WorkerThreads
        {
            get { return _workerThreads; }
            set
            {
                if (value < 1 || value > 4096)
                {
                    throw new ArgumentOutOfRangeException("value", "1..4096 worker threads");
                }
                _workerThreads = value;
            }
        }

        /// <summary>Whether responses carry <c>Server: kestrel</c> (default true).</summary>
        public bool ServerHeader
        {
            get { return _serverHeader; }
            set
            {
                Errors.Check(NativeMethods.kestrel_options_set_server_header(_handle, value ? (byte)1 : (byte)0));
                _serverHeader = value;
            }
        }

        /// <summary>
        /// How many bytes a streamed response may buffer before <see cref="KestrelResponse.Write(ReadOnlySpan{byte})"/>
        /// waits (default 65536).
        /// </summary>
        public int ResponseBufferSize
        {
            get { return _responseBufferSize; }
            set
            {
                if (value <= 0)
                {
                    throw new ArgumentOutOfRangeException("value");
                }
                Errors.Check(NativeMethods.kestrel_options_set_response_buffer_size(_handle, (UIntPtr)value));
                _responseBufferSize = value;
            }
        }

        /// <summary>
        /// Sends log records at or above <paramref name="minLevel"/> to <paramref name="logger"/>
        /// (replacing an earlier logger). Without a logger the library logs nothing and the binding
        /// writes handler exceptions to standard error.
        /// </summary>
        public KestrelServerOptions UseLogger(KestrelLogger logger, KestrelLogLevel minLevel = KestrelLogLevel.Info)
        {
            if (logger == null)
            {
                throw new ArgumentNullException("logger");
            }
            var sink = new LogSink(logger, minLevel);
            // The sink is rooted by a GCHandle that the library owns from here on: it calls
            // userdata_free exactly once (when these options or their server are freed, when another
            // logger replaces this one, or at once if this call fails), which frees the GCHandle.
            IntPtr userdata = GCHandle.ToIntPtr(GCHandle.Alloc(sink));
            uint rc;
            try
            {
                rc = NativeMethods.kestrel_options_set_log_callback(
                    _handle, Callbacks.Log, (uint)minLevel, userdata, Callbacks.FreeGCHandle);
            }
            catch (ObjectDisposedException)
            {
                GCHandle.FromIntPtr(userdata).Free(); // the call never reached the library
                throw;
            }
            Errors.Check(rc);
            Sink = sink;
            return this;
        }

        /// <summary>The current logger, also used by the binding for handler exceptions.</summary>
        internal LogSink Sink { get; private set; }

        /// <summary>Whether a server consumed these options.</summary>
        internal bool Consumed { get; private set; }

        /// <summary>
        /// Builds the native server. The options are consumed on every path, as
        /// <c>kestrel_server_new</c> consumes them.
        /// </summary>
        internal ServerHandle BuildServer()
        {
            if (Consumed)
            {
                throw new InvalidOperationException("these options were already used by a server");
            }
            bool added = false;
            _handle.DangerousAddRef(ref added); // throws ObjectDisposedException once disposed
            uint rc;
            ServerHandle server;
            try
            {
                rc = NativeMethods.kestrel_server_new(_handle.DangerousGetHandle(), out server);
            }
            finally
            {
                // kestrel_server_new freed the options whatever it returned: close the handle
                // without freeing it again.
                _handle.SetHandleAsInvalid();
                _handle.DangerousRelease();
                Consumed = true;
            }
            if (rc != 0)
            {
                KestrelException error = Errors.Exception(rc);
                server.Dispose();
                throw error;
            }
            return server;
        }

        /// <summary>Releases options that were not given to a server. Idempotent.</summary>
        public void Dispose()
        {
            _handle.Dispose();
        }
    }

    /// <summary>A logger and its level, shared by the library's records and the binding's.</summary>
    internal sealed class LogSink
    {
        private readonly KestrelLogger _logger;
        private readonly KestrelLogLevel _minLevel;

        internal LogSink(KestrelLogger logger, KestrelLogLevel minLevel)
        {
            _logger = logger;
            _minLevel = minLevel;
        }

        /// <summary>Passes a record on, never throwing.</summary>
        internal void Write(KestrelLogLevel level, string category, string message)
        {
            if (level < _minLevel)
            {
                return;
            }
            try
            {
                _logger(level, category, message);
            }
            catch (Exception)
            {
                // A logger that throws must not take the caller down (it may be a library thread).
            }
        }

        /// <summary>Logs a binding record to <paramref name="sink"/>, or to standard error if there is none.</summary>
        internal static void Binding(LogSink sink, KestrelLogLevel level, string message)
        {
            const string Category = "Kestrel.Native";
            if (sink != null)
            {
                sink.Write(level, Category, message);
            }
            else if (level >= KestrelLogLevel.Error)
            {
                try
                {
                    Console.Error.WriteLine(Category + ": " + message);
                }
                catch (Exception)
                {
                    // Nowhere left to report to.
                }
            }
        }
    }

    /// <summary>
    /// The static methods the library calls back, each kept in a static delegate so its function
    /// pointer stays valid for the life of the process (the per-registration state travels as a
    /// GCHandle in userdata, freed by the library's exactly-once userdata_free). No exception
    /// leaves any of them: an exception unwinding into Rust frames would be undefined behaviour.
    /// </summary>
    internal static class Callbacks
    {
        internal static readonly LogFn Log = OnLog;
        internal static readonly UserdataFreeFn FreeGCHandle = OnFreeGCHandle;
        internal static readonly AbortFn Abort = OnAbort;
        internal static readonly UserdataFreeFn FreePinnedBody = OnFreePinnedBody;

        [MonoPInvokeCallback(typeof(LogFn))]
        private static void OnLog(IntPtr userdata, uint level, KestrelStr category, KestrelStr message)
        {
            try
            {
                var sink = (LogSink)GCHandle.FromIntPtr(userdata).Target;
                sink.Write((KestrelLogLevel)level, Utf8.Decode(category), Utf8.Decode(message));
            }
            catch (Exception)
            {
                // Swallowed: see the class comment.
            }
        }

        [MonoPInvokeCallback(typeof(UserdataFreeFn))]
        private static void OnFreeGCHandle(IntPtr userdata)
        {
            try
            {
                GCHandle.FromIntPtr(userdata).Free();
            }
            catch (Exception)
            {
                // Swallowed: see the class comment.
            }
        }

        [MonoPInvokeCallback(typeof(AbortFn))]
        private static void OnAbort(IntPtr userdata)
        {
            try
            {
                var context = (KestrelContext)GCHandle.FromIntPtr(userdata).Target;
                // This runs on a library I/O thread that must not block: cancellation callbacks
                // (user code) run on the thread pool instead.
                ThreadPool.QueueUserWorkItem(KestrelContext.SignalAbort, context);
            }
            catch (Exception)
            {
                // Swallowed: see the class comment.
            }
        }

        [MonoPInvokeCallback(typeof(UserdataFreeFn))]
        private static void OnFreePinnedBody(IntPtr userdata)
        {
            try
            {
                GCHandle handle = GCHandle.FromIntPtr(userdata);
                var body = (PinnedBody)handle.Target;
                handle.Free();
                body.Release();
            }
            catch (Exception)
            {
                // Swallowed: see the class comment.
            }
        }
    }
}
