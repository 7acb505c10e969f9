using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Net;
using System.Text;
using System.Threading;

namespace Iotconn.Tests
{
    /// <summary>An iotconn-hubsim process on 127.0.0.1 with free ports, stopped by its PID.</summary>
    internal sealed class Hubsim : IDisposable
    {
        private static readonly TimeSpan StartDeadline = TimeSpan.FromSeconds(30);

        private readonly Process process;
        private readonly Thread reader;
        private readonly string dir;
        private readonly string root;
        private readonly BlockingCollection<string> lines = new BlockingCollection<string>();

        public string ControlUrl { get; private set; }
        public string CaFile { get; private set; }
        public Dictionary<string, string> ConnectionStrings { get; private set; }
        public string AmqpAddress { get; private set; }
        public string AmqpWebSocketAddress { get; private set; }

        /// <summary>The device's connection string with the AMQP (or AMQP over WebSocket) listener as its gateway.
        /// </summary>
        public string AmqpConnectionString(string deviceId, bool webSocket)
        {
            string addr = webSocket ? AmqpWebSocketAddress : AmqpAddress;
            return ConnectionStrings[deviceId] + ";GatewayHostName=localhost" + addr.Substring(addr.LastIndexOf(':'));
        }

        // With --hub and --dps-mqtt (the extraArgs constructor): every hub's host name (this one first), the second
        // hub's control URL, DPS's address, control URL and id scope, and the enrollments' and groups' keys.
        public List<string> HubHosts { get; private set; }
        public string Hub2ControlUrl { get; private set; }
        public string DpsMqtt { get; private set; }
        public string DpsControlUrl { get; private set; }
        public string IdScope { get; private set; }
        public Dictionary<string, string> EnrollmentKeys { get; private set; }

        /// <summary>The certificates and keys tests mint live here, removed with the hub.</summary>
        public string Dir
        {
            get { return dir; }
        }

        public Hubsim(string root, params string[] deviceIds) : this(root, deviceIds, "")
        {
        }

