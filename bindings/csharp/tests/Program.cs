using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Net;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using System.Threading.Tasks;

namespace Iotconn.Tests
{
    internal static class Program
    {
        private static readonly TimeSpan DeviceDeadline = TimeSpan.FromSeconds(90);

        [DllImport("iotconn")]
        private static extern IntPtr iotconn_status_str(int status);

        [DllImport("iotconn")]
        private static extern IntPtr iotconn_reason_str(int reason);

        private static string Root
        {
            get { return Environment.GetEnvironmentVariable("IOTCONN_ROOT") ?? "."; }
        }

        private static int Main(string[] args)
        {
            if (args.Length == 4 && args[0] == "--device")
            {
                return RunDevice(args[1], args[2], args[3]);
            }
            var tests = new List<KeyValuePair<string, Action>>
            {
                Test("EnumsMatchHeader", EnumsMatchHeader),
                Test("MalformedConnectionStringThrowsWithCodeAndMessage", MalformedConnectionStringThrows),
                Test("SendAfterDisposeThrows", SendAfterDisposeThrows),
                Test("DeviceSendsEventToHubsimAndItsProcessExits", DeviceSendsEventAndExits),
            };
            int passed = 0, failed = 0;
            foreach (var test in tests)
            {
                try
                {
                    test.Value();
                    passed++;
                    Console.WriteLine("PASS " + test.Key);
                }
                catch (Exception e)
                {
                    failed++;
                    Console.WriteLine("FAIL " + test.Key + ": " + e);
                }
            }
            Console.WriteLine(passed + " passed, " + failed + " failed");
            return failed == 0 ? 0 : 1;
        }

        private static KeyValuePair<string, Action> Test(string name, Action body)
        {
            return new KeyValuePair<string, Action>(name, body);
        }

        private static void Assert(bool condition, string what)
        {
            if (!condition)
            {
                throw new Exception("assertion failed: " + what);
            }
        }

        // ---- enum parity with include/iotconn.h ----

        private static void EnumsMatchHeader()
        {
            string header = File.ReadAllText(Path.Combine(Root, "include/iotconn.h"));
            CompareEnum(header, "STATUS", typeof(ConnectionStatus), iotconn_status_str);
            CompareEnum(header, "REASON", typeof(ConnectionStatusChangeReason), iotconn_reason_str);
        }

        private static void CompareEnum(string header, string prefix, Type type, Func<int, IntPtr> libraryName)
        {
            var fromHeader = new Dictionary<string, int>();
            foreach (Match m in Regex.Matches(header, @"\bIOTCONN_" + prefix + @"_([A-Z_]+)\s*=\s*(\d+)"))
            {
                fromHeader[m.Groups[1].Value] = int.Parse(m.Groups[2].Value);
            }
            Assert(fromHeader.Count > 0, "the header defines IOTCONN_" + prefix + "_* values");
            string[] names = Enum.GetNames(type);
            Assert(names.Length == fromHeader.Count, type.Name + " has " + names.Length + " members, the header " +
                fromHeader.Count);
            foreach (string name in names)
            {
                int value = (int)Enum.Parse(type, name);
                int expected;
                Assert(fromHeader.TryGetValue(name.ToUpperInvariant(), out expected),
                    type.Name + "." + name + " is in the header");
                Assert(value == expected, type.Name + "." + name + " = " + value + ", header says " + expected);
                // The header spells names in capitals; the library's *_str gives the exact .NET spelling.
                string spelled = Marshal.PtrToStringAnsi(libraryName(value));
                Assert(spelled == name, type.Name + "." + name + " is spelled '" + spelled + "' by the library");
            }
        }

        // ---- misuse ----

        private static void MalformedConnectionStringThrows()
        {
            try
            {
                DeviceClient.CreateFromConnectionString("HostName=;nonsense", TransportType.Mqtt).Dispose();
            }
            catch (IotconnException e)
            {
                Assert(e.Code == ErrorCode.InvalidArgument, "code is IOTCONN_EINVAL (-1), not " + e.Code);
                Assert(e.Message.Contains("(-1): "), "the message carries the library's explanation: " + e.Message);
                return;
            }
            throw new Exception("no IotconnException for a malformed connection string");
        }

