// P/Invoke declarations of include/iotconn.h (linux-x64 layouts: size_t and pointers are 8 bytes).
using System;
using System.Runtime.InteropServices;
using System.Text;

namespace Iotconn
{
    internal static class NativeMethods
    {
        private const string Library = "iotconn";

        internal const int DispatchPoll = 1;
        internal const int SendDelivered = 0;
        internal const int RetryExponential = 0;
        internal const int RetryNone = 1;
        internal const int RetryCustom = 2;
        internal const int LogWarn = 1;

        [StructLayout(LayoutKind.Explicit, Size = 136)]
        internal struct Options
        {
            [FieldOffset(0)] public UIntPtr Size;
            [FieldOffset(8)] public int Transport;
            [FieldOffset(16)] public IntPtr CaFile;
            [FieldOffset(24)] public IntPtr CaPem;
            [FieldOffset(32)] public IntPtr CertFile;
            [FieldOffset(40)] public IntPtr KeyFile;
            [FieldOffset(48)] public uint KeepaliveS;
            [FieldOffset(52)] public uint SasLifetimeS;
            [FieldOffset(56)] public uint SasRenewMarginS;
            [FieldOffset(60)] public uint QueueMaxMessages;
            [FieldOffset(64)] public ulong QueueMaxBytes;
            [FieldOffset(72)] public uint OperationTimeoutMs;
            [FieldOffset(76)] public int Dispatch;
            [FieldOffset(80)] public int QueueOverflow;
            [FieldOffset(88)] public IntPtr QueueDir;
            [FieldOffset(96)] public uint BackoffResetAfterMs;
            [FieldOffset(104)] public IntPtr Dispatcher;
            [FieldOffset(112)] public uint ReconnectSpreadMs;
            [FieldOffset(120)] public IntPtr Admission;
            [FieldOffset(128)] public uint AmqpPool;
        }

        [StructLayout(LayoutKind.Explicit, Size = 72)]
        internal struct DpsParams
        {
            [FieldOffset(0)] public UIntPtr Size;
            [FieldOffset(8)] public IntPtr ProvisioningHost;
            [FieldOffset(16)] public IntPtr IdScope;
            [FieldOffset(24)] public IntPtr RegistrationId;
            [FieldOffset(32)] public IntPtr SymmetricKey;
            [FieldOffset(40)] public IntPtr GroupKey;
            [FieldOffset(48)] public IntPtr PayloadJson;
            [FieldOffset(56)] public IntPtr CacheFile;
            [FieldOffset(64)] public uint ReprovisionAfterFailures;
            [FieldOffset(68)] public uint ReprovisionAfterS;
        }

        [StructLayout(LayoutKind.Explicit, Size = 16)]
        internal struct Property
        {
            [FieldOffset(0)] public IntPtr Key;
            [FieldOffset(8)] public IntPtr Value;
        }

        [StructLayout(LayoutKind.Explicit, Size = 80)]
        internal struct CMessage
        {
            [FieldOffset(0)] public UIntPtr Size;
            [FieldOffset(8)] public IntPtr Payload;
            [FieldOffset(16)] public UIntPtr PayloadLen;
            [FieldOffset(24)] public IntPtr MessageId;
            [FieldOffset(32)] public IntPtr CorrelationId;
            [FieldOffset(40)] public IntPtr ContentType;
            [FieldOffset(48)] public IntPtr ContentEncoding;
            [FieldOffset(56)] public IntPtr Properties;
            [FieldOffset(64)] public UIntPtr PropertyCount;
            [FieldOffset(72)] public uint TtlMs;
        }

        [StructLayout(LayoutKind.Explicit, Size = 48)]
        internal struct RetryPolicy
        {
            [FieldOffset(0)] public UIntPtr Size;
            [FieldOffset(8)] public int Kind;
            [FieldOffset(12)] public int RetryCount;
            [FieldOffset(16)] public uint MinBackoffMs;
            [FieldOffset(20)] public uint MaxBackoffMs;
            [FieldOffset(24)] public uint DeltaBackoffMs;
            [FieldOffset(28)] public int Jitter;
            [FieldOffset(32)] public IntPtr Custom;
            [FieldOffset(40)] public IntPtr User;
        }

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate int RetryCallback(uint attempt, int errorCode, IntPtr errorMessage, IntPtr delayMs,
            IntPtr user);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate void StatusCallback(int status, int reason, IntPtr user);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate void MessageCallback(IntPtr message, IntPtr user);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate void SendCallback(ulong id, int result, int errorCode, IntPtr user);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate void LogCallback(int level, IntPtr message, IntPtr user);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate void TwinCallback(ulong id, IntPtr twinJson, UIntPtr len, int errorCode, IntPtr user);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate void ReportedCallback(ulong id, long version, int errorCode, IntPtr user);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate void DesiredCallback(long version, IntPtr patchJson, UIntPtr len, IntPtr user);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate void MethodCallback(IntPtr requestId, IntPtr methodName, IntPtr payloadJson, UIntPtr len,
            IntPtr user);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr iotconn_version(out int major, out int minor, out int patch);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr iotconn_last_error();

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr iotconn_strerror(int code);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr iotconn_status_str(int status);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr iotconn_reason_str(int reason);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_client_create(byte[] connectionString, ref Options options,
            out ClientHandle client);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_client_destroy(IntPtr client);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_connect(ClientHandle client, uint timeoutMs);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_connect_cancel(ClientHandle client);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_send(ClientHandle client, ref CMessage message, out ulong id);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_register_status_callback(ClientHandle client, StatusCallback cb,
            IntPtr user);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_register_message_callback(ClientHandle client, MessageCallback cb,
            IntPtr user);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_register_send_callback(ClientHandle client, SendCallback cb, IntPtr user);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_register_log_callback(ClientHandle client, LogCallback cb, IntPtr user);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_register_twin_callback(ClientHandle client, TwinCallback cb, IntPtr user);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_register_reported_callback(ClientHandle client, ReportedCallback cb,
            IntPtr user);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_register_desired_callback(ClientHandle client, DesiredCallback cb,
            IntPtr user);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_register_method_callback(ClientHandle client, MethodCallback cb,
            IntPtr user);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_twin_get(ClientHandle client, out ulong id);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_twin_report(ClientHandle client, byte[] patchJson, UIntPtr len,
            out ulong id);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_method_respond(ClientHandle client, byte[] requestId, int status,
            byte[] payloadJson, UIntPtr len);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_set_retry_policy(ClientHandle client, ref RetryPolicy policy);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_poll(ClientHandle client, uint timeoutMs);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_close(ClientHandle client);

