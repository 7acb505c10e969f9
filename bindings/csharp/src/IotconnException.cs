using System;

namespace Iotconn
{
    /// <summary>The IOTCONN_E* codes of include/iotconn.h (values fixed forever; new ones are only appended).</summary>
    public enum ErrorCode
    {
        Ok = 0,
        InvalidArgument = -1,   // IOTCONN_EINVAL
        BadHandle = -2,         // IOTCONN_EBADHANDLE
        Closed = -3,            // IOTCONN_ECLOSED
        QueueFull = -4,         // IOTCONN_EQUEUEFULL
        Timeout = -5,           // IOTCONN_ETIMEOUT
        BadCredential = -6,     // IOTCONN_EAUTH
        DeviceDisabled = -7,    // IOTCONN_EDISABLED
        RetryExpired = -8,      // IOTCONN_ERETRYEXPIRED
        MessageTooLarge = -9,   // IOTCONN_ETOOLARGE
        Network = -10,          // IOTCONN_ENETWORK
        InvalidState = -11,     // IOTCONN_ESTATE
        Internal = -12,         // IOTCONN_EINTERNAL
        Protocol = -13,         // IOTCONN_EPROTOCOL
        Throttled = -14,        // IOTCONN_ETHROTTLED
        MessageDropped = -15,   // IOTCONN_EDROPPED
        QueueStore = -16,       // IOTCONN_ESTORE
        Canceled = -17,         // IOTCONN_ECANCELED
        InDoubt = -18,          // IOTCONN_EINDOUBT
    }

    /// <summary>A failed iotconn operation: Code says which IOTCONN_E* error, Message adds the library's
    /// explanation (iotconn_last_error). A custom retry policy receives these as its lastException.</summary>
    public class IotconnException : Exception
    {
        public IotconnException(ErrorCode code, string message)
            : base(string.IsNullOrEmpty(message) ? Describe(code) : Describe(code) + ": " + message)
        {
            Code = code;
        }

        public ErrorCode Code { get; private set; }

        private static string Describe(ErrorCode code)
        {
            string text;
            try
            {
                text = NativeMethods.FromUtf8(NativeMethods.iotconn_strerror((int)code));
            }
            catch (DllNotFoundException)
            {
                // An argument error found before the library could load still gets its code.
                text = code.ToString();
            }
            return text + " (" + (int)code + ")";
        }

        /// <summary>A bad argument found by the binding itself, reported as the library reports its own.</summary>
        internal static IotconnException InvalidArgument(string parameter, string why)
        {
            return new IotconnException(ErrorCode.InvalidArgument, parameter + " " + why);
        }

        /// <summary>The exception for a failed call's return code, with this thread's last error message.</summary>
        internal static IotconnException FromLastError(int code)
        {
            return new IotconnException((ErrorCode)code, NativeMethods.LastError());
        }
    }
}
