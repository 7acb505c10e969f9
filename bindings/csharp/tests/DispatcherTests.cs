using System;
using System.Collections.Generic;
using System.Linq;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using static Iotconn.Tests.Support;

namespace Iotconn.Tests
{
    /// <summary>Dispatcher: many DeviceClients, one dispatcher thread, against a real iotconn-hubsim with one device
    /// per client.</summary>
    internal static class DispatcherTests
    {
        public static readonly TestCase[] All =
        {
            new TestCase("TwentyClientsShareOneDispatcherThread", TwentyClients),
            new TestCase("ACustomRetryPolicyOfASharedClientRunsOnTheDispatcherThread", CustomPolicy),
            new TestCase("DisposingADispatcherWithAnOpenClientIsRefused", Refusals),
            new TestCase("AClientClosedInItsHandlerIsFreedAfterItAndTheOthersGoOn", CloseInHandler),
            new TestCase("StopDestroysOnlyAfterEveryClosingMemberWasReleased", StopOrder),
        };

        private const int Fleet = 20;
        private const int Sends = 20;
        private static readonly string[] Devices = Enumerable.Range(0, Fleet).Select(i => "cs-fleet-" + i).ToArray();

        private static DeviceClient NewClient(Hubsim hub, string device, Dispatcher dispatcher)
        {
            return DeviceClient.CreateFromConnectionString(hub.ConnectionStrings[device], TransportType.Mqtt,
                new ClientOptions { CaFile = hub.CaFile, OperationTimeout = Deadline, Dispatcher = dispatcher });
        }

        private static bool IsClosed(StatusEvent e)
        {
            return e.Is(ConnectionStatus.Disabled, ConnectionStatusChangeReason.Client_Close);
        }

        private static void TwentyClients()
        {
            using (var hub = new Hubsim(Root, Devices))
            using (var dispatcher = new Dispatcher())
            {
                Assert(DispatchThread.Alive == 1, "the Dispatcher started one thread: " + DispatchThread.Alive);
                var statuses = Devices.ToDictionary(d => d, d => new Recorder<StatusEvent>());
                var received = new Recorder<Tuple<string, Thread>>();
                var clients = new Dictionary<string, DeviceClient>();
                try
                {
                    foreach (string device in Devices)
                    {
                        DeviceClient client = NewClient(hub, device, dispatcher);
                        clients[device] = client;
                        client.SetConnectionStatusChangesHandler((s, r) =>
                            statuses[device].Add(new StatusEvent(s, r)));
                        Await(client.SetReceiveMessageHandlerAsync((m, c) =>
                        {
                            received.Add(Tuple.Create(Encoding.UTF8.GetString(m.GetBytes()), Thread.CurrentThread));
                            return Task.FromResult(0);
                        }, null), "SetReceiveMessageHandlerAsync");
                    }
                    Await(Task.WhenAll(clients.Values.Select(c => c.OpenAsync())), "OpenAsync of the clients");
                    Assert(DispatchThread.Alive == 1, Fleet + " open clients, one dispatcher thread: " +
                        DispatchThread.Alive);
                    using (DeviceClient own = NewClient(hub, Devices[0], null))
                    {
                        Assert(DispatchThread.Alive == 2, "a client without a Dispatcher starts its own thread: " +
                            DispatchThread.Alive);
                    }
                    SendAndCheck(hub, clients, received);
                    foreach (string device in Devices)
                    {
                        clients[device].Dispose();
                        // Dispose returns after the client's last handler ran: Disabled/Client_Close.
                        List<StatusEvent> events = statuses[device].Events;
                        Assert(events.Count == 2 && events[0].Is(ConnectionStatus.Connected,
                            ConnectionStatusChangeReason.Connection_Ok) && IsClosed(events[1]),
                            device + ": Connected, then Disabled/Client_Close at Dispose: " +
                            string.Join(", ", events.Select(e => e.ToString()).ToArray()));
                    }
                }
                finally
                {
                    foreach (DeviceClient client in clients.Values)
                    {
                        client.Dispose();
                    }
                }
                Thread thread = statuses[Devices[0]].Events[0].Thread;
                var seen = statuses.Values.SelectMany(r => r.Events.Select(e => e.Thread))
                    .Concat(received.Events.Select(m => m.Item2)).Distinct().ToList();
                Assert(seen.Count == 1 && thread.Name == DispatchThread.Name && thread != Thread.CurrentThread,
                    "every handler of every client ran on the one dispatcher thread: " + seen.Count + " threads");
                dispatcher.Dispose();
                Assert(!thread.IsAlive && DispatchThread.Alive == 0, "Dispose stopped the dispatcher thread");
                dispatcher.Dispose(); // a second Dispose does nothing
            }
        }

