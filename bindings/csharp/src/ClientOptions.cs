using System;

namespace Iotconn
{
    /// <summary>Options of DeviceClient.CreateFromConnectionString (iotconn_options_t); null means the library's
    /// default.</summary>
    public sealed class ClientOptions
    {
        /// <summary>PEM file of the trusted roots (with CaPem null too: the system roots).</summary>
        public string CaFile { get; set; }

        /// <summary>PEM text of trusted roots, added to CaFile's.</summary>
        public string CaPem { get; set; }

        /// <summary>X.509 client certificate (PEM) for a connection string with x509=true.</summary>
        public string CertificateFile { get; set; }

        /// <summary>The private key (PEM) of CertificateFile.</summary>
        public string KeyFile { get; set; }

        /// <summary>MQTT keep-alive in seconds (default 240, capped at 1177 by the library).</summary>
        public int? KeepAliveInSeconds { get; set; }

        /// <summary>Lifetime of the SAS tokens the client generates (default 1 hour).</summary>
        public TimeSpan? SasTokenTimeToLive { get; set; }

        /// <summary>Renew a token this long before it expires (default 10 % of its lifetime).</summary>
        public TimeSpan? SasTokenRenewalMargin { get; set; }

        /// <summary>Bound of the outbound queue in messages (default 10000).</summary>
        public int? QueueMaxMessages { get; set; }

        /// <summary>Bound of the outbound queue in payload bytes (default 64 MiB).</summary>
        public long? QueueMaxBytes { get; set; }

        /// <summary>Connect and send give up after this (default 4 minutes).</summary>
        public TimeSpan? OperationTimeout { get; set; }

        /// <summary>What SendEventAsync does when the outbound queue is full (default Reject).</summary>
        public QueueOverflow QueueOverflow { get; set; }

        /// <summary>Durable mode: a directory (created if missing) that keeps the outbound queue on disk.
        /// SendEventAsync returns once the message is written there; the next client created on it, also in a
        /// later process or after a crash, sends what was not delivered (DeviceClient.RecoveredSends). One client
        /// per directory at a time (ErrorCode.QueueStore otherwise). Null: memory only.</summary>
        public string QueueDirectory { get; set; }

        /// <summary>How long a link must stay up before the retry policy's count (and with it the back-off) starts
        /// over; a link lost sooner counts as one more failed attempt, so a hub that accepts and drops every
        /// connection at once is retried at the policy's growing delays (default 30 seconds).</summary>
        public TimeSpan? BackoffResetAfter { get; set; }

        /// <summary>The fleet hint: how long the fleet sharing this device's hub needs to be admitted, about
        /// 1.1 x devices / the hub's connect rate (IoT Hub S1 admits about 100 per second per unit, so 10 000 devices
        /// on one unit: 110 seconds). The first retry after a lost link or a failed connect waits the retry policy's
        /// delay plus a uniform draw over this window, so a fleet that lost its hub together comes back spread evenly
        /// over it; later retries wait at least a draw from [window, 1.05 x window], or after a throttling refusal the
        /// throttling schedule alone (the device is where the hub admits now). A server's retry-after still wins. Null or zero: off.
        /// Negative or past uint.MaxValue milliseconds (about 49.7 days): ErrorCode.InvalidArgument.</summary>
        public TimeSpan? ReconnectSpread { get; set; }

        /// <summary>A Dispatcher whose one thread runs this client's handlers and custom retry policy together with
        /// those of its other clients (null: the client starts a thread of its own). Close or dispose the client
        /// before the Dispatcher. A disposed one: IotconnException with ErrorCode.BadHandle.</summary>
        public Dispatcher Dispatcher { get; set; }

        /// <summary>An Admission, the connect budget this client shares with the other clients created with it (null:
        /// none). The client keeps the budget after the Admission is disposed; a disposed one given here:
        /// IotconnException with ErrorCode.BadHandle.</summary>
        public Admission Admission { get; set; }

        /// <summary>With TransportType.Amqp or Amqp_WebSocket_Only: share AMQP connections with the process's other
        /// clients of the same value, at most this many devices on each (at most 995), one CBS link per connection
        /// and one session per device. A failed connection (a hub failover, a dropped socket) fails every device on
        /// it; each then reconnects by itself on a new connection: no need to recreate clients from the status
        /// handler. Null or 0: a connection of its own; with MQTT: ErrorCode.InvalidArgument.</summary>
        public int? AmqpPool { get; set; }

        /// <summary>The connections subscribe to twins from the first OpenAsync, so GetTwinAsync and
        /// UpdateReportedPropertiesAsync work after it (default false: a client that never uses twins must not
        /// subscribe, as an IoT Hub of the Basic tier drops it). See IotHubClient's twin remarks.</summary>
        public bool UseTwin { get; set; }
    }
}
