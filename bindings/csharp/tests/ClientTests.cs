using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using static Iotconn.Tests.Support;

namespace Iotconn.Tests
{
    /// <summary>DeviceClient end to end against a real iotconn-hubsim process per test (or a listener that never
    /// answers).</summary>
    internal static class ClientTests
    {
        public static readonly TestCase[] All =
        {
            new TestCase("CloudToDeviceMessageReachesTheHandlerWithItsProperties", CloudToDevice),
            new TestCase("KilledTcpReconnectsAndEveryMessageIsRecordedOnce", KilledTcp),
            new TestCase("AClientWithAReconnectSpreadConnectsAndReconnects", ReconnectSpread),
            new TestCase("ManyPipelinedSendsEachCompleteOnce", ManySends),
            new TestCase("NoRetryEndsRetryExpiredWhenTheHubGoesDown", NoRetryHubDown),
            new TestCase("CustomRetryPolicyDrivesTheReconnectsOnTheDispatcher", CustomPolicyReconnects),
            new TestCase("CustomRetryPolicyThatGivesUpEndsRetryExpired", CustomPolicyGivesUp),
            new TestCase("AThrowingHandlerDoesNotStopTheDispatcher", ThrowingHandler),
            new TestCase("AHandlerMaySendAndClose", HandlerSendsAndCloses),
            new TestCase("OpenAsyncWithATokenNeverCancelledConnects", OpenWithToken),
            new TestCase("CancellingOpenAsyncAbandonsTheConnectAndTheClientStaysUsable", CancelOpen),
        };

        private const string Device = "cs-dev";
        private const string DispatcherName = "iotconn-dispatcher";

        private static readonly StatusEvent Connected =
            new StatusEvent(ConnectionStatus.Connected, ConnectionStatusChangeReason.Connection_Ok);

        /// <summary>A hubsim with one device and a client of it that records its status changes.</summary>
        private sealed class Fixture : IDisposable
        {
            public readonly Hubsim Hub;
            public readonly DeviceClient Client;
            public readonly Recorder<StatusEvent> Statuses = new Recorder<StatusEvent>();
            private readonly TimeSpan? reconnectSpread;

            public Fixture(TimeSpan? reconnectSpread = null)
            {
                this.reconnectSpread = reconnectSpread;
                Hub = new Hubsim(Root, Device);
                try
                {
                    Client = NewClient();
                }
                catch
                {
                    Hub.Dispose();
                    throw;
                }
            }

            public DeviceClient NewClient()
            {
                DeviceClient client = DeviceClient.CreateFromConnectionString(Hub.ConnectionStrings[Device],
                    TransportType.Mqtt, new ClientOptions
                    {
                        CaFile = Hub.CaFile, OperationTimeout = Deadline, ReconnectSpread = reconnectSpread,
                    });
                client.SetConnectionStatusChangesHandler((s, r) => Statuses.Add(new StatusEvent(s, r)));
                return client;
            }

            /// <summary>Opens the client and returns the dispatcher thread (the one that reported Connected).</summary>
            public Thread Open(CancellationToken cancellationToken = default(CancellationToken))
            {
                Await(Client.OpenAsync(cancellationToken), "OpenAsync");
                List<StatusEvent> events = Statuses.WaitCount("status change", 1);
                Assert(Same(events, Connected), "the first status is Connected/Connection_Ok: " + Show(events));
                return events[0].Thread;
            }

            public void Dispose()
            {
                Client.Dispose();
                Hub.Dispose();
            }
        }

        private static bool Same(IEnumerable<StatusEvent> events, params StatusEvent[] want)
        {
            return events.Select(e => e.ToString()).SequenceEqual(want.Select(e => e.ToString()));
        }

        private static string Show<T>(IEnumerable<T> events)
        {
            return "[" + string.Join(", ", events.Select(e => e.ToString()).ToArray()) + "]";
        }

        private static void AssertDispatcher(Thread thread, Thread dispatcher, string what)
        {
            Assert(thread == dispatcher && thread.Name == DispatcherName && !thread.IsThreadPoolThread &&
                thread != Thread.CurrentThread, what + " runs on the client's dispatcher thread, not on '" +
                thread.Name + "' (" + thread.ManagedThreadId + ")");
        }

        private static List<Task> SendMany(DeviceClient client, string prefix, int count)
        {
            return Enumerable.Range(1, count).Select(i => client.SendEventAsync(
                new Message(Encoding.UTF8.GetBytes("{\"seq\":" + i + "}")) { MessageId = prefix + "-" + i })).ToList();
        }

