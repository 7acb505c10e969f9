using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using static Iotconn.Tests.Support;

namespace Iotconn.Tests
{
    /// <summary>Admission: a connect budget that clients share, against a real iotconn-hubsim with one device per
    /// client.</summary>
    internal static class AdmissionTests
    {
        public static readonly TestCase[] All =
        {
            new TestCase("ClientsSharingABudgetConnectNoFasterThanItsRate", () => SharedBudget(false)),
            new TestCase("ClientsKeepTheirBudgetAfterItsDispose", () => SharedBudget(true)),
            new TestCase("AnInvalidRateOrBurstThrowsInvalidArgument", InvalidRateOrBurst),
            new TestCase("ADisposedBudgetRefusesNewClientsWithBadHandle", DisposedBudget),
        };

        // 4 clients on a budget of 20 connects per second with a burst of 1: the first connects at once, each other
        // one at least 50 ms after the one before, so all 4 take at least 150 ms (a lower bound, whatever the
        // machine's speed).
        private const double Rate = 20;
        private static readonly string[] Devices = Enumerable.Range(0, 4).Select(i => "cs-admitted-" + i).ToArray();
        private static readonly TimeSpan AtLeast = TimeSpan.FromSeconds((Devices.Length - 1) / Rate);

        private static DeviceClient NewClient(Hubsim hub, string device, Admission admission)
        {
            return DeviceClient.CreateFromConnectionString(hub.ConnectionStrings[device], TransportType.Mqtt,
                new ClientOptions { CaFile = hub.CaFile, OperationTimeout = Deadline, Admission = admission });
        }

        private static void SharedBudget(bool disposeFirst)
        {
            using (var hub = new Hubsim(Root, Devices))
            using (var budget = new Admission(Rate, 1))
            {
                var clients = new List<DeviceClient>();
                try
                {
                    foreach (string device in Devices)
                    {
                        clients.Add(NewClient(hub, device, budget));
                    }
                    if (disposeFirst)
                    {
                        budget.Dispose(); // releases the handle only: the clients keep the budget
                    }
                    Stopwatch watch = Stopwatch.StartNew();
                    foreach (DeviceClient client in clients)
                    {
                        Await(client.OpenAsync(), "OpenAsync");
                    }
                    Assert(watch.Elapsed >= AtLeast, Devices.Length + " clients on " + Rate + "/s connected within " +
                        watch.Elapsed + ", under " + AtLeast);
                    budget.Dispose();
                    foreach (DeviceClient client in clients)
                    {
                        Await(client.SendEventAsync(new Message(new byte[] { 1 })), "a send after the Dispose");
                    }
                }
                finally
                {
                    clients.ForEach(client => client.Dispose());
                }
            }
        }

        private static void InvalidRateOrBurst()
        {
            foreach (double rate in new[] { 0, -1, double.NaN, double.PositiveInfinity })
            {
                ThrowsCode("Admission(" + rate + ")", ErrorCode.InvalidArgument, "admission budget",
                    () => new Admission(rate).Dispose());
            }
            ThrowsCode("a burst of 0", ErrorCode.InvalidArgument, "admission budget",
                () => new Admission(Rate, 0).Dispose());
            ThrowsCode("a negative burst", ErrorCode.InvalidArgument, "burst", () => new Admission(Rate, -1).Dispose());
        }

        private static void DisposedBudget()
        {
            var budget = new Admission(Rate);
            budget.Dispose();
            budget.Dispose(); // a second Dispose does nothing
            using (var hub = new Hubsim(Root, Devices[0]))
            {
                ThrowsCode("a client with a disposed Admission", ErrorCode.BadHandle, "admission",
                    () => NewClient(hub, Devices[0], budget).Dispose());
            }
        }
    }
}