        // Sends Sends messages from each client and a C2D message to each; checks the completions' order, the
        // hub's record and the C2D messages.
        private static void SendAndCheck(Hubsim hub, Dictionary<string, DeviceClient> clients,
            Recorder<Tuple<string, Thread>> received)
        {
            var outOfOrder = new Recorder<string>();
            var sends = new List<Task>();
            foreach (string device in Devices)
            {
                List<Task> own = Enumerable.Range(1, Sends).Select(k => clients[device].SendEventAsync(
                    new Message(Encoding.UTF8.GetBytes(device + " " + k)) { MessageId = device + "-" + k }))
                    .ToList();
                // The dispatcher thread completes a client's tasks one after the other: when one's continuation
                // runs, every task before it completed already, if the completions came in order.
                sends.AddRange(own.Select((task, k) => task.ContinueWith(t =>
                {
                    if (own.Take(k).Any(before => !before.IsCompleted))
                    {
                        outOfOrder.Add(device + "-" + (k + 1));
                    }
                    t.Wait();
                })));
                hub.SendC2D(device, new Dictionary<string, string> { { "payload", "to " + device } }, null);
            }
            Await(Task.WhenAll(sends), "all " + Fleet * Sends + " sends");
            Assert(outOfOrder.Events.Count == 0, "completions in order: " + string.Join(", ", outOfOrder.Events));
            List<Tuple<string, Thread>> messages = received.WaitCount("C2D message", Fleet);
            Assert(messages.Select(m => m.Item1).OrderBy(p => p, StringComparer.Ordinal).SequenceEqual(
                Devices.Select(d => "to " + d).OrderBy(p => p, StringComparer.Ordinal)),
                "each client received its C2D message once");
            foreach (string device in Devices)
            {
                var recorded = hub.Messages(device).Select(m => (string)m["messageId"]).ToList();
                Assert(recorded.SequenceEqual(Enumerable.Range(1, Sends).Select(k => device + "-" + k)),
                    device + ": the hub recorded each message once, in order: " + string.Join(", ", recorded));
            }
        }

        /// <summary>A policy that always retries after 50 ms and records the thread it was asked on.</summary>
        private sealed class ThreadRecordingPolicy : IRetryPolicy
        {
            public readonly Recorder<Thread> Calls = new Recorder<Thread>();

            public bool ShouldRetry(int currentRetryCount, Exception lastException, out TimeSpan retryInterval)
            {
                Calls.Add(Thread.CurrentThread);
                retryInterval = TimeSpan.FromMilliseconds(50);
                return true;
            }
        }

        private static void CustomPolicy()
        {
            using (var hub = new Hubsim(Root, Devices[0], Devices[1]))
            using (var dispatcher = new Dispatcher())
            using (DeviceClient withPolicy = NewClient(hub, Devices[0], dispatcher))
            using (DeviceClient other = NewClient(hub, Devices[1], dispatcher))
            {
                var statuses = new Recorder<StatusEvent>();
                var policy = new ThreadRecordingPolicy();
                withPolicy.SetRetryPolicy(policy);
                foreach (DeviceClient client in new[] { withPolicy, other })
                {
                    client.SetConnectionStatusChangesHandler((s, r) => statuses.Add(new StatusEvent(s, r)));
                    Await(client.OpenAsync(), "OpenAsync");
                }
                // The hub refuses connections for 1 s: the policy is asked until a reconnect succeeds.
                hub.Fault("hub-down", null, 1);
                List<StatusEvent> events = statuses.WaitFor("both reconnected", e => e.Count(s =>
                    s.Is(ConnectionStatus.Connected, ConnectionStatusChangeReason.Connection_Ok)) == 4);
                List<Thread> calls = policy.Calls.Events;
                Thread thread = events[0].Thread;
                Assert(calls.Count >= 1 && calls.All(t => t == thread) && thread.Name == DispatchThread.Name,
                    "the policy was asked " + calls.Count + " times, on the dispatcher thread of both clients");
                Assert(events.All(e => e.Thread == thread), "both clients' statuses on that thread");
                Await(other.SendEventAsync(new Message(new byte[] { 1 })), "a send after the outage");
            }
        }