        private static void CloudToDevice()
        {
            using (var f = new Fixture())
            {
                var received = new Recorder<Tuple<Message, object, Thread>>();
                var context = new object();
                Await(f.Client.SetReceiveMessageHandlerAsync((message, userContext) =>
                {
                    received.Add(Tuple.Create(message, userContext, Thread.CurrentThread));
                    return Task.FromResult(0);
                }, context), "SetReceiveMessageHandlerAsync");
                Thread dispatcher = f.Open();
                var properties = new Dictionary<string, string> { { "target", "fan" }, { "unit", "°C & more" } };
                f.Hub.SendC2D(Device, new Dictionary<string, string>
                {
                    { "payload", "switch on" }, { "messageId", "c2d-1" }, { "correlationId", "corr-9" },
                    { "contentType", "text/plain" }, { "contentEncoding", "utf-8" },
                }, properties);

                Tuple<Message, object, Thread> got = received.WaitCount("C2D message", 1)[0];
                Message m = got.Item1;
                Assert(Encoding.UTF8.GetString(m.GetBytes()) == "switch on", "the payload as sent");
                Assert(m.MessageId == "c2d-1" && m.CorrelationId == "corr-9", "ids as sent: " + m.MessageId + " " +
                    m.CorrelationId);
                Assert(m.ContentType == "text/plain" && m.ContentEncoding == "utf-8", "content type and encoding: " +
                    m.ContentType + " " + m.ContentEncoding);
                Assert(m.Properties.Count == properties.Count && properties.All(p => m.Properties.ContainsKey(p.Key) &&
                    m.Properties[p.Key] == p.Value), "the application properties as sent: " + Show(m.Properties));
                Assert(got.Item2 == context, "the handler gets the user context it was registered with");
                AssertDispatcher(got.Item3, dispatcher, "the receive message handler");
            }
        }

        private static void KilledTcp()
        {
            using (var f = new Fixture())
            {
                f.Open();
                List<Task> before = SendMany(f.Client, "before", 20);
                Await(Task.WhenAll(before), "the sends before the kill");
                // Nothing is in flight now, so no message can be both recorded and resent: exactly once holds.
                f.Hub.Fault("kill-tcp", Device, 0);
                List<Task> after = SendMany(f.Client, "after", 20);
                List<StatusEvent> events = f.Statuses.WaitFor("reconnect", e => e.Count >= 3 &&
                    e.Last().Status == ConnectionStatus.Connected);
                Assert(Same(events, Connected, new StatusEvent(ConnectionStatus.Disconnected_Retrying,
                    ConnectionStatusChangeReason.Communication_Error), Connected),
                    "Connected -> Disconnected_Retrying/Communication_Error -> Connected: " + Show(events));
                Await(Task.WhenAll(after), "the sends after the kill");

                var recorded = f.Hub.Messages(Device).GroupBy(m => (string)m["messageId"])
                    .ToDictionary(g => g.Key, g => g.Count());
                var sent = Enumerable.Range(1, 20).SelectMany(i => new[] { "before-" + i, "after-" + i }).ToList();
                Assert(recorded.Count == sent.Count && sent.All(id => recorded.ContainsKey(id) && recorded[id] == 1),
                    "the hub recorded each of the " + sent.Count + " ids once: " + Show(recorded));
            }
        }

        // The first retry after a lost link waits the policy's delay plus a draw in [0, spread]: it still comes.
        private static void ReconnectSpread()
        {
            foreach (TimeSpan spread in new[] { TimeSpan.Zero, TimeSpan.FromMilliseconds(500) })
            {
                using (var f = new Fixture(spread))
                {
                    f.Open();
                    f.Hub.Fault("kill-tcp", Device, 0);
                    List<StatusEvent> events = f.Statuses.WaitCount("reconnect", 3);
                    Assert(Same(events.Take(3), Connected, new StatusEvent(ConnectionStatus.Disconnected_Retrying,
                        ConnectionStatusChangeReason.Communication_Error), Connected),
                        "spread " + spread + ": Connected -> Disconnected_Retrying -> Connected: " + Show(events));
                }
            }
        }

