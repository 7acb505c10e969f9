using System;

// The two kinds of IotHubClient, as Microsoft.Azure.Devices.Client names them: each only says how it is made.
namespace Iotconn
{
    /// <summary>
    /// A device's connection to IoT Hub through libiotconn, as Microsoft.Azure.Devices.Client.DeviceClient: made
    /// from a connection string or through DPS; the rest of its API is IotHubClient's, which ModuleClient shares.
    /// </summary>
    public sealed class DeviceClient : IotHubClient
    {
        private DeviceClient(ClientHandle handle, Dispatcher shared, bool useTwin) : base(handle, shared, useTwin)
        {
        }

        private static DeviceClient Make(ClientHandle handle, Dispatcher shared, bool useTwin)
        {
            return new DeviceClient(handle, shared, useTwin);
        }

        /// <summary>Creates a client for a device connection string, with MQTT; it does not connect.</summary>
        public static DeviceClient CreateFromConnectionString(string connectionString)
        {
            return CreateFromConnectionString(connectionString, TransportType.Mqtt, null);
        }

        /// <summary>Creates a client for a device connection string; it does not connect.</summary>
        public static DeviceClient CreateFromConnectionString(string connectionString, TransportType transportType)
        {
            return CreateFromConnectionString(connectionString, transportType, null);
        }

        /// <summary>Creates a client for a device connection string with options (null: all defaults); it does
        /// not connect. A module's connection string (ModuleId=) makes the client that module, as ModuleClient
        /// does.</summary>
        public static DeviceClient CreateFromConnectionString(string connectionString, TransportType transportType,
            ClientOptions options)
        {
            return FromConnectionString(connectionString, transportType, options, false, Make);
        }

        /// <summary>Creates a client that finds its hub through the Device Provisioning Service at
        /// globalDeviceEndpoint (host[:port]); it does not connect. The first OpenAsync registers, unless the
        /// assignment cache (ProvisioningOptions.CacheFile, else ClientOptions.QueueDirectory's
        /// dps-assignment.json) holds this registration's hub: then it connects there without calling DPS. Then the
        /// library follows Microsoft's guidance: transient failures are retried on the same hub; it registers again
        /// when a hub it connected to refuses the device (moved, deleted, disabled), or after
        /// ReprovisionAfterFailures reconnects failed in a row (default 10) or ReprovisionAfter without a
        /// connection (default 15 minutes); never for throttling. A reprovision shows as Disconnected_Retrying, a
        /// log line (Trace) and ProvisioningRegistrations; messages queued meanwhile go to the new hub. DPS
        /// refusing the registration faults OpenAsync with ErrorCode.BadCredential (401/403) or DeviceDisabled (404).
        /// </summary>
        public static DeviceClient CreateFromProvisioning(string globalDeviceEndpoint, string idScope,
            SecurityProvider securityProvider, TransportType transportType, ClientOptions options,
            ProvisioningOptions provisioning = null)
        {
            if (globalDeviceEndpoint == null || idScope == null || securityProvider == null)
            {
                throw IotconnException.InvalidArgument("globalDeviceEndpoint, idScope and securityProvider",
                    "must not be null");
            }
            var p = provisioning ?? new ProvisioningOptions();
            var opts = ProvisioningDeviceClient.Copy(options);
            securityProvider.Configure(opts);
            return Create(opts, transportType, (ref NativeMethods.Options native, NativeBlocks blocks,
                out ClientHandle handle) =>
            {
                NativeMethods.DpsParams dps = DpsNative(globalDeviceEndpoint, idScope, securityProvider,
                    p.PayloadJson, blocks);
                dps.CacheFile = blocks.Utf8(p.CacheFile);
                dps.ReprovisionAfterFailures = Positive("ReprovisionAfterFailures", p.ReprovisionAfterFailures);
                dps.ReprovisionAfterS = Seconds("ReprovisionAfter", p.ReprovisionAfter);
                return NativeMethods.iotconn_client_create_dps(ref dps, ref native, out handle);
            }, Make);
        }
    }

    /// <summary>
    /// A module's connection to IoT Hub through libiotconn, as Microsoft.Azure.Devices.Client.ModuleClient: made
    /// from a module's connection string ("HostName=..;DeviceId=d;ModuleId=m;SharedAccessKey=&lt;the module's
    /// key&gt;"), with DeviceClient's API for status, retry, OpenAsync, SendEventAsync, twins and methods
    /// (IotHubClient). The module is an identity of its own beside its device: its own connection, telemetry, twin
    /// and method calls. IoT Hub sends modules no cloud-to-device messages, so a SetReceiveMessageHandlerAsync
    /// handler never runs; IoT Edge's input and output routes are not supported.
    /// </summary>
    public sealed class ModuleClient : IotHubClient
    {
        private ModuleClient(ClientHandle handle, Dispatcher shared, bool useTwin) : base(handle, shared, useTwin)
        {
        }

        private static ModuleClient Make(ClientHandle handle, Dispatcher shared, bool useTwin)
        {
            return new ModuleClient(handle, shared, useTwin);
        }

        /// <summary>Creates a client for a module's connection string, with MQTT; it does not connect.</summary>
        public static ModuleClient CreateFromConnectionString(string connectionString)
        {
            return CreateFromConnectionString(connectionString, TransportType.Mqtt, null);
        }

        /// <summary>Creates a client for a module's connection string; it does not connect.</summary>
        public static ModuleClient CreateFromConnectionString(string connectionString, TransportType transportType)
        {
            return CreateFromConnectionString(connectionString, transportType, null);
        }

        /// <summary>Creates a client for a module's connection string with options (null: all defaults); it does
        /// not connect. One without ModuleId throws IotconnException with ErrorCode.InvalidArgument.</summary>
        public static ModuleClient CreateFromConnectionString(string connectionString, TransportType transportType,
            ClientOptions options)
        {
            return FromConnectionString(connectionString, transportType, options, true, Make);
        }
    }
}
