// KestrelResponse.cs: the response side of a KestrelContext.

using System;
using System.Buffers;
using System.IO;
using System.Runtime.InteropServices;

namespace Kestrel.Native
{
    /// <summary>
    /// The response of a <see cref="KestrelContext"/>. Set the status and headers, then either
    /// complete it in one call (<see cref="Send(ReadOnlySpan{byte})"/>, <see cref="SendOwned"/>,
    /// <see cref="SendFile"/>) or stream it (<see cref="Write(ReadOnlySpan{byte})"/>,
    /// <see cref="Flush"/>, then <see cref="End"/>). A response the handler leaves open is ended
    /// when the handler returns; after an exception it is failed (a 500, or cut off once started).
    /// </summary>
    /// <remarks>
    /// Completing calls (<c>Send</c>, <c>SendOwned</c>, <c>SendFile</c>, <c>End</c>, <c>Fail</c>)
    /// do not throw when the client went away (the request is over either way:
    /// <see cref="KestrelContext.IsAborted"/> tells); <c>Write</c> and <c>Flush</c> throw
    /// <see cref="KestrelException"/> with <see cref="KestrelResult.Cancelled"/> so that a
    /// streaming loop stops.
    /// </remarks>
    public sealed unsafe class KestrelResponse
    {
        private const int AddHeaderOp = 0;
        private const int SetHeaderOp = 1;
        private const int AddTrailerOp = 2;

        /// <summary>Strings whose UTF-8 may exceed this many bytes are encoded into an array, not the stack.</summary>
        private const int StackBytes = 1024;

        private readonly KestrelContext _context;
        private int _status = 200;
        private bool _started;
        private Stream _body;

        internal KestrelResponse(KestrelContext context)
        {
            _context = context;
        }

        /// <summary>The status code (200..999; default 200). Set it before the response starts.</summary>
        /// <exception cref="KestrelException">Out of range, or the response already started (<see cref="KestrelResult.InvalidState"/>).</exception>
        public int StatusCode
        {
            get { return _status; }
            set
            {
                if (value < 0 || value > ushort.MaxValue)
                {
                    throw new ArgumentOutOfRangeException("value", "not an HTTP status code");
                }
                _context.ThrowIfCompleted();
                Errors.Check(NativeMethods.kestrel_response_set_status(_context.Handle, (ushort)value));
                _status = value;
            }
        }

        /// <summary>Whether the head was sent (a write or flush happened).</summary>
        public bool HasStarted
        {
            get { return _started; }
        }

        /// <summary>Whether the response was completed.</summary>
        public bool IsCompleted
        {
            get { return _context.Completed; }
        }

        /// <summary>Adds a header (repeats allowed). Before the response starts.</summary>
        /// <exception cref="KestrelException"><see cref="KestrelResult.InvalidHeader"/> for a name that is not a token or bytes like CR/LF; <see cref="KestrelResult.InvalidState"/> once started.</exception>
        public void AddHeader(string name, string value)
        {
            HeaderCall(AddHeaderOp, name, value);
        }

        /// <summary>Sets a header, replacing earlier values. Before the response starts.</summary>
        public void SetHeader(string name, string value)
        {
            HeaderCall(SetHeaderOp, name, value);
        }

