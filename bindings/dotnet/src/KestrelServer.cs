// KestrelServer.cs: a kestrel server whose requests are served on .NET threads.
//
// Dispatch mode: PULL. The binding starts WorkerThreads .NET threads that each loop on
// kestrel_server_next_request and run the handler for the request they took. Why not POOL (library
// threads calling a handler delegate through a reverse P/Invoke)?
//  - No per-request native-to-managed transition: on Mono and .NET every call from a foreign thread
//    into a delegate pays for a thread-attach check and a GC mode switch, and the library's
//    threads become runtime threads the runtime never created.
//  - Handlers never run beneath a native frame, so no handler exception can unwind into Rust:
//    the only callbacks left (logger, abort notice, zero-copy body release) are tiny static thunks.
//  - The threads are ordinary managed threads: named, background, joined by Stop, and a
//    Task-returning handler frees its thread at its first incomplete await.
//  - Shutdown order is in .NET's hands: stop, join the pullers, then free (kestrel_server_free
//    may not run on a library thread, and here no handler ever runs on one).
// The one cost is a hop from the I/O thread to the puller, which POOL pays too: in a bare P/Invoke
// hello (no binding code) PULL and POOL served the same requests/s within noise under Mono.

using System;
using System.Collections.Generic;
using System.Runtime.CompilerServices;
using System.Threading;
using System.Threading.Tasks;

namespace Kestrel.Native
{
    /// <summary>
    /// An HTTP server backed by libkestrel. Build it from <see cref="KestrelServerOptions"/> and a
    /// handler, <see cref="Start"/> it, and <see cref="Stop"/> or <see cref="Dispose"/> it.
    /// </summary>
    /// <remarks>
    /// A handler's exception never reaches the library: it is logged (Error level, category
    /// <c>Kestrel.Native</c>) and the request is failed: a 500 if nothing was sent yet, otherwise
    /// the response is cut off. A response the handler left open is ended when the handler
    /// returns (or its task completes), as in ASP.NET Core.
    /// </remarks>
    public sealed class KestrelServer : IDisposable
    {
        /// <summary>How long a worker waits in the library before looking at the stop flag again.</summary>
        private const long PollMs = 1000;

        private readonly ServerHandle _handle;
        private readonly Action<KestrelContext> _syncHandler;
        private readonly Func<KestrelContext, Task> _asyncHandler;
        private readonly LogSink _sink;
        private readonly int _workerCount;
        private readonly object _lock = new object();
        private readonly List<Thread> _workers = new List<Thread>();
        private int _state; // 0 new, 1 started, 2 stopped, 3 disposed (changed under _lock)

        /// <summary>The server whose handler the current thread is running, if any.</summary>
        [ThreadStatic]
        private static KestrelServer t_inHandlerOf;

        private static readonly Action<Task, object> FinishAfterTask = OnHandlerTaskDone;

        /// <summary>Started servers not yet disposed, disposed at process exit (see <see cref="OnProcessExit"/>).</summary>
        private static readonly HashSet<KestrelServer> Live = new HashSet<KestrelServer>();

        static KestrelServer()
        {
            AppDomain.CurrentDomain.ProcessExit += OnProcessExit;
        }

        /// <summary>Builds a server with a synchronous handler. <paramref name="options"/> are consumed.</summary>
        /// <exception cref="KestrelException">The library refused the options.</exception>
        public KestrelServer(KestrelServerOptions options, Action<KestrelContext> handler)
            : this(options, handler, null)
        {
        }

        /// <summary>Builds a server with a Task-returning handler. <paramref name="options"/> are consumed.</summary>
        /// <exception cref="KestrelException">The library refused the options.</exception>
        public KestrelServer(KestrelServerOptions options, Func<KestrelContext, Task> handler)
            : this(options, null, handler)
        {
        }

        private KestrelServer(KestrelServerOptions options, Action<KestrelContext> sync, Func<KestrelContext, Task> async)
        {
            if (options == null)
            {
                throw new ArgumentNullException("options");
            }
            if (sync == null && async == null)
            {
                throw new ArgumentNullException("handler");
            }
            _syncHandler = sync;
            _asyncHandler = async;
            _sink = options.Sink;
            _workerCount = options.WorkerThreads;
            _handle = options.BuildServer();
        }

        /// <summary>The libkestrel version, e.g. <c>0.1.0</c>.</summary>
        public static string LibraryVersion
        {
            get { return System.Runtime.InteropServices.Marshal.PtrToStringAnsi(NativeMethods.kestrel_version()); }
        }

        /// <summary>
        /// Binds every endpoint and starts serving; returns once listening.
        /// </summary>
        /// <exception cref="KestrelException"><see cref="KestrelResult.BindFailed"/> (nothing stays bound; Start may be retried) or <see cref="KestrelResult.InvalidState"/>.</exception>
        public void Start()
        {
            lock (_lock)
            {
                ThrowIfDisposed();
                if (_state != 0)
                {
                    throw new InvalidOperationException("the server was already started");
                }
                Errors.Check(NativeMethods.kestrel_server_start(_handle));
                _state = 1;
                lock (Live)
                {
                    Live.Add(this);
                }
                for (int i = 0; i < _workerCount; i++)
                {
                    var worker = new Thread(WorkerLoop)
                    {
                        IsBackground = true,
                        Name = "kestrel-worker-" + i,
                    };
                    worker.Start();
                    _workers.Add(worker);
                }
            }
        }

