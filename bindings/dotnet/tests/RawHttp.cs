// RawHttp.cs: a small HTTP/1.1 client over a socket, for tests that must see the wire: chunked
// framing, a response cut off, a chunk arriving before the handler finished, a client leaving.

using System;
using System.Collections.Generic;
using System.IO;
using System.Net.Sockets;
using System.Text;

namespace Kestrel.Native.Tests
{
    /// <summary>A parsed response.</summary>
    internal sealed class RawResponse
    {
        public int Status;
        public readonly List<KeyValuePair<string, string>> Headers = new List<KeyValuePair<string, string>>();
        public readonly List<KeyValuePair<string, string>> Trailers = new List<KeyValuePair<string, string>>();
        public byte[] Body = new byte[0];
        public bool Chunked;

        /// <summary>Whether the body was whole: every Content-Length byte, or the last chunk seen.</summary>
        public bool Complete;

        public string BodyText
        {
            get { return Encoding.UTF8.GetString(Body); }
        }

        /// <summary>The first value of a header (case-insensitive) or null.</summary>
        public string Header(string name)
        {
            foreach (var h in Headers)
            {
                if (string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase))
                {
                    return h.Value;
                }
            }
            return null;
        }
    }

    /// <summary>One client connection.</summary>
    internal sealed class RawConnection : IDisposable
    {
        private readonly TcpClient _client;
        private readonly Stream _stream;
        private readonly byte[] _buf = new byte[65536];
        private int _start;
        private int _end;

        public RawConnection(int port, int timeoutMs = 15000)
        {
            _client = new TcpClient();
            _client.NoDelay = true;
            _client.Connect("127.0.0.1", port);
            _client.ReceiveTimeout = timeoutMs;
            _client.SendTimeout = timeoutMs;
            _stream = _client.GetStream();
        }

        /// <summary>Sends a request; adds Host, and Content-Length when there is a body.</summary>
        public void Send(string method, string target, byte[] body = null, params string[] headers)
        {
            var head = new StringBuilder();
            head.Append(method).Append(' ').Append(target).Append(" HTTP/1.1\r\nHost: 127.0.0.1\r\n");
            foreach (string h in headers)
            {
                head.Append(h).Append("\r\n");
            }
            if (body != null)
            {
                head.Append("Content-Length: ").Append(body.Length).Append("\r\n");
            }
            head.Append("\r\n");
            byte[] bytes = Encoding.UTF8.GetBytes(head.ToString());
            _stream.Write(bytes, 0, bytes.Length);
            if (body != null)
            {
                _stream.Write(body, 0, body.Length);
            }
            _stream.Flush();
        }

        /// <summary>Reads the status line and headers.</summary>
        public RawResponse ReadHead()
        {
            var response = new RawResponse();
            string status = ReadLine();
            if (status == null)
            {
                throw new IOException("connection closed before a response");
            }
            string[] parts = status.Split(' ');
            response.Status = int.Parse(parts[1]);
            string line;
            if (response.Status >= 100 && response.Status < 200)
            {
                // An interim response (100 Continue): skip it, the real one follows.
                while (!string.IsNullOrEmpty(ReadLine()))
                {
                }
                return ReadHead();
            }
            while (!string.IsNullOrEmpty(line = ReadLine()))
            {
                int colon = line.IndexOf(':');
                response.Headers.Add(new KeyValuePair<string, string>(line.Substring(0, colon).Trim(), line.Substring(colon + 1).Trim()));
            }
            string te = response.Header("transfer-encoding");
            response.Chunked = te != null && te.IndexOf("chunked", StringComparison.OrdinalIgnoreCase) >= 0;
            return response;
        }

        /// <summary>Reads the next chunk of a chunked body: its bytes, or null after the last one (or at EOF).</summary>
        public byte[] ReadChunk(RawResponse response)
        {
            string sizeLine = ReadLine();
            if (sizeLine == null)
            {
                return null; // cut off
            }
            int semicolon = sizeLine.IndexOf(';');
            int size = Convert.ToInt32(semicolon >= 0 ? sizeLine.Substring(0, semicolon) : sizeLine, 16);
            if (size == 0)
            {
                string trailer;
                while (!string.IsNullOrEmpty(trailer = ReadLine()))
                {
                    int colon = trailer.IndexOf(':');
                    response.Trailers.Add(new KeyValuePair<string, string>(trailer.Substring(0, colon).Trim(), trailer.Substring(colon + 1).Trim()));
                }
                response.Complete = true;
                return null;
            }
            byte[] data = ReadExact(size);
            if (data == null)
            {
                return null;
            }
            ReadLine();
            return data;
        }

        /// <summary>Reads a whole response (head and body).</summary>
        public RawResponse ReadResponse(bool headRequest = false)
        {
            RawResponse response = ReadHead();
            var body = new MemoryStream();
            if (headRequest || response.Status == 204 || response.Status == 304)
            {
                response.Complete = true;
            }
            else if (response.Chunked)
            {
                byte[] chunk;
                while ((chunk = ReadChunk(response)) != null)
                {
                    body.Write(chunk, 0, chunk.Length);
                }
            }
            else if (response.Header("content-length") != null)
            {
                int length = int.Parse(response.Header("content-length"));
                byte[] data = ReadExact(length);
                if (data != null)
                {
                    body.Write(data, 0, data.Length);
                    response.Complete = true;
                }
            }
            else
            {
                int n;
                while ((n = Fill()) > 0)
                {
                    body.Write(_buf, _start, n);
                    _start = _end;
                }
                response.Complete = true;
            }
            response.Body = body.ToArray();
            return response;
        }

        /// <summary>Whether the server closed the connection (EOF within the receive timeout).</summary>
        public bool ReadsEof()
        {
            try
            {
                return _start == _end && Fill() == 0;
            }
            catch (IOException)
            {
                return true; // reset
            }
            catch (TimeoutException)
            {
                return false;
            }
        }

        private byte[] ReadExact(int count)
        {
            var data = new byte[count];
            int have = 0;
            while (have < count)
            {
                if (_start == _end && Fill() == 0)
                {
                    return null;
                }
                int n = Math.Min(count - have, _end - _start);
                Buffer.BlockCopy(_buf, _start, data, have, n);
                _start += n;
                have += n;
            }
            return data;
        }

        private string ReadLine()
        {
            var line = new StringBuilder();
            while (true)
            {
                if (_start == _end && Fill() == 0)
                {
                    return line.Length > 0 ? line.ToString() : null;
                }
                byte b = _buf[_start++];
                if (b == '\n')
                {
                    if (line.Length > 0 && line[line.Length - 1] == '\r')
                    {
                        line.Length--;
                    }
                    return line.ToString();
                }
                line.Append((char)b);
            }
        }

        /// <summary>Reads more bytes into the buffer (which must be drained); 0 at EOF or reset.</summary>
        private int Fill()
        {
            _start = 0;
            try
            {
                _end = _stream.Read(_buf, 0, _buf.Length);
            }
            catch (IOException e)
            {
                var socket = e.InnerException as SocketException;
                if (socket != null && (socket.SocketErrorCode == SocketError.TimedOut || socket.SocketErrorCode == SocketError.WouldBlock))
                {
                    throw new TimeoutException("no response from the server in time", e);
                }
                _end = 0; // reset by the server: as EOF
            }
            return _end;
        }

        public void Dispose()
        {
            _client.Close();
        }
    }

    internal static class RawHttp
    {
        /// <summary>One request on a fresh connection (<c>Connection: close</c>).</summary>
        public static RawResponse Request(int port, string method, string target, byte[] body = null, params string[] headers)
        {
            using (var connection = new RawConnection(port))
            {
                var all = new List<string>(headers) { "Connection: close" };
                connection.Send(method, target, body, all.ToArray());
                return connection.ReadResponse(method == "HEAD");
            }
        }

        public static RawResponse Get(int port, string target, params string[] headers)
        {
            return Request(port, "GET", target, null, headers);
        }
    }
}
