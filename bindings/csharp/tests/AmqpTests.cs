using System;
using System.Collections.Generic;
using System.Linq;
using System.Text;
using System.Threading.Tasks;
using static Iotconn.Tests.Support;

namespace Iotconn.Tests
{
    /// <summary>TransportType.Amqp and Amqp_WebSocket_Only against a real iotconn-hubsim process: open, send, a C2D
    /// message and close, alone and pooled (ClientOptions.AmqpPool); pooling with MQTT is refused.</summary>
    internal static class AmqpTests
    {
        public static readonly TestCase[] All =
        {
            new TestCase("AmqpAndAmqpWebSocketSendAndReceiveAloneAndPooled", SendAndReceive),
            new TestCase("AmqpPoolIsCheckedAtCreate", PoolChecked),
        };

        private static void SendAndReceive()
        {
            var devices = new[] { "amqp", "amqp-ws", "pooled", "pooled-ws" };
            using (var hub = new Hubsim(Root, devices))
            {
                foreach (string device in devices)
                {
                    bool ws = device.EndsWith("-ws");
                    var options = new ClientOptions { CaFile = hub.CaFile, OperationTimeout = Deadline };
                    if (device.StartsWith("pooled"))
                    {
                        options.AmqpPool = 4;
                    }
                    using (DeviceClient client = DeviceClient.CreateFromConnectionString(
                        hub.AmqpConnectionString(device, ws), ws ? TransportType.Amqp_WebSocket_Only : TransportType.Amqp,
                        options))
                    {
                        var statuses = new Recorder<StatusEvent>();
                        client.SetConnectionStatusChangesHandler((s, r) => statuses.Add(new StatusEvent(s, r)));
                        var received = new Recorder<Message>();
                        Await(client.SetReceiveMessageHandlerAsync((message, _) =>
                        {
                            received.Add(message);
                            return Task.FromResult(0);
                        }, null), "SetReceiveMessageHandlerAsync");
                        Await(client.OpenAsync(), "OpenAsync over " + device);
                        Await(client.SendEventAsync(new Message(Encoding.UTF8.GetBytes("over amqp"))
                        {
                            MessageId = device + "-1",
                        }), "SendEventAsync");
                        var recorded = hub.Messages(device);
                        Assert(recorded.Count == 1 && (string)recorded[0]["messageId"] == device + "-1",
                            device + ": the hub recorded the message once");
                        hub.SendC2D(device, new Dictionary<string, string> { { "payload", "to " + device } },
                            new Dictionary<string, string> { { "color", "blue" } });
                        Message m = received.WaitCount("C2D message", 1)[0];
                        Assert(Encoding.UTF8.GetString(m.GetBytes()) == "to " + device && m.Properties["color"] == "blue",
                            device + ": the C2D message as sent");
                        Await(client.CloseAsync(), "CloseAsync");
                        List<StatusEvent> events = statuses.WaitCount("close", 2);
                        Assert(events[0].Status == ConnectionStatus.Connected &&
                            events[1].Status == ConnectionStatus.Disabled, device + ": Connected, then Disabled");
                    }
                }
            }
        }

        private static void PoolChecked()
        {
            const string cs = "HostName=localhost:1;DeviceId=d;SharedAccessKey=AAAA";
            foreach (var c in new[] { Tuple.Create(TransportType.Mqtt, 4), Tuple.Create(TransportType.Amqp, -1) })
            {
                try
                {
                    DeviceClient.CreateFromConnectionString(cs, c.Item1, new ClientOptions { AmqpPool = c.Item2 })
                        .Dispose();
                    Assert(false, "AmqpPool " + c.Item2 + " with " + c.Item1 + " was accepted");
                }
                catch (IotconnException e)
                {
                    Assert(e.Code == ErrorCode.InvalidArgument, "AmqpPool " + c.Item2 + " with " + c.Item1 + ": " +
                        e.Code + " " + e.Message);
                }
            }
        }
    }
}
