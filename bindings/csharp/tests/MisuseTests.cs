using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading.Tasks;
using static Iotconn.Tests.Support;

namespace Iotconn.Tests
{
    /// <summary>Misuse gets an IotconnException with the code and a message that says what was wrong; the client
    /// stays usable after a rejected call. None of these clients connects.</summary>
    internal static class MisuseTests
    {
        public static readonly TestCase[] All =
        {
            new TestCase("MalformedConnectionStringThrowsWithCodeAndMessage", MalformedConnectionString),
            new TestCase("NullAndOutOfRangeArgumentsThrowInvalidArgument", BadArguments),
            new TestCase("EmptyTooLargeAndMalformedMessagesAreRefusedByTheLibrary", BadMessages),
            new TestCase("ReservedPropertyNamesAreRefusedByTheLibrary", ReservedPropertyNames),
            new TestCase("UseAfterDisposeThrowsClosedAndDisposeTwiceIsHarmless", UseAfterDispose),
            new TestCase("MessagesQueuedAtCloseFailWithClosed", QueuedAtClose),
        };

        // Never dialled: these clients are not opened.
        private static readonly string Unreachable =
            "HostName=127.0.0.1:1;DeviceId=d;SharedAccessKey=" + Convert.ToBase64String(new byte[32]);

        private static DeviceClient NewClient()
        {
            return DeviceClient.CreateFromConnectionString(Unreachable, TransportType.Mqtt);
        }

        private static void MalformedConnectionString()
        {
            IotconnException e = Throws("a malformed connection string", () =>
                DeviceClient.CreateFromConnectionString("HostName=;nonsense", TransportType.Mqtt).Dispose());
            Assert(e.Code == ErrorCode.InvalidArgument, "code is InvalidArgument, not " + e.Code);
            Assert(e.Message.StartsWith("invalid argument (-1): ") && e.Message.Length > 24,
                "the message carries the library's explanation: " + e.Message);
        }