        /// <summary>
        /// The bound addresses as URLs with their real ports (<c>http://127.0.0.1:41234</c>);
        /// empty before <see cref="Start"/>.
        /// </summary>
        public unsafe IReadOnlyList<string> Addresses
        {
            get
            {
                ThrowIfDisposed();
                var list = new List<string>();
                int count = (int)(ulong)NativeMethods.kestrel_server_address_count(_handle);
                byte* buf = stackalloc byte[256];
                for (int i = 0; i < count; i++)
                {
                    UIntPtr written;
                    uint rc = NativeMethods.kestrel_server_address(_handle, (UIntPtr)i, buf, (UIntPtr)256, out written);
                    if (rc == (uint)KestrelResult.BufferTooSmall)
                    {
                        byte[] big = new byte[(int)(ulong)written + 1];
                        fixed (byte* p = big)
                        {
                            Errors.Check(NativeMethods.kestrel_server_address(_handle, (UIntPtr)i, p, (UIntPtr)big.Length, out written));
                            list.Add(Utf8.Decode(p, (int)(ulong)written));
                        }
                        continue;
                    }
                    if (rc == (uint)KestrelResult.NotFound)
                    {
                        break; // stopped meanwhile
                    }
                    Errors.Check(rc);
                    list.Add(Utf8.Decode(buf, (int)(ulong)written));
                }
                return list;
            }
        }

        /// <summary>
        /// Stops gracefully: stops accepting, lets in-flight requests finish for up to
        /// <paramref name="timeout"/>, then aborts the rest (their calls throw
        /// <see cref="KestrelException"/> with <see cref="KestrelResult.Cancelled"/> and their
        /// <see cref="KestrelContext.RequestAborted"/> fires). Returns once the worker threads have
        /// exited, with the number of requests aborted. Stopping twice, or a server never started,
        /// is a no-op returning 0. The workers are joined, so a synchronous handler that ignores
        /// <see cref="KestrelContext.RequestAborted"/> and never returns holds Stop up.
        /// </summary>
        /// <remarks>
        /// From a handler, use <see cref="StopAsync"/>: Stop on a handler's own thread would wait
        /// for that handler's request (a synchronous handler gets an exception; code after an
        /// <c>await</c> would wait for the timeout and see its request aborted).
        /// </remarks>
        /// <exception cref="InvalidOperationException">Called from a synchronous handler of this server, whose own request it would wait for: use <see cref="StopAsync"/> there.</exception>
        public int Stop(TimeSpan timeout)
        {
            if (ReferenceEquals(t_inHandlerOf, this))
            {
                throw new InvalidOperationException("Stop would wait for the handler calling it; use StopAsync");
            }
            lock (_lock)
            {
                ThrowIfDisposed();
                return StopLocked(timeout);
            }
        }

