using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using static Iotconn.Tests.Support;

namespace Iotconn.Tests
{
    /// <summary>Twins and direct methods end to end against iotconn-hubsim.</summary>
    internal static class TwinTests
    {
        public static readonly TestCase[] All =
        {
            new TestCase("TwinGetReportedDesiredAndMethodsAgainstHubsim", TwinAndMethods),
            new TestCase("TwinsAndMethodsFollowTheBeforeOpenRuleWithLibraryCodes", BeforeOpenRule),
            new TestCase("TwinRequestsThatTimeOutFailWithTheLibrarysCode", TwinTimeouts),
            new TestCase("AModuleIsAnIdentityOfItsOwnBesideItsDevice", ModuleIdentity),
            new TestCase("ModuleClientHasTheTwinMethodAndSendApiAndNeedsAModuleId", ModuleClientApi),
            new TestCase("TwinsAndMethodsAcrossOutagesEndOnceLatestDesiredWins", Outages),
            new TestCase("DesiredChangesDuringATokenRenewalArriveOnceLatestWins", TokenRenewal),
        };

        private const string Device = "cs-twin";
        private const string Plain = "cs-plain";

        private static DeviceClient NewClient(Hubsim hub, string device, bool useTwin)
        {
            return DeviceClient.CreateFromConnectionString(hub.ConnectionStrings[device], TransportType.Mqtt,
                new ClientOptions { CaFile = hub.CaFile, OperationTimeout = Deadline, UseTwin = useTwin });
        }

        private static Dictionary<string, object> Section(Dictionary<string, object> twin, string name)
        {
            return (Dictionary<string, object>)twin[name];
        }

        private static void TwinAndMethods()
        {
            using (var hub = new Hubsim(Root, Device))
            using (DeviceClient client = NewClient(hub, Device, false))
            {
                var desired = new Recorder<Tuple<TwinCollection, object, Thread>>();
                var calls = new Recorder<Tuple<MethodRequest, object>>();
                var context = new object();
                // Set before OpenAsync: the connection subscribes to desired patches and method calls.
                Await(client.SetDesiredPropertyUpdateCallbackAsync((patch, ctx) =>
                {
                    desired.Add(Tuple.Create(patch, ctx, Thread.CurrentThread));
                    return Task.FromResult(0);
                }, context), "SetDesiredPropertyUpdateCallbackAsync");
                Await(client.SetMethodHandlerAsync("reboot", (request, ctx) =>
                {
                    calls.Add(Tuple.Create(request, ctx));
                    return Task.FromResult(new MethodResponse(Encoding.UTF8.GetBytes("{\"ok\":true}"), 201));
                }, context), "SetMethodHandlerAsync");
                Await(client.OpenAsync(), "OpenAsync");

                Twin twin = Result(client.GetTwinAsync(), "GetTwinAsync");
                Assert(twin.Properties.Desired.ToJson().Contains("\"$version\"") &&
                    twin.Properties.Reported.ToJson().Contains("\"$version\""),
                    "the twin has desired and reported sections with their versions: " + twin.ToJson());

                Await(client.UpdateReportedPropertiesAsync(new TwinCollection("{\"temp\":21}")),
                    "UpdateReportedPropertiesAsync");
                Dictionary<string, object> reported = Section(hub.Twin(Device), "reported");
                Assert(reported.ContainsKey("temp") && (double)reported["temp"] == 21,
                    "hubsim's twin shows the reported patch: " + Json.Object(Strings(reported)));
                Twin after = Result(client.GetTwinAsync(), "GetTwinAsync (after the patch)");
                Assert(after.Properties.Reported.Version == (long)(double)reported["$version"] &&
                    after.Properties.Reported.ToJson().Contains("\"temp\":21"),
                    "GetTwinAsync shows the patch with hubsim's version: " + after.ToJson());

                long version = (long)(double)Section(hub.PatchDesired(Device, "{\"fan\":true}"), "desired")["$version"];
                Tuple<TwinCollection, object, Thread> got = desired.WaitFor("desired patch version " + version,
                    list => list.Exists(d => d.Item1.Version == version))
                    .Find(d => d.Item1.Version == version);
                Assert(got.Item1.ToJson().Contains("\"fan\":true") && got.Item1.ToJson().Contains("\"$version\""),
                    "the patch with its $version: " + got.Item1.ToJson());
                Assert(got.Item2 == context && got.Item3.Name == "iotconn-dispatcher",
                    "the callback runs on the dispatcher with its user context");

                Dictionary<string, object> answer = hub.InvokeMethod(Device, "reboot", "{\"delay\":1}", 30);
                Assert((double)answer["status"] == 201 && answer["payload"] is Dictionary<string, object> &&
                    (bool)((Dictionary<string, object>)answer["payload"])["ok"],
                    "the caller gets the handler's status and payload: " + Json.Object(Strings(answer)));
                Tuple<MethodRequest, object> call = calls.WaitCount("method call", 1)[0];
                Assert(call.Item1.Name == "reboot" && call.Item1.DataAsJson.Contains("\"delay\":1") &&
                    call.Item2 == context, "the handler got the call's name, payload and context: " +
                    call.Item1.DataAsJson);

                answer = hub.InvokeMethod(Device, "unknown", "{}", 30);
                Assert((double)answer["status"] == 501, "a method without a handler is answered 501: " +
                    Json.Object(Strings(answer)));
                Await(client.SetMethodDefaultHandlerAsync((request, ctx) => Task.FromResult(
                    new MethodResponse(Encoding.UTF8.GetBytes(Json.Quote(request.Name)), 200)), null),
                    "SetMethodDefaultHandlerAsync");
                answer = hub.InvokeMethod(Device, "unknown", "{}", 30);
                Assert((double)answer["status"] == 200 && (string)answer["payload"] == "unknown",
                    "the default handler answers, set after OpenAsync once methods are on: " +
                    Json.Object(Strings(answer)));
                Await(client.SetMethodHandlerAsync("reboot", (request, ctx) =>
                {
                    throw new InvalidOperationException("handler bug");
                }, null), "SetMethodHandlerAsync (throwing)");
                answer = hub.InvokeMethod(Device, "reboot", "{}", 30);
                Assert((double)answer["status"] == 500, "a throwing handler answers 500: " +
                    Json.Object(Strings(answer)));
            }
        }