        private static void Refusals()
        {
            using (var hub = new Hubsim(Root, Devices[0], Devices[1]))
            using (var dispatcher = new Dispatcher())
            using (DeviceClient client = NewClient(hub, Devices[0], dispatcher))
            {
                var refusedInHandler = new Recorder<ErrorCode>();
                client.SetConnectionStatusChangesHandler((s, r) =>
                {
                    if (s == ConnectionStatus.Connected)
                    {
                        refusedInHandler.Add(Throws("Dispose inside a handler", dispatcher.Dispose).Code);
                    }
                });
                Await(client.OpenAsync(), "OpenAsync");
                Assert(refusedInHandler.WaitCount("refusal", 1)[0] == ErrorCode.InvalidState,
                    "Dispose inside a handler: InvalidState");
                ThrowsCode("Dispose with an open client", ErrorCode.InvalidState, "not closed", dispatcher.Dispose);
                // The refusal changed nothing: the thread still dispatches.
                Await(client.SendEventAsync(new Message(new byte[] { 1 })), "a send after the refusal");

                client.Dispose();
                dispatcher.Dispose();
                ThrowsCode("a client given a disposed Dispatcher", ErrorCode.BadHandle, "dispatcher",
                    () => NewClient(hub, Devices[1], dispatcher));
            }
        }

        private static void CloseInHandler()
        {
            using (var hub = new Hubsim(Root, Devices[0], Devices[1]))
            using (var dispatcher = new Dispatcher())
            using (DeviceClient quitter = NewClient(hub, Devices[0], dispatcher))
            using (DeviceClient other = NewClient(hub, Devices[1], dispatcher))
            {
                var order = new Recorder<string>();
                quitter.SetConnectionStatusChangesHandler((s, r) => order.Add(s + "/" + r));
                Await(quitter.SetReceiveMessageHandlerAsync((m, c) =>
                {
                    Task closed = quitter.CloseAsync();
                    order.Add("CloseAsync returned " + closed.Status);
                    return closed;
                }, null), "SetReceiveMessageHandlerAsync");
                Await(quitter.OpenAsync(), "OpenAsync");
                Await(other.OpenAsync(), "OpenAsync");
                hub.SendC2D(Devices[0], new Dictionary<string, string> { { "payload", "close now" } }, null);
                List<string> events = order.WaitCount("event", 3);
                Assert(events.SequenceEqual(new[] { "Connected/Connection_Ok", "CloseAsync returned RanToCompletion",
                    "Disabled/Client_Close" }), "the last status runs after the handler that closed: " +
                    string.Join(", ", events));
                quitter.Dispose(); // waits until the dispatcher thread freed it
                Await(other.SendEventAsync(new Message(new byte[] { 1 })), "the other client's send");
            }
        }

        /// <summary>A member that records its release.</summary>
        private sealed class Member : IDispatched
        {
            private readonly Recorder<string> order;

            public Member(Recorder<string> order)
            {
                this.order = order;
            }

            public void Release()
            {
                order.Add("released");
            }
        }

        // The order Dispatcher.Dispose relies on, with a poll that runs jobs the test hands it (a job stands for a
        // callback): a member that is closing keeps the native dispatcher alive until its final event ran and it
        // was released, so that event is never lost to the destroy.
        private static void StopOrder()
        {
            var jobs = new System.Collections.Concurrent.BlockingCollection<Action>();
            var thread = new DispatchThread(ms =>
            {
                Action job;
                if (!jobs.TryTake(out job, (int)ms))
                {
                    return 0;
                }
                job();
                return 1;
            }, false);
            var order = new Recorder<string>();
            var member = new Member(order);
            thread.Attach(member);
            thread.Start();
            thread.Closing(member); // what Dispose does before iotconn_close
            var stopping = new ManualResetEventSlim();
            jobs.Add(() =>
            {
                stopping.Wait(Deadline);
                order.Add("final event");
                thread.Finish(member); // what Disabled/Client_Close does
            });
            Task stop = Task.Run(() =>
            {
                stopping.Set();
                order.Add("stopped " + thread.Stop(() =>
                {
                    order.Add("destroyed");
                    return 0;
                }));
            });
            Await(stop, "Stop");
            Assert(order.Events.SequenceEqual(new[] { "final event", "released", "destroyed", "stopped 0" }),
                "the destroy waits for the closing member: " + string.Join(", ", order.Events));
        }
    }
}
