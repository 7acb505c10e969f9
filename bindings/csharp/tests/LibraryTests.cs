using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using System.Threading.Tasks;
using static Iotconn.Tests.Support;

namespace Iotconn.Tests
{
    /// <summary>The binding against include/iotconn.h and the loaded library, and whole processes: enum parity, the
    /// version check, and a device process that exits by itself after its callbacks ran.</summary>
    internal static class LibraryTests
    {
        public static readonly TestCase[] All =
        {
            new TestCase("EnumsMatchHeader", EnumsMatchHeader),
            new TestCase("ExponentialBackoffComputesTheHeadersFormulas", ExponentialBackoffFormulas),
            new TestCase("ErrorCodesMatchHeader", ErrorCodesMatchHeader),
            new TestCase("NativeLayoutsMatchHeader", NativeLayoutsMatchHeader),
            new TestCase("LibraryAndBindingVersionsMatchHeader", VersionsMatchHeader),
            new TestCase("AnIncompatibleLibraryIsRefused", IncompatibleLibraryIsRefused),
            new TestCase("DeviceSendsEventToHubsimAndItsProcessExits", DeviceSendsEventAndExits),
        };

        [DllImport("iotconn")]
        private static extern IntPtr iotconn_status_str(int status);

        [DllImport("iotconn")]
        private static extern IntPtr iotconn_reason_str(int reason);

        private static string Header()
        {
            return File.ReadAllText(Path.Combine(Root, "include/iotconn.h"));
        }

        // ---- enum parity ----

        private static void EnumsMatchHeader()
        {
            string header = Header();
            CompareEnum(header, "STATUS", typeof(ConnectionStatus), iotconn_status_str);
            CompareEnum(header, "REASON", typeof(ConnectionStatusChangeReason), iotconn_reason_str);
            CompareEnum(header, "JITTER", typeof(Jitter), null);
        }

        // The members of an enum ("IOTCONN_X_NAME = n") or of a #define family ("#define IOTCONN_X_NAME n") against
        // the binding's enum; libraryName, when the library has one, must spell each as the binding does.
        private static void CompareEnum(string header, string prefix, Type type, Func<int, IntPtr> libraryName)
        {
            var fromHeader = new Dictionary<string, int>();
            foreach (Match m in Regex.Matches(header, @"\bIOTCONN_" + prefix + @"_([A-Z_]+)(?:\s*=\s*|\s+)(\d+)"))
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
                if (libraryName != null)
                {
                    // The header spells names in capitals; the library's *_str gives the exact .NET spelling.
                    string spelled = Marshal.PtrToStringAnsi(libraryName(value));
                    Assert(spelled == name, type.Name + "." + name + " is spelled '" + spelled + "' by the library");
                }
            }
        }

        // ShouldRetry's managed schedule, for policies that wrap ExponentialBackoff, draws as the library does:
        // bounds for every draw, and no retry count at which a floor or the cap made the delay a constant. The
        // draws are unseeded; TimeSpan keeps whole milliseconds, so a range of at least 80 ms gives 2000 draws
        // fewer than 10 distinct values with a probability below 10^-100.
        private static void ExponentialBackoffFormulas()
        {
            TimeSpan ms100 = TimeSpan.FromMilliseconds(100), s10 = TimeSpan.FromSeconds(10);
            foreach (Jitter jitter in Enum.GetValues(typeof(Jitter)))
            {
                var policy = new ExponentialBackoff(int.MaxValue, ms100, s10, ms100, jitter);
                Assert(policy.Jitter == jitter, "the policy keeps its jitter");
                double previous = 100;
                for (int n = 0; n < 40; n++)
                {
                    var seen = new HashSet<double>();
                    for (int i = 0; i < 2000; i++)
                    {
                        TimeSpan interval;
                        Assert(policy.ShouldRetry(n, null, out interval), "retry " + n + " is allowed");
                        double ms = interval.TotalMilliseconds, lo = 100, hi = 10000;
                        if (jitter == Jitter.Decorrelated)
                        {
                            // Draws follow each other here: each from the one before, which retry 0 resets.
                            hi = Math.Min(3 * (n == 0 ? 100 : previous), 10000);
                            previous = ms;
                        }
                        else if (n == 0)
                        {
                            hi = 180;
                        }
                        else if (jitter == Jitter.Default)
                        {
                            lo = Math.Max(100, Math.Min(100 + (Math.Pow(2, n) - 1) * 80, 8000) / 2);
                            hi = Math.Min(100 + (Math.Pow(2, n) - 1) * 120, 10000);
                        }
                        else
                        {
                            hi = Math.Min(100 + (Math.Pow(2, n) - 1) * 100, 10000);
                        }
                        Assert(ms >= lo - 1 && ms <= hi + 1, jitter + " retry " + n + ": " + ms + " ms outside [" + lo +
                            ", " + hi + "]");
                        seen.Add(ms);
                    }
                    Assert(seen.Count >= 10, jitter + " retry " + n + ": only " + seen.Count + " distinct delays");
                }
            }
            TimeSpan ignored;
            Assert(!new ExponentialBackoff(2, ms100, s10, ms100).ShouldRetry(2, null, out ignored),
                "retryCount 2 allows retries 0 and 1 only");
        }

