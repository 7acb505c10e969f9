// Cost of one DeviceClient.SendEventAsync call from C# (P/Invoke into libiotconn), against hubsim.
//
// Per round: N sends pipelined on one connected client (QoS 1, 256-byte payload), then a wait for the N tasks.
// send_ns is the wall time of the send loop / N: the managed cost of a call while the engine runs (message
// conversion, P/Invoke, iotconn_send, the task's bookkeeping). msgs_per_s is N / (send loop + wait for every
// delivery). The first round is warm-up; figures are medians of the rest. pinvoke_call_ns is the floor of any
// P/Invoke call (iotconn_strerror) on this machine. The same cases and format as bench/python_send.py.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Runtime.InteropServices;
using System.Threading.Tasks;
using Iotconn;
using Iotconn.Tests;

internal static class SendBench
{
    private const string Device = "bench";

    [DllImport("iotconn")]
    private static extern IntPtr iotconn_strerror(int code);

    private sealed class Figures
    {
        public double SendNs;
        public double MessagesPerSecond;
        public string Rounds;
    }

    private static int Main(string[] args)
    {
        string root = args[0];
        string output = args[1];
        int n = int.Parse(args[2]);
        int rounds = int.Parse(args[3]);
        var payload = new byte[256];
        var results = new List<KeyValuePair<string, Figures>>();
        using (var hub = new Hubsim(root, Device))
        using (DeviceClient client = DeviceClient.CreateFromConnectionString(hub.ConnectionStrings[Device],
            TransportType.Mqtt, new ClientOptions { CaFile = hub.CaFile, QueueMaxMessages = 2 * n }))
        {
            if (!client.OpenAsync().Wait(TimeSpan.FromSeconds(60)))
            {
                throw new TimeoutException("OpenAsync");
            }
            results.Add(new KeyValuePair<string, Figures>("bytes_256",
                Run(client, n, rounds, i => new Message(payload))));
            results.Add(new KeyValuePair<string, Figures>("message_with_properties", Run(client, n, rounds, i =>
            {
                var message = new Message(payload)
                {
                    MessageId = "bench-" + i,
                    ContentType = "application/octet-stream",
                };
                message.Properties["seq"] = i.ToString(CultureInfo.InvariantCulture);
                message.Properties["source"] = "bench";
                return message;
            })));
            client.CloseAsync().Wait(TimeSpan.FromSeconds(60));
        }
        double floor = PInvokeFloorNs();

        var lines = new List<string>
        {
            "# iotconn C# binding: cost of one DeviceClient.SendEventAsync call (P/Invoke -> iotconn_send)",
            "# " + DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ") + ", " + Environment.ProcessorCount +
                " CPUs, Mono " + MonoVersion(),
            "# hubsim, QoS 1, 256-byte payload, one TLS connection, pipelined: send " + n + " then wait for " + n +
                " completions;",
            "# " + rounds + " rounds per case, the first is warm-up; figures are medians of the rest.",
            "# send_ns: wall time of the send loop / N. msgs_per_s: N / (send loop + wait for every delivery).",
        };
        foreach (var result in results)
        {
            lines.Add("");
            lines.Add("[" + result.Key + "]");
            lines.Add("send_ns=" + result.Value.SendNs.ToString("0", CultureInfo.InvariantCulture));
            lines.Add("msgs_per_s=" + result.Value.MessagesPerSecond.ToString("0", CultureInfo.InvariantCulture));
            lines.Add("rounds_send_ns: " + result.Value.Rounds);
        }
        lines.Add("");
        lines.Add("[pinvoke]");
        lines.Add("pinvoke_call_ns=" + floor.ToString("0", CultureInfo.InvariantCulture) +
            "  # iotconn_strerror: the floor of any P/Invoke call");
        File.WriteAllText(output + ".tmp", string.Join("\n", lines.ToArray()) + "\n");
        File.Copy(output + ".tmp", output, true);
        File.Delete(output + ".tmp");
        Console.Write(File.ReadAllText(output));
        return 0;
    }

    private static Figures Run(DeviceClient client, int n, int rounds, Func<int, Message> make)
    {
        var sendNs = new List<double>();
        var rates = new List<double>();
        for (int round = 0; round < rounds; round++)
        {
            Message[] messages = Enumerable.Range(0, n).Select(make).ToArray();
            var sends = new Task[n];
            GC.Collect();
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < n; i++)
            {
                sends[i] = client.SendEventAsync(messages[i]);
            }
            TimeSpan sent = clock.Elapsed;
            if (!Task.WaitAll(sends, TimeSpan.FromMinutes(5)))
            {
                throw new TimeoutException("not every send completed within 5 minutes");
            }
            TimeSpan done = clock.Elapsed;
            sendNs.Add(sent.TotalMilliseconds * 1e6 / n);
            rates.Add(n / done.TotalSeconds);
        }
        return new Figures
        {
            SendNs = Median(sendNs.Skip(1)),
            MessagesPerSecond = Median(rates.Skip(1)),
            Rounds = string.Join(" ", sendNs.Select(v => v.ToString("0", CultureInfo.InvariantCulture)).ToArray()),
        };
    }

    private static double PInvokeFloorNs()
    {
        const int calls = 200000;
        var samples = new List<double>();
        for (int sample = 0; sample < 5; sample++)
        {
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < calls; i++)
            {
                iotconn_strerror(-1);
            }
            samples.Add(clock.Elapsed.TotalMilliseconds * 1e6 / calls);
        }
        return Median(samples);
    }

    private static double Median(IEnumerable<double> values)
    {
        double[] sorted = values.OrderBy(v => v).ToArray();
        int mid = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }

    private static string MonoVersion()
    {
        Type mono = Type.GetType("Mono.Runtime");
        var display = mono?.GetMethod("GetDisplayName", System.Reflection.BindingFlags.NonPublic |
            System.Reflection.BindingFlags.Static);
        return display != null ? ((string)display.Invoke(null, null)).Split(' ')[0] : Environment.Version.ToString();
    }
}
