using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;

namespace Iotconn
{
    /// <summary>How a device proves itself to the Device Provisioning Service (and then to its hub), as
    /// Microsoft.Azure.Devices.Shared's SecurityProvider.</summary>
    public abstract class SecurityProvider
    {
        internal SecurityProvider(string registrationId)
        {
            if (registrationId == null)
            {
                throw IotconnException.InvalidArgument("registrationId", "must not be null");
            }
            RegistrationId = registrationId;
        }

        /// <summary>The registration id the device registers as.</summary>
        public string RegistrationId { get; private set; }

        /// <summary>Sets what the connection options carry (an X.509 certificate, for DPS and the hub).</summary>
        internal virtual void Configure(ClientOptions options)
        {
        }

        /// <summary>Sets what the DPS parameters carry (a key).</summary>
        internal virtual void Fill(ref NativeMethods.DpsParams native, NativeBlocks blocks)
        {
        }
    }

    /// <summary>A symmetric key: an individual enrollment's key, or (FromGroupKey) an enrollment group's key from
    /// which the library derives the device's.</summary>
    public sealed class SecurityProviderSymmetricKey : SecurityProvider
    {
        private readonly string key;
        private readonly bool groupKey;

        /// <summary>An individual enrollment's key (Microsoft's constructor; the secondary key is not used).</summary>
        public SecurityProviderSymmetricKey(string registrationId, string primaryKey, string secondaryKey)
            : this(registrationId, primaryKey, false)
        {
        }

        private SecurityProviderSymmetricKey(string registrationId, string key, bool groupKey) : base(registrationId)
        {
            if (key == null)
            {
                throw IotconnException.InvalidArgument("key", "must not be null");
            }
            this.key = key;
            this.groupKey = groupKey;
        }

        /// <summary>A member of an enrollment group: the library derives its key from the group's (iotconn's
        /// addition; the Azure SDK leaves the derivation to the application).</summary>
        public static SecurityProviderSymmetricKey FromGroupKey(string registrationId, string groupKey)
        {
            return new SecurityProviderSymmetricKey(registrationId, groupKey, true);
        }

        internal override void Fill(ref NativeMethods.DpsParams native, NativeBlocks blocks)
        {
            if (groupKey)
            {
                native.GroupKey = blocks.Utf8(key);
            }
            else
            {
                native.SymmetricKey = blocks.Utf8(key);
            }
        }
    }

    /// <summary>An X.509 certificate and its key as PEM files; the certificate's CN is the registration id. The
    /// files are read again when they change, so a rotated certificate is presented at the next connect.</summary>
    public sealed class SecurityProviderX509Certificate : SecurityProvider
    {
        private readonly string certificateFile, keyFile;

        public SecurityProviderX509Certificate(string registrationId, string certificateFile, string keyFile)
            : base(registrationId)
        {
            this.certificateFile = certificateFile;
            this.keyFile = keyFile;
        }

        internal override void Configure(ClientOptions options)
        {
            options.CertificateFile = certificateFile;
            options.KeyFile = keyFile;
        }
    }

    /// <summary>Which transport reaches DPS (Microsoft's ProvisioningTransportHandlerMqtt).</summary>
    public sealed class ProvisioningTransportHandlerMqtt
    {
        public ProvisioningTransportHandlerMqtt() : this(TransportType.Mqtt)
        {
        }

        /// <summary>TransportType.Mqtt (port 8883) or Mqtt_WebSocket_Only (443).</summary>
        public ProvisioningTransportHandlerMqtt(TransportType transportType)
        {
            TransportType = transportType;
        }

        public TransportType TransportType { get; private set; }
    }

    /// <summary>Data sent with a registration (Microsoft's ProvisioningRegistrationAdditionalData).</summary>
    public sealed class ProvisioningRegistrationAdditionalData
    {
        /// <summary>A JSON document, or null.</summary>
        public string JsonData { get; set; }
    }

    /// <summary>A registration's status (Microsoft's ProvisioningRegistrationStatusType).</summary>
    public enum ProvisioningRegistrationStatusType
    {
        Unassigned,
        Assigning,
        Assigned,
        Failed,
        Disabled,
    }

    /// <summary>Where DPS assigned the device (Microsoft's DeviceRegistrationResult).</summary>
    public sealed class DeviceRegistrationResult
    {
        internal DeviceRegistrationResult(string json)
        {
            Dictionary<string, string> m = JsonMembers.Parse(json);
            RegistrationId = JsonMembers.StringMember(m, "registrationId");
            AssignedHub = JsonMembers.StringMember(m, "assignedHub");
            DeviceId = JsonMembers.StringMember(m, "deviceId");
            Substatus = JsonMembers.StringMember(m, "substatus");
            Etag = JsonMembers.StringMember(m, "etag");
            string payload;
            JsonPayload = m.TryGetValue("payload", out payload) ? payload : null;
            ProvisioningRegistrationStatusType status;
            Status = Enum.TryParse(JsonMembers.StringMember(m, "status"), true, out status) ? status
                : ProvisioningRegistrationStatusType.Failed;
            CreatedDateTimeUtc = Time(JsonMembers.StringMember(m, "createdDateTimeUtc"));
            LastUpdatedDateTimeUtc = Time(JsonMembers.StringMember(m, "lastUpdatedDateTimeUtc"));
        }

        private static DateTime? Time(string text)
        {
            DateTime t;
            return DateTime.TryParse(text, null, System.Globalization.DateTimeStyles.AdjustToUniversal |
                System.Globalization.DateTimeStyles.AssumeUniversal, out t) ? t : (DateTime?)null;
        }

