using System;

namespace Iotconn
{
    /// <summary>A failed iotconn call: Code is the IOTCONN_E* code (negative), Message the library's explanation.</summary>
    public class IotconnException : Exception
    {
        public IotconnException(int code, string message)
            : base(string.IsNullOrEmpty(message) ? Describe(code) : Describe(code) + ": " + message)
        {
            Code = code;
        }

        public int Code { get; private set; }

        private static string Describe(int code)
        {
            return NativeMethods.FromUtf8(NativeMethods.iotconn_strerror(code)) + " (" + code + ")";
        }

        /// <summary>The exception for a failed call's return code, with this thread's last error message.</summary>
        internal static IotconnException FromLastError(int code)
        {
            return new IotconnException(code, NativeMethods.LastError());
        }
    }
}