        private static void BeforeOpenRule()
        {
            using (var hub = new Hubsim(Root, Device, Plain))
            {
                using (DeviceClient plain = NewClient(hub, Plain, false))
                {
                    Await(plain.OpenAsync(), "OpenAsync (no twins)");
                    ThrowsCode("GetTwinAsync without twins", ErrorCode.InvalidState, "iotconn_twin_get",
                        () => plain.GetTwinAsync());
                    ThrowsCode("UpdateReportedPropertiesAsync without twins", ErrorCode.InvalidState, "",
                        () => plain.UpdateReportedPropertiesAsync(new TwinCollection("{\"a\":1}")));
                    ThrowsCode("SetDesiredPropertyUpdateCallbackAsync after OpenAsync", ErrorCode.InvalidState,
                        "before OpenAsync", () => plain.SetDesiredPropertyUpdateCallbackAsync(
                            (p, c) => Task.FromResult(0), null));
                    ThrowsCode("SetMethodHandlerAsync after OpenAsync", ErrorCode.InvalidState, "before OpenAsync",
                        () => plain.SetMethodHandlerAsync("m", (r, c) => Task.FromResult(new MethodResponse(200)),
                            null));
                    // Removing what was never set changes no subscription.
                    Await(plain.SetMethodDefaultHandlerAsync(null, null), "SetMethodDefaultHandlerAsync(null)");
                }

                DeviceClient client = NewClient(hub, Device, true);
                try
                {
                    Await(client.OpenAsync(), "OpenAsync (UseTwin)");
                    Twin twin = Result(client.GetTwinAsync(), "GetTwinAsync");
                    Assert(twin.Properties.Desired.ToJson().StartsWith("{"), "UseTwin: GetTwinAsync after OpenAsync");
                    ThrowsCode("a reported patch that is not a JSON object", ErrorCode.InvalidArgument, "",
                        () => client.UpdateReportedPropertiesAsync(new TwinCollection("[1,2]")));
                    Throws("a null patch", () => client.UpdateReportedPropertiesAsync(null));
                }
                finally
                {
                    client.Dispose();
                }
                ThrowsCode("GetTwinAsync after Dispose", ErrorCode.Closed, "", () => client.GetTwinAsync());
            }
        }