        public string RegistrationId { get; private set; }
        public string AssignedHub { get; private set; }
        public string DeviceId { get; private set; }
        public ProvisioningRegistrationStatusType Status { get; private set; }
        public string Substatus { get; private set; }
        public string Etag { get; private set; }
        public DateTime? CreatedDateTimeUtc { get; private set; }
        public DateTime? LastUpdatedDateTimeUtc { get; private set; }
        /// <summary>A custom allocation's answer as JSON text, or null.</summary>
        public string JsonPayload { get; private set; }
    }

    /// <summary>iotconn's reprovisioning settings of DeviceClient.CreateFromProvisioning.</summary>
    public sealed class ProvisioningOptions
    {
        /// <summary>Where the assignment is kept across restarts; null: ClientOptions.QueueDirectory's
        /// dps-assignment.json, or none when that is null too (every start then registers).</summary>
        public string CacheFile { get; set; }

        /// <summary>Register again after this many reconnects failed in a row (default 10).</summary>
        public int? ReprovisionAfterFailures { get; set; }

        /// <summary>Register again after this long without a connection (default 15 minutes).</summary>
        public TimeSpan? ReprovisionAfter { get; set; }

        /// <summary>JSON sent with each registration, or null.</summary>
        public string PayloadJson { get; set; }
    }

    /// <summary>Registers a device with the Device Provisioning Service, as
    /// Microsoft.Azure.Devices.Provisioning.Client.ProvisioningDeviceClient. DeviceClient.CreateFromProvisioning
    /// does this inside the client, caches the assignment and registers again only when the hub no longer takes
    /// the device: prefer it for a device app.</summary>
    public sealed class ProvisioningDeviceClient
    {
        private readonly string globalDeviceEndpoint, idScope;
        private readonly SecurityProvider security;
        private readonly ProvisioningTransportHandlerMqtt transport;
        private readonly ClientOptions options;

        private ProvisioningDeviceClient(string globalDeviceEndpoint, string idScope, SecurityProvider security,
            ProvisioningTransportHandlerMqtt transport, ClientOptions options)
        {
            this.globalDeviceEndpoint = globalDeviceEndpoint;
            this.idScope = idScope;
            this.security = security;
            this.transport = transport;
            this.options = options;
        }

        /// <summary>A client of DPS at globalDeviceEndpoint (host[:port], e.g.
        /// global.azure-devices-provisioning.net).</summary>
        public static ProvisioningDeviceClient Create(string globalDeviceEndpoint, string idScope,
            SecurityProvider securityProvider, ProvisioningTransportHandlerMqtt transport)
        {
            return Create(globalDeviceEndpoint, idScope, securityProvider, transport, null);
        }

        /// <summary>As Create, with the connection options of a DeviceClient (CaFile, OperationTimeout: the bound
        /// of RegisterAsync, ...).</summary>
        public static ProvisioningDeviceClient Create(string globalDeviceEndpoint, string idScope,
            SecurityProvider securityProvider, ProvisioningTransportHandlerMqtt transport, ClientOptions options)
        {
            if (globalDeviceEndpoint == null || idScope == null || securityProvider == null || transport == null)
            {
                throw IotconnException.InvalidArgument(
                    "globalDeviceEndpoint, idScope, securityProvider and transport", "must not be null");
            }
            return new ProvisioningDeviceClient(globalDeviceEndpoint, idScope, securityProvider, transport, options);
        }

        public Task<DeviceRegistrationResult> RegisterAsync(
            CancellationToken cancellationToken = default(CancellationToken))
        {
            return RegisterAsync(null, cancellationToken);
        }

        /// <summary>Registers, retrying 429, 5xx and connection failures with back-off and DPS's retry-after for
        /// at most ClientOptions.OperationTimeout (default 4 minutes); completes with the assignment, or faults
        /// with IotconnException: ErrorCode.BadCredential (401/403), DeviceDisabled (404, a disabled enrollment),
        /// Timeout, ... The token is looked at only before the registration starts: the native call runs to its
        /// end.</summary>
        public Task<DeviceRegistrationResult> RegisterAsync(ProvisioningRegistrationAdditionalData data,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            cancellationToken.ThrowIfCancellationRequested();
            NativeMethods.EnsureCompatible();
            string payload = data == null ? null : data.JsonData;
            // A thread-pool thread calls into the library (never the other way round) and blocks there.
            return Task.Run(() =>
            {
                var opts = Copy(options);
                security.Configure(opts);
                using (var blocks = new NativeBlocks())
                {
                    NativeMethods.DpsParams native = DeviceClient.DpsNative(globalDeviceEndpoint, idScope, security,
                        payload, blocks);
                    NativeMethods.Options nativeOptions = DeviceClient.ToNative(opts, transport.TransportType,
                        blocks);
                    IntPtr json;
                    int rc = NativeMethods.iotconn_dps_register(ref native, ref nativeOptions, 0, out json);
                    if (rc < 0)
                    {
                        throw IotconnException.FromLastError(rc);
                    }
                    return new DeviceRegistrationResult(NativeMethods.TakeUtf8(json));
                }
            }, cancellationToken);
        }

        // The security provider sets the certificate files on a copy, never on the caller's options.
        internal static ClientOptions Copy(ClientOptions options)
        {
            var copy = new ClientOptions();
            if (options != null)
            {
                foreach (var p in typeof(ClientOptions).GetProperties())
                {
                    p.SetValue(copy, p.GetValue(options, null), null);
                }
            }
            return copy;
        }
    }
}
