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
    /// The managed thread that runs a client's callbacks: clients run in the library's POLL dispatch mode, so their
    /// callbacks run only inside iotconn_poll, here, and no thread created by the Go runtime ever runs managed code
    /// (Mono hangs at exit otherwise). It also ends its client: a client's last event is Disabled/Client_Close, and
    /// once it ran the thread destroys the native client between two polls, so never inside a callback (the library
    /// refuses that) and never while one of its callbacks runs.
    /// A member goes: Attach, Finish (its Disabled/Client_Close ran, or no final event will come), released by the
    /// thread after that poll, then WaitReleased returns.
    /// </summary>
    internal sealed class DispatchThread
    {
        internal const string Name = "iotconn-dispatcher";
        // How long one poll waits for an event; a release asked from another thread is seen within this time.
        private const uint PollMs = 200;

        private readonly Func<uint, int> poll;
        private readonly Thread thread;
        private readonly object gate = new object();
        // Under gate: attached and not yet released; those to release after the current poll.
        private readonly HashSet<IDispatched> members = new HashSet<IDispatched>();
        private List<IDispatched> finished = new List<IDispatched>();

        public DispatchThread(Func<uint, int> poll)
        {
            this.poll = poll;
            thread = new Thread(Run) { Name = Name, IsBackground = true };
        }

        public bool OnThread
        {
            get { return Thread.CurrentThread == thread; }
        }

        public void Start()
        {
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
                members.Add(member);
            }
        }

        /// <summary>The member's final event ran (or will never come): release it after the current poll.</summary>
        public void Finish(IDispatched member)
        {
            lock (gate)
            {
                if (members.Contains(member) && !finished.Contains(member))
                {
                    finished.Add(member);
                }
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
                        if (members.Count == 0)
                        {
                            return; // its client was released
                        }
                    }
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
                    left = new List<IDispatched>(members);
                }
                foreach (IDispatched member in left)
                {
                    Release(member);
                }
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
                    Monitor.PulseAll(gate);
                }
            }
        }
    }
}