        // Never connected: each request ends in its one completion once the OperationTimeout passed.
        private static void TwinTimeouts()
        {
            using (var hub = new Hubsim(Root, Device))
            using (DeviceClient client = DeviceClient.CreateFromConnectionString(hub.ConnectionStrings[Device],
                TransportType.Mqtt,
                new ClientOptions { CaFile = hub.CaFile, OperationTimeout = TimeSpan.FromSeconds(1) }))
            {
                Task<Twin> get = client.GetTwinAsync();
                Task report = client.UpdateReportedPropertiesAsync(new TwinCollection("{\"temp\":1}"));
                foreach (var request in new[] { Tuple.Create((Task)get, "GetTwinAsync"),
                    Tuple.Create(report, "UpdateReportedPropertiesAsync") })
                {
                    var e = Failure(request.Item1, request.Item2) as IotconnException;
                    Assert(e != null && e.Code == ErrorCode.Timeout, request.Item2 + " fails with ErrorCode.Timeout: " +
                        e);
                }
            }
        }

        // ModuleId in the connection string: the module sends, gets and patches its own twin, takes its own desired
        // patches and method calls while its device is connected too; bad module ids fail with their codes.
        private static void ModuleIdentity()
        {
            const string module = Device + "/m1", modulePath = Device + "/modules/m1";
            using (var hub = new Hubsim(Root, Device, module))
            using (DeviceClient device = NewClient(hub, Device, false))
            using (DeviceClient client = NewClient(hub, module, false))
            {
                Await(device.OpenAsync(), "OpenAsync (the device)");
                var desired = new Recorder<TwinCollection>();
                Await(client.SetDesiredPropertyUpdateCallbackAsync((patch, ctx) =>
                {
                    desired.Add(patch);
                    return Task.FromResult(0);
                }, null), "SetDesiredPropertyUpdateCallbackAsync");
                Await(client.SetMethodHandlerAsync("who", (request, ctx) => Task.FromResult(
                    new MethodResponse(Encoding.UTF8.GetBytes("{\"module\":\"m1\"}"), 200)), null),
                    "SetMethodHandlerAsync");
                Await(client.OpenAsync(), "OpenAsync (the module)");

                Await(client.SendEventAsync(new Message(Encoding.UTF8.GetBytes("from the module"))), "SendEventAsync");
                Assert(hub.Messages(modulePath).Count == 1 && hub.Messages(Device).Count == 0,
                    "the hub recorded the message as the module's, not the device's");

                Await(client.UpdateReportedPropertiesAsync(new TwinCollection("{\"role\":\"module\"}")),
                    "UpdateReportedPropertiesAsync");
                Assert((string)Section(hub.Twin(modulePath), "reported")["role"] == "module" &&
                    !Section(hub.Twin(Device), "reported").ContainsKey("role"),
                    "the patch is in the module's twin, not the device's");
                Assert(Result(client.GetTwinAsync(), "GetTwinAsync").Properties.Reported.ToJson()
                    .Contains("\"role\":\"module\""), "GetTwinAsync is the module's twin");

                long version = (long)(double)Section(hub.PatchDesired(modulePath, "{\"rate\":3}"), "desired")["$version"];
                desired.WaitFor("the module's desired patch version " + version,
                    list => list.Exists(d => d.Version == version && d.ToJson().Contains("\"rate\":3")));
                Dictionary<string, object> answer = hub.InvokeMethod(modulePath, "who", "{}", 30);
                Assert((double)answer["status"] == 200 && answer["payload"] is Dictionary<string, object>,
                    "the module answers its method call: " + Json.Object(Strings(answer)));

                string cs = hub.ConnectionStrings[Device];
                foreach (var bad in new[] { Tuple.Create("", ErrorCode.InvalidArgument),
                    Tuple.Create("a/b", ErrorCode.InvalidArgument),
                    Tuple.Create(new string('m', 129), ErrorCode.MessageTooLarge) })
                {
                    ThrowsCode("ModuleId '" + bad.Item1 + "'", bad.Item2, "ModuleId",
                        () => DeviceClient.CreateFromConnectionString(cs + ";ModuleId=" + bad.Item1,
                            TransportType.Mqtt, new ClientOptions { CaFile = hub.CaFile }).Dispose());
                }
            }
        }

