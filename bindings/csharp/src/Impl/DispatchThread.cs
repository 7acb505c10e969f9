using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Threading;

namespace Iotconn
{
    /// <summary>A client served by a DispatchThread.</summary>
    internal interface IDispatched
    {
        /// <summary>Destroys the native client and fails what still waits for it; called once, on the thread,
        /// between two polls.</summary>
        void Release();
    }

    /// <summary>
    /// The managed thread that runs the callbacks of one client (iotconn_poll) or of every client of a Dispatcher
    /// (iotconn_dispatcher_poll), the same code for both: clients run in the library's POLL dispatch mode, so their
    /// callbacks run only inside those polls, here, and no thread created by the Go runtime ever runs managed code
    /// (Mono hangs at exit otherwise). It also ends its clients: a client's last event is Disabled/Client_Close,
    /// and once it ran the thread destroys the native client between two polls, so never inside a callback (the
    /// library refuses that) and never while one of the client's callbacks runs.
    /// A member goes: Attach, Closing (the binding closes it), Finish (its Disabled/Client_Close ran, or no final
    /// event will come), released by the thread after that poll, then WaitReleased returns.
    /// </summary>
    internal sealed class DispatchThread
    {
        internal const string Name = "iotconn-dispatcher";
        // How long one poll waits for an event; a stop request is seen within this time at the latest.
        private const uint PollMs = 200;

        // Threads of this class started and not yet ended, for the tests: the OS names cannot count them, since
        // threads the Go runtime starts from one inherit its name.
        private static int alive;

        private readonly Func<uint, int> poll;
        // One client's thread ends once that client is released, a Dispatcher's when Stop says.
        private readonly bool endsWithLastMember;
        private readonly Thread thread;
        private readonly object gate = new object();
        // Under gate: attached and not yet released; closing or finished, not yet released; to release after the
        // current poll; the thread ends (or ended).
        private readonly HashSet<IDispatched> members = new HashSet<IDispatched>();
        private readonly HashSet<IDispatched> ending = new HashSet<IDispatched>();
        private List<IDispatched> finished = new List<IDispatched>();
        private bool stopped;

        public DispatchThread(Func<uint, int> poll, bool endsWithLastMember)
        {
            this.poll = poll;
            this.endsWithLastMember = endsWithLastMember;
            thread = new Thread(Run) { Name = Name, IsBackground = true };
        }

        internal static int Alive
        {
            get { return Volatile.Read(ref alive); }
        }

        public bool OnThread
        {
            get { return Thread.CurrentThread == thread; }
        }

        public void Start()
        {
            Interlocked.Increment(ref alive);
            thread.Start();
        }

        public void Join()
        {
            thread.Join();
        }

        public void Attach(IDispatched member)
        {
            lock (gate)
            {
                if (stopped)
                {
                    // Only after a failed poll: Dispatcher.Dispose destroys the native dispatcher first, and the
                    // library refuses clients of a destroyed one.
                    throw new IotconnException(ErrorCode.InvalidState, "the dispatcher thread has stopped (see the " +
                        "trace log)");
                }
                members.Add(member);
            }
        }

        /// <summary>The binding is about to close the member: Stop now waits for its final event.</summary>
        public void Closing(IDispatched member)
        {
            lock (gate)
            {
                if (members.Contains(member))
                {
                    ending.Add(member);
                }
            }
        }

        /// <summary>The member's final event ran (or will never come): release it after the current poll.</summary>
        public void Finish(IDispatched member)
        {
            lock (gate)
            {
                if (members.Contains(member) && !finished.Contains(member))
                {
                    ending.Add(member);
                    finished.Add(member);
                }
            }
        }

        /// <summary>Runs create, a native client creation with this thread's dispatcher, never during Stop's
        /// destroy: the library counts a client created during a dispatcher's destroy neither as open nor as
        /// closed.</summary>
        public T Serialised<T>(Func<T> create)
        {
            lock (gate)
            {
                return create();
            }
        }

        /// <summary>Blocks until the thread released the member (not from the thread itself, which releases
        /// it).</summary>
        public void WaitReleased(IDispatched member)
        {
            lock (gate)
            {
                while (members.Contains(member))
                {
                    Monitor.Wait(gate);
                }
            }
        }

        /// <summary>Waits until no member is between close and release, so that every final event ran, then calls
        /// destroy (the native dispatcher's) under the lock that the thread takes after a failed poll. If it returns
        /// 0, the thread ends after its current poll and is joined; destroy's code is returned either way.</summary>
        public int Stop(Func<int> destroy)
        {
            lock (gate)
            {
                while (ending.Count > 0)
                {
                    Monitor.Wait(gate);
                }
                int rc = destroy();
                if (rc < 0)
                {
                    return rc;
                }
                stopped = true;
            }
            thread.Join();
            return 0;
        }

        private void Run()
        {
            try
            {
                while (true)
                {
                    int rc = poll(PollMs);
                    // Read now: iotconn_last_error() belongs to this thread's last call.
                    Exception error = rc < 0 ? IotconnException.FromLastError(rc) : null;
                    List<IDispatched> released;
                    lock (gate)
                    {
                        released = finished;
                        finished = new List<IDispatched>();
                    }
                    foreach (IDispatched member in released)
                    {
                        Release(member);
                    }
                    lock (gate)
                    {
                        if (stopped || (endsWithLastMember && members.Count == 0))
                        {
                            return;
                        }
                    }
                    // Not stopped under the lock that Stop destroys under: the failure is not the destroy's.
                    if (error != null)
                    {
                        Trace.TraceError("iotconn: polling failed, the dispatcher thread stops: " + error.Message);
                        return;
                    }
                }
            }
            finally
            {
                List<IDispatched> left;
                lock (gate)
                {
                    stopped = true;
                    left = new List<IDispatched>(members);
                }
                foreach (IDispatched member in left)
                {
                    Release(member);
                }
                Interlocked.Decrement(ref alive);
            }
        }

        private void Release(IDispatched member)
        {
            try
            {
                member.Release();
            }
            finally
            {
                lock (gate)
                {
                    members.Remove(member);
                    ending.Remove(member);
                    Monitor.PulseAll(gate);
                }
            }
        }
    }
}