        private static void BadArguments()
        {
            ThrowsCode("CreateFromConnectionString(null)", ErrorCode.InvalidArgument, "connectionString",
                () => DeviceClient.CreateFromConnectionString(null));
            ThrowsCode("an unknown TransportType", ErrorCode.InvalidArgument, "transportType",
                () => DeviceClient.CreateFromConnectionString(Unreachable, (TransportType)7));
            ThrowsCode("KeepAliveInSeconds = 0", ErrorCode.InvalidArgument, "KeepAliveInSeconds",
                () => DeviceClient.CreateFromConnectionString(Unreachable, TransportType.Mqtt,
                    new ClientOptions { KeepAliveInSeconds = 0 }));
            ThrowsCode("SasTokenTimeToLive = 1 s", ErrorCode.InvalidArgument, "SAS token lifetime",
                () => DeviceClient.CreateFromConnectionString(Unreachable, TransportType.Mqtt,
                    new ClientOptions { SasTokenTimeToLive = TimeSpan.FromSeconds(1) }));
            ThrowsCode("BackoffResetAfter = 0", ErrorCode.InvalidArgument, "BackoffResetAfter",
                () => DeviceClient.CreateFromConnectionString(Unreachable, TransportType.Mqtt,
                    new ClientOptions { BackoffResetAfter = TimeSpan.Zero }));
            ThrowsCode("a negative BackoffResetAfter", ErrorCode.InvalidArgument, "BackoffResetAfter",
                () => DeviceClient.CreateFromConnectionString(Unreachable, TransportType.Mqtt,
                    new ClientOptions { BackoffResetAfter = TimeSpan.FromSeconds(-1) }));
            ThrowsCode("BackoffResetAfter of 50 days", ErrorCode.InvalidArgument, "BackoffResetAfter",
                () => DeviceClient.CreateFromConnectionString(Unreachable, TransportType.Mqtt,
                    new ClientOptions { BackoffResetAfter = TimeSpan.FromDays(50) }));
            using (DeviceClient client = DeviceClient.CreateFromConnectionString(Unreachable, TransportType.Mqtt,
                new ClientOptions { BackoffResetAfter = TimeSpan.FromMinutes(5) }))
            {
                Assert(client.RecoveredSends.Count == 0, "a client with BackoffResetAfter = 5 min is created");
            }
            ThrowsCode("a negative ReconnectSpread", ErrorCode.InvalidArgument, "ReconnectSpread",
                () => DeviceClient.CreateFromConnectionString(Unreachable, TransportType.Mqtt,
                    new ClientOptions { ReconnectSpread = TimeSpan.FromSeconds(-1) }));
            ThrowsCode("ReconnectSpread of 50 days", ErrorCode.InvalidArgument, "ReconnectSpread",
                () => DeviceClient.CreateFromConnectionString(Unreachable, TransportType.Mqtt,
                    new ClientOptions { ReconnectSpread = TimeSpan.FromDays(50) }));
            // The largest window uint32 milliseconds carry, and 0 (off).
            foreach (TimeSpan spread in new[] { TimeSpan.FromMilliseconds(uint.MaxValue), TimeSpan.Zero })
            {
                using (DeviceClient client = DeviceClient.CreateFromConnectionString(Unreachable, TransportType.Mqtt,
                    new ClientOptions { ReconnectSpread = spread }))
                {
                    Assert(client.RecoveredSends.Count == 0, "a client with ReconnectSpread = " + spread +
                        " is created");
                }
            }
            ThrowsCode("new Message(null)", ErrorCode.InvalidArgument, "body", () => new Message(null));
            ThrowsCode("a negative retry count", ErrorCode.InvalidArgument, "retryCount",
                () => new ExponentialBackoff(-1, TimeSpan.Zero, TimeSpan.FromSeconds(1), TimeSpan.Zero));
            ThrowsCode("minBackoff > maxBackoff", ErrorCode.InvalidArgument, "minBackoff",
                () => new ExponentialBackoff(3, TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(1), TimeSpan.Zero));
            ThrowsCode("an unknown Jitter", ErrorCode.InvalidArgument, "jitter",
                () => new ExponentialBackoff(3, TimeSpan.Zero, TimeSpan.FromSeconds(1), TimeSpan.Zero, (Jitter)3));
            ThrowsCode("Jitter.Decorrelated from 0", ErrorCode.InvalidArgument, "minBackoff",
                () => new ExponentialBackoff(3, TimeSpan.Zero, TimeSpan.FromSeconds(1), TimeSpan.Zero,
                    Jitter.Decorrelated));
            using (DeviceClient client = NewClient())
            {
                ThrowsCode("SendEventAsync(null)", ErrorCode.InvalidArgument, "message",
                    () => client.SendEventAsync(null));
                ThrowsCode("SetRetryPolicy(null)", ErrorCode.InvalidArgument, "retryPolicy",
                    () => client.SetRetryPolicy(null));
                var message = new Message(new byte[] { 1 });
                message.Properties["k"] = null;
                ThrowsCode("a property with a null value", ErrorCode.InvalidArgument, "'k'",
                    () => client.SendEventAsync(message));
                ThrowsCode("a NUL character in a string", ErrorCode.InvalidArgument, "NUL",
                    () => client.SendEventAsync(new Message(new byte[] { 1 }) { MessageId = "a\0b" }));
                // After the rejected calls the client still takes messages.
                Assert(!client.SendEventAsync(new Message(new byte[] { 1 })).IsCompleted,
                    "a valid message is queued (the client is not connected)");
            }
        }

        private static void BadMessages()
        {
            using (DeviceClient client = NewClient())
            {
                ThrowsCode("an empty payload", ErrorCode.InvalidArgument, "empty",
                    () => client.SendEventAsync(new Message()));
                ThrowsCode("a payload over 256 KiB", ErrorCode.MessageTooLarge, "too large",
                    () => client.SendEventAsync(new Message(new byte[256 * 1024 + 1])));
                // IoT Hub counts the payload, the message id and the properties' names and values together.
                Assert(!client.SendEventAsync(Sized(256 * 1024)).IsCompleted,
                    "a message of 262144 bytes in all is queued");
                ThrowsCode("262000 payload bytes and properties, 262145 bytes in all", ErrorCode.MessageTooLarge,
                    "262145 bytes", () => client.SendEventAsync(Sized(256 * 1024 + 1)));
                ThrowsCode("a MessageId of 129 characters", ErrorCode.MessageTooLarge, "129 bytes",
                    () => client.SendEventAsync(new Message(new byte[] { 1 }) { MessageId = new string('m', 129) }));
                ThrowsCode("a MessageId with a space", ErrorCode.InvalidArgument, "message id",
                    () => client.SendEventAsync(new Message(new byte[] { 1 }) { MessageId = "in time" }));
                // MQTT carries the properties percent-encoded in its topic, at most 65535 bytes: '&' takes three.
                var encoded = new Message(new byte[] { 1 });
                encoded.Properties["k"] = new string('&', 30000);
                ThrowsCode("a property of 30000 '&' (90000 bytes percent-encoded)", ErrorCode.MessageTooLarge,
                    "MQTT allows 65535", () => client.SendEventAsync(encoded));
            }
        }

