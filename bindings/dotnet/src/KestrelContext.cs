// KestrelContext.cs: one request being served, with its request and response views.

using System;
using System.Runtime.InteropServices;
using System.Threading;

namespace Kestrel.Native
{
    /// <summary>
    /// A request being served: <see cref="Request"/> to read it, <see cref="Response"/> to answer
    /// it. Valid until the response is completed (then every member that reaches the library
    /// throws <see cref="InvalidOperationException"/>).
    /// </summary>
    /// <remarks>
    /// Like ASP.NET Core's HttpContext it is not thread-safe: use it from one thread at a time
    /// (a handler's continuations may move between threads). The one exception: reading the
    /// request body on one thread while writing the response on another is allowed, as long as
    /// neither overlaps a completing call (<c>Send</c>, <c>End</c>, <c>Fail</c>...).
    /// </remarks>
    public sealed class KestrelContext
    {
        internal readonly RequestHandle Handle;
        internal readonly KestrelRequestHead Head;
        private readonly KestrelServer _server;
        private CancellationTokenSource _abort;
        private volatile bool _completed;

        /// <summary>sizeof(kestrel_request_head) as this binding knows it (the struct is versioned by size).</summary>
        private static readonly UIntPtr HeadSize = (UIntPtr)Marshal.SizeOf(typeof(KestrelRequestHead));

        internal KestrelContext(KestrelServer server, RequestHandle handle)
        {
            _server = server;
            Handle = handle;
            var head = new KestrelRequestHead();
            head.Size = HeadSize;
            // One crossing for method, target, version, addresses and every header: the views
            // stay valid as long as the handle, and are decoded only when asked for.
            Errors.Check(NativeMethods.kestrel_request_get_head(handle, ref head));
            Head = head;
            Request = new KestrelRequest(this);
            Response = new KestrelResponse(this);
        }

        /// <summary>The request: method, path, headers, body.</summary>
        public KestrelRequest Request { get; private set; }

        /// <summary>The response: status, headers, body.</summary>
        public KestrelResponse Response { get; private set; }

        /// <summary>The server serving this request.</summary>
        public KestrelServer Server
        {
            get { return _server; }
        }

        /// <summary>
        /// Whether the request was aborted: the client went away, the stream was reset, or the
        /// server stopped. False once the response is completed.
        /// </summary>
        public bool IsAborted
        {
            get { return !_completed && NativeMethods.kestrel_request_is_aborted(Handle) != 0; }
        }

        /// <summary>
        /// Cancelled when the request is aborted (client gone, stream reset, server stopped).
        /// Cancellation callbacks run on the thread pool, never on a library I/O thread.
        /// <see cref="CancellationToken.None"/> once the response is completed.
        /// </summary>
        public CancellationToken RequestAborted
        {
            get
            {
                CancellationTokenSource cts = Volatile.Read(ref _abort);
                if (cts != null)
                {
                    return cts.Token;
                }
                if (_completed)
                {
                    return CancellationToken.None;
                }
                cts = new CancellationTokenSource();
                CancellationTokenSource won = Interlocked.CompareExchange(ref _abort, cts, null);
                if (won != null)
                {
                    cts.Dispose();
                    return won.Token;
                }
                RegisterAbort();
                return cts.Token;
            }
        }

        /// <summary>Asks the library for an abort notice (once, on first use of <see cref="RequestAborted"/>).</summary>
        private void RegisterAbort()
        {
            // The GCHandle keeps this context alive for the library's callback; the library frees it
            // (userdata_free, exactly once) after the callback ran or when the request is finished.
            IntPtr userdata = GCHandle.ToIntPtr(GCHandle.Alloc(this));
            uint rc;
            try
            {
                rc = NativeMethods.kestrel_request_on_abort(Handle, Callbacks.Abort, userdata, Callbacks.FreeGCHandle);
            }
            catch (ObjectDisposedException)
            {
                GCHandle.FromIntPtr(userdata).Free(); // the call never reached the library
                throw new InvalidOperationException("the response was already completed");
            }
            Errors.Check(rc);
        }

        /// <summary>Cancels <see cref="RequestAborted"/>; queued to the thread pool by the abort callback.</summary>
        internal static void SignalAbort(object state)
        {
            var context = (KestrelContext)state;
            try
            {
                context._abort.Cancel();
            }
            catch (Exception e)
            {
                context._server.Log(KestrelLogLevel.Error, "a RequestAborted callback threw: " + e);
            }
        }

        /// <summary>Whether the response was completed (by the handler or by the binding).</summary>
        internal bool Completed
        {
            get { return _completed; }
        }

        internal void ThrowIfCompleted()
        {
            if (_completed)
            {
                throw new InvalidOperationException("the response was already completed");
            }
        }

        /// <summary>
        /// Records the outcome of a completing call: the library completed (and released) the
        /// request on OK, and also on CANCELLED (a completing call after an abort still counts) and
        /// ALREADY_COMPLETED. Other codes leave the response open.
        /// </summary>
        internal bool OnCompletingCall(uint rc)
        {
            if (rc == (uint)KestrelResult.Ok || rc == (uint)KestrelResult.Cancelled
                || rc == (uint)KestrelResult.AlreadyCompleted)
            {
                _completed = true;
                Handle.MarkCompleted();
                return true;
            }
            return false;
        }

        /// <summary>
        /// Called once the handler returned or its task completed: ends a response left open, or
        /// fails it after an exception (500 if nothing was sent, else the response is cut off), and
        /// logs the exception. Never throws.
        /// </summary>
        internal void FinishAfterHandler(Exception error)
        {
            try
            {
                if (error != null)
                {
                    LogHandlerError(error);
                }
                if (_completed)
                {
                    return;
                }
                uint rc = error == null
                    ? NativeMethods.kestrel_response_end(Handle)
                    : NativeMethods.kestrel_response_fail(Handle);
                if (!OnCompletingCall(rc))
                {
                    // Should not happen; disposing the handle fails the request so it is not leaked.
                    _server.Log(KestrelLogLevel.Error, "completing a request failed: " + Errors.Exception(rc).Message);
                    Handle.Dispose();
                }
            }
            catch (Exception e)
            {
                _server.Log(KestrelLogLevel.Error, "finishing a request failed: " + e);
            }
        }

        private void LogHandlerError(Exception error)
        {
            // A client that went away is routine: the calls that noticed it threw Cancelled.
            var kestrel = error as KestrelException;
            bool routine = (kestrel != null && kestrel.Result == KestrelResult.Cancelled)
                || (error is OperationCanceledException && IsAbortedQuietly());
            string what = Request.Describe();
            _server.Log(
                routine ? KestrelLogLevel.Debug : KestrelLogLevel.Error,
                "the handler for " + what + " threw: " + error);
        }

        private bool IsAbortedQuietly()
        {
            try
            {
                return IsAborted;
            }
            catch (Exception)
            {
                return false;
            }
        }
    }
}
