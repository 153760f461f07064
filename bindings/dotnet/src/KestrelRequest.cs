// KestrelRequest.cs: the request side of a KestrelContext.

using System;
using System.Collections.Generic;
using System.IO;
using System.Runtime.InteropServices;

namespace Kestrel.Native
{
    /// <summary>
    /// The request of a <see cref="KestrelContext"/>. Strings are decoded from the library's views
    /// on first use (UTF-8; invalid bytes become U+FFFD) and cached; nothing is copied before.
    /// </summary>
    public sealed unsafe class KestrelRequest
    {
        private readonly KestrelContext _context;
        private string _method;
        private string _scheme;
        private string _path;
        private string _query;
        private string _target;
        private string _protocol;
        private string _host;
        private string _remoteAddress;
        private string _localAddress;
        private string _id;
        private List<KeyValuePair<string, string>> _headers;
        private Stream _body;

        internal KestrelRequest(KestrelContext context)
        {
            _context = context;
        }

        /// <summary><c>GET</c>, <c>POST</c>... (the common methods without allocating).</summary>
        public string Method
        {
            get { return _method ?? (_method = DecodeMethod()); }
        }

        /// <summary><c>http</c> or <c>https</c>.</summary>
        public string Scheme
        {
            get { return _scheme ?? (_scheme = Decode(_context.Head.Scheme)); }
        }

        /// <summary>The path as sent, not percent-decoded (<c>/a%20b</c>).</summary>
        public string Path
        {
            get { return _path ?? (_path = Decode(_context.Head.Path)); }
        }

        /// <summary>The query without <c>?</c>; empty when absent.</summary>
        public string Query
        {
            get { return _query ?? (_query = Decode(_context.Head.Query)); }
        }

        /// <summary>The raw request target (<c>/path?query</c>, an absolute URL, or <c>*</c>).</summary>
        public string Target
        {
            get { return _target ?? (_target = Decode(_context.Head.Target)); }
        }

        /// <summary><c>HTTP/1.0</c>, <c>HTTP/1.1</c> or <c>HTTP/2</c>.</summary>
        public string Protocol
        {
            get { return _protocol ?? (_protocol = Decode(_context.Head.Version)); }
        }

        /// <summary>The authority (absolute-form target, Host header, or <c>:authority</c>); empty when absent.</summary>
        public string Host
        {
            get { return _host ?? (_host = Decode(_context.Head.Authority)); }
        }

        /// <summary>The client's address (<c>127.0.0.1:50000</c>, <c>[::1]:50000</c>, <c>unix:</c>).</summary>
        public string RemoteAddress
        {
            get { return _remoteAddress ?? (_remoteAddress = Decode(_context.Head.RemoteAddr)); }
        }

        /// <summary>The server's address of the connection.</summary>
        public string LocalAddress
        {
            get { return _localAddress ?? (_localAddress = Decode(_context.Head.LocalAddr)); }
        }

        /// <summary>The request id, <c>connection:request</c> in hexadecimal.</summary>
        public string Id
        {
            get { return _id ?? (_id = Decode(_context.Head.Id)); }
        }

        /// <summary>The connection id, unique within the server.</summary>
        public ulong ConnectionId
        {
            get { return _context.Head.ConnectionId; }
        }

        /// <summary>
        /// Every header in order, lower-case names, grouped by name in order of first appearance;
        /// each repeated value is its own entry.
        /// </summary>
        public IReadOnlyList<KeyValuePair<string, string>> Headers
        {
            get
            {
                if (_headers == null)
                {
                    _context.ThrowIfCompleted();
                    int count = HeaderCount;
                    var list = new List<KeyValuePair<string, string>>(count);
                    var headers = (KestrelHeader*)_context.Head.Headers;
                    for (int i = 0; i < count; i++)
                    {
                        list.Add(new KeyValuePair<string, string>(Utf8.Decode(headers[i].Name), Utf8.Decode(headers[i].Value)));
                    }
                    _headers = list;
                }
                return _headers;
            }
        }

        /// <summary>
        /// The first value of header <paramref name="name"/> (case-insensitive), or null. Compares
        /// against the library's bytes: only the value found is decoded.
        /// </summary>
        public string GetHeader(string name)
        {
            if (name == null)
            {
                throw new ArgumentNullException("name");
            }
            _context.ThrowIfCompleted();
            var headers = (KestrelHeader*)_context.Head.Headers;
            int count = HeaderCount;
            for (int i = 0; i < count; i++)
            {
                if (NameEquals(headers[i].Name, name))
                {
                    return Utf8.Decode(headers[i].Value);
                }
            }
            return null;
        }

