using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.RegularExpressions;
using static Iotconn.Tests.Support;

namespace Iotconn.Tests
{
    /// <summary>The .nupkg that pack.sh built (IOTCONN_NUPKG): its layout, and the example device compiled against
    /// the package's Iotconn.dll and run with the package's native library against hubsim.</summary>
    internal static class PackageTests
    {
        public static readonly TestCase[] All =
        {
            new TestCase("NupkgExampleDeviceCompilesAndDeliversWithThePackagedLibraries", ExampleFromNupkg),
        };

        private const string Device = "cs-pkg";
        private const int Count = 5;

        private static void ExampleFromNupkg()
        {
            string package = Environment.GetEnvironmentVariable("IOTCONN_NUPKG");
            Assert(package != null && File.Exists(package), "IOTCONN_NUPKG names the built package: " + package);
            string dir = Path.Combine(Path.GetTempPath(), "iotconn-cs-pkg-" + Guid.NewGuid().ToString("N"));
            string unpacked = Path.Combine(dir, "package");
            Directory.CreateDirectory(dir);
            try
            {
                LibraryTests.Run("python3", "-m zipfile -e \"" + package + "\" \"" + unpacked + "\"", null, 0);
                string lib = Path.Combine(unpacked, "lib/netstandard2.0");
                string native = Path.Combine(unpacked, "runtimes/linux-x64/native");
                foreach (string entry in new[] { "[Content_Types].xml", "Iotconn.nuspec",
                    "lib/netstandard2.0/Iotconn.dll", "runtimes/linux-x64/native/libiotconn.so" })
                {
                    Assert(File.Exists(Path.Combine(unpacked, entry)), "the package holds " + entry);
                }
                string nuspec = File.ReadAllText(Path.Combine(unpacked, "Iotconn.nuspec"));
                string version = Regex.Match(nuspec, "<version>(.*?)</version>").Groups[1].Value;
                Assert(version == NativeMethods.HeaderVersion && Path.GetFileName(package) ==
                    "Iotconn." + version + ".nupkg", "the package's version is the header's: " + version);
                // What a feed shows: the csproj's metadata, and this version's section of the changelog.
                foreach (string element in new[] { "<license type=\"expression\">MIT</license>",
                    "<projectUrl>https://", "<description>Azure IoT Hub", "<releaseNotes>Added:" })
                {
                    Assert(nuspec.Contains(element), "the nuspec has " + element + ": " + nuspec);
                }

                string exe = Path.Combine(dir, "Telemetry.exe");
                LibraryTests.Run("mcs", "-nologo -warnaserror -out:\"" + exe + "\" -r:\"" +
                    Path.Combine(lib, "Iotconn.dll") + "\" \"" + Path.Combine(Root, "examples/csharp/Telemetry.cs") +
                    "\"",
                    null, 0);
                using (var hub = new Hubsim(Root, Device))
                {
                    // Only the package's directories: not build/ (LD_LIBRARY_PATH) nor the binding built for the tests.
                    string output = LibraryTests.Run(LibraryTests.Mono(), "--debug \"" + exe + "\" \"" +
                        hub.ConnectionStrings[Device] + "\" \"" + hub.CaFile + "\" " + Count + " 0", native, 0,
                        new Dictionary<string, string> { { "MONO_PATH", lib } });
                    CheckOutput(output);
                    CheckRecord(hub.Messages(Device));
                }
            }
            finally
            {
                Directory.Delete(dir, true);
            }
        }

        private static void CheckOutput(string output)
        {
            string[] lines = output.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
            string[] statuses = lines.Where(l => l.StartsWith("status: ")).ToArray();
            Assert(statuses.FirstOrDefault() == "status: Connected / Connection_Ok" &&
                statuses.LastOrDefault() == "status: Disabled / Client_Close",
                "the example prints Connected first and Disabled/Client_Close last:\n" + output);
            for (int i = 1; i <= Count; i++)
            {
                Assert(lines.Contains("sent: telemetry-" + i) && lines.Contains("delivered: telemetry-" + i),
                    "the example prints the send and the delivery of telemetry-" + i + ":\n" + output);
            }
            Assert(lines.Contains("reported: done") && lines.Any(l => l.StartsWith("desired: version=1 ")),
                "the example prints its reported patch's completion and the desired section:\n" + output);
            Assert(lines.Last() == "client: sent=" + Count + " delivered=" + Count + " failed=0",
                "the example's summary:\n" + output);
        }

        private static void CheckRecord(List<Dictionary<string, object>> records)
        {
            Assert(records.Count == Count, "the hub recorded " + records.Count + " messages, want " + Count);
            for (int i = 1; i <= Count; i++)
            {
                var record = records[i - 1];
                string payload = Encoding.UTF8.GetString(Convert.FromBase64String((string)record["payload"]));
                var properties = (Dictionary<string, object>)record["properties"];
                Assert((string)record["messageId"] == "telemetry-" + i && payload.StartsWith("{\"seq\":" + i + ",") &&
                    (string)record["contentType"] == "application/json" && (string)properties["seq"] == i.ToString(),
                    "message " + i + " recorded as sent, in order: " + record["messageId"] + " " + payload);
            }
        }
    }
}