        /// <summary>
        /// <see cref="Stop"/> on another thread: usable from inside a handler (which must not wait
        /// for the task, since the stop waits for the handler's request).
        /// </summary>
        public Task<int> StopAsync(TimeSpan timeout)
        {
            return Task.Factory.StartNew(
                () => Stop(timeout), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }

        private int StopLocked(TimeSpan timeout)
        {
            if (_state != 1)
            {
                _state = Math.Max(_state, 2);
                return 0;
            }
            double ms = timeout == Timeout.InfiniteTimeSpan
                ? uint.MaxValue
                : Math.Max(0, Math.Min(uint.MaxValue, timeout.TotalMilliseconds));
            UIntPtr aborted;
            uint rc = NativeMethods.kestrel_server_stop(_handle, (uint)ms, out aborted);
            _state = 2;
            // The workers see KESTREL_STOPPED (or the state, within PollMs) and exit.
            foreach (Thread worker in _workers)
            {
                worker.Join();
            }
            _workers.Clear();
            Errors.Check(rc);
            return (int)(ulong)aborted;
        }

        /// <summary>
        /// Stops at once if running (in-flight requests are aborted; call <see cref="Stop"/> first
        /// for a graceful stop), waits for the worker threads, and frees the native server.
        /// Idempotent. From inside a handler of this server the teardown moves to another thread.
        /// </summary>
        public void Dispose()
        {
            if (ReferenceEquals(t_inHandlerOf, this))
            {
                ThreadPool.QueueUserWorkItem(self => ((KestrelServer)self).Dispose(), this);
                return;
            }
            lock (_lock)
            {
                if (_state == 3)
                {
                    return;
                }
                try
                {
                    StopLocked(TimeSpan.Zero);
                }
                finally
                {
                    _state = 3;
                    // kestrel_server_free runs now, or after the last call still using the handle.
                    _handle.Dispose();
                    lock (Live)
                    {
                        Live.Remove(this);
                    }
                }
            }
        }

        /// <summary>
        /// Disposes the servers the program left running. A library thread that called into .NET
        /// (a log record, an abort notice) became a runtime thread; Mono waits at exit for such
        /// threads, which only end when their server is freed, so without this a program that
        /// returns from Main without disposing its server would never exit.
        /// </summary>
        private static void OnProcessExit(object sender, EventArgs e)
        {
            KestrelServer[] servers;
            lock (Live)
            {
                servers = new KestrelServer[Live.Count];
                Live.CopyTo(servers);
            }
            foreach (KestrelServer server in servers)
            {
                try
                {
                    server.Dispose();
                }
                catch (Exception)
                {
                    // The process is ending; nothing better to do.
                }
            }
        }

        private void ThrowIfDisposed()
        {
            if (_state == 3)
            {
                throw new ObjectDisposedException("KestrelServer");
            }
        }

        /// <summary>A worker: takes requests until the server stops.</summary>
        private void WorkerLoop()
        {
            int outcome;
            while (Volatile.Read(ref _state) == 1 && (outcome = PullOne()) != Stopped)
            {
                if (outcome == Pending)
                {
                    ScrubStack();
                }
            }
        }

        // What PullOne did: the server stopped; a request was served, or none came; a request's
        // Task handler is still running.
        private const int Stopped = 0;
        private const int Done = 1;
        private const int Pending = 2;

        /// <summary>Bytes of stack <see cref="ScrubStack"/> clears: more than a dispatch uses.</summary>
        private const int ScrubBytes = 16384;

        /// <summary>
        /// Clears the stack below the loop after a handler left its request pending. Mono scans
        /// thread stacks conservatively: a stale pointer to the request's context, left in stack
        /// memory the waiting native frames do not overwrite, would keep an abandoned request (a
        /// handler task that can never complete) from being collected and failed by its handle's
        /// finalizer. Synchronous handlers complete their request before returning: no need then.
        /// </summary>
        [MethodImpl(MethodImplOptions.NoInlining)]
        private static unsafe void ScrubStack()
        {
            byte* stack = stackalloc byte[ScrubBytes];
            for (int i = 0; i < ScrubBytes; i += sizeof(long))
            {
                Volatile.Write(ref *(long*)(stack + i), 0L);
            }
        }

        /// <summary>
        /// Waits for one request and dispatches it (<see cref="Stopped"/> once the server stopped). A method of its
        /// own so that no local of the loop keeps the last request's handle reachable while the
        /// worker waits (the handle's finalizer is the safety net for abandoned requests).
        /// </summary>
        [MethodImpl(MethodImplOptions.NoInlining)]
        private int PullOne()
        {
            RequestHandle request;
            uint rc;
            try
            {
                rc = NativeMethods.kestrel_server_next_request(_handle, PollMs, out request);
            }
            catch (ObjectDisposedException)
            {
                return Stopped;
            }
            if (rc == (uint)KestrelResult.Timeout)
            {
                return Done;
            }
            if (rc == (uint)KestrelResult.Stopped)
            {
                return Stopped;
            }
            if (rc != 0)
            {
                LogSink.Binding(_sink, KestrelLogLevel.Error, "kestrel_server_next_request: " + Errors.Exception(rc).Message);
                return Stopped;
            }
            return Dispatch(request) ? Pending : Done;
        }

        /// <summary>Runs the handler for one request; true if its task is still running. Never throws.</summary>
        private bool Dispatch(RequestHandle request)
        {
            KestrelContext context;
            try
            {
                context = new KestrelContext(this, request);
            }
            catch (Exception e)
            {
                LogSink.Binding(_sink, KestrelLogLevel.Error, "reading a request head failed: " + e);
                request.Dispose(); // fails the request (500)
                return false;
            }
            t_inHandlerOf = this;
            try
            {
                if (_syncHandler != null)
                {
                    _syncHandler(context);
                    context.FinishAfterHandler(null);
                    return false;
                }
                Task task = _asyncHandler(context);
                if (task == null || task.IsCompleted)
                {
                    context.FinishAfterHandler(task == null ? null : HandlerError(task));
                    return false;
                }
                // The worker goes back to pulling; the task's completion finishes the request.
                task.ContinueWith(
                    FinishAfterTask, context, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously,
                    TaskScheduler.Default);
                return true;
            }
            catch (Exception e)
            {
                context.FinishAfterHandler(e);
                return false;
            }
            finally
            {
                t_inHandlerOf = null;
            }
        }

        private static void OnHandlerTaskDone(Task task, object state)
        {
            ((KestrelContext)state).FinishAfterHandler(HandlerError(task));
        }

        /// <summary>The exception a finished handler task ended with, or null.</summary>
        private static Exception HandlerError(Task task)
        {
            if (task.IsFaulted)
            {
                AggregateException all = task.Exception;
                return all.InnerExceptions.Count == 1 ? all.InnerExceptions[0] : all;
            }
            if (task.IsCanceled)
            {
                return new TaskCanceledException(task);
            }
            return null;
        }

        /// <summary>Logs a binding record through the options' logger (or standard error).</summary>
        internal void Log(KestrelLogLevel level, string message)
        {
            LogSink.Binding(_sink, level, message);
        }
    }
}