        /// <summary>Every value of header <paramref name="name"/> (case-insensitive), in order; empty if none.</summary>
        public IReadOnlyList<string> GetHeaderValues(string name)
        {
            if (name == null)
            {
                throw new ArgumentNullException("name");
            }
            _context.ThrowIfCompleted();
            var values = new List<string>();
            var headers = (KestrelHeader*)_context.Head.Headers;
            int count = HeaderCount;
            for (int i = 0; i < count; i++)
            {
                if (NameEquals(headers[i].Name, name))
                {
                    values.Add(Utf8.Decode(headers[i].Value));
                }
            }
            return values;
        }

        /// <summary>
        /// Reads body bytes into <paramref name="buffer"/>, waiting until some arrive; returns the
        /// count, 0 at the end of the body. The first read answers <c>Expect: 100-continue</c>.
        /// Blocks the calling thread (in a Task handler, a thread-pool thread).
        /// </summary>
        /// <exception cref="KestrelException"><see cref="KestrelResult.Cancelled"/> when the client went away.</exception>
        public int Read(Span<byte> buffer)
        {
            if (buffer.IsEmpty)
            {
                return 0;
            }
            _context.ThrowIfCompleted();
            UIntPtr read;
            uint rc;
            fixed (byte* p = &MemoryMarshal.GetReference(buffer))
            {
                rc = NativeMethods.kestrel_request_read(_context.Handle, p, (UIntPtr)buffer.Length, out read);
            }
            Errors.Check(rc);
            return (int)(ulong)read;
        }

        /// <summary>Reads body bytes into <paramref name="buffer"/> at <paramref name="offset"/>; see <see cref="Read(Span{byte})"/>.</summary>
        public int Read(byte[] buffer, int offset, int count)
        {
            return Read(new Span<byte>(buffer, offset, count));
        }

        /// <summary>The body as a read-only, non-seekable <see cref="Stream"/>.</summary>
        public Stream Body
        {
            get { return _body ?? (_body = new RequestBodyStream(this)); }
        }

        /// <summary>"METHOD target" for log messages, without touching a completed request.</summary>
        internal string Describe()
        {
            if (_method != null && _target != null)
            {
                return _method + " " + _target;
            }
            return _context.Completed ? "a completed request" : Method + " " + Target;
        }

        private int HeaderCount
        {
            get { return checked((int)(ulong)_context.Head.HeaderCount); }
        }

        private string Decode(KestrelStr view)
        {
            // The views die with the request: never decode after completion.
            _context.ThrowIfCompleted();
            return Utf8.Decode(view);
        }

        private string DecodeMethod()
        {
            _context.ThrowIfCompleted();
            KestrelStr m = _context.Head.Method;
            var p = (byte*)m.Ptr;
            switch ((int)(ulong)m.Len)
            {
                case 3:
                    if (p[0] == 'G' && p[1] == 'E' && p[2] == 'T') return "GET";
                    if (p[0] == 'P' && p[1] == 'U' && p[2] == 'T') return "PUT";
                    break;
                case 4:
                    if (p[0] == 'P' && p[1] == 'O' && p[2] == 'S' && p[3] == 'T') return "POST";
                    if (p[0] == 'H' && p[1] == 'E' && p[2] == 'A' && p[3] == 'D') return "HEAD";
                    break;
            }
            return Utf8.Decode(m);
        }

        /// <summary>ASCII case-insensitive comparison of a (lower-case) header name with <paramref name="name"/>.</summary>
        private static bool NameEquals(KestrelStr bytes, string name)
        {
            if ((int)(ulong)bytes.Len != name.Length)
            {
                return false;
            }
            var p = (byte*)bytes.Ptr;
            for (int i = 0; i < name.Length; i++)
            {
                int c = name[i];
                if (c >= 'A' && c <= 'Z')
                {
                    c += 'a' - 'A';
                }
                if (c != p[i])
                {
                    return false;
                }
            }
            return true;
        }
    }

    /// <summary>The request body as a read-only <see cref="Stream"/>.</summary>
    internal sealed class RequestBodyStream : Stream
    {
        private readonly KestrelRequest _request;

        internal RequestBodyStream(KestrelRequest request)
        {
            _request = request;
        }

        public override bool CanRead
        {
            get { return true; }
        }

        public override bool CanSeek
        {
            get { return false; }
        }

        public override bool CanWrite
        {
            get { return false; }
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

        public override int Read(byte[] buffer, int offset, int count)
        {
            return _request.Read(buffer, offset, count);
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin)
        {
            throw new NotSupportedException();
        }

        public override void SetLength(long value)
        {
            throw new NotSupportedException();
        }

        public override void Write(byte[] buffer, int offset, int count)
        {
            throw new NotSupportedException();
        }
    }
}