        private static void ErrorCodesMatchHeader()
        {
            var fromHeader = Regex.Matches(Header(), @"#define IOTCONN_(E[A-Z]+|OK)\s+\(?(-?\d+)\)?").Cast<Match>()
                .ToDictionary(m => m.Groups[1].Value, m => int.Parse(m.Groups[2].Value));
            var values = Enum.GetValues(typeof(ErrorCode)).Cast<ErrorCode>().Select(c => (int)c).ToList();
            Assert(fromHeader.Count >= 15, "the header defines IOTCONN_OK and the IOTCONN_E* codes");
            Assert(values.Count == fromHeader.Count && fromHeader.Values.All(values.Contains),
                "ErrorCode has one member per header code: header " + string.Join(" ", fromHeader.Select(p =>
                p.Key + "=" + p.Value).ToArray()) + "; ErrorCode " + string.Join(" ", values.Select(v =>
                v.ToString()).ToArray()));
        }

        // The P/Invoke structs against the C compiler's sizeof and offsetof of the header's structs.
        private static void NativeLayoutsMatchHeader()
        {
            var fields = new[]
            {
                Tuple.Create("iotconn_options_t", typeof(NativeMethods.Options), new[]
                {
                    "size Size", "transport Transport", "ca_file CaFile", "ca_pem CaPem", "cert_file CertFile",
                    "key_file KeyFile", "keepalive_s KeepaliveS", "sas_lifetime_s SasLifetimeS",
                    "sas_renew_margin_s SasRenewMarginS", "queue_max_messages QueueMaxMessages",
                    "queue_max_bytes QueueMaxBytes", "operation_timeout_ms OperationTimeoutMs", "dispatch Dispatch",
                    "queue_overflow QueueOverflow", "queue_dir QueueDir", "backoff_reset_after_ms BackoffResetAfterMs",
                    "dispatcher Dispatcher", "reconnect_spread_ms ReconnectSpreadMs",
                    "admission Admission", "amqp_pool AmqpPool",
                }),
                Tuple.Create("iotconn_message_t", typeof(NativeMethods.CMessage), new[]
                {
                    "size Size", "payload Payload", "payload_len PayloadLen", "message_id MessageId",
                    "correlation_id CorrelationId", "content_type ContentType", "content_encoding ContentEncoding",
                    "properties Properties", "property_count PropertyCount", "ttl_ms TtlMs",
                }),
                Tuple.Create("iotconn_property_t", typeof(NativeMethods.Property), new[] { "key Key", "value Value" }),
                Tuple.Create("iotconn_retry_policy_t", typeof(NativeMethods.RetryPolicy), new[]
                {
                    "size Size", "kind Kind", "retry_count RetryCount", "min_backoff_ms MinBackoffMs",
                    "max_backoff_ms MaxBackoffMs", "delta_backoff_ms DeltaBackoffMs", "jitter Jitter",
                    "custom Custom", "user User",
                }),
            };
            var program = new StringBuilder("#include <stddef.h>\n#include <stdio.h>\n#include <iotconn.h>\n" +
                "int main(void) {\n");
            var expected = new List<string>();
            foreach (var type in fields)
            {
                program.Append("printf(\"" + type.Item1 + " %zu\\n\", sizeof(" + type.Item1 + "));\n");
                expected.Add(type.Item1 + " " + Marshal.SizeOf(type.Item2));
                foreach (string pair in type.Item3)
                {
                    string[] names = pair.Split(' ');
                    program.Append("printf(\"" + type.Item1 + "." + names[0] + " %zu\\n\", offsetof(" + type.Item1 +
                        ", " + names[0] + "));\n");
                    expected.Add(type.Item1 + "." + names[0] + " " + Marshal.OffsetOf(type.Item2, names[1]));
                }
            }
            program.Append("return 0;\n}\n");
            string dir = Path.Combine(Path.GetTempPath(), "iotconn-cs-layout-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(dir);
            try
            {
                File.WriteAllText(Path.Combine(dir, "layout.c"), program.ToString());
                Run("cc", "-std=c11 -Wall -Werror -I\"" + Path.Combine(Root, "include") + "\" -o \"" +
                    Path.Combine(dir, "layout") + "\" \"" + Path.Combine(dir, "layout.c") + "\"", null, 0);
                string[] actual = Run(Path.Combine(dir, "layout"), "", null, 0).Split(new[] { '\n' },
                    StringSplitOptions.RemoveEmptyEntries);
                var differences = expected.Zip(actual, (want, got) => want == got ? null : "C# " + want + ", C " + got)
                    .Where(d => d != null).ToList();
                Assert(actual.Length == expected.Count && differences.Count == 0,
                    "the P/Invoke layouts are the header's: " + string.Join("; ", differences.ToArray()));
            }
            finally
            {
                Directory.Delete(dir, true);
            }
        }

        // ---- versions ----

        private static string HeaderDefine(string header, string name)
        {
            Match m = Regex.Match(header, @"#define IOTCONN_VERSION_" + name + @"\s+(\S+)");
            Assert(m.Success, "the header defines IOTCONN_VERSION_" + name);
            return m.Groups[1].Value.Trim('"');
        }

        private static void VersionsMatchHeader()
        {
            string header = Header();
            string version = HeaderDefine(header, "STRING");
            Assert(DeviceClient.LibraryVersion == version, "the loaded library is " + DeviceClient.LibraryVersion +
                ", the header " + version);
            Assert(NativeMethods.HeaderVersion == version, "the binding was written against " +
                NativeMethods.HeaderVersion + ", the header is " + version);
            Assert(NativeMethods.HeaderMajor.ToString() == HeaderDefine(header, "MAJOR") &&
                NativeMethods.HeaderMinor.ToString() == HeaderDefine(header, "MINOR"),
                "the binding's major and minor versions are the header's");
            // No dotnet here to evaluate Iotconn.csproj: run the Regex.Replace calls its <Version> and
            // <PackageReleaseNotes> make on the header and the changelog, with the patterns written there.
            string project = File.ReadAllText(Path.Combine(Root, "bindings/csharp/Iotconn.csproj"));
            string packageVersion = CsprojReplace(project, "Version", header, version);
            Assert(packageVersion == version, "Iotconn.csproj's <Version> is the header's: " + packageVersion);
            string notes = CsprojReplace(project, "PackageReleaseNotes",
                File.ReadAllText(Path.Combine(Root, "CHANGELOG.md")), version).Trim();
            Assert(notes.Length > 0 && !notes.Contains("## ["), "the release notes are this version's section of " +
                "CHANGELOG.md: " + notes.Substring(0, Math.Min(notes.Length, 200)));
        }

        // The result of the Regex.Replace(text, 'PATTERN', 'REPLACEMENT') in the csproj property, $(Version) expanded.
        private static string CsprojReplace(string project, string property, string text, string version)
        {
            Match m = Regex.Match(project, "<" + property + @">.*?Regex\]::Replace\(.*?, '(.*?)', '(.*?)'\)");
            Assert(m.Success, "Iotconn.csproj's <" + property + "> is a Regex.Replace");
            string pattern = m.Groups[1].Value.Replace("$(Version)", version);
            return Regex.Replace(text, pattern, m.Groups[2].Value);
        }

        // A library of another major version, in a child process (a process keeps the first library it loads).
        private static void IncompatibleLibraryIsRefused()
        {
            string dir = Path.Combine(Path.GetTempPath(), "iotconn-cs-fake-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(dir);
            try
            {
                string source = Path.Combine(dir, "fake.c");
                File.WriteAllText(source, "const char *iotconn_version(int *a, int *b, int *c)\n" +
                    "{ *a = 2; *b = 0; *c = 0; return \"2.0.0\"; }\n");
                Run("cc", "-shared -fPIC -o \"" + Path.Combine(dir, "libiotconn.so") + "\" \"" +
                    source + "\"", null, 0);
                string output = Run(Mono(), "--debug \"" + Self() + "\" --probe-version", dir, 0).Trim();
                Assert(output == "DllNotFoundException: libiotconn 2.0.0 is loaded; Iotconn.dll needs " +
                    NativeMethods.HeaderMajor + ".x, x >= " + NativeMethods.HeaderMinor + " (written against " +
                    NativeMethods.HeaderVersion + ")", "the child says why: " + output);
            }
            finally
            {
                Directory.Delete(dir, true);
            }
        }

        // ---- a whole device process ----

        private static void DeviceSendsEventAndExits()
        {
            const string deviceId = "cs-dev1";
            string messageId = "cs-" + Guid.NewGuid().ToString("N");
            using (var hub = new Hubsim(Root, deviceId))
            {
                // Run bounds the wait: a process that hangs at exit fails the test.
                string output = Run(Mono(), "--debug \"" + Self() + "\" --device \"" +
                    hub.ConnectionStrings[deviceId] + "\" \"" + hub.CaFile + "\" " + messageId, null, 0);
                string[] lines = output.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
                string[] statuses = lines.Where(l => l.StartsWith("status ")).ToArray();
                Assert(statuses.FirstOrDefault() == "status Connected Connection_Ok",
                    "the first status is Connected/Connection_Ok; output:\n" + output);
                Assert(statuses.LastOrDefault() == "status Disabled Client_Close",
                    "the last status is Disabled/Client_Close; output:\n" + output);
                Assert(lines.Contains("sent"), "SendEventAsync completed; output:\n" + output);

                var ours = hub.Messages(deviceId).Where(m => (m["messageId"] as string) == messageId).ToList();
                Assert(ours.Count == 1, "the hub recorded the message once, not " + ours.Count + " times");
                var recorded = ours[0];
                Assert(Encoding.UTF8.GetString(Convert.FromBase64String((string)recorded["payload"])) ==
                    "hello from C#", "payload as sent");
                Assert((recorded["contentType"] as string) == "text/plain", "content type as sent");
                var properties = (Dictionary<string, object>)recorded["properties"];
                Assert((properties["lang"] as string) == "csharp", "application property as sent");
            }
        }

        // ---- child processes ----

        public static string Mono()
        {
            return Process.GetCurrentProcess().MainModule.FileName;
        }

        private static string Self()
        {
            return Assembly.GetEntryAssembly().Location;
        }

        /// <summary>Runs a program to its end (bounded by the deadline) and returns its standard output; fails
        /// unless it exits with wantExit. libraryPath, when not null, replaces LD_LIBRARY_PATH.</summary>
        public static string Run(string program, string arguments, string libraryPath, int wantExit,
            IDictionary<string, string> environment = null)
        {
            var start = new ProcessStartInfo(program, arguments)
            {
                UseShellExecute = false,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            if (libraryPath != null)
            {
                start.EnvironmentVariables["LD_LIBRARY_PATH"] = libraryPath;
            }
            if (environment != null)
            {
                foreach (var pair in environment)
                {
                    start.EnvironmentVariables[pair.Key] = pair.Value;
                }
            }
            using (var child = Process.Start(start))
            {
                Task<string> stdout = child.StandardOutput.ReadToEndAsync();
                Task<string> stderr = child.StandardError.ReadToEndAsync();
                if (!child.WaitForExit((int)Deadline.TotalMilliseconds * 2))
                {
                    child.Kill();
                    child.WaitForExit(10000);
                    throw new TimeoutException(program + " " + arguments + " did not exit within " + Deadline.Add(
                        Deadline) + " (hang at exit?)");
                }
                Assert(Task.WaitAll(new Task[] { stdout, stderr }, 10000), "the child's output ends once it exits");
                Assert(child.ExitCode == wantExit, program + " " + arguments + " exited " + child.ExitCode +
                    ", want " + wantExit + "; stdout:\n" + stdout.Result + "\nstderr:\n" + stderr.Result);
                return stdout.Result;
            }
        }

        /// <summary>The child modes of the test executable; null when args ask for the tests.</summary>
        public static int? RunChild(string[] args)
        {
            if (args.Length == 4 && args[0] == "--device")
            {
                return RunDevice(args[1], args[2], args[3]);
            }
            if (args.Length == 1 && args[0] == "--probe-version")
            {
                try
                {
                    DeviceClient.CreateFromConnectionString("HostName=h;DeviceId=d;SharedAccessKey=a2V5").Dispose();
                    Console.WriteLine("loaded");
                }
                catch (DllNotFoundException e)
                {
                    Console.WriteLine("DllNotFoundException: " + e.Message);
                }
                return 0;
            }
            return null;
        }

        /// <summary>The child: connect, send one message, close, and return from Main.</summary>
        private static int RunDevice(string connectionString, string caFile, string messageId)
        {
            try
            {
                using (var client = DeviceClient.CreateFromConnectionString(connectionString, TransportType.Mqtt,
                    new ClientOptions { CaFile = caFile, OperationTimeout = Deadline }))
                {
                    client.SetConnectionStatusChangesHandler((status, reason) =>
                        Console.WriteLine("status " + status + " " + reason));
                    Await(client.OpenAsync(), "OpenAsync");
                    var message = new Message(Encoding.UTF8.GetBytes("hello from C#"))
                    {
                        MessageId = messageId,
                        ContentType = "text/plain",
                    };
                    message.Properties["lang"] = "csharp";
                    Await(client.SendEventAsync(message), "SendEventAsync");
                    Console.WriteLine("sent");
                    Await(client.CloseAsync(), "CloseAsync");
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
