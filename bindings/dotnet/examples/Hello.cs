// Hello.cs: a small server using the Kestrel.Native binding.
//
//   mono Hello.exe [--urls "URL[;URL...]"] [--workers N] [--io-threads N]
//
// Routes: GET / answers "Hello, World!" (text/plain, the same bytes as examples-c/demo's "/"),
// POST /echo streams the request body back, GET /slow answers from a Task after a delay.
// Ctrl+C (SIGINT) stops it gracefully.

using System;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using Kestrel.Native;

internal static class Hello
{
    private static readonly byte[] HelloBody = Encoding.ASCII.GetBytes("Hello, World!");
    private static readonly byte[] ContentType = Encoding.ASCII.GetBytes("content-type");
    private static readonly byte[] TextPlain = Encoding.ASCII.GetBytes("text/plain");

    private static async Task Handle(KestrelContext context)
    {
        KestrelRequest request = context.Request;
        KestrelResponse response = context.Response;
        bool get = request.Method == "GET" || request.Method == "HEAD";
        if (get && request.Path == "/")
        {
            // Header and body as ready-made bytes: nothing to encode, one copy into the library.
            response.SetHeader(ContentType, TextPlain);
            response.Send(HelloBody);
            return;
        }
        if (request.Method == "POST" && request.Path == "/echo")
        {
            string type = request.GetHeader("content-type");
            if (type != null)
            {
                response.SetHeader("content-type", type);
            }
            var chunk = new byte[16384];
            int n;
            while ((n = request.Read(chunk)) > 0)
            {
                response.Write(new ReadOnlySpan<byte>(chunk, 0, n));
            }
            return; // left open: the binding ends the response when the handler completes
        }
        if (get && request.Path == "/slow")
        {
            await Task.Delay(100, context.RequestAborted);
            response.SetHeader("content-type", "text/plain");
            response.Send("slept 100 ms\n");
            return;
        }
        response.StatusCode = 404;
        response.Send("not found\n");
    }

    private static int Main(string[] args)
    {
        string urls = "http://localhost:5000";
        var options = new KestrelServerOptions();
        try
        {
            for (int i = 0; i < args.Length; i++)
            {
                if (args[i] == "--urls" && i + 1 < args.Length)
                {
                    urls = args[++i];
                }
                else if (args[i] == "--workers" && i + 1 < args.Length)
                {
                    options.WorkerThreads = int.Parse(args[++i]);
                }
                else if (args[i] == "--io-threads" && i + 1 < args.Length)
                {
                    options.IoThreads = int.Parse(args[++i]);
                }
                else
                {
                    Console.Error.WriteLine("usage: Hello.exe [--urls \"URL[;URL...]\"] [--workers N] [--io-threads N]");
                    options.Dispose();
                    return 2;
                }
            }
            options.AddUrls(urls);
            options.UseLogger((level, category, message) =>
                Console.Error.WriteLine("{0}: {1}: {2}", level, category, message), KestrelLogLevel.Warn);
        }
        catch (KestrelException e)
        {
            // e.g. KESTREL_INVALID_URL: <the library's explanation>
            Console.Error.WriteLine("hello: " + e.Message);
            options.Dispose();
            return 1;
        }

        using (var server = new KestrelServer(options, Handle))
        {
            try
            {
                server.Start();
            }
            catch (KestrelException e)
            {
                Console.Error.WriteLine("hello: " + e.Message);
                return 1;
            }
            foreach (string address in server.Addresses)
            {
                Console.WriteLine("listening on " + address);
            }
            Console.Out.Flush();

            var stop = new ManualResetEventSlim();
            Console.CancelKeyPress += (sender, e) =>
            {
                e.Cancel = true; // stop gracefully instead of dying
                stop.Set();
            };
            stop.Wait();
            int aborted = server.Stop(TimeSpan.FromSeconds(5));
            Console.Error.WriteLine("hello: stopped ({0} requests aborted)", aborted);
        }
        return 0;
    }
}