        // Pipelined: the dispatcher completes sends while SendEventAsync registers later ones; none may be lost.
        private static void ManySends()
        {
            const int count = 2000;
            using (var f = new Fixture())
            {
                f.Open();
                List<Task> sends = SendMany(f.Client, "many", count);
                Await(Task.WhenAll(sends), "all " + count + " sends");
                var recorded = f.Hub.Messages(Device).Select(m => (string)m["messageId"]).ToList();
                Assert(recorded.SequenceEqual(Enumerable.Range(1, count).Select(i => "many-" + i)),
                    "the hub recorded the " + count + " messages once each, in order (" + recorded.Count + ")");
            }
        }

        private static void NoRetryHubDown()
        {
            using (var f = new Fixture())
            {
                f.Client.SetRetryPolicy(new NoRetry());
                f.Open();
                f.Hub.Fault("hub-down", null, 60);
                List<StatusEvent> events = f.Statuses.WaitFor("Disconnected",
                    e => e.Last().Status == ConnectionStatus.Disconnected);
                Assert(events.Last().Is(ConnectionStatus.Disconnected, ConnectionStatusChangeReason.Retry_Expired),
                    "the last status is Disconnected/Retry_Expired: " + Show(events));
                Assert(events.Skip(1).All(e => e.Status != ConnectionStatus.Connected), "no reconnect: " +
                    Show(events));

                // A client opened while the hub is down gives up at the first refusal too.
                using (DeviceClient late = f.NewClient())
                {
                    late.SetRetryPolicy(new NoRetry());
                    var e = Failure(late.OpenAsync(), "OpenAsync while the hub is down") as IotconnException;
                    Assert(e != null && e.Code == ErrorCode.RetryExpired, "OpenAsync fails with RetryExpired: " + e);
                }
            }
        }

        /// <summary>A policy written here: records each call and answers with the delay and the verdict it is
        /// given.</summary>
        private sealed class RecordingPolicy : IRetryPolicy
        {
            private readonly Func<int, bool> retry;
            private readonly Stopwatch clock = Stopwatch.StartNew();

            public RecordingPolicy(Func<int, bool> retry)
            {
                this.retry = retry;
            }

            public readonly Recorder<Call> Calls = new Recorder<Call>();

            public static TimeSpan Delay(int retryCount)
            {
                return TimeSpan.FromMilliseconds(100 * (retryCount + 1));
            }

            public bool ShouldRetry(int currentRetryCount, Exception lastException, out TimeSpan retryInterval)
            {
                Calls.Add(new Call
                {
                    RetryCount = currentRetryCount,
                    Error = lastException,
                    Thread = Thread.CurrentThread,
                    At = clock.Elapsed,
                });
                retryInterval = Delay(currentRetryCount);
                return retry(currentRetryCount);
            }
        }

        private sealed class Call
        {
            public int RetryCount;
            public Exception Error;
            public Thread Thread;
            public TimeSpan At;

            public override string ToString()
            {
                return RetryCount + "@" + Thread.Name;
            }
        }

        private static void AssertCalls(List<Call> calls, Thread dispatcher)
        {
            Assert(calls.Select(c => c.RetryCount).SequenceEqual(Enumerable.Range(0, calls.Count)),
                "currentRetryCount counts 0, 1, 2, ...: " + Show(calls));
            foreach (Call call in calls)
            {
                var error = call.Error as IotconnException;
                Assert(error != null && error.Code < 0, "lastException is the IotconnException of the failure: " +
                    call.Error);
                AssertDispatcher(call.Thread, dispatcher, "the retry policy");
            }
        }

        private static void CustomPolicyReconnects()
        {
            using (var f = new Fixture())
            {
                var policy = new RecordingPolicy(n => true);
                f.Client.SetRetryPolicy(policy);
                Thread dispatcher = f.Open();
                // The hub refuses connections for 2 s: the policy is asked again and again until one succeeds.
                f.Hub.Fault("hub-down", null, 2);
                List<StatusEvent> events = f.Statuses.WaitFor("reconnect", e => e.Count >= 3 &&
                    e.Last().Status == ConnectionStatus.Connected);
                Assert(events[1].Is(ConnectionStatus.Disconnected_Retrying,
                    ConnectionStatusChangeReason.Communication_Error), "the loss: " + Show(events));
                List<Call> calls = policy.Calls.Events;
                Assert(calls.Count >= 2, "the policy was asked at least twice: " + Show(calls));
                AssertCalls(calls, dispatcher);
                // Each delay the policy chose passed before it was asked again: the library honours its answer.
                for (int i = 1; i < calls.Count; i++)
                {
                    TimeSpan waited = calls[i].At - calls[i - 1].At;
                    Assert(waited >= RecordingPolicy.Delay(i - 1), "retry " + i + " came " + waited.TotalMilliseconds +
                        " ms after the previous answer, which asked for " + RecordingPolicy.Delay(i - 1));
                }
                Await(f.Client.SendEventAsync(new Message(Encoding.UTF8.GetBytes("back"))),
                    "a send after the reconnect");
            }
        }