        // ModuleClient, the name .NET code knows: the module's telemetry, twin and method calls; a connection string
        // without ModuleId is refused (without repeating its key), one with it in any case is taken as the library
        // takes it.
        private static void ModuleClientApi()
        {
            const string module = Device + "/m2", modulePath = Device + "/modules/m2";
            using (var hub = new Hubsim(Root, Device, module))
            {
                var options = new ClientOptions { CaFile = hub.CaFile, OperationTimeout = Deadline };
                string deviceCs = hub.ConnectionStrings[Device];
                string key = deviceCs.Substring(deviceCs.IndexOf("SharedAccessKey=") + "SharedAccessKey=".Length);
                IotconnException refused = Throws("ModuleClient of a device's connection string",
                    () => ModuleClient.CreateFromConnectionString(deviceCs, TransportType.Mqtt, options).Dispose());
                Assert(refused.Code == ErrorCode.InvalidArgument && refused.Message.Contains("has no ModuleId") &&
                    !refused.Message.Contains(key), "refused with InvalidArgument, saying why: " + refused.Message);
                ThrowsCode("an empty ModuleId", ErrorCode.InvalidArgument, "ModuleId",
                    () => ModuleClient.CreateFromConnectionString(deviceCs + ";ModuleId=").Dispose());
                ModuleClient.CreateFromConnectionString(deviceCs + "; moduleid =m2", TransportType.Mqtt, options)
                    .Dispose();

                using (ModuleClient client = ModuleClient.CreateFromConnectionString(hub.ConnectionStrings[module],
                    TransportType.Mqtt, options))
                {
                    var desired = new Recorder<TwinCollection>();
                    Await(client.SetDesiredPropertyUpdateCallbackAsync((patch, ctx) =>
                    {
                        desired.Add(patch);
                        return Task.FromResult(0);
                    }, null), "SetDesiredPropertyUpdateCallbackAsync");
                    Await(client.SetMethodHandlerAsync("who", (request, ctx) => Task.FromResult(new MethodResponse(
                        Encoding.UTF8.GetBytes("{\"module\":\"m2\",\"echo\":" + request.DataAsJson + "}"), 200)),
                        null), "SetMethodHandlerAsync");
                    Await(client.OpenAsync(), "OpenAsync");

                    Await(client.SendEventAsync(new Message(Encoding.UTF8.GetBytes("from m2"))), "SendEventAsync");
                    Assert(hub.Messages(modulePath).Count == 1 && hub.Messages(Device).Count == 0,
                        "the hub recorded the message as the module's");
                    Await(client.UpdateReportedPropertiesAsync(new TwinCollection("{\"role\":\"m2\"}")),
                        "UpdateReportedPropertiesAsync");
                    Assert((string)Section(hub.Twin(modulePath), "reported")["role"] == "m2" &&
                        !Section(hub.Twin(Device), "reported").ContainsKey("role"),
                        "the patch is in the module's twin, not the device's");
                    Assert(Result(client.GetTwinAsync(), "GetTwinAsync").Properties.Reported.ToJson()
                        .Contains("\"role\":\"m2\""), "GetTwinAsync is the module's twin");
                    long version = DesiredVersion(hub.PatchDesired(modulePath, "{\"rate\":5}"));
                    desired.WaitFor("the module's desired patch version " + version,
                        list => list.Exists(d => d.Version == version && d.ToJson().Contains("\"rate\":5")));
                    Dictionary<string, object> answer = hub.InvokeMethod(modulePath, "who", "7", 30);
                    var payload = answer["payload"] as Dictionary<string, object>;
                    Assert((double)answer["status"] == 200 && payload != null && (string)payload["module"] == "m2" &&
                        (double)payload["echo"] == 7, "the module answers its method call: " +
                        Json.Object(Strings(answer)));
                }
            }
        }

