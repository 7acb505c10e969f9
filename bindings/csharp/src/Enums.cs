namespace Iotconn
{
    /// <summary>The connection's state as the application sees it (iotconn_status_t; values fixed forever).</summary>
    public enum ConnectionStatus
    {
        Disconnected = 0,
        Connected = 1,
        Disconnected_Retrying = 2,
        Disabled = 3,
    }

    /// <summary>Why the status last changed (iotconn_reason_t; values fixed forever).</summary>
    public enum ConnectionStatusChangeReason
    {
        Connection_Ok = 0,
        Expired_SAS_Token = 1,
        Device_Disabled = 2,
        Bad_Credential = 3,
        Retry_Expired = 4,
        No_Network = 5,
        Communication_Error = 6,
        Client_Close = 7,
    }

    /// <summary>The protocol to the hub (IOTCONN_TRANSPORT_*).</summary>
    public enum TransportType
    {
        Mqtt = 0,
        Mqtt_WebSocket_Only = 1,
        /// <summary>AMQP 1.0 over TLS (port 5671): tokens are renewed on the live connection; see
        /// ClientOptions.AmqpPool.</summary>
        Amqp = 2,
        /// <summary>AMQP over a WebSocket (port 443).</summary>
        Amqp_WebSocket_Only = 3,
    }

    /// <summary>What SendEventAsync does when the outbound queue is at a limit (IOTCONN_QUEUE_OVERFLOW_*).</summary>
    public enum QueueOverflow
    {
        /// <summary>SendEventAsync throws IotconnException with ErrorCode.QueueFull (the default).</summary>
        Reject = 0,

        /// <summary>The oldest queued messages not yet on the network fail with ErrorCode.MessageDropped until
        /// the new one fits.</summary>
        DropOldest = 1,
    }

    /// <summary>How ExponentialBackoff draws its delays (IOTCONN_JITTER_*; the formulas are in include/iotconn.h
    /// and on ExponentialBackoff).</summary>
    public enum Jitter
    {
        /// <summary>The .NET SDK's formula, with a random first delay and a random cap (the default).</summary>
        Default = 0,

        /// <summary>Uniform between minBackoff and the exponential delay.</summary>
        Full = 1,

        /// <summary>AWS's decorrelated jitter: uniform between minBackoff and three times the previous delay,
        /// capped; minBackoff must be above 0.</summary>
        Decorrelated = 2,
    }

    /// <summary>Called on the binding's dispatcher thread for each status change, in order.</summary>
    public delegate void ConnectionStatusChangesHandler(ConnectionStatus status, ConnectionStatusChangeReason reason);
}
