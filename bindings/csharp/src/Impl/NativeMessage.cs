using System;
using System.Runtime.InteropServices;

namespace Iotconn
{
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
