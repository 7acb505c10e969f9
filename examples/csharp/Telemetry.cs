// A small device app (the C# twin of examples/c/telemetry.c and examples/python/telemetry.py): connects with a
// device connection string, reports a property to its twin, sends a telemetry message every interval, and prints
// every connection status change, every send completion and every desired-properties update (with its $version);
// it answers every direct method call with status 200 and {"method":NAME}. At the end it waits for the outstanding
// completions, closes, and prints what it saw.
//
//     mono Telemetry.exe CONNECTION_STRING [CA_FILE] [COUNT] [INTERVAL_MS]
//
// CA_FILE is the PEM of the hub's CA (hubsim prints it); "-" or absent means the system roots.
using System;
using System.Collections.Generic;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using Iotconn;

internal static class Telemetry
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(120);

    private static int Main(string[] args)
    {
        if (args.Length < 1)
        {
            Console.Error.WriteLine("usage: Telemetry.exe CONNECTION_STRING [CA_FILE] [COUNT] [INTERVAL_MS]");
            return 2;
        }
        var options = new ClientOptions { CaFile = args.Length > 1 && args[1] != "-" ? args[1] : null };
        int count = args.Length > 2 ? int.Parse(args[2]) : 20;
        int intervalMs = args.Length > 3 ? int.Parse(args[3]) : 1000;

        int delivered = 0, failed = 0;
        var sends = new List<Task>();
        try
        {
            using (DeviceClient client = DeviceClient.CreateFromConnectionString(args[0], TransportType.Mqtt, options))
            {
                // Handlers run on the client's dispatcher thread, one at a time.
                client.SetConnectionStatusChangesHandler((status, reason) =>
                    Console.WriteLine("status: " + status + " / " + reason));
                client.SetReceiveMessageHandlerAsync((message, context) =>
                {
                    Console.WriteLine("c2d: " + Encoding.UTF8.GetString(message.GetBytes()));
                    return Task.FromResult(0);
                }, null).Wait();
                // Set before OpenAsync: the connection subscribes to desired patches and method calls. Desired
                // updates are the hub's patches, and after every reconnect what changed while offline.
                client.SetDesiredPropertyUpdateCallbackAsync((patch, context) =>
                {
                    Console.WriteLine("desired: version=" + patch.Version + " " + patch.ToJson());
                    return Task.FromResult(0);
                }, null).Wait();
                client.SetMethodDefaultHandlerAsync((request, context) =>
                {
                    Console.WriteLine("method: " + request.Name + " " + request.DataAsJson + " -> 200");
                    return Task.FromResult(new MethodResponse(
                        Encoding.UTF8.GetBytes("{\"method\":\"" + request.Name + "\"}"), 200));
                }, null).Wait();
                if (!client.OpenAsync().Wait(Deadline))
                {
                    throw new TimeoutException("OpenAsync did not complete within " + Deadline);
                }
                // Queued like a message, ahead of the telemetry; completes when the hub applied it.
                Task report = client.UpdateReportedPropertiesAsync(new TwinCollection(
                    "{\"example\":\"telemetry\",\"interval_ms\":" + intervalMs + "}"));

                for (int i = 1; i <= count; i++)
                {
                    string payload = "{\"seq\":" + i + ",\"temperature\":" + (20.0 + i % 50 / 10.0).ToString("0.0",
                        System.Globalization.CultureInfo.InvariantCulture) + "}";
                    var message = new Message(Encoding.UTF8.GetBytes(payload))
                    {
                        MessageId = "telemetry-" + i,
                        ContentType = "application/json",
                        ContentEncoding = "utf-8",
                    };
                    message.Properties["seq"] = i.ToString();
                    string id = message.MessageId;
                    try
                    {
                        // Completes when the hub acknowledged the message; continuations run off the dispatcher.
                        sends.Add(client.SendEventAsync(message).ContinueWith(send =>
                        {
                            if (send.IsFaulted)
                            {
                                Interlocked.Increment(ref failed);
                                Console.WriteLine("failed: " + id + " " + send.Exception.InnerException.Message);
                            }
                            else
                            {
                                Interlocked.Increment(ref delivered);
                                Console.WriteLine("delivered: " + id);
                            }
                        }));
                    }
                    catch (IotconnException e)
                    {
                        Console.Error.WriteLine("send " + i + ": " + e.Message);
                        continue;
                    }
                    Console.WriteLine("sent: " + id);
                    if (i < count)
                    {
                        Thread.Sleep(intervalMs);
                    }
                }

                // Every accepted message ends in exactly one completion; wait for them (bounded).
                Task.WaitAll(sends.ToArray(), Deadline);
                if (!report.Wait(Deadline))
                {
                    throw new TimeoutException("UpdateReportedPropertiesAsync did not complete within " + Deadline);
                }
                Console.WriteLine("reported: done");
                client.CloseAsync().Wait(Deadline);
            }
        }
        catch (Exception e)
        {
            Exception cause = e is AggregateException ? e.InnerException : e;
            Console.Error.WriteLine("telemetry: " + cause.Message);
            return 1;
        }
        Console.WriteLine("client: sent=" + sends.Count + " delivered=" + delivered + " failed=" + failed);
        return delivered == sends.Count ? 0 : 1;
    }
}
