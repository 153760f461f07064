// Native.cs: the P/Invoke declarations of libkestrel's C API (include/kestrel.h), and nothing else.
//
// Only what both Mono and modern .NET support is used: [DllImport] with explicit Cdecl, delegates
// marked [UnmanagedFunctionPointer] for callbacks, blittable structs. No `delegate* unmanaged`,
// no [LibraryImport].
//
// Type mapping: size_t -> UIntPtr, kestrel_result / enums -> uint, C bool -> byte (keeps every
// signature blittable), pointers to bytes -> byte*, handles -> SafeHandle subclasses where the
// binding owns them (the marshaller AddRefs them for the duration of each call) or IntPtr where
// ownership passes to the library.

using System;
using System.Runtime.InteropServices;

namespace Kestrel.Native
{
    /// <summary>A view of bytes owned by the library (<c>kestrel_str</c>).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct KestrelStr
    {
        public IntPtr Ptr;
        public UIntPtr Len;
    }

    /// <summary>A header as two views (<c>kestrel_header</c>).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct KestrelHeader
    {
        public KestrelStr Name;
        public KestrelStr Value;
    }

    /// <summary>The whole request head (<c>kestrel_request_head</c>), filled in one call.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct KestrelRequestHead
    {
        public UIntPtr Size;
        public KestrelStr Method;
        public KestrelStr Scheme;
        public KestrelStr Path;
        public KestrelStr Query;
        public KestrelStr Target;
        public KestrelStr Version;
        public KestrelStr Authority;
        public KestrelStr RemoteAddr;
        public KestrelStr LocalAddr;
        public KestrelStr Id;
        public ulong ConnectionId;
        public IntPtr Headers;
        public UIntPtr HeaderCount;
    }

    /// <summary><c>kestrel_userdata_free_fn</c> and <c>kestrel_body_free_fn</c>.</summary>
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate void UserdataFreeFn(IntPtr userdata);

    /// <summary><c>kestrel_log_fn</c>.</summary>
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate void LogFn(IntPtr userdata, uint level, KestrelStr category, KestrelStr message);

    /// <summary><c>kestrel_abort_fn</c>.</summary>
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate void AbortFn(IntPtr userdata);

    /// <summary>
    /// Marks a static method called from native code. Mono's ahead-of-time compiler (iOS, some
    /// Unity targets) recognises the attribute by name and needs it on every reverse-P/Invoke
    /// target; everywhere else it is inert.
    /// </summary>
    [AttributeUsage(AttributeTargets.Method)]
    internal sealed class MonoPInvokeCallbackAttribute : Attribute
    {
        public MonoPInvokeCallbackAttribute(Type delegateType)
        {
            DelegateType = delegateType;
        }

        public Type DelegateType { get; private set; }
    }

    /// <summary>The C functions. Names and argument order follow the header exactly.</summary>
    internal static unsafe class NativeMethods
    {
        /// <summary>
        /// The library name. Mono maps it through Kestrel.Native.dll.config (to libkestrel.so.0);
        /// .NET probes libkestrel.so in the application directory and the loader's path.
        /// </summary>
        internal const string Lib = "kestrel";

        internal const uint DispatchPull = 2;
        internal const ulong ToEnd = ulong.MaxValue;

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr kestrel_version();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr kestrel_result_name(uint result);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_last_error(byte* buf, UIntPtr len, out UIntPtr written);

        // ----- options -----

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_options_new(out OptionsHandle options);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void kestrel_options_free(IntPtr options);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_options_add_urls(OptionsHandle options, byte* urls, UIntPtr len, uint protocols);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_options_add_listen_fd(OptionsHandle options, int fd, uint protocols);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_options_set_io_threads(OptionsHandle options, uint threads);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_options_set_dispatch(OptionsHandle options, uint mode);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_options_set_server_header(OptionsHandle options, byte enabled);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_options_set_response_buffer_size(OptionsHandle options, UIntPtr bytes);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_options_set_log_callback(
            OptionsHandle options, LogFn callback, uint minLevel, IntPtr userdata, UserdataFreeFn userdataFree);

        // ----- server -----

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_server_new(IntPtr options, out ServerHandle server);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_server_start(ServerHandle server);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern UIntPtr kestrel_server_address_count(ServerHandle server);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_server_address(
            ServerHandle server, UIntPtr index, byte* buf, UIntPtr len, out UIntPtr written);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_server_stop(ServerHandle server, uint timeoutMs, out UIntPtr aborted);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_server_next_request(ServerHandle server, long timeoutMs, out RequestHandle request);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void kestrel_server_free(IntPtr server);

        // ----- request -----
        // A kestrel_response is the same handle as its kestrel_request (the header says so), so the
        // response functions take the RequestHandle too: no kestrel_request_response crossing.

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_request_get_head(RequestHandle request, ref KestrelRequestHead head);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_request_read(RequestHandle request, byte* buf, UIntPtr len, out UIntPtr read);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern byte kestrel_request_is_aborted(RequestHandle request);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_request_on_abort(
            RequestHandle request, AbortFn callback, IntPtr userdata, UserdataFreeFn userdataFree);

        // ----- response -----

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_response_set_status(RequestHandle response, ushort status);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_response_add_header(
            RequestHandle response, byte* name, UIntPtr nameLen, byte* value, UIntPtr valueLen);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_response_set_header(
            RequestHandle response, byte* name, UIntPtr nameLen, byte* value, UIntPtr valueLen);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_response_add_trailer(
            RequestHandle response, byte* name, UIntPtr nameLen, byte* value, UIntPtr valueLen);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_response_remove_header(RequestHandle response, byte* name, UIntPtr nameLen);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_response_send(RequestHandle response, byte* body, UIntPtr len);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_response_send_owned(
            RequestHandle response, byte* body, UIntPtr len, UserdataFreeFn free, IntPtr userdata);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_response_write(RequestHandle response, byte* data, UIntPtr len);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_response_flush(RequestHandle response);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_response_end(RequestHandle response);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_response_fail(RequestHandle response);

        /// <summary>Used by <see cref="RequestHandle.ReleaseHandle"/>, which has only the pointer.</summary>
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, EntryPoint = "kestrel_response_fail")]
        internal static extern uint kestrel_response_fail_raw(IntPtr response);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint kestrel_response_send_file(
            RequestHandle response, byte* path, UIntPtr pathLen, ulong offset, ulong length);
    }
}
