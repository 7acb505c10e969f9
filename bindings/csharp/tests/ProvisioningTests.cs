using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using System.Threading.Tasks;
using static Iotconn.Tests.Support;

namespace Iotconn.Tests
{
    /// <summary>DPS and X.509 against an iotconn-hubsim process with two hubs and a DPS front:
    /// ProvisioningDeviceClient (symmetric, group and X.509 attestations, DPS's refusal),
    /// DeviceClient.CreateFromProvisioning (provision, send, follow a move with exactly one more registration and
    /// nothing lost, the cached hub after a restart), and X.509 hub authentication (self-signed, CA-signed, rotation
    /// on disk, expired).</summary>
    internal static class ProvisioningTests
    {
        public static readonly TestCase[] All =
        {
            new TestCase("ProvisioningDeviceClientRegistersWithEachAttestation", Register),
            new TestCase("AProvisionedClientFollowsAMoveWithOneRegistration", FollowsAMove),
            new TestCase("X509SelfSignedCASignedRotationAndExpired", X509),
        };

        private const string DpsArgs = "--hub 127.0.0.1:0 --dps-mqtt 127.0.0.1:0 --dps-retry-after 1s " +
            "--enrollment cs-dps --enrollment-group cs-fleet";

        private static Hubsim StartDps()
        {
            return new Hubsim(Root, new string[0], DpsArgs);
        }

        private static DeviceRegistrationResult RegisterWith(Hubsim hub, SecurityProvider security)
        {
            ProvisioningDeviceClient client = ProvisioningDeviceClient.Create(hub.DpsMqtt, hub.IdScope, security,
                new ProvisioningTransportHandlerMqtt(), new ClientOptions { CaFile = hub.CaFile });
            Task<DeviceRegistrationResult> task = client.RegisterAsync(
                new ProvisioningRegistrationAdditionalData { JsonData = "{\"model\":\"cs\"}" });
            Await(task, "RegisterAsync");
            return task.Result;
        }

        private static void Register()
        {
            using (Hubsim hub = StartDps())
            {
                DeviceRegistrationResult result = RegisterWith(hub,
                    new SecurityProviderSymmetricKey("cs-dps", hub.EnrollmentKeys["cs-dps"], null));
                Assert(result.Status == ProvisioningRegistrationStatusType.Assigned, "assigned: " + result.Status);
                Assert(result.DeviceId == "cs-dps" && hub.HubHosts.Contains(result.AssignedHub),
                    "assigned " + result.DeviceId + " to " + result.AssignedHub);
                Assert(result.CreatedDateTimeUtc.HasValue, "a creation time");

                result = RegisterWith(hub, SecurityProviderSymmetricKey.FromGroupKey("cs-member",
                    hub.EnrollmentKeys["cs-fleet"]));
                Assert(result.DeviceId == "cs-member", "the group member is assigned: " + result.DeviceId);

                var wrong = new SecurityProviderSymmetricKey("cs-dps", hub.EnrollmentKeys["cs-fleet"], null);
                Exception e = Failure(ProvisioningDeviceClient.Create(hub.DpsMqtt, hub.IdScope, wrong,
                    new ProvisioningTransportHandlerMqtt(), new ClientOptions { CaFile = hub.CaFile })
                    .RegisterAsync(), "RegisterAsync with a wrong key");
                var ie = e as IotconnException;
                Assert(ie != null && ie.Code == ErrorCode.BadCredential && ie.Message.Contains("401"),
                    "a wrong key is ErrorCode.BadCredential with DPS's 401: " + e);

                string thumbprint = hub.MintCert("cs-x509", "x", "");
                hub.Request(hub.DpsControlUrl, "PUT", "/enrollments/cs-x509",
                    "{\"attestation\":\"x509\",\"x509\":{\"thumbprints\":[\"" + thumbprint + "\"]}}");
                result = RegisterWith(hub, new SecurityProviderX509Certificate("cs-x509",
                    Path.Combine(hub.Dir, "x.pem"), Path.Combine(hub.Dir, "x-key.pem")));
                Assert(result.DeviceId == "cs-x509", "the X.509 device is assigned: " + result.DeviceId);
            }
        }

