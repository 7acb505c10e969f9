using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
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
        private readonly BlockingCollection<string> lines = new BlockingCollection<string>();

        public string ControlUrl { get; private set; }
        public string CaFile { get; private set; }
        public Dictionary<string, string> ConnectionStrings { get; private set; }

        public Hubsim(string root, params string[] deviceIds)
        {
            ConnectionStrings = new Dictionary<string, string>();
            dir = Path.Combine(Path.GetTempPath(), "iotconn-cs-" + Guid.NewGuid().ToString("N"));
            string args = "--dir " + dir + " --mqtt 127.0.0.1:0 --control 127.0.0.1:0";
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
                if (words.Length == 3 && words[1] == "control")
                {
                    ControlUrl = words[2];
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
