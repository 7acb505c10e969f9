using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;

namespace Iotconn
{
    /// <summary>A device-to-cloud or cloud-to-device message (Microsoft.Azure.Devices.Client.Message's names).
    /// It holds no unmanaged resources: it is IDisposable only so that the .NET SDK's `using (var message = ...)`
    /// compiles unchanged.</summary>
    public sealed class Message : IDisposable
    {
        private readonly byte[] body;

        public Message() : this(new byte[0])
        {
        }

        public Message(byte[] body)
        {
            if (body == null)
            {
                throw IotconnException.InvalidArgument("body", "must not be null");
            }
            this.body = body;
            Properties = new Dictionary<string, string>();
        }

        public string MessageId { get; set; }
        public string CorrelationId { get; set; }
        public string ContentType { get; set; }
        public string ContentEncoding { get; set; }

        /// <summary>Time-to-live from SendEventAsync: not delivered by then, the send fails with
        /// ErrorCode.Timeout, or ErrorCode.InDoubt when it was handed to the network but never acknowledged (it may
        /// have reached the hub), and the message is never sent after. Null: the client's OperationTimeout.</summary>
        public TimeSpan? TimeToLive { get; set; }

        /// <summary>Application properties.</summary>
        public IDictionary<string, string> Properties { get; private set; }

        /// <summary>A copy of the body.</summary>
        public byte[] GetBytes()
        {
            return (byte[])body.Clone();
        }

        public void Dispose()
        {
        }

        /// <summary>Copies a message the library handed to a callback (valid only during the callback).</summary>
        internal static Message FromNative(IntPtr pointer)
        {
            var native = (NativeMethods.CMessage)Marshal.PtrToStructure(pointer, typeof(NativeMethods.CMessage));
            var payload = new byte[checked((int)native.PayloadLen.ToUInt64())];
            if (payload.Length > 0)
            {
                Marshal.Copy(native.Payload, payload, 0, payload.Length);
            }
            var message = new Message(payload)
            {
                MessageId = NativeMethods.FromUtf8(native.MessageId),
                CorrelationId = NativeMethods.FromUtf8(native.CorrelationId),
                ContentType = NativeMethods.FromUtf8(native.ContentType),
                ContentEncoding = NativeMethods.FromUtf8(native.ContentEncoding),
            };
            int stride = Marshal.SizeOf(typeof(NativeMethods.Property));
            ulong count = native.PropertyCount.ToUInt64();
            for (ulong i = 0; i < count; i++)
            {
                var property = (NativeMethods.Property)Marshal.PtrToStructure(
                    new IntPtr(native.Properties.ToInt64() + (long)i * stride), typeof(NativeMethods.Property));
                message.Properties[NativeMethods.FromUtf8(property.Key)] = NativeMethods.FromUtf8(property.Value);
            }
            return message;
        }

        /// <summary>This message in unmanaged memory for iotconn_send, which copies it before returning.</summary>
        internal NativeMessage ToNative()
        {
            return new NativeMessage(this, body);
        }
    }
}
