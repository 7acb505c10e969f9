using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;

namespace Iotconn
{
    /// <summary>A device-to-cloud or cloud-to-device message.</summary>
    public sealed class Message
    {
        private readonly byte[] body;

        public Message(byte[] body)
        {
            if (body == null)
            {
                throw new ArgumentNullException("body");
            }
            this.body = body;
            Properties = new Dictionary<string, string>();
        }

        public string MessageId { get; set; }
        public string CorrelationId { get; set; }
        public string ContentType { get; set; }
        public string ContentEncoding { get; set; }

        /// <summary>Application properties.</summary>
        public IDictionary<string, string> Properties { get; private set; }

        /// <summary>A copy of the body.</summary>
        public byte[] GetBytes()
        {
            return (byte[])body.Clone();
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
        private readonly List<IntPtr> blocks = new List<IntPtr>();

        public NativeMethods.CMessage Value;

        internal NativeMessage(Message message, byte[] body)
        {
            try
            {
                Value.Size = new UIntPtr((uint)Marshal.SizeOf(typeof(NativeMethods.CMessage)));
                Value.Payload = Copy(body);
                Value.PayloadLen = new UIntPtr((uint)body.Length);
                Value.MessageId = Copy(NativeMethods.ToUtf8(message.MessageId));
                Value.CorrelationId = Copy(NativeMethods.ToUtf8(message.CorrelationId));
                Value.ContentType = Copy(NativeMethods.ToUtf8(message.ContentType));
                Value.ContentEncoding = Copy(NativeMethods.ToUtf8(message.ContentEncoding));
                if (message.Properties.Count > 0)
                {
                    int stride = Marshal.SizeOf(typeof(NativeMethods.Property));
                    IntPtr array = Allocate(stride * message.Properties.Count);
                    int index = 0;
                    foreach (var pair in message.Properties)
                    {
                        if (pair.Key == null || pair.Value == null)
                        {
                            throw new ArgumentException("message property keys and values must not be null");
                        }
                        var property = new NativeMethods.Property
                        {
                            Key = Copy(NativeMethods.ToUtf8(pair.Key)),
                            Value = Copy(NativeMethods.ToUtf8(pair.Value)),
                        };
                        Marshal.StructureToPtr(property, new IntPtr(array.ToInt64() + index * stride), false);
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

        private IntPtr Allocate(int bytes)
        {
            IntPtr block = Marshal.AllocHGlobal(bytes);
            blocks.Add(block);
            return block;
        }

        private IntPtr Copy(byte[] bytes)
        {
            if (bytes == null || bytes.Length == 0)
            {
                return IntPtr.Zero;
            }
            IntPtr block = Allocate(bytes.Length);
            Marshal.Copy(bytes, 0, block, bytes.Length);
            return block;
        }

        public void Dispose()
        {
            foreach (IntPtr block in blocks)
            {
                Marshal.FreeHGlobal(block);
            }
            blocks.Clear();
        }
    }
}