        /// <summary>With more command-line arguments, e.g. "--hub 127.0.0.1:0 --dps-mqtt 127.0.0.1:0".</summary>
        public Hubsim(string root, string[] deviceIds, string extraArgs)
        {
            this.root = root;
            ConnectionStrings = new Dictionary<string, string>();
            HubHosts = new List<string>();
            EnrollmentKeys = new Dictionary<string, string>();
            dir = Path.Combine(Path.GetTempPath(), "iotconn-cs-" + Guid.NewGuid().ToString("N"));
            string args = "--dir " + dir + " --mqtt 127.0.0.1:0 --control 127.0.0.1:0 --amqp 127.0.0.1:0" +
                " --amqp-ws 127.0.0.1:0 " + extraArgs;
            foreach (string id in deviceIds)
            {
                args += " --device " + id;
            }
            process = Process.Start(new ProcessStartInfo(Path.Combine(root, "build/bin/iotconn-hubsim"), args)
            {
                UseShellExecute = false,
                RedirectStandardOutput = true,
            });
            // Drains stdout for the process's whole life: hubsim logs every event and must never block on the pipe.
            reader = new Thread(() =>
            {
                string line;
                while ((line = process.StandardOutput.ReadLine()) != null)
                {
                    lines.Add(line);
                }
                lines.CompleteAdding();
            }) { IsBackground = true };
            reader.Start();
            try
            {
                WaitReady();
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        private void WaitReady()
        {
            var deadline = DateTime.UtcNow + StartDeadline;
            while (true)
            {
                TimeSpan left = deadline - DateTime.UtcNow;
                string line;
                if (left <= TimeSpan.Zero || !lines.TryTake(out line, left))
                {
                    throw new Exception("hubsim did not print 'hubsim: ready' within " + StartDeadline);
                }
                string[] words = line.Split(' ');
                if (line == "hubsim: ready")
                {
                    return;
                }
                if (words.Length == 3 && words[1] == "mqtts")
                {
                    HubHosts.Insert(0, "localhost:" + words[2].Substring(words[2].LastIndexOf(':') + 1));
                }
                else if (words.Length == 7 && words[1].StartsWith("hub") && words[3] == "mqtts")
                {
                    HubHosts.Add(words[2]);
                    Hub2ControlUrl = Hub2ControlUrl ?? words[6];
                }
                else if (words.Length == 4 && words[1] == "dps" && words[2] == "mqtts")
                {
                    DpsMqtt = words[3];
                }
                else if (words.Length == 4 && words[1] == "dps" && words[2] == "control")
                {
                    DpsControlUrl = words[3];
                }
                else if (words.Length == 4 && words[1] == "dps" && words[2] == "idscope")
                {
                    IdScope = words[3];
                }
                else if (words.Length == 5 && words[1] == "dps" && (words[2] == "enrollment" || words[2] == "group"))
                {
                    EnrollmentKeys[words[3]] = words[4];
                }
                else if (words.Length == 3 && words[1] == "control")
                {
                    ControlUrl = words[2];
                }
                else if (words.Length == 3 && words[1] == "amqps")
                {
                    AmqpAddress = words[2];
                }
                else if (words.Length == 3 && words[1] == "amqp-ws")
                {
                    AmqpWebSocketAddress = words[2];
                }
                else if (words.Length == 3 && words[1] == "ca")
                {
                    CaFile = words[2];
                }
                else if (words.Length == 4 && words[1] == "device")
                {
                    ConnectionStrings[words[2]] = words[3];
                }
            }
        }

        /// <summary>Waits (within the deadline) for the next log line that contains text and returns it; the lines
        /// before it are read and dropped.</summary>
        public string WaitLine(string text)
        {
            DateTime deadline = DateTime.UtcNow + StartDeadline;
            while (true)
            {
                TimeSpan left = deadline - DateTime.UtcNow;
                string line;
                if (left <= TimeSpan.Zero || !lines.TryTake(out line, left))
                {
                    throw new TimeoutException("hubsim printed no line with '" + text + "' within " + StartDeadline);
                }
                if (line.Contains(text))
                {
                    return line;
                }
            }
        }

        /// <summary>The device (or "device/module") as the control API shows it: connected, connections, ...
        /// </summary>
        public Dictionary<string, object> Device(string deviceId)
        {
            return (Dictionary<string, object>)Json.Parse(Request("GET", "/devices/" + deviceId, null));
        }

        /// <summary>The D2C messages the hub recorded for a device, in arrival order.</summary>
        public List<Dictionary<string, object>> Messages(string deviceId)
        {
            var list = (List<object>)Json.Parse(Request("GET", "/devices/" + deviceId + "/messages", null));
            return list.Cast<Dictionary<string, object>>().ToList();
        }

        /// <summary>Injects a fault (hubsim/README.md, Faults); device null means every device.</summary>
        public void Fault(string kind, string device, int seconds)
        {
            string body = "{\"kind\":" + Json.Quote(kind) + ",\"seconds\":" + seconds +
                (device != null ? ",\"device\":" + Json.Quote(device) : "") + "}";
            Request("POST", "/faults", body);
        }

        /// <summary>Queues a cloud-to-device message; fields are the control API's (payload, messageId, ...).</summary>
        public void SendC2D(string deviceId, IDictionary<string, string> fields, IDictionary<string, string> properties)
        {
            string body = Json.Object(fields);
            if (properties != null)
            {
                body = body.Substring(0, body.Length - 1) + ",\"properties\":" + Json.Object(properties) + "}";
            }
            Request("POST", "/devices/" + deviceId + "/c2d", body);
        }

        /// <summary>The device's twin as the control API shows it.</summary>
        public Dictionary<string, object> Twin(string deviceId)
        {
            return (Dictionary<string, object>)Json.Parse(Request("GET", "/devices/" + deviceId + "/twin", null));
        }

        /// <summary>Patches the desired properties (the device is notified) and returns the new twin.</summary>
        public Dictionary<string, object> PatchDesired(string deviceId, string patchJson)
        {
            return (Dictionary<string, object>)Json.Parse(Request("PATCH", "/devices/" + deviceId + "/twin/desired",
                patchJson));
        }

        /// <summary>Calls a direct method and returns the answer, {"status":int,"payload":...}.</summary>
        public Dictionary<string, object> InvokeMethod(string deviceId, string name, string payloadJson,
            int timeoutSeconds)
        {
            return (Dictionary<string, object>)Json.Parse(Request("POST", "/devices/" + deviceId + "/methods/" +
                Uri.EscapeDataString(name) + "?timeout=" + timeoutSeconds, payloadJson));
        }

        private string Request(string method, string path, string body)
        {
            return Request(ControlUrl, method, path, body);
        }

        /// <summary>A request to the control API at baseUrl: this hub's, the second hub's or DPS's.</summary>
        public string Request(string baseUrl, string method, string path, string body)
        {
            using (var web = new WebClient { Proxy = null, Encoding = Encoding.UTF8 })
            {
                if (body == null)
                {
                    return web.DownloadString(baseUrl + path);
                }
                web.Headers[HttpRequestHeader.ContentType] = "application/json";
                return web.UploadString(baseUrl + path, method, body);
            }
        }

        /// <summary>iotconn-hubsim mint-cert: writes Dir/name.pem and Dir/name-key.pem and returns the SHA-1
        /// thumbprint; flags e.g. "--ca", "--issuer PATH", "--expired".</summary>
        public string MintCert(string commonName, string name, string flags)
        {
            var info = new ProcessStartInfo(Path.Combine(root, "build/bin/iotconn-hubsim"),
                "mint-cert --cn " + commonName + " --out " + Path.Combine(dir, name) + " " + flags)
            {
                UseShellExecute = false,
                RedirectStandardOutput = true,
            };
            using (var mint = Process.Start(info))
            {
                string thumbprint = mint.StandardOutput.ReadToEnd().Trim();
                if (!mint.WaitForExit(30000) || mint.ExitCode != 0 || thumbprint.Length == 0)
                {
                    throw new Exception("mint-cert " + commonName + " failed");
                }
                return thumbprint;
            }
        }

        public void Dispose()
        {
            if (!process.HasExited)
            {
                using (var kill = Process.Start(new ProcessStartInfo("kill", "-TERM " + process.Id)
                    { UseShellExecute = false }))
                {
                    kill.WaitForExit(10000);
                }
                if (!process.WaitForExit(15000))
                {
                    process.Kill();
                    process.WaitForExit(5000);
                }
            }
            reader.Join(5000);
            process.Dispose();
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, true);
            }
        }
    }
}
