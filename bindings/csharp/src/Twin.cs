using System.Collections.Generic;
using System.Globalization;
using System.Threading.Tasks;

namespace Iotconn
{
    /// <summary>
    /// A set of twin properties as JSON text, as Microsoft.Azure.Devices.Client's TwinCollection but without a JSON
    /// library (none ships with both Mono and .NET Standard 2.0 without a package): the binding hands over and
    /// takes plain JSON strings; parse them with the JSON library of your choice.
    /// </summary>
    public sealed class TwinCollection
    {
        private readonly string json;

        /// <summary>An empty collection, "{}".</summary>
        public TwinCollection() : this("{}")
        {
        }

        /// <summary>A collection of one JSON object's text, e.g. "{\"temp\":21}" (a null value deletes a property
        /// when reported). The library checks the JSON when it is sent.</summary>
        public TwinCollection(string json)
        {
            if (json == null)
            {
                throw IotconnException.InvalidArgument("json", "must not be null");
            }
            this.json = json;
        }

        /// <summary>The "$version" member of the JSON (the hub's version of desired or reported properties); 0
        /// when there is none, as in a collection the application builds.</summary>
        public long Version
        {
            get
            {
                string raw;
                long version;
                return JsonMembers.Parse(json).TryGetValue("$version", out raw) &&
                    long.TryParse(raw, NumberStyles.Integer, CultureInfo.InvariantCulture, out version) ? version : 0;
            }
        }

        /// <summary>The JSON text.</summary>
        public string ToJson()
        {
            return json;
        }

        public override string ToString()
        {
            return json;
        }
    }

    /// <summary>A twin's desired and reported properties.</summary>
    public sealed class TwinProperties
    {
        internal TwinProperties(TwinCollection desired, TwinCollection reported)
        {
            Desired = desired;
            Reported = reported;
        }

        /// <summary>What the back end asked for, with its "$version".</summary>
        public TwinCollection Desired { get; private set; }

        /// <summary>What the device reported, with its "$version".</summary>
        public TwinCollection Reported { get; private set; }
    }

    /// <summary>The device's twin as DeviceClient.GetTwinAsync got it from the hub.</summary>
    public sealed class Twin
    {
        internal Twin(string json)
        {
            // The hub sends {"desired":{...},"reported":{...}}; a missing section is an empty one.
            Dictionary<string, string> members = JsonMembers.Parse(json);
            Properties = new TwinProperties(Section(members, "desired"), Section(members, "reported"));
            Json = json;
        }

        private static TwinCollection Section(Dictionary<string, string> members, string name)
        {
            string raw;
            return new TwinCollection(members.TryGetValue(name, out raw) ? raw : "{}");
        }

        public TwinProperties Properties { get; private set; }

        /// <summary>The whole twin's JSON as the hub sent it.</summary>
        public string Json { get; private set; }

        public string ToJson()
        {
            return Json;
        }
    }

    /// <summary>Called on the dispatcher thread with each desired-properties update (the hub's patch, or after a
    /// connect the whole desired section when it changed while offline), its "$version" inside.</summary>
    public delegate Task DesiredPropertyUpdateCallback(TwinCollection desiredProperties, object userContext);
}