        // A dispatcher handle is an id the library never reuses (a destroyed one is EBADHANDLE, never another
        // object), so a plain IntPtr is safe here.
        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_dispatcher_create(int dispatch, out IntPtr dispatcher);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_dispatcher_poll(IntPtr dispatcher, uint timeoutMs);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_dispatcher_destroy(IntPtr dispatcher);

        // An admission handle is an id the library never reuses too.
        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_admission_create(double perSecond, uint burst, out IntPtr admission);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_admission_destroy(IntPtr admission);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_queue_recovered(ClientHandle client, out ulong count);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void iotconn_free(IntPtr block);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_client_create_dps(ref DpsParams parameters, ref Options options,
            out ClientHandle client);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_dps_registrations(ClientHandle client, out ulong count);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_dps_assignment(ClientHandle client, out IntPtr hub, out IntPtr deviceId);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int iotconn_dps_register(ref DpsParams parameters, ref Options options,
            uint timeoutMs, out IntPtr resultJson);

        /// <summary>A string the library allocated, as a managed string (null for NULL), freed with
        /// iotconn_free.</summary>
        internal static string TakeUtf8(IntPtr text)
        {
            try
            {
                return FromUtf8(text);
            }
            finally
            {
                if (text != IntPtr.Zero)
                {
                    iotconn_free(text);
                }
            }
        }

        /// <summary>A NUL-terminated UTF-8 C string as a managed string (null for NULL).</summary>
        internal static string FromUtf8(IntPtr text)
        {
            if (text == IntPtr.Zero)
            {
                return null;
            }
            int length = 0;
            while (Marshal.ReadByte(text, length) != 0)
            {
                length++;
            }
            var bytes = new byte[length];
            Marshal.Copy(text, bytes, 0, length);
            return Encoding.UTF8.GetString(bytes);
        }

        /// <summary>len bytes of UTF-8 at text as a managed string (null for NULL).</summary>
        internal static string FromUtf8(IntPtr text, UIntPtr len)
        {
            return text == IntPtr.Zero ? null : Encoding.UTF8.GetString(Bytes(text, len));
        }

        /// <summary>A copy of len bytes at data (empty for NULL).</summary>
        internal static byte[] Bytes(IntPtr data, UIntPtr len)
        {
            var bytes = new byte[data == IntPtr.Zero ? 0 : checked((int)len.ToUInt64())];
            if (bytes.Length > 0)
            {
                Marshal.Copy(data, bytes, 0, bytes.Length);
            }
            return bytes;
        }

        /// <summary>A string as NUL-terminated UTF-8 bytes (null for null).</summary>
        internal static byte[] ToUtf8(string text)
        {
            if (text == null)
            {
                return null;
            }
            if (text.IndexOf('\0') >= 0)
            {
                throw IotconnException.InvalidArgument("string",
                    "strings passed to iotconn must not contain NUL characters");
            }
            var bytes = new byte[Encoding.UTF8.GetByteCount(text) + 1];
            Encoding.UTF8.GetBytes(text, 0, text.Length, bytes, 0);
            return bytes;
        }

        // The header these declarations follow (include/iotconn.h IOTCONN_VERSION_*), which is also the assembly's
        // version (the builds take it from the header): a library of the same major version and at least this
        // minor one has every function and field used here.
        private static readonly Version assemblyVersion = typeof(NativeMethods).Assembly.GetName().Version;
        internal static readonly int HeaderMajor = assemblyVersion.Major;
        internal static readonly int HeaderMinor = assemblyVersion.Minor;
        internal static readonly string HeaderVersion = assemblyVersion.ToString(3);

        // Null when the loaded library is compatible, else why not.
        private static readonly Lazy<string> incompatibility = new Lazy<string>(() =>
        {
            int major, minor, patch;
            string version = FromUtf8(iotconn_version(out major, out minor, out patch));
            return major == HeaderMajor && minor >= HeaderMinor ? null
                : "libiotconn " + version + " is loaded; Iotconn.dll needs " + HeaderMajor + ".x, x >= " +
                    HeaderMinor + " (written against " + HeaderVersion + ")";
        });

        /// <summary>Throws when the loaded library does not match these declarations (or cannot be loaded).</summary>
        internal static void EnsureCompatible()
        {
            if (incompatibility.Value != null)
            {
                throw new DllNotFoundException(incompatibility.Value);
            }
        }

        /// <summary>The loaded library's version string, e.g. "1.1.0".</summary>
        internal static string Version()
        {
            int major, minor, patch;
            return FromUtf8(iotconn_version(out major, out minor, out patch));
        }

        /// <summary>The last error message of this thread; read it right after the failed call.</summary>
        internal static string LastError()
        {
            return FromUtf8(iotconn_last_error()) ?? "";
        }
    }
}