        private static void FollowsAMove()
        {
            using (Hubsim hub = StartDps())
            {
                string hub1 = hub.HubHosts[0], hub2 = hub.HubHosts[1];
                hub.Request(hub.DpsControlUrl, "POST", "/enrollments/cs-dps/move", "{\"iotHub\":\"" + hub1 + "\"}");
                string queue = Path.Combine(hub.Dir, "queue");
                var security = new SecurityProviderSymmetricKey("cs-dps", hub.EnrollmentKeys["cs-dps"], null);
                var options = new ClientOptions
                {
                    CaFile = hub.CaFile, QueueDirectory = queue, OperationTimeout = Deadline,
                };
                var statuses = new Recorder<StatusEvent>();
                using (DeviceClient client = DeviceClient.CreateFromProvisioning(hub.DpsMqtt, hub.IdScope, security,
                    TransportType.Mqtt, options))
                {
                    client.SetConnectionStatusChangesHandler((s, r) => statuses.Add(new StatusEvent(s, r)));
                    Assert(client.ProvisioningRegistrations == 0 && client.AssignedHub == null, "nothing before");
                    Await(client.OpenAsync(), "OpenAsync");
                    Assert(client.AssignedHub == hub1 && client.AssignedDeviceId == "cs-dps",
                        "assigned " + client.AssignedHub);
                    Assert(client.ProvisioningRegistrations == 1, "one registration");
                    Await(Task.WhenAll(Send(client, "before", 5)), "the sends before the move");

                    hub.Request(hub.DpsControlUrl, "POST", "/enrollments/cs-dps/move", "{\"iotHub\":\"" + hub2 + "\"}");
                    List<Task> moving = Send(client, "moving", 5);
                    statuses.WaitFor("Connected again", events => events.Count(e =>
                        e.Is(ConnectionStatus.Connected, ConnectionStatusChangeReason.Connection_Ok)) >= 2);
                    Await(Task.WhenAll(moving.Concat(Send(client, "moved", 5))), "the sends across the move");
                    Assert(client.ProvisioningRegistrations == 2, "one more registration: " +
                        client.ProvisioningRegistrations);
                    Assert(client.AssignedHub == hub2, "moved to " + client.AssignedHub);
                }
                var registration = (Dictionary<string, object>)Json.Parse(hub.Request(hub.DpsControlUrl, "GET",
                    "/registrations/cs-dps", null));
                Assert(Convert.ToInt32(registration["registrations"]) == 2, "DPS counted 2 registrations");

                // The new hub has every message sent after the move, each once.
                var records = (List<object>)Json.Parse(hub.Request(hub.Hub2ControlUrl, "GET",
                    "/devices/cs-dps/messages", null));
                var payloads = records.Cast<Dictionary<string, object>>()
                    .Select(r => Encoding.UTF8.GetString(Convert.FromBase64String((string)r["payload"]))).ToList();
                Assert(payloads.Count == payloads.Distinct().Count(), "no message twice on the new hub");
                Assert(Enumerable.Range(0, 5).All(i => payloads.Contains("moved-" + i)), "every moved-* arrived");

                // Restarted on the same queue directory: the cached hub, no registration.
                using (DeviceClient client = DeviceClient.CreateFromProvisioning(hub.DpsMqtt, hub.IdScope, security,
                    TransportType.Mqtt, options))
                {
                    Await(client.OpenAsync(), "OpenAsync after a restart");
                    Assert(client.ProvisioningRegistrations == 0 && client.AssignedHub == hub2,
                        "the cached hub, no registration");
                }
            }
        }

        private static List<Task> Send(DeviceClient client, string tag, int count)
        {
            return Enumerable.Range(0, count)
                .Select(i => client.SendEventAsync(new Message(Encoding.UTF8.GetBytes(tag + "-" + i)))).ToList();
        }

