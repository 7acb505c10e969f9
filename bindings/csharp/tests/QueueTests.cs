using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using System.Threading.Tasks;
using static Iotconn.Tests.Support;

namespace Iotconn.Tests
{
    /// <summary>The outbound queue's options from C#: durable mode (QueueDirectory), drop-oldest overflow and a
    /// message's time-to-live, against a real hubsim.</summary>
    internal static class QueueTests
    {
        public static readonly TestCase[] All =
        {
            new TestCase("DurableQueueSurvivesCloseAndIsLockedWhileInUse", DurableQueue),
            new TestCase("DropOldestFailsTheOldestWithMessageDropped", DropOldest),
            new TestCase("TimeToLiveExpiresAnUndeliveredMessage", TimeToLive),
        };

        private const string Device = "cs-queue";

        private static DeviceClient NewClient(Hubsim hub, ClientOptions options)
        {
            options.CaFile = hub.CaFile;
            options.OperationTimeout = Deadline;
            return DeviceClient.CreateFromConnectionString(hub.ConnectionStrings[Device], TransportType.Mqtt, options);
        }

        private static Task Send(DeviceClient client, string id)
        {
            return client.SendEventAsync(new Message(Encoding.UTF8.GetBytes(id)) { MessageId = id });
        }

        private static List<string> Recorded(Hubsim hub)
        {
            return hub.Messages(Device).Select(m => (string)m["messageId"]).ToList();
        }

        private static void DurableQueue()
        {
            string dir = Path.Combine(Path.GetTempPath(), "iotconn-cs-queue-" + Guid.NewGuid().ToString("N"));
            try
            {
                using (var hub = new Hubsim(Root, Device))
                {
                    List<Task> first;
                    using (DeviceClient client = NewClient(hub, new ClientOptions { QueueDirectory = dir }))
                    {
                        Assert(client.RecoveredSends.Count == 0, "a new directory has nothing to recover");
                        // Never connected: the messages are on disk when SendEventAsync returns.
                        first = Enumerable.Range(0, 3).Select(i => Send(client, "durable-" + i)).ToList();
                        ThrowsCode("a second client on the directory", ErrorCode.QueueStore, "in use",
                            () => NewClient(hub, new ClientOptions { QueueDirectory = dir }).Dispose());
                        Await(client.CloseAsync(), "CloseAsync");
                    }
                    foreach (Task send in first)
                    {
                        var e = Failure(send, "a send closed in durable mode") as IotconnException;
                        Assert(e != null && e.Code == ErrorCode.Closed, "it fails Closed here: " + e);
                    }

                    using (DeviceClient client = NewClient(hub, new ClientOptions { QueueDirectory = dir }))
                    {
                        Assert(client.RecoveredSends.Count == 3, "the next client recovers the three messages, not " +
                            client.RecoveredSends.Count);
                        Await(client.OpenAsync(), "OpenAsync");
                        Await(Task.WhenAll(client.RecoveredSends), "the recovered sends");
                        Await(Send(client, "durable-3"), "a new send after the recovered ones");
                    }
                    List<string> recorded = Recorded(hub);
                    Assert(recorded.SequenceEqual(Enumerable.Range(0, 4).Select(i => "durable-" + i)),
                        "the hub recorded them once each, in order: " + string.Join(" ", recorded.ToArray()));
                }
            }
            finally
            {
                if (Directory.Exists(dir))
                {
                    Directory.Delete(dir, true);
                }
            }
        }

        private static void DropOldest()
        {
            using (var hub = new Hubsim(Root, Device))
            using (DeviceClient client = NewClient(hub, new ClientOptions
                { QueueMaxMessages = 2, QueueOverflow = QueueOverflow.DropOldest }))
            {
                ThrowsCode("an unknown QueueOverflow", ErrorCode.InvalidArgument, "QueueOverflow",
                    () => NewClient(hub, new ClientOptions { QueueOverflow = (QueueOverflow)7 }));
                // Not connected yet: "c" makes room by dropping "a".
                List<Task> sends = new[] { "a", "b", "c" }.Select(id => Send(client, id)).ToList();
                var dropped = Failure(sends[0], "the oldest send") as IotconnException;
                Assert(dropped != null && dropped.Code == ErrorCode.MessageDropped, "it fails MessageDropped: " +
                    dropped);
                Await(client.OpenAsync(), "OpenAsync");
                Await(Task.WhenAll(sends.Skip(1)), "the two sends that fit");
                List<string> recorded = Recorded(hub);
                Assert(recorded.SequenceEqual(new[] { "b", "c" }), "the hub recorded b and c only: " +
                    string.Join(" ", recorded.ToArray()));
            }
        }

        private static void TimeToLive()
        {
            using (var hub = new Hubsim(Root, Device))
            using (DeviceClient client = NewClient(hub, new ClientOptions()))
            {
                ThrowsCode("a negative TimeToLive", ErrorCode.InvalidArgument, "TimeToLive",
                    () => client.SendEventAsync(new Message(new byte[] { 1 })
                        { TimeToLive = TimeSpan.FromSeconds(-1) }));
                // Never connected: it can only expire.
                var e = Failure(client.SendEventAsync(new Message(Encoding.UTF8.GetBytes("late"))
                    { TimeToLive = TimeSpan.FromMilliseconds(50) }), "a send with a 50 ms time-to-live")
                    as IotconnException;
                Assert(e != null && e.Code == ErrorCode.Timeout && e.Message.Contains("time-to-live"),
                    "it fails with Timeout, saying why: " + e);
                Await(client.OpenAsync(), "OpenAsync");
                Await(Send(client, "in-time"), "a send without a time-to-live");
                List<string> recorded = Recorded(hub);
                Assert(recorded.SequenceEqual(new[] { "in-time" }), "the expired message never went out: " +
                    string.Join(" ", recorded.ToArray()));
            }
        }
    }
}