        private static void CustomPolicyGivesUp()
        {
            using (var f = new Fixture())
            {
                var policy = new RecordingPolicy(n => n < 2);
                f.Client.SetRetryPolicy(policy);
                Thread dispatcher = f.Open();
                f.Hub.Fault("hub-down", null, 60);
                List<StatusEvent> events = f.Statuses.WaitFor("Disconnected",
                    e => e.Last().Status == ConnectionStatus.Disconnected);
                // The loss is a Communication_Error; refused reconnects may report No_Network while retrying.
                Assert(Same(events.Take(2), Connected, new StatusEvent(ConnectionStatus.Disconnected_Retrying,
                    ConnectionStatusChangeReason.Communication_Error)) &&
                    events.Skip(2).Take(events.Count - 3)
                        .All(e => e.Status == ConnectionStatus.Disconnected_Retrying) &&
                    events.Last().Is(ConnectionStatus.Disconnected, ConnectionStatusChangeReason.Retry_Expired),
                    "it retries, then gives up when the policy says so: " + Show(events));
                List<Call> calls = policy.Calls.Events;
                Assert(calls.Count == 3, "asked three times (yes, yes, no): " + Show(calls));
                AssertCalls(calls, dispatcher);
            }
        }

        private static void ThrowingHandler()
        {
            using (var f = new Fixture())
            {
                var seen = new Recorder<StatusEvent>();
                f.Client.SetConnectionStatusChangesHandler((s, r) =>
                {
                    seen.Add(new StatusEvent(s, r));
                    throw new InvalidOperationException("a bug in the handler");
                });
                Await(f.Client.OpenAsync(), "OpenAsync");
                // The send completes on the same dispatcher the handler threw on.
                Await(f.Client.SendEventAsync(new Message(new byte[] { 1 })), "a send after the handler threw");
                Await(f.Client.CloseAsync(), "CloseAsync");
                Assert(seen.Events.Last().Is(ConnectionStatus.Disabled, ConnectionStatusChangeReason.Client_Close),
                    "the handler still got every status: " + Show(seen.Events));
            }
        }

        private static void HandlerSendsAndCloses()
        {
            using (var f = new Fixture())
            {
                var sends = new Recorder<Task>();
                DeviceClient client = f.Client;
                client.SetConnectionStatusChangesHandler((s, r) =>
                {
                    f.Statuses.Add(new StatusEvent(s, r));
                    if (s == ConnectionStatus.Connected)
                    {
                        // Awaiting it here would block the thread that completes it: continue elsewhere instead.
                        sends.Add(client.SendEventAsync(new Message(Encoding.UTF8.GetBytes("from a handler")))
                            .ContinueWith(t =>
                            {
                                t.Wait();
                                client.SetReceiveMessageHandlerAsync((m, c) => client.CloseAsync(), null);
                            }));
                    }
                });
                f.Open();
                Await(sends.WaitCount("send from the handler", 1)[0], "the send from the handler");
                f.Hub.SendC2D(Device, new Dictionary<string, string> { { "payload", "close now" } }, null);
                List<StatusEvent> events = f.Statuses.WaitFor("Disabled",
                    e => e.Last().Status == ConnectionStatus.Disabled);
                Assert(events.Last().Is(ConnectionStatus.Disabled, ConnectionStatusChangeReason.Client_Close),
                    "CloseAsync from the receive handler closes the client: " + Show(events));
                Assert(Encoding.UTF8.GetString(Convert.FromBase64String((string)f.Hub.Messages(Device)[0]["payload"]))
                    == "from a handler", "the hub recorded the handler's message");
            }
        }

        private static void OpenWithToken()
        {
            using (var f = new Fixture())
            using (var cancellation = new CancellationTokenSource())
            {
                f.Open(cancellation.Token);
                // Once connected, the token is no longer watched.
                cancellation.Cancel();
                Await(f.Client.SendEventAsync(new Message(Encoding.UTF8.GetBytes("after open"))),
                    "a send after the token was cancelled");
                Assert(Same(f.Statuses.Events, Connected), "still connected: " + Show(f.Statuses.Events));
            }
        }

