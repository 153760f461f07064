// TestRunner.cs: a minimal test runner: [Test] methods, assertions, a per-test time limit, and a
// closing "N passed, N failed" line. Exit code 0 only when every test passed.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Reflection;
using System.Threading;

namespace Kestrel.Native.Tests
{
    /// <summary>Marks a test method: public static void, no parameters.</summary>
    [AttributeUsage(AttributeTargets.Method)]
    internal sealed class TestAttribute : Attribute
    {
    }

    /// <summary>A failed check.</summary>
    internal sealed class AssertionException : Exception
    {
        public AssertionException(string message) : base(message)
        {
        }
    }

    internal static class Assert
    {
        public static void True(bool condition, string what)
        {
            if (!condition)
            {
                throw new AssertionException("expected: " + what);
            }
        }

        public static void Equal<T>(T expected, T actual, string what)
        {
            if (!EqualityComparer<T>.Default.Equals(expected, actual))
            {
                throw new AssertionException(what + ": expected <" + expected + ">, got <" + actual + ">");
            }
        }

        public static void BytesEqual(byte[] expected, byte[] actual, string what)
        {
            if (expected.Length != actual.Length)
            {
                throw new AssertionException(what + ": expected " + expected.Length + " bytes, got " + actual.Length);
            }
            for (int i = 0; i < expected.Length; i++)
            {
                if (expected[i] != actual[i])
                {
                    throw new AssertionException(what + ": bytes differ at offset " + i);
                }
            }
        }

        public static void Contains(string needle, string haystack, string what)
        {
            if (haystack == null || haystack.IndexOf(needle, StringComparison.Ordinal) < 0)
            {
                throw new AssertionException(what + ": expected to contain <" + needle + ">, got <" + haystack + ">");
            }
        }

        public static TException Throws<TException>(Action action, string what) where TException : Exception
        {
            try
            {
                action();
            }
            catch (TException e)
            {
                return e;
            }
            catch (Exception e)
            {
                throw new AssertionException(what + ": expected " + typeof(TException).Name + ", got " + e.GetType().Name + ": " + e.Message);
            }
            throw new AssertionException(what + ": expected " + typeof(TException).Name + ", nothing was thrown");
        }

        /// <summary>Waits up to <paramref name="timeoutMs"/> for <paramref name="condition"/>.</summary>
        public static void Eventually(Func<bool> condition, int timeoutMs, string what)
        {
            var watch = Stopwatch.StartNew();
            while (!condition())
            {
                if (watch.ElapsedMilliseconds > timeoutMs)
                {
                    throw new AssertionException("timed out waiting for: " + what);
                }
                Thread.Sleep(10);
            }
        }
    }

    internal static class TestRunner
    {
        private const int TestTimeoutMs = 60000;

        private static int Main(string[] args)
        {
            if (args.Length == 1 && args[0] == LifecycleTests.ChildMode)
            {
                return LifecycleTests.LeaveAServerRunning();
            }
            var tests = typeof(TestRunner).Assembly.GetTypes()
                .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Static))
                .Where(m => m.GetCustomAttributes(typeof(TestAttribute), false).Length > 0)
                .OrderBy(m => m.DeclaringType.Name).ThenBy(m => m.MetadataToken)
                .Where(m => args.Length == 0 || args.Any(a => m.Name.Contains(a)))
                .ToList();
            Console.WriteLine("libkestrel " + KestrelServer.LibraryVersion + ", " + tests.Count + " tests");
            int passed = 0, failed = 0;
            foreach (MethodInfo test in tests)
            {
                string name = test.DeclaringType.Name + "." + test.Name;
                Exception error = null;
                var watch = Stopwatch.StartNew();
                var thread = new Thread(() =>
                {
                    try
                    {
                        test.Invoke(null, null);
                    }
                    catch (TargetInvocationException e)
                    {
                        error = e.InnerException;
                    }
                });
                thread.IsBackground = true;
                thread.Start();
                if (!thread.Join(TestTimeoutMs))
                {
                    Console.WriteLine("FAIL " + name + ": no result after " + TestTimeoutMs / 1000 + " s");
                    failed++;
                    Console.WriteLine((passed) + " passed, " + failed + " failed");
                    Console.Out.Flush();
                    Environment.Exit(1); // a hung test leaves state behind: stop here
                }
                if (error == null)
                {
                    passed++;
                    Console.WriteLine("ok   " + name + " (" + watch.ElapsedMilliseconds + " ms)");
                }
                else
                {
                    failed++;
                    string detail = error is AssertionException ? error.Message : error.ToString();
                    Console.WriteLine("FAIL " + name + ": " + detail);
                }
            }
            Console.WriteLine(passed + " passed, " + failed + " failed");
            return failed == 0 && passed > 0 ? 0 : 1;
        }
    }
}