        /// <summary>Adds a header given as bytes (no encoding step).</summary>
        public void AddHeader(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
        {
            HeaderCall(AddHeaderOp, name, value);
        }

        /// <summary>Sets a header given as bytes (no encoding step).</summary>
        public void SetHeader(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
        {
            HeaderCall(SetHeaderOp, name, value);
        }

        /// <summary>
        /// Adds a trailer, sent after the body: always on HTTP/2; on HTTP/1.1 only to clients that
        /// sent <c>TE: trailers</c>, and only if added before the response started.
        /// </summary>
        public void AddTrailer(string name, string value)
        {
            HeaderCall(AddTrailerOp, name, value);
        }

        /// <summary>Removes every value of a header (a missing header is not an error). Before the response starts.</summary>
        public void RemoveHeader(string name)
        {
            if (name == null)
            {
                throw new ArgumentNullException("name");
            }
            _context.ThrowIfCompleted();
            int max = MaxBytes(name);
            if (max <= StackBytes)
            {
                byte* buf = stackalloc byte[max];
                int n = Utf8.Encode(name, buf, max);
                Errors.Check(NativeMethods.kestrel_response_remove_header(_context.Handle, buf, (UIntPtr)n));
            }
            else
            {
                byte[] bytes = Utf8.ToArray(name);
                fixed (byte* p = bytes)
                {
                    Errors.Check(NativeMethods.kestrel_response_remove_header(_context.Handle, p, (UIntPtr)bytes.Length));
                }
            }
        }

        /// <summary>
        /// Completes the response with <paramref name="body"/> as the whole body (Content-Length set).
        /// The library copies the bytes before this returns. The response must not have started.
        /// </summary>
        /// <exception cref="KestrelException"><see cref="KestrelResult.InvalidState"/> after a write or flush (the response stays open: finish it with <see cref="End"/>).</exception>
        public void Send(ReadOnlySpan<byte> body)
        {
            _context.ThrowIfCompleted();
            uint rc;
            fixed (byte* p = &MemoryMarshal.GetReference(body))
            {
                rc = NativeMethods.kestrel_response_send(_context.Handle, p, (UIntPtr)body.Length);
            }
            Completing(rc);
        }

        /// <summary>Completes the response with <paramref name="body"/> in UTF-8 as the whole body.</summary>
        public void Send(string body)
        {
            if (body == null)
            {
                throw new ArgumentNullException("body");
            }
            int max = MaxBytes(body);
            if (max <= StackBytes)
            {
                byte* buf = stackalloc byte[max];
                int n = Utf8.Encode(body, buf, max);
                Send(new ReadOnlySpan<byte>(buf, n));
            }
            else
            {
                Send(new ReadOnlySpan<byte>(Utf8.ToArray(body)));
            }
        }

        /// <summary>
        /// Completes the response with <paramref name="body"/> without copying it: the memory is
        /// pinned and lent to the library, which releases it (on any thread) once the bytes are sent
        /// or dropped. Do not change it until then. Suits large or shared immutable bodies.
        /// </summary>
        public void SendOwned(ReadOnlyMemory<byte> body)
        {
            _context.ThrowIfCompleted();
            if (body.IsEmpty)
            {
                Send(ReadOnlySpan<byte>.Empty);
                return;
            }
            MemoryHandle pin = body.Pin();
            var lent = new PinnedBody(pin);
            // The library calls FreePinnedBody exactly once, also when send_owned fails; it gets
            // the body's GCHandle, which keeps `lent` (and through it the pin) alive until then.
            IntPtr userdata = GCHandle.ToIntPtr(GCHandle.Alloc(lent));
            uint rc;
            try
            {
                rc = NativeMethods.kestrel_response_send_owned(
                    _context.Handle, (byte*)pin.Pointer, (UIntPtr)body.Length, Callbacks.FreePinnedBody, userdata);
            }
            catch (ObjectDisposedException)
            {
                GCHandle.FromIntPtr(userdata).Free(); // the call never reached the library
                lent.Release();
                throw new InvalidOperationException("the response was already completed");
            }
            Completing(rc);
        }

        /// <summary>
        /// Completes the response with <paramref name="length"/> bytes (-1: to the end) of the file
        /// at <paramref name="path"/> from <paramref name="offset"/>, with Content-Length. The file is
        /// opened on the calling thread and read as the client takes it.
        /// </summary>
        /// <exception cref="KestrelException"><see cref="KestrelResult.IoError"/> for a missing or non-regular file, <see cref="KestrelResult.InvalidArgument"/> for a range past the end; the response stays open either way (send a 404, say).</exception>
        public void SendFile(string path, long offset = 0, long length = -1)
        {
            if (path == null)
            {
                throw new ArgumentNullException("path");
            }
            if (offset < 0 || length < -1)
            {
                throw new ArgumentOutOfRangeException(offset < 0 ? "offset" : "length");
            }
            _context.ThrowIfCompleted();
            byte[] bytes = Utf8.ToArray(path);
            ulong len = length == -1 ? NativeMethods.ToEnd : (ulong)length;
            uint rc;
            fixed (byte* p = bytes)
            {
                rc = NativeMethods.kestrel_response_send_file(_context.Handle, p, (UIntPtr)bytes.Length, (ulong)offset, len);
            }
            Completing(rc);
        }

        /// <summary>
        /// Writes body bytes (copied by the library), starting the response if needed; the body is
        /// then sent chunked on HTTP/1.1 unless a Content-Length header was set. Waits while the
        /// response buffer (<see cref="KestrelServerOptions.ResponseBufferSize"/>) is full.
        /// </summary>
        /// <exception cref="KestrelException"><see cref="KestrelResult.Cancelled"/> once the client went away.</exception>
        public void Write(ReadOnlySpan<byte> data)
        {
            _context.ThrowIfCompleted();
            if (data.IsEmpty)
            {
                return;
            }
            uint rc;
            fixed (byte* p = &MemoryMarshal.GetReference(data))
            {
                rc = NativeMethods.kestrel_response_write(_context.Handle, p, (UIntPtr)data.Length);
            }
            _started = true;
            Errors.Check(rc);
        }

        /// <summary>Writes <paramref name="count"/> bytes of <paramref name="buffer"/> from <paramref name="offset"/>.</summary>
        public void Write(byte[] buffer, int offset, int count)
        {
            Write(new ReadOnlySpan<byte>(buffer, offset, count));
        }

        /// <summary>Writes <paramref name="text"/> in UTF-8.</summary>
        public void Write(string text)
        {
            if (text == null)
            {
                throw new ArgumentNullException("text");
            }
            int max = MaxBytes(text);
            if (max <= StackBytes)
            {
                byte* buf = stackalloc byte[max];
                int n = Utf8.Encode(text, buf, max);
                Write(new ReadOnlySpan<byte>(buf, n));
            }
            else
            {
                Write(new ReadOnlySpan<byte>(Utf8.ToArray(text)));
            }
        }

        /// <summary>Starts the response if needed and waits until every byte written so far was handed to the connection.</summary>
        public void Flush()
        {
            _context.ThrowIfCompleted();
            uint rc = NativeMethods.kestrel_response_flush(_context.Handle);
            _started = true;
            Errors.Check(rc);
        }

        /// <summary>Completes the response: ends a streamed body (trailers follow), or sends the head with an empty body.</summary>
        public void End()
        {
            _context.ThrowIfCompleted();
            Completing(NativeMethods.kestrel_response_end(_context.Handle));
        }

        /// <summary>
        /// Completes the request as failed: a 500 with an empty body if nothing was sent, otherwise
        /// the response is cut off (HTTP/1.1 closes the connection, HTTP/2 resets the stream).
        /// </summary>
        public void Fail()
        {
            _context.ThrowIfCompleted();
            Completing(NativeMethods.kestrel_response_fail(_context.Handle));
        }

        /// <summary>The body as a write-only, non-seekable <see cref="Stream"/> (<see cref="Stream.Flush"/> flushes).</summary>
        public Stream Body
        {
            get { return _body ?? (_body = new ResponseBodyStream(this)); }
        }

        private void Completing(uint rc)
        {
            if (!_context.OnCompletingCall(rc))
            {
                throw Errors.Exception(rc);
            }
        }

        private static int MaxBytes(string s)
        {
            // UTF-8 needs at most 3 bytes per UTF-16 unit (a surrogate pair: 4 for 2 units).
            return s.Length > StackBytes ? int.MaxValue : s.Length * 3;
        }

        private void HeaderCall(int op, string name, string value)
        {
            if (name == null)
            {
                throw new ArgumentNullException("name");
            }
            if (value == null)
            {
                throw new ArgumentNullException("value");
            }
            _context.ThrowIfCompleted();
            int maxName = MaxBytes(name);
            int maxValue = MaxBytes(value);
            if (maxName <= StackBytes && maxValue <= StackBytes)
            {
                byte* nameBuf = stackalloc byte[maxName];
                byte* valueBuf = stackalloc byte[maxValue];
                int n = Utf8.Encode(name, nameBuf, maxName);
                int v = Utf8.Encode(value, valueBuf, maxValue);
                Errors.Check(CallHeader(op, nameBuf, n, valueBuf, v));
            }
            else
            {
                HeaderCall(op, new ReadOnlySpan<byte>(Utf8.ToArray(name)), new ReadOnlySpan<byte>(Utf8.ToArray(value)));
            }
        }

        private void HeaderCall(int op, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
        {
            _context.ThrowIfCompleted();
            fixed (byte* n = &MemoryMarshal.GetReference(name))
            fixed (byte* v = &MemoryMarshal.GetReference(value))
            {
                Errors.Check(CallHeader(op, n, name.Length, v, value.Length));
            }
        }

        private uint CallHeader(int op, byte* name, int nameLen, byte* value, int valueLen)
        {
            // The library rejects NULL even for empty strings; an empty stack buffer may be NULL.
            byte empty = 0;
            if (name == null)
            {
                name = &empty;
            }
            if (value == null)
            {
                value = &empty;
            }
            switch (op)
            {
                case AddHeaderOp:
                    return NativeMethods.kestrel_response_add_header(_context.Handle, name, (UIntPtr)nameLen, value, (UIntPtr)valueLen);
                case SetHeaderOp:
                    return NativeMethods.kestrel_response_set_header(_context.Handle, name, (UIntPtr)nameLen, value, (UIntPtr)valueLen);
                default:
                    return NativeMethods.kestrel_response_add_trailer(_context.Handle, name, (UIntPtr)nameLen, value, (UIntPtr)valueLen);
            }
        }
    }

    /// <summary>A body lent to the library by <see cref="KestrelResponse.SendOwned"/>: its pin, released once.</summary>
    internal sealed class PinnedBody
    {
        private MemoryHandle _pin;

        internal PinnedBody(MemoryHandle pin)
        {
            _pin = pin;
        }

        internal void Release()
        {
            _pin.Dispose();
        }
    }

    /// <summary>The response body as a write-only <see cref="Stream"/>.</summary>
    internal sealed class ResponseBodyStream : Stream
    {
        private readonly KestrelResponse _response;

        internal ResponseBodyStream(KestrelResponse response)
        {
            _response = response;
        }

        public override bool CanRead
        {
            get { return false; }
        }

        public override bool CanSeek
        {
            get { return false; }
        }

        public override bool CanWrite
        {
            get { return true; }
        }

        public override long Length
        {
            get { throw new NotSupportedException(); }
        }

        public override long Position
        {
            get { throw new NotSupportedException(); }
            set { throw new NotSupportedException(); }
        }

        public override void Write(byte[] buffer, int offset, int count)
        {
            _response.Write(buffer, offset, count);
        }

        public override void Flush()
        {
            _response.Flush();
        }

        public override int Read(byte[] buffer, int offset, int count)
        {
            throw new NotSupportedException();
        }

        public override long Seek(long offset, SeekOrigin origin)
        {
            throw new NotSupportedException();
        }

        public override void SetLength(long value)
        {
            throw new NotSupportedException();
        }
    }
}
