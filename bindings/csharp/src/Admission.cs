using System;
using System.Threading;

namespace Iotconn
{
    /// <summary>
    /// A connect budget for the clients of one process (an iotconn_admission_t): every connection attempt of the
    /// clients created with it (ClientOptions.Admission), the first connect and each reconnect, takes a token and
    /// waits for one when there is none, so the process never asks the hub for more than perSecond connects per
    /// second, burst at once, however many of its clients lost their link together. For a process with many
    /// identities (a gateway, a simulator); set perSecond a little under the hub's connect rate (IoT Hub S1 admits
    /// about 100 per second per unit), or under this process's share of it. Within the process it spreads the
    /// reconnects exactly where ClientOptions.ReconnectSpread spreads them at random.
    /// <code>
    /// List&lt;DeviceClient&gt; clients;
    /// using (var budget = new Admission(90))
    /// {
    ///     var options = new ClientOptions { Admission = budget };
    ///     clients = connectionStrings.Select(cs =>
    ///         DeviceClient.CreateFromConnectionString(cs, TransportType.Mqtt, options)).ToList();
    /// }
    /// await Task.WhenAll(clients.Select(c => c.OpenAsync())); // disposed, the budget still holds: 90 per second
    /// </code>
    /// Dispose releases the native handle only: the clients created with the budget keep sharing it until they
    /// are closed. A client created with a disposed one fails with ErrorCode.BadHandle.
    /// </summary>
    public sealed class Admission : IDisposable
    {
        // Kept after Dispose: the library never reuses a handle, so a client given a disposed budget gets BadHandle
        // from it.
        private readonly IntPtr handle;
        private int disposed;

        /// <summary>Creates the budget. A perSecond not above 0 or not finite, or a burst of 0: IotconnException
        /// with ErrorCode.InvalidArgument (the library's message); a negative burst too.</summary>
        public Admission(double perSecond, int burst = 1)
        {
            if (burst < 0)
            {
                throw IotconnException.InvalidArgument("burst", "must be between 1 and " + int.MaxValue + ", not " +
                    burst);
            }
            NativeMethods.EnsureCompatible();
            IntPtr created;
            int rc = NativeMethods.iotconn_admission_create(perSecond, (uint)burst, out created);
            if (rc < 0)
            {
                throw IotconnException.FromLastError(rc);
            }
            handle = created;
        }

        internal IntPtr Handle
        {
            get { return handle; }
        }

        /// <summary>Releases the native handle; the clients created with the budget keep sharing it. A second call
        /// does nothing.</summary>
        public void Dispose()
        {
            if (Interlocked.Exchange(ref disposed, 1) != 0)
            {
                return;
            }
            int rc = NativeMethods.iotconn_admission_destroy(handle);
            if (rc < 0)
            {
                throw IotconnException.FromLastError(rc);
            }
        }
    }
}
