using System;

namespace Iotconn
{
    /// <summary>Options of DeviceClient.CreateFromConnectionString; null or zero means the library's default.</summary>
    public sealed class ClientOptions
    {
        /// <summary>PEM file of the trusted roots (null: the system roots).</summary>
        public string CaFile { get; set; }

        /// <summary>Connect and send give up after this (null: the library's 4 minutes).</summary>
        public TimeSpan? OperationTimeout { get; set; }
    }
}
