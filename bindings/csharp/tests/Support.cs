using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;

namespace Iotconn.Tests
{
    /// <summary>A test: its name and body (the body throws to fail).</summary>
    internal sealed class TestCase
    {
        public TestCase(string name, Action body)
        {
            Name = name;
            Body = body;
        }

        public string Name { get; private set; }
        public Action Body { get; private set; }
    }

    internal static class Support
    {
        /// <summary>How long a test waits for any one event, task or process before it fails.</summary>
        public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

        public static string Root
        {
            get { return Environment.GetEnvironmentVariable("IOTCONN_ROOT") ?? "."; }
        }

        public static void Assert(bool condition, string what)
        {
            if (!condition)
            {
                throw new Exception("assertion failed: " + what);
            }
        }

        /// <summary>Waits for task within the deadline and rethrows its own exception when it failed.</summary>
        public static void Await(Task task, string what)
        {
            try
            {
                if (!task.Wait(Deadline))
                {
                    throw new TimeoutException(what + " did not complete within " + Deadline);
                }
            }
            catch (AggregateException e)
            {
                throw new Exception(what + " failed", e.InnerException);
            }
        }

        /// <summary>The exception task ended with (the deadline bounds the wait); fails when it succeeded.</summary>
        public static Exception Failure(Task task, string what)
        {
            try
            {
                if (!task.Wait(Deadline))
                {
                    throw new TimeoutException(what + " did not complete within " + Deadline);
                }
            }
            catch (AggregateException e)
            {
                return e.InnerException;
            }
            throw new Exception(what + " succeeded, a failure was expected");
        }

        /// <summary>Runs body and returns the IotconnException it throws; fails on anything else.</summary>
        public static IotconnException Throws(string what, Action body)
        {
            try
            {
                body();
            }
            catch (IotconnException e)
            {
                return e;
            }
            catch (Exception e)
            {
                throw new Exception(what + " threw " + e.GetType().Name + ", not IotconnException", e);
            }
            throw new Exception(what + " did not throw");
        }

        /// <summary>Asserts that body throws IotconnException with code, and a message that contains text.</summary>
        public static void ThrowsCode(string what, ErrorCode code, string text, Action body)
        {
            IotconnException e = Throws(what, body);
            Assert(e.Code == code, what + ": code " + e.Code + ", want " + code + " (" + e.Message + ")");
            Assert(e.Message.Contains(text), what + ": the message '" + e.Message + "' says '" + text + "'");
        }
    }

    /// <summary>One status change as a handler saw it, with the thread it ran on.</summary>
    internal sealed class StatusEvent
    {
        public StatusEvent(ConnectionStatus status, ConnectionStatusChangeReason reason)
        {
            Status = status;
            Reason = reason;
            Thread = Thread.CurrentThread;
        }

        public ConnectionStatus Status { get; private set; }
        public ConnectionStatusChangeReason Reason { get; private set; }
        public Thread Thread { get; private set; }

        public bool Is(ConnectionStatus status, ConnectionStatusChangeReason reason)
        {
            return Status == status && Reason == reason;
        }

        public override string ToString()
        {
            return Status + "/" + Reason;
        }
    }

    /// <summary>Events recorded by handlers on other threads, and bounded waits for them.</summary>
    internal sealed class Recorder<T>
    {
        private readonly List<T> events = new List<T>();

        public void Add(T item)
        {
            lock (events)
            {
                events.Add(item);
                Monitor.PulseAll(events);
            }
        }

        public List<T> Events
        {
            get
            {
                lock (events)
                {
                    return new List<T>(events);
                }
            }
        }

        /// <summary>Waits until done holds for the events so far (within the deadline) and returns them.</summary>
        public List<T> WaitFor(string what, Func<List<T>, bool> done)
        {
            return WaitFor(what, done, Support.Deadline);
        }

        /// <summary>As WaitFor, for an event known to come later than the deadline allows (a token renewal).
        /// </summary>
        public List<T> WaitFor(string what, Func<List<T>, bool> done, TimeSpan timeout)
        {
            DateTime deadline = DateTime.UtcNow + timeout;
            lock (events)
            {
                while (!done(events))
                {
                    TimeSpan left = deadline - DateTime.UtcNow;
                    if (left <= TimeSpan.Zero)
                    {
                        throw new TimeoutException("no " + what + " within " + timeout + "; saw: " +
                            string.Join(", ", events.Select(e => e.ToString()).ToArray()));
                    }
                    Monitor.Wait(events, left);
                }
                return new List<T>(events);
            }
        }

        public List<T> WaitCount(string what, int count)
        {
            return WaitFor(count + " " + what, e => e.Count >= count);
        }
    }
}