        private static long DesiredVersion(Dictionary<string, object> twin)
        {
            return (long)(double)Section(twin, "desired")["$version"];
        }

        // The outage cases: desired changes made during a hub-down arrive once, latest wins; reported patches
        // queued during it all go out after it, the last one last; a GetTwinAsync asked during it and requests in
        // flight at a TCP reset each complete; a method call that comes while an earlier one waits is answered, and
        // so is the earlier one once its handler's task completes.
        private static void Outages()
        {
            using (var hub = new Hubsim(Root, Device))
            using (DeviceClient client = NewClient(hub, Device, true))
            {
                var statuses = new Recorder<ConnectionStatus>();
                var desired = new Recorder<TwinCollection>();
                var slowCalls = new Recorder<MethodRequest>();
                var slow = new TaskCompletionSource<MethodResponse>();
                client.SetConnectionStatusChangesHandler((status, reason) => statuses.Add(status));
                Await(client.SetDesiredPropertyUpdateCallbackAsync((patch, ctx) =>
                {
                    desired.Add(patch);
                    return Task.FromResult(0);
                }, null), "SetDesiredPropertyUpdateCallbackAsync");
                Await(client.SetMethodHandlerAsync("slow", (request, ctx) =>
                {
                    slowCalls.Add(request);
                    return slow.Task; // answered when the test completes it
                }, null), "SetMethodHandlerAsync(slow)");
                Await(client.SetMethodHandlerAsync("quick", (request, ctx) => Task.FromResult(
                    new MethodResponse(Encoding.UTF8.GetBytes("\"quick\""), 200)), null), "SetMethodHandlerAsync(quick)");
                Await(client.OpenAsync(), "OpenAsync");
                desired.WaitCount("desired section after OpenAsync", 1);
                long reportedBefore = Result(client.GetTwinAsync(), "GetTwinAsync").Properties.Reported.Version;

                hub.Fault("hub-down", null, 3);
                statuses.WaitFor("Disconnected_Retrying", list => list.Contains(ConnectionStatus.Disconnected_Retrying));
                long latest = 0;
                for (int i = 0; i < 3; i++)
                {
                    latest = DesiredVersion(hub.PatchDesired(Device, "{\"n\":" + i + "}"));
                }
                var patches = new List<Task>();
                for (int i = 0; i < 5; i++)
                {
                    patches.Add(client.UpdateReportedPropertiesAsync(new TwinCollection("{\"seq\":" + i + "}")));
                }
                Task<Twin> duringOutage = client.GetTwinAsync();
                patches.ForEach(p => Await(p, "a reported patch queued during the outage"));
                Result(duringOutage, "GetTwinAsync asked during the outage");
                Dictionary<string, object> reported = Section(hub.Twin(Device), "reported");
                Assert((double)reported["seq"] == 4 && (long)(double)reported["$version"] == reportedBefore + 5,
                    "the hub applied the five patches, the last one last: " + Json.Object(Strings(reported)));
                List<TwinCollection> seen = desired.WaitFor("desired version " + latest,
                    list => list.Exists(d => d.Version == latest));
                Assert(seen.Count == 2 && seen[1].ToJson().Contains("\"n\":2"),
                    "the changes made while offline arrive as one update of the latest version: " +
                    string.Join(" ", seen.Select(d => d.ToJson()).ToArray()));
                long following = DesiredVersion(hub.PatchDesired(Device, "{\"n\":9}"));
                seen = desired.WaitCount("desired update after the outage's", 3);
                Assert(seen.Count == 3 && seen[2].Version == following, "the next update is the next change: " +
                    string.Join(" ", seen.Select(d => d.ToJson()).ToArray()));

                // In flight when the link is cut: each request completes once, sent again on the next link.
                var inFlight = new List<Task>();
                for (int i = 0; i < 3; i++)
                {
                    inFlight.Add(client.GetTwinAsync());
                    inFlight.Add(client.UpdateReportedPropertiesAsync(new TwinCollection("{\"cut\":" + i + "}")));
                }
                int beforeReset = statuses.Events.Count;
                hub.Fault("kill-tcp", Device, 0);
                inFlight.ForEach(t => Await(t, "a request in flight at the TCP reset"));
                // The requests may all be answered on the old link: only Connected says the device is back and
                // subscribed; a method invoked before that gets 404 (not connected) at once, as from IoT Hub.
                statuses.WaitFor("Connected after the TCP reset", list => list.Skip(beforeReset)
                    .SkipWhile(st => st != ConnectionStatus.Disconnected_Retrying).Contains(ConnectionStatus.Connected));
                reported = Section(hub.Twin(Device), "reported");
                // A patch whose answer the reset lost goes out again, so the hub may count it twice.
                Assert((long)(double)reported["$version"] >= reportedBefore + 8 && (double)reported["cut"] == 2,
                    "the hub applied the three patches in flight, the last one last: " + Json.Object(Strings(reported)));

                Task<Dictionary<string, object>> slowAnswer = Task.Run(() => hub.InvokeMethod(Device, "slow", "{}", 30));
                try
                {
                    slowCalls.WaitCount("slow method call", 1);
                }
                catch (TimeoutException e) when (slowAnswer.IsFaulted)
                {
                    throw new Exception("the slow call failed: " + slowAnswer.Exception.InnerException.Message, e);
                }
                Dictionary<string, object> quick = hub.InvokeMethod(Device, "quick", "{}", 30);
                Assert((double)quick["status"] == 200 && (string)quick["payload"] == "quick",
                    "a call that comes while an earlier one waits is answered: " + Json.Object(Strings(quick)));
                slow.SetResult(new MethodResponse(Encoding.UTF8.GetBytes("{\"late\":true}"), 202));
                Dictionary<string, object> late = Result(slowAnswer, "the slow call's answer");
                Assert((double)late["status"] == 202, "the earlier call is answered once its task completes: " +
                    Json.Object(Strings(late)));
            }
        }