        private static DeviceClient X509Client(Hubsim hub, string device, string name)
        {
            return DeviceClient.CreateFromConnectionString("HostName=" + hub.HubHosts[0] + ";DeviceId=" + device +
                ";x509=true", TransportType.Mqtt, new ClientOptions
                {
                    CaFile = hub.CaFile, CertificateFile = Path.Combine(hub.Dir, name + ".pem"),
                    KeyFile = Path.Combine(hub.Dir, name + "-key.pem"), OperationTimeout = Deadline,
                });
        }

        private static void X509()
        {
            using (var hub = new Hubsim(Root))
            {
                string thumbprint = hub.MintCert("cs-self", "self", "");
                hub.Request(hub.ControlUrl, "POST", "/devices",
                    "{\"id\":\"cs-self\",\"auth\":\"selfSigned\",\"thumbprints\":[\"" + thumbprint + "\"]}");
                hub.MintCert("cs-root", "root", "--ca");
                hub.MintCert("cs-ca", "signed", "--issuer " + Path.Combine(hub.Dir, "root"));
                hub.Request(hub.ControlUrl, "POST", "/cas", "{\"pem\":" +
                    Json.Quote(File.ReadAllText(Path.Combine(hub.Dir, "root.pem"))) + "}");
                hub.Request(hub.ControlUrl, "POST", "/devices", "{\"id\":\"cs-ca\",\"auth\":\"certificateAuthority\"}");
                foreach (var device in new[] { new[] { "cs-self", "self" }, new[] { "cs-ca", "signed" } })
                {
                    using (DeviceClient client = X509Client(hub, device[0], device[1]))
                    {
                        Await(client.OpenAsync(), "OpenAsync of " + device[0]);
                        Await(client.SendEventAsync(new Message(Encoding.UTF8.GetBytes(device[0]))), "a send");
                    }
                }

                // Rotation: new files under the same names; the same client presents them at its next connect.
                var statuses = new Recorder<StatusEvent>();
                using (DeviceClient client = X509Client(hub, "cs-self", "self"))
                {
                    client.SetConnectionStatusChangesHandler((s, r) => statuses.Add(new StatusEvent(s, r)));
                    Await(client.OpenAsync(), "OpenAsync before the rotation");
                    string next = hub.MintCert("cs-self", "next", "");
                    foreach (string suffix in new[] { ".pem", "-key.pem" })
                    {
                        File.Delete(Path.Combine(hub.Dir, "self" + suffix));
                        File.Move(Path.Combine(hub.Dir, "next" + suffix), Path.Combine(hub.Dir, "self" + suffix));
                    }
                    hub.Request(hub.ControlUrl, "PATCH", "/devices/cs-self", "{\"thumbprints\":[\"" + next + "\"]}");
                    hub.Fault("kill-tcp", "cs-self", 0);
                    statuses.WaitFor("Connected again", events => events.Count(e =>
                        e.Is(ConnectionStatus.Connected, ConnectionStatusChangeReason.Connection_Ok)) >= 2);
                    Await(client.SendEventAsync(new Message(Encoding.UTF8.GetBytes("rotated"))), "a send");
                }

                // Expired: fatal, Disconnected / Bad_Credential, and the message says why.
                thumbprint = hub.MintCert("cs-old", "old", "--expired");
                hub.Request(hub.ControlUrl, "POST", "/devices",
                    "{\"id\":\"cs-old\",\"auth\":\"selfSigned\",\"thumbprints\":[\"" + thumbprint + "\"]}");
                statuses = new Recorder<StatusEvent>();
                using (DeviceClient client = X509Client(hub, "cs-old", "old"))
                {
                    client.SetConnectionStatusChangesHandler((s, r) => statuses.Add(new StatusEvent(s, r)));
                    var e = Failure(client.OpenAsync(), "OpenAsync with an expired certificate") as IotconnException;
                    Assert(e != null && e.Code == ErrorCode.BadCredential && e.Message.Contains("expired at"),
                        "an expired certificate is ErrorCode.BadCredential naming its expiry: " + e);
                    statuses.WaitFor("Disconnected/Bad_Credential", events => events.Any(ev =>
                        ev.Is(ConnectionStatus.Disconnected, ConnectionStatusChangeReason.Bad_Credential)));
                }
            }
        }
    }
}
