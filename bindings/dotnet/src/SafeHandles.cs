// SafeHandles.cs: one SafeHandle type per kestrel handle.
//
// A SafeHandle passed to a P/Invoke is reference-counted for the duration of the call, so a handle
// disposed on one thread is never freed under a call running on another; once closed, every call
// through it throws ObjectDisposedException instead of touching freed memory; and the finalizer
// releases whatever the program forgot.

using System;
using System.Runtime.InteropServices;

namespace Kestrel.Native
{
    /// <summary>
    /// Owns a <c>kestrel_options</c> until <c>kestrel_server_new</c> consumes it (then the handle is
    /// marked invalid without being freed) or the options are disposed.
    /// </summary>
    internal sealed class OptionsHandle : SafeHandle
    {
        public OptionsHandle() : base(IntPtr.Zero, true)
        {
        }

        public override bool IsInvalid
        {
            get { return handle == IntPtr.Zero; }
        }

        protected override bool ReleaseHandle()
        {
            NativeMethods.kestrel_options_free(handle);
            return true;
        }
    }

    /// <summary>
    /// Owns a <c>kestrel_server</c>. Releasing it calls <c>kestrel_server_free</c>, which joins the
    /// library's threads; it never runs on a library thread (the binding calls the library only
    /// from .NET threads, and finalizers run on the runtime's finalizer thread).
    /// </summary>
    internal sealed class ServerHandle : SafeHandle
    {
        public ServerHandle() : base(IntPtr.Zero, true)
        {
        }

        public override bool IsInvalid
        {
            get { return handle == IntPtr.Zero; }
        }

        protected override bool ReleaseHandle()
        {
            NativeMethods.kestrel_server_free(handle);
            return true;
        }
    }

    /// <summary>
    /// A <c>kestrel_request</c> taken with <c>kestrel_server_next_request</c> (which is also its
    /// <c>kestrel_response</c>). The header's rule: the handle is valid until the response is
    /// completed, and completing it is the only way to release it. So:
    /// <list type="bullet">
    /// <item>after a completing call that did complete, <see cref="MarkCompleted"/> closes this
    /// handle without releasing it (the library already has);</item>
    /// <item>a handle released while still open (disposed, or finalized because a handler's task was
    /// abandoned) completes the request with <c>kestrel_response_fail</c>: the client gets a 500
    /// instead of waiting forever, and the library frees the request.</item>
    /// </list>
    /// </summary>
    internal sealed class RequestHandle : SafeHandle
    {
        public RequestHandle() : base(IntPtr.Zero, true)
        {
        }

        public override bool IsInvalid
        {
            get { return handle == IntPtr.Zero; }
        }

        /// <summary>The library completed (and so released) the request: close without freeing.</summary>
        internal void MarkCompleted()
        {
            SetHandleAsInvalid();
        }

        protected override bool ReleaseHandle()
        {
            NativeMethods.kestrel_response_fail_raw(handle);
            return true;
        }
    }
}
