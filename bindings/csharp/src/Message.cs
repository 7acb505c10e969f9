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

    /// <summary>An iotconn_message_t and the unmanaged blocks it points to; Dispose frees them all.</summary>
    internal sealed class NativeMessage : IDisposable
    {
        private static readonly int PropertyKeyOffset = (int)Marshal.OffsetOf(typeof(NativeMethods.Property), "Key");
        private static readonly int PropertyValueOffset =
            (int)Marshal.OffsetOf(typeof(NativeMethods.Property), "Value");

        private readonly NativeBlocks blocks = new NativeBlocks();

        public NativeMethods.CMessage Value;

        internal NativeMessage(Message message, byte[] body)
        {
            try
            {
                Value.Size = new UIntPtr((uint)Marshal.SizeOf(typeof(NativeMethods.CMessage)));
                Value.Payload = blocks.Copy(body);
                Value.PayloadLen = new UIntPtr((uint)body.Length);
                Value.MessageId = blocks.Utf8(message.MessageId);
                Value.CorrelationId = blocks.Utf8(message.CorrelationId);
                Value.ContentType = blocks.Utf8(message.ContentType);
                Value.ContentEncoding = blocks.Utf8(message.ContentEncoding);
                if (message.TimeToLive.HasValue)
                {
                    // 0 would mean the default: the shortest explicit time-to-live is 1 ms.
                    uint ms = ExponentialBackoff.Milliseconds("TimeToLive", message.TimeToLive.Value);
                    Value.TtlMs = Math.Max(1, ms);
                }
                if (message.Properties.Count > 0)
                {
                    int stride = Marshal.SizeOf(typeof(NativeMethods.Property));
                    IntPtr array = blocks.Allocate(stride * message.Properties.Count);
                    int index = 0;
                    foreach (var pair in message.Properties)
                    {
                        if (pair.Value == null)
                        {
                            throw IotconnException.InvalidArgument("message", "property '" + pair.Key +
                                "' has a null value");
                        }
                        // Two pointer writes: Marshal.StructureToPtr costs far more per property on Mono.
                        IntPtr entry = new IntPtr(array.ToInt64() + index * stride);
                        Marshal.WriteIntPtr(entry, PropertyKeyOffset, blocks.Utf8(pair.Key));
                        Marshal.WriteIntPtr(entry, PropertyValueOffset, blocks.Utf8(pair.Value));
                        index++;
                    }
                    Value.Properties = array;
                    Value.PropertyCount = new UIntPtr((uint)index);
                }
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        public void Dispose()
        {
            blocks.Dispose();
        }
    }
}
