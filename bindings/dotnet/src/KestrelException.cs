// KestrelException.cs: result codes and the exception that carries them.

using System;
using System.Runtime.InteropServices;
using System.Text;

namespace Kestrel.Native
{
    /// <summary>
    /// A kestrel result code (<c>kestrel_result</c>). The numbers are the library's and are stable.
    /// </summary>
    public enum KestrelResult : uint
    {
        /// <summary>Success.</summary>
        Ok = 0,
        /// <summary>A Rust panic was caught at the API boundary.</summary>
        Panic = 1,
        /// <summary>A required pointer or callback argument was NULL.</summary>
        NullArgument = 2,
        /// <summary>An argument was out of range or unusable.</summary>
        InvalidArgument = 3,
        /// <summary>An endpoint URL could not be parsed.</summary>
        InvalidUrl = 4,
        /// <summary>A header name or value contains forbidden bytes (CR, LF, NUL...).</summary>
        InvalidHeader = 5,
        /// <summary>An endpoint could not be bound; nothing stays bound.</summary>
        BindFailed = 6,
        /// <summary>The call does not fit the object's state.</summary>
        InvalidState = 7,
        /// <summary>The response was already completed.</summary>
        AlreadyCompleted = 8,
        /// <summary>The request was aborted (client gone or server stopped).</summary>
        Cancelled = 9,
        /// <summary>The call would block an I/O thread.</summary>
        WouldBlock = 10,
        /// <summary>Waiting timed out.</summary>
        Timeout = 11,
        /// <summary>The server is stopped or stopping.</summary>
        Stopped = 12,
        /// <summary>An I/O error (opening a file, starting a thread...).</summary>
        IoError = 13,
        /// <summary>An output buffer was too small.</summary>
        BufferTooSmall = 14,
        /// <summary>The thing asked for does not exist.</summary>
        NotFound = 15,
    }

    /// <summary>
    /// A call into libkestrel failed. <see cref="Result"/> is the library's code,
    /// <see cref="ResultName"/> its name (<c>KESTREL_INVALID_URL</c>...) and
    /// <see cref="NativeMessage"/> the library's own explanation (<c>kestrel_last_error</c>).
    /// </summary>
    public class KestrelException : Exception
    {
        /// <summary>Makes an exception for a result code and the library's message.</summary>
        public KestrelException(KestrelResult result, string nativeMessage)
            : base(Format(result, nativeMessage))
        {
            Result = result;
            NativeMessage = nativeMessage ?? string.Empty;
        }

        /// <summary>The library's result code.</summary>
        public KestrelResult Result { get; private set; }

        /// <summary>The name of the code as the library spells it (<c>KESTREL_INVALID_URL</c>...).</summary>
        public string ResultName
        {
            get { return Errors.ResultName((uint)Result); }
        }

        /// <summary>The library's message for the failed call (may be empty).</summary>
        public string NativeMessage { get; private set; }

        private static string Format(KestrelResult result, string message)
        {
            string name = Errors.ResultName((uint)result);
            return string.IsNullOrEmpty(message) ? name : name + ": " + message;
        }
    }

    /// <summary>Turns result codes into exceptions.</summary>
    internal static unsafe class Errors
    {
        /// <summary>Throws a <see cref="KestrelException"/> unless <paramref name="rc"/> is OK.</summary>
        internal static void Check(uint rc)
        {
            if (rc != 0)
            {
                throw Exception(rc);
            }
        }

        /// <summary>
        /// The exception for a failed call. Must run on the thread that made the call, before any
        /// other kestrel call there: the message is thread-local and replaced by the next failure.
        /// </summary>
        internal static KestrelException Exception(uint rc)
        {
            return new KestrelException((KestrelResult)rc, LastError());
        }

        /// <summary>The calling thread's last error message (<c>kestrel_last_error</c>).</summary>
        internal static string LastError()
        {
            const int Inline = 512;
            byte* buf = stackalloc byte[Inline];
            UIntPtr written;
            uint rc = NativeMethods.kestrel_last_error(buf, (UIntPtr)Inline, out written);
            if (rc == 0)
            {
                return Utf8.Decode(buf, (int)(ulong)written);
            }
            if (rc == (uint)KestrelResult.BufferTooSmall)
            {
                // A long message (an OS error with a path, say): retry with the size it asked for.
                byte[] big = new byte[(int)(ulong)written + 1];
                fixed (byte* p = big)
                {
                    if (NativeMethods.kestrel_last_error(p, (UIntPtr)big.Length, out written) == 0)
                    {
                        return Utf8.Decode(p, (int)(ulong)written);
                    }
                }
            }
            return string.Empty;
        }

        /// <summary>The library's name for a code (<c>kestrel_result_name</c>).</summary>
        internal static string ResultName(uint rc)
        {
            return Marshal.PtrToStringAnsi(NativeMethods.kestrel_result_name(rc)) ?? "KESTREL_UNKNOWN";
        }
    }

    /// <summary>UTF-8 between native bytes and .NET strings, without intermediate arrays.</summary>
    internal static unsafe class Utf8
    {
        /// <summary>Strings up to this many bytes of UTF-8 are encoded on the stack.</summary>
        internal const int StackLimit = 512;

        // No BOM; invalid input becomes U+FFFD rather than an exception.
        private static readonly UTF8Encoding Encoding = new UTF8Encoding(false, false);

        /// <summary>Decodes <paramref name="len"/> bytes at <paramref name="ptr"/> (invalid bytes become U+FFFD).</summary>
        internal static string Decode(byte* ptr, int len)
        {
            return len == 0 ? string.Empty : Encoding.GetString(ptr, len);
        }

        /// <summary>Decodes a library view (<c>kestrel_str</c>).</summary>
        internal static string Decode(KestrelStr s)
        {
            return Decode((byte*)s.Ptr, checked((int)(ulong)s.Len));
        }

        /// <summary>The number of UTF-8 bytes of <paramref name="s"/>.</summary>
        internal static int ByteCount(string s)
        {
            return Encoding.GetByteCount(s);
        }

        /// <summary>Encodes <paramref name="s"/> into <paramref name="dest"/> (at least <see cref="ByteCount"/> bytes).</summary>
        internal static int Encode(string s, byte* dest, int capacity)
        {
            if (s.Length == 0)
            {
                return 0;
            }
            fixed (char* chars = s)
            {
                return Encoding.GetBytes(chars, s.Length, dest, capacity);
            }
        }

        /// <summary>Encodes <paramref name="s"/> into a new array (for strings too long for the stack).</summary>
        internal static byte[] ToArray(string s)
        {
            return Encoding.GetBytes(s);
        }
    }
}