        private static void SendAfterDisposeThrows()
        {
            var client = DeviceClient.CreateFromConnectionString(
                "HostName=127.0.0.1:1;DeviceId=d;SharedAccessKey=" + Convert.ToBase64String(new byte[32]),
                TransportType.Mqtt);
            client.Dispose();
            try
            {
                client.SendEventAsync(new Message(new byte[] { 1 }));
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            throw new Exception("SendEventAsync after Dispose did not throw ObjectDisposedException");
        }

        // ---- end to end against hubsim, the device in a child process that must exit by itself ----

        private static void DeviceSendsEventAndExits()
        {
            const string deviceId = "cs-dev1";
            string messageId = "cs-" + Guid.NewGuid().ToString("N");
            using (var hub = new Hubsim(Root, deviceId))
            {
                string mono = Process.GetCurrentProcess().MainModule.FileName;
                string self = Assembly.GetEntryAssembly().Location;
                var start = new ProcessStartInfo(mono, "--debug \"" + self + "\" --device \"" +
                    hub.ConnectionStrings[deviceId] + "\" \"" + hub.CaFile + "\" " + messageId)
                {
                    UseShellExecute = false,
                    RedirectStandardOutput = true,
                };
                string output;
                using (var child = Process.Start(start))
                {
                    Task<string> read = child.StandardOutput.ReadToEndAsync();
                    if (!child.WaitForExit((int)DeviceDeadline.TotalMilliseconds))
                    {
                        child.Kill();
                        child.WaitForExit(10000);
                        throw new Exception("the device process did not exit within " + DeviceDeadline +
                            " (hang at exit?)");
                    }
                    Assert(read.Wait(10000), "the device's output ends once it exits");
                    output = read.Result;
                    Assert(child.ExitCode == 0, "the device exits 0, not " + child.ExitCode + "; output:\n" + output);
                }
                string[] lines = output.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
                string[] statuses = lines.Where(l => l.StartsWith("status ")).ToArray();
                Assert(statuses.FirstOrDefault() == "status Connected Connection_Ok",
                    "the first status is Connected/Connection_Ok; output:\n" + output);
                Assert(statuses.LastOrDefault() == "status Disabled Client_Close",
                    "the last status is Disabled/Client_Close; output:\n" + output);
                Assert(lines.Contains("sent"), "SendEventAsync completed; output:\n" + output);

                string json;
                using (var web = new WebClient())
                {
                    json = web.DownloadString(hub.ControlUrl + "/devices/" + deviceId + "/messages");
                }
                var messages = (List<object>)Json.Parse(json);
                var ours = messages.Cast<Dictionary<string, object>>()
                    .Where(m => (m["messageId"] as string) == messageId).ToList();
                Assert(ours.Count == 1, "the hub recorded the message once: " + json);
                var recorded = ours[0];
                Assert(Encoding.UTF8.GetString(Convert.FromBase64String((string)recorded["payload"])) ==
                    "hello from C#", "payload: " + json);
                Assert((recorded["contentType"] as string) == "text/plain", "content type: " + json);
                var properties = (Dictionary<string, object>)recorded["properties"];
                Assert((properties["lang"] as string) == "csharp", "application property: " + json);
            }
        }

        /// <summary>The child: connect, send one message, close, and return from Main.</summary>
        private static int RunDevice(string connectionString, string caFile, string messageId)
        {
            var deadline = TimeSpan.FromSeconds(60);
            try
            {
                using (var client = DeviceClient.CreateFromConnectionString(connectionString, TransportType.Mqtt,
                    new ClientOptions { CaFile = caFile, OperationTimeout = TimeSpan.FromSeconds(30) }))
                {
                    client.SetConnectionStatusChangesHandler((status, reason) =>
                        Console.WriteLine("status " + status + " " + reason));
                    if (!client.OpenAsync().Wait(deadline))
                    {
                        throw new TimeoutException("OpenAsync");
                    }
                    var message = new Message(Encoding.UTF8.GetBytes("hello from C#"))
                    {
                        MessageId = messageId,
                        ContentType = "text/plain",
                    };
                    message.Properties["lang"] = "csharp";
                    if (!client.SendEventAsync(message).Wait(deadline))
                    {
                        throw new TimeoutException("SendEventAsync");
                    }
                    Console.WriteLine("sent");
                    if (!client.CloseAsync().Wait(deadline))
                    {
                        throw new TimeoutException("CloseAsync");
                    }
                }
                return 0;
            }
            catch (Exception e)
            {
                Console.WriteLine("device failed: " + e);
                return 1;
            }
        }
    }
}
