using System;

namespace Iotconn
{
    /// <summary>
    /// One managed thread for the handlers of many clients (an iotconn_dispatcher_t in POLL mode): a fleet of
    /// device identities in one process needs one dispatcher thread, not one per DeviceClient.
    /// <code>
    /// using (var dispatcher = new Dispatcher())
    /// {
    ///     var options = new ClientOptions { Dispatcher = dispatcher };
    ///     var clients = connectionStrings.Select(cs =>
    ///         DeviceClient.CreateFromConnectionString(cs, TransportType.Mqtt, options)).ToList();
    ///     await Task.WhenAll(clients.Select(c => c.OpenAsync()));
    ///     await Task.WhenAll(clients.Select(c => c.SendEventAsync(new Message(body))));
    ///     foreach (DeviceClient client in clients)
    ///     {
    ///         client.Dispose(); // before the dispatcher's
    ///     }
    /// }
    /// </code>
    /// Every handler and custom retry policy of its clients runs on its thread ("iotconn-dispatcher"), each
    /// client's in order and one at a time, the clients with events waiting served in turn: a slow handler delays
    /// every client of the dispatcher. A client's CloseAsync and Dispose work as with its own thread: its last
    /// handlers run (Disabled/Client_Close the last), then the native client is freed, on the dispatcher's thread
    /// between two polls. A client created with a disposed dispatcher fails with ErrorCode.BadHandle.
    /// </summary>
    public sealed class Dispatcher : IDisposable
    {
        // Kept after Dispose: the library never reuses a handle, so a client given a disposed dispatcher gets
        // BadHandle from it.
        private readonly IntPtr handle;
        private readonly object disposeLock = new object();
        private bool disposed;

        /// <summary>Creates the native dispatcher and starts its thread.</summary>
        public Dispatcher()
        {
            NativeMethods.EnsureCompatible();
            IntPtr created;
            int rc = NativeMethods.iotconn_dispatcher_create(NativeMethods.DispatchPoll, out created);
            if (rc < 0)
            {
                throw IotconnException.FromLastError(rc);
            }
            handle = created;
            Thread = new DispatchThread(ms => NativeMethods.iotconn_dispatcher_poll(created, ms), false);
            Thread.Start();
        }

        internal DispatchThread Thread { get; private set; }

        /// <summary>Runs create(the native dispatcher), a native client creation, never during Dispose's
        /// destroy.</summary>
        internal int CreateClient(Func<IntPtr, int> create)
        {
            return Thread.Serialised(() => create(handle));
        }

        /// <summary>Stops the thread and frees the native dispatcher; a second call does nothing. Throws
        /// IotconnException with ErrorCode.InvalidState (the library's refusal) while a client created with it is
        /// not closed or disposed: close the clients first; the dispatcher stays usable then. Waits for a client
        /// between CloseAsync and its last event. Throws InvalidState from inside a handler too (it would wait for
        /// its own thread).</summary>
        public void Dispose()
        {
            if (Thread.OnThread)
            {
                throw new IotconnException(ErrorCode.InvalidState,
                    "Dispatcher.Dispose inside a handler would wait for its own thread");
            }
            lock (disposeLock)
            {
                if (disposed)
                {
                    return;
                }
                // On this thread, so that iotconn_last_error() explains a refusal.
                int rc = Thread.Stop(() => NativeMethods.iotconn_dispatcher_destroy(handle));
                if (rc < 0)
                {
                    throw IotconnException.FromLastError(rc);
                }
                disposed = true;
            }
        }
    }
}