        // A message of total bytes as IoT Hub counts them: 262000 payload bytes, a 4-byte MessageId and a property.
        private static Message Sized(int total)
        {
            var message = new Message(new byte[262000]) { MessageId = "m-id" };
            message.Properties["pad"] = new string('p', total - 262000 - "m-id".Length - "pad".Length);
            return message;
        }

        private static void ReservedPropertyNames()
        {
            using (DeviceClient client = NewClient())
            {
                // IoT Hub reads "$." and "iothub-" names (in any case) as its own system properties.
                foreach (string key in new[] { "$.mid", "IoTHub-ack" })
                {
                    var message = new Message(new byte[] { 1 });
                    message.Properties[key] = "x";
                    ThrowsCode("a property named " + key, ErrorCode.InvalidArgument, key,
                        () => client.SendEventAsync(message));
                }
                var stamped = new Message(new byte[] { 1 });
                stamped.Properties["iothub-creation-time-utc"] = "2026-01-01T00:00:00Z";
                Assert(!client.SendEventAsync(stamped).IsCompleted,
                    "iothub-creation-time-utc, the one iothub- name a device may set, is queued");
            }
        }

        private static void UseAfterDispose()
        {
            DeviceClient client = NewClient();
            client.Dispose();
            ThrowsCode("SendEventAsync after Dispose", ErrorCode.Closed, "disposed",
                () => client.SendEventAsync(new Message(new byte[] { 1 })));
            ThrowsCode("OpenAsync after Dispose", ErrorCode.Closed, "disposed", () => client.OpenAsync());
            ThrowsCode("SetRetryPolicy after Dispose", ErrorCode.Closed, "disposed",
                () => client.SetRetryPolicy(new NoRetry()));
            ThrowsCode("SetConnectionStatusChangesHandler after Dispose", ErrorCode.Closed, "disposed",
                () => client.SetConnectionStatusChangesHandler((s, r) => { }));
            ThrowsCode("SetReceiveMessageHandlerAsync after Dispose", ErrorCode.Closed, "disposed",
                () => client.SetReceiveMessageHandlerAsync((m, c) => Task.FromResult(0), null));
            // Dispose and CloseAsync again are no-ops, as .NET asks of Dispose: the native client is destroyed once.
            client.Dispose();
            Await(client.CloseAsync(), "CloseAsync after Dispose");
        }

        private static void QueuedAtClose()
        {
            DeviceClient client = NewClient();
            var statuses = new Recorder<StatusEvent>();
            client.SetConnectionStatusChangesHandler((s, r) => statuses.Add(new StatusEvent(s, r)));
            // Never connected: the messages wait in the outbound queue until the close fails them.
            List<Task> sends = Enumerable.Range(0, 3).Select(i => client.SendEventAsync(new Message(new byte[] { 1 })))
                .ToList();
            Await(client.CloseAsync(), "CloseAsync");
            foreach (Task send in sends)
            {
                var e = Failure(send, "a queued send") as IotconnException;
                Assert(e != null && e.Code == ErrorCode.Closed, "a queued send fails with Closed: " + e);
            }
            Assert(statuses.Events.Last().Is(ConnectionStatus.Disabled, ConnectionStatusChangeReason.Client_Close),
                "CloseAsync completes after the last status (Disabled/Client_Close) ran: " +
                string.Join(", ", statuses.Events.Select(e => e.ToString()).ToArray()));
            client.Dispose();
        }
    }
}