        // Desired changes made while the device is offline for a token renewal arrive once, latest wins; the next
        // change comes next, a method call is answered, and the status sequence is the documented one.
        private static void TokenRenewal()
        {
            // The shortest renewal period the floors allow (IOTCONN_MIN_SAS_LIFETIME_S, _RENEW_INTERVAL_S): the
            // first renewal comes 30 s after OpenAsync.
            TimeSpan lifetime = TimeSpan.FromSeconds(60), period = TimeSpan.FromSeconds(30);
            // An MQTT renewal dials again within milliseconds of its status event, before any hubsim fault the test
            // could arm after it. A connect budget of one token per period + 3 s holds that dial instead: the first
            // connect takes the token, and the renewal waits about 3 s for the next one, with the device offline.
            TimeSpan hold = TimeSpan.FromSeconds(3);
            var clock = Stopwatch.StartNew();
            using (var hub = new Hubsim(Root, Device))
            using (var admission = new Admission(1 / (period + hold).TotalSeconds))
            using (DeviceClient client = DeviceClient.CreateFromConnectionString(hub.ConnectionStrings[Device],
                TransportType.Mqtt, new ClientOptions
                {
                    CaFile = hub.CaFile, OperationTimeout = Deadline, SasTokenTimeToLive = lifetime,
                    SasTokenRenewalMargin = lifetime - period, Admission = admission,
                }))
            {
                var statuses = new Recorder<Tuple<StatusEvent, double>>();
                var desired = new Recorder<TwinCollection>();
                client.SetConnectionStatusChangesHandler((status, reason) =>
                    statuses.Add(Tuple.Create(new StatusEvent(status, reason), clock.Elapsed.TotalSeconds)));
                Await(client.SetDesiredPropertyUpdateCallbackAsync((patch, ctx) =>
                {
                    desired.Add(patch);
                    return Task.FromResult(0);
                }, null), "SetDesiredPropertyUpdateCallbackAsync");
                Await(client.SetMethodHandlerAsync("after", (request, ctx) => Task.FromResult(
                    new MethodResponse(Encoding.UTF8.GetBytes(Json.Quote(request.Name)), 200)), null),
                    "SetMethodHandlerAsync");
                Await(client.OpenAsync(), "OpenAsync");
                long first = desired.WaitCount("desired section after OpenAsync", 1)[0].Version;
                statuses.WaitFor("the renewal's Disconnected_Retrying/Expired_SAS_Token", list => list.Exists(e =>
                    e.Item1.Is(ConnectionStatus.Disconnected_Retrying, ConnectionStatusChangeReason.Expired_SAS_Token)),
                    period + Deadline);
                hub.WaitLine("hubsim: disconnect " + Device + " "); // the hub dropped the old link
                var made = new List<long>();
                for (int i = 0; i < 3; i++)
                {
                    made.Add(DesiredVersion(hub.PatchDesired(Device, "{\"n\":" + i + ",\"k" + i + "\":true}")));
                }
                Dictionary<string, object> device = hub.Device(Device);
                Assert(!(bool)device["connected"] && (double)device["connections"] == 1,
                    "the changes were made while the device was offline: " + Json.Object(Strings(device)));

                long latest = made[2];
                string json = desired.WaitFor("desired version " + latest,
                    list => list.Exists(d => d.Version == latest)).Last().ToJson();
                Assert(json.Contains("\"n\":2") && json.Contains("\"k0\":true") && json.Contains("\"k2\":true"),
                    "the update holds every change made offline: " + json);
                long following = DesiredVersion(hub.PatchDesired(Device, "{\"n\":9}"));
                List<long> versions = desired.WaitFor("desired version " + following,
                    list => list.Exists(d => d.Version == following)).Select(d => d.Version).ToList();
                Assert(versions.SequenceEqual(new[] { first, latest, following }),
                    "one update for the latest version, none for the older ones, none twice, then the next change: " +
                    string.Join(" ", versions.Select(v => v.ToString()).ToArray()) + " (made offline: " +
                    string.Join(" ", made.Select(v => v.ToString()).ToArray()) + ")");
                Dictionary<string, object> answer = hub.InvokeMethod(Device, "after", "{}", 30);
                Assert((double)answer["status"] == 200 && (string)answer["payload"] == "after",
                    "a method call after the renewal is answered: " + Json.Object(Strings(answer)));
                List<Tuple<StatusEvent, double>> seen = statuses.Events;
                Assert(seen.Count == 3 && seen[0].Item1.Is(ConnectionStatus.Connected,
                    ConnectionStatusChangeReason.Connection_Ok) && seen[1].Item1.Is(
                    ConnectionStatus.Disconnected_Retrying, ConnectionStatusChangeReason.Expired_SAS_Token) &&
                    seen[2].Item1.Is(ConnectionStatus.Connected, ConnectionStatusChangeReason.Connection_Ok),
                    "Connected, Disconnected_Retrying/Expired_SAS_Token, Connected: " +
                    string.Join(", ", seen.Select(e => e.Item1.ToString()).ToArray()));
                Console.WriteLine("  renewal " + (seen[1].Item2 - seen[0].Item2).ToString("0.0") +
                    " s after connecting, offline " + (seen[2].Item2 - seen[1].Item2).ToString("0.00") +
                    " s; desired versions " + string.Join(" ", versions.Select(v => v.ToString()).ToArray()) +
                    ", made offline " + string.Join(" ", made.Select(v => v.ToString()).ToArray()));
            }
        }

        private static T Result<T>(Task<T> task, string what)
        {
            Await(task, what);
            return task.Result;
        }

        private static IEnumerable<KeyValuePair<string, string>> Strings(Dictionary<string, object> members)
        {
            foreach (var m in members)
            {
                yield return new KeyValuePair<string, string>(m.Key, Convert.ToString(m.Value));
            }
        }
    }
}
