using System;
using System.Text;
using System.Threading.Tasks;

namespace Iotconn
{
    /// <summary>A direct method call from the hub.</summary>
    public sealed class MethodRequest
    {
        public MethodRequest(string name, byte[] data)
        {
            Name = name;
            Data = data ?? new byte[0];
        }

        /// <summary>The method's name.</summary>
        public string Name { get; private set; }

        /// <summary>The call's payload, UTF-8 JSON bytes (empty when the call has none).</summary>
        public byte[] Data { get; private set; }

        /// <summary>The payload as a JSON string; null when the call has none.</summary>
        public string DataAsJson
        {
            get { return Data.Length == 0 ? null : Encoding.UTF8.GetString(Data); }
        }
    }

    /// <summary>The application's answer to a MethodRequest: a status (e.g. 200) and an optional JSON
    /// payload.</summary>
    public sealed class MethodResponse
    {
        /// <summary>An answer with a payload: result is one JSON value as UTF-8 bytes (the library refuses
        /// anything else, and the caller then gets a 500 instead).</summary>
        public MethodResponse(byte[] result, int status)
        {
            Result = result;
            Status = status;
        }

        /// <summary>An answer without a payload.</summary>
        public MethodResponse(int status) : this(null, status)
        {
        }

        public byte[] Result { get; private set; }

        public int Status { get; private set; }

        /// <summary>The payload as a JSON string; null when there is none.</summary>
        public string ResultAsJson
        {
            get { return Result == null || Result.Length == 0 ? null : Encoding.UTF8.GetString(Result); }
        }
    }

    /// <summary>Handles a direct method call; called on the dispatcher thread, the returned task's response is
    /// sent once it completes (off the dispatcher).</summary>
    public delegate Task<MethodResponse> MethodCallback(MethodRequest methodRequest, object userContext);
}
