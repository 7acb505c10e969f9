using System;
using System.Collections.Generic;
using System.Threading.Tasks;

namespace Iotconn
{
    /// <summary>The tasks of sends and requests the library completes by id on the dispatcher thread. The
    /// completion may be polled before the caller registered its id (the native call runs outside the lock, so the
    /// dispatcher never waits for a caller): it is kept until then.</summary>
    internal sealed class Completions<T>
    {
        private readonly object gate = new object();
        private readonly Dictionary<ulong, TaskCompletionSource<T>> pending =
            new Dictionary<ulong, TaskCompletionSource<T>>();
        private readonly Dictionary<ulong, Action<TaskCompletionSource<T>>> early =
            new Dictionary<ulong, Action<TaskCompletionSource<T>>>();
        private Func<Exception> releasedFailure; // set once the client is freed

        /// <summary>The task of the request id the library returned.</summary>
        internal Task<T> Register(ulong id)
        {
            // Continuations run elsewhere so that user code awaiting a request never blocks the dispatcher.
            var completion = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
            Action<TaskCompletionSource<T>> result;
            lock (gate)
            {
                if (early.TryGetValue(id, out result))
                {
                    early.Remove(id);
                }
                else if (releasedFailure != null)
                {
                    Func<Exception> failure = releasedFailure;
                    result = c => c.TrySetException(failure());
                }
                else
                {
                    pending[id] = completion;
                    return completion.Task;
                }
            }
            result(completion);
            return completion.Task;
        }

        internal void Succeed(ulong id, T value)
        {
            Complete(id, c => c.TrySetResult(value));
        }

        internal void Fail(ulong id, Exception failure)
        {
            Complete(id, c => c.TrySetException(failure));
        }

        private void Complete(ulong id, Action<TaskCompletionSource<T>> result)
        {
            TaskCompletionSource<T> completion;
            lock (gate)
            {
                if (!pending.TryGetValue(id, out completion))
                {
                    early[id] = result;
                    return;
                }
                pending.Remove(id);
            }
            result(completion);
        }

        /// <summary>The client was freed: what is pending, and what registers later, fails with failure().</summary>
        internal void Release(Func<Exception> failure)
        {
            List<TaskCompletionSource<T>> orphans;
            lock (gate)
            {
                releasedFailure = failure;
                orphans = new List<TaskCompletionSource<T>>(pending.Values);
                pending.Clear();
            }
            foreach (var orphan in orphans)
            {
                orphan.TrySetException(failure());
            }
        }
    }
}