        /// <summary>A TCP listener on 127.0.0.1 that accepts connections and never answers: a TLS handshake with it
        /// never completes.</summary>
        private sealed class SilentListener : IDisposable
        {
            private readonly TcpListener listener = new TcpListener(IPAddress.Loopback, 0);
            private readonly Thread acceptor;

            public readonly Recorder<TcpClient> Accepted = new Recorder<TcpClient>();

            public SilentListener()
            {
                listener.Start();
                acceptor = new Thread(() =>
                {
                    try
                    {
                        while (true)
                        {
                            Accepted.Add(listener.AcceptTcpClient());
                        }
                    }
                    catch (Exception e) when (e is SocketException || e is InvalidOperationException)
                    {
                        // Dispose stopped the listener while this waited (SocketException) or before (not listening).
                    }
                }) { IsBackground = true };
                acceptor.Start();
            }

            public string ConnectionString
            {
                get
                {
                    return "HostName=127.0.0.1:" + ((IPEndPoint)listener.LocalEndpoint).Port +
                        ";DeviceId=d;SharedAccessKey=" + Convert.ToBase64String(new byte[32]);
                }
            }

            public void Dispose()
            {
                listener.Stop();
                acceptor.Join(Deadline);
                foreach (TcpClient connection in Accepted.Events)
                {
                    connection.Close();
                }
            }
        }

        private static void CancelOpen()
        {
            // The default OperationTimeout (4 minutes): only the cancellation can end these connects in time (and
            // Dispose, should the test fail: a connect in progress would keep the runner from exiting).
            using (var listener = new SilentListener())
            using (DeviceClient client = DeviceClient.CreateFromConnectionString(listener.ConnectionString))
            {
                var statuses = new Recorder<StatusEvent>();
                client.SetConnectionStatusChangesHandler((s, r) => statuses.Add(new StatusEvent(s, r)));
                for (int round = 1; round <= 2; round++)
                {
                    using (var cancellation = new CancellationTokenSource())
                    {
                        int accepted = listener.Accepted.Events.Count;
                        Task open = client.OpenAsync(cancellation.Token);
                        Task queued = client.SendEventAsync(new Message(new byte[] { 1 }));
                        // Blocked in the TLS handshake once the listener accepted the connect's TCP connection.
                        listener.Accepted.WaitCount("TCP connection of OpenAsync " + round, accepted + 1);
                        cancellation.Cancel();
                        var e = Failure(open, "cancelled OpenAsync " + round) as OperationCanceledException;
                        Assert(open.IsCanceled && e != null && e.CancellationToken == cancellation.Token,
                            "OpenAsync " + round + " ends canceled by its token: " + e);
                        var failed = Failure(queued, "a send queued while connecting") as IotconnException;
                        Assert(failed != null && failed.Code == ErrorCode.Canceled,
                            "the queued send fails with Canceled: " + failed);
                    }
                    List<StatusEvent> events = statuses.WaitCount("status change", 1);
                    Assert(events.Last().Is(ConnectionStatus.Disconnected, ConnectionStatusChangeReason.Retry_Expired),
                        "the client ends Disconnected/Retry_Expired: " + Show(events));
                }
                // Cancelled right after OpenAsync returned, before or while the pool thread enters the connect: a
                // stress of that window, where a single iotconn_connect_cancel can come too early.
                for (int round = 0; round < 300; round++)
                {
                    using (var cancellation = new CancellationTokenSource())
                    {
                        double delayMs = round % 20 * 0.02;
                        Task open = client.OpenAsync(cancellation.Token);
                        for (Stopwatch delay = Stopwatch.StartNew(); delay.Elapsed.TotalMilliseconds < delayMs;)
                        {
                        }
                        cancellation.Cancel();
                        Failure(open, "OpenAsync cancelled " + delayMs + " ms after it returned");
                        Assert(open.IsCanceled, "OpenAsync cancelled early ends canceled, not " + open.Status);
                    }
                }
                // CloseAsync completes after the last status ran: the one before it is the state the client was in.
                Await(client.CloseAsync(), "CloseAsync");
                List<StatusEvent> final = statuses.Events;
                Assert(final.Count >= 2 && final[final.Count - 2].Is(ConnectionStatus.Disconnected,
                    ConnectionStatusChangeReason.Retry_Expired) && final.Last().Is(ConnectionStatus.Disabled,
                    ConnectionStatusChangeReason.Client_Close), "Disconnected/Retry_Expired until CloseAsync closed "
                    + "it: " + Show(final));
            }
        }
    }
}
