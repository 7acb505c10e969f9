package auth

import (
	"strings"
	"testing"
)

// testKey is base64 of "0123456789abcdef0123456789abcdef"; error messages must never contain it.
const testKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

const testSAS = "SharedAccessSignature sr=hub.example.net%2Fdevices%2Fdev1&sig=c2lnbmF0dXJl&se=1700003600"

func TestParseValidConnectionStrings(t *testing.T) {
	cases := map[string]struct {
		in   string
		want ConnectionString
	}{
		"device key": {
			"HostName=hub.example.net;DeviceId=dev1;SharedAccessKey=" + testKey,
			ConnectionString{HostName: "hub.example.net", DeviceID: "dev1", SharedAccessKey: testKey},
		},
		"module with policy key, gateway, spaces and a trailing ;": {
			"  HostName = hub.example.net:8883 ; DeviceId=dev1;ModuleId=mod-1;SharedAccessKeyName=iothubowner;" +
				"SharedAccessKey=" + testKey + ";GatewayHostName=edge.local:8883 ;  ",
			ConnectionString{HostName: "hub.example.net:8883", DeviceID: "dev1", ModuleID: "mod-1",
				SharedAccessKeyName: "iothubowner", SharedAccessKey: testKey, GatewayHostName: "edge.local:8883"},
		},
		"signature with '=' and '&' in the value": {
			"HostName=hub.example.net;DeviceId=dev1;SharedAccessSignature=" + testSAS,
			ConnectionString{HostName: "hub.example.net", DeviceID: "dev1", SharedAccessSignature: testSAS},
		},
		"x509 in any case, keys in any case": {
			"hostname=hub.example.net;DEVICEID=dev1;X509=True",
			ConnectionString{HostName: "hub.example.net", DeviceID: "dev1", X509: true},
		},
		"x509=false next to a key": {
			"HostName=hub.example.net;DeviceId=dev1;SharedAccessKey=" + testKey + ";x509=false",
			ConnectionString{HostName: "hub.example.net", DeviceID: "dev1", SharedAccessKey: testKey},
		},
		"IoT Hub's special id characters and an IP host": {
			"HostName=127.0.0.1:50123;DeviceId=a-b.c+d%e_f#g*h?i!j(k)l,m:n=o@p$q'r;x509=true",
			ConnectionString{HostName: "127.0.0.1:50123", DeviceID: "a-b.c+d%e_f#g*h?i!j(k)l,m:n=o@p$q'r", X509: true},
		},
	}
	for name, c := range cases {
		got, err := ParseConnectionString(c.in)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if *got != c.want {
			t.Fatalf("%s: got %+v, want %+v", name, *got, c.want)
		}
		// Round trip: formatting the fields and parsing again gives the same value.
		again, err := ParseConnectionString(format(got))
		if err != nil || *again != *got {
			t.Fatalf("%s: round trip of %q gave %+v, %v", name, format(got), again, err)
		}
	}
}

// format writes c back as a connection string in Azure's key order.
func format(c *ConnectionString) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add(keyHostName, c.HostName)
	add(keyDeviceID, c.DeviceID)
	add(keyModuleID, c.ModuleID)
	add(keySharedAccessKeyName, c.SharedAccessKeyName)
	add(keySharedAccessKey, c.SharedAccessKey)
	add(keySharedAccessSignature, c.SharedAccessSignature)
	add(keyGatewayHostName, c.GatewayHostName)
	if c.X509 {
		add(keyX509, "true")
	}
	return strings.Join(parts, ";")
}

func TestParseRejectsMalformedConnectionStrings(t *testing.T) {
	const base = "HostName=hub.example.net;DeviceId=dev1"
	cases := map[string]struct{ in, want string }{
		"empty":                  {"", "empty"},
		"only spaces and ;":      {"  ;  ", "empty"},
		"empty field":            {base + ";;SharedAccessKey=" + testKey, "field 3 is empty"},
		"no '='":                 {base + ";SharedAccessKey", "field 3 has no '='"},
		"no key name":            {base + ";=" + testKey, "field 3 has no key"},
		"unknown key":            {base + ";SharedAccesKey=" + testKey, `unknown key "SharedAccesKey"`},
		"unknown mangled key":    {base + ";SharedAccessKey:" + testKey, "unknown key in field 3"},
		"duplicate key":          {base + ";DeviceId=dev2;x509=true", "DeviceId more than once"},
		"duplicate in any case":  {base + ";hostname=other;x509=true", "HostName more than once"},
		"empty value":            {base + ";ModuleId=;x509=true", "ModuleId has an empty value"},
		"blank value":            {base + ";SharedAccessKey=   ", "SharedAccessKey has an empty value"},
		"no HostName":            {"DeviceId=dev1;SharedAccessKey=" + testKey, "no HostName"},
		"no DeviceId":            {"HostName=hub.example.net;SharedAccessKey=" + testKey, "no DeviceId"},
		"no credential":          {base, "no credential"},
		"x509=false only":        {base + ";x509=false", "no credential"},
		"key and signature":      {base + ";SharedAccessKey=" + testKey + ";SharedAccessSignature=" + testSAS, "both SharedAccessKey and SharedAccessSignature"},
		"key and x509":           {base + ";SharedAccessKey=" + testKey + ";x509=true", "x509=true and a shared access credential"},
		"signature and x509":     {base + ";SharedAccessSignature=" + testSAS + ";x509=true", "x509=true and a shared access credential"},
		"key name without key":   {base + ";SharedAccessKeyName=owner;x509=true", "SharedAccessKeyName without SharedAccessKey"},
		"x509 not a boolean":     {base + ";x509=yes", `x509 must be true or false, not "yes"`},
		"key not base64":         {base + ";SharedAccessKey=not*base64!", "SharedAccessKey is not valid base64"},
		"key base64 unpadded":    {base + ";SharedAccessKey=" + strings.TrimSuffix(testKey, "="), "SharedAccessKey is not valid base64"},
		"host with space":        {"HostName=hub example.net;DeviceId=dev1;x509=true", "contains whitespace"},
		"host as URL":            {"HostName=mqtts://hub.example.net;DeviceId=dev1;x509=true", "not a URL"},
		"port not a number":      {"HostName=hub.example.net:mqtt;DeviceId=dev1;x509=true", `bad port "mqtt"`},
		"port zero":              {"HostName=hub.example.net:0;DeviceId=dev1;x509=true", `bad port "0"`},
		"port too big":           {"HostName=hub.example.net:65536;DeviceId=dev1;x509=true", `bad port "65536"`},
		"port empty":             {"HostName=hub.example.net:;DeviceId=dev1;x509=true", `bad port ""`},
		"only a port":            {"HostName=:8883;DeviceId=dev1;x509=true", "has no host"},
		"two colons":             {"HostName=a:1:2;DeviceId=dev1;x509=true", "not host:port"},
		"bad gateway port":       {base + ";GatewayHostName=edge:99999;x509=true", "GatewayHostName"},
		"device id with a slash": {"HostName=h;DeviceId=dev/1;x509=true", `DeviceId "dev/1" has the character '/'`},
		"module id with a space": {base + ";ModuleId=m 1;x509=true", `ModuleId "m 1" has the character ' '`},
		"device id too long":     {"HostName=h;DeviceId=" + strings.Repeat("d", 129) + ";x509=true", "129 characters"},
	}
	for name, c := range cases {
		got, err := ParseConnectionString(c.in)
		if err == nil {
			t.Fatalf("%s: parsed %q as %+v, want an error", name, c.in, got)
		}
		if got != nil {
			t.Fatalf("%s: an error must come with a nil result", name)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: error %q does not say %q", name, err, c.want)
		}
		if strings.Contains(err.Error(), testKey[:20]) || strings.Contains(err.Error(), "c2lnbmF0dXJl") {
			t.Fatalf("%s: error %q repeats a secret", name, err)
		}
	}
}

func TestConnectHostAndResourceURI(t *testing.T) {
	c, err := ParseConnectionString("HostName=hub.example.net;DeviceId=dev1;ModuleId=m1;SharedAccessKey=" + testKey)
	if err != nil {
		t.Fatal(err)
	}
	if c.ConnectHost() != "hub.example.net" {
		t.Fatalf("ConnectHost %q", c.ConnectHost())
	}
	if c.ResourceURI() != "hub.example.net/devices/dev1/modules/m1" {
		t.Fatalf("ResourceURI %q", c.ResourceURI())
	}
	c.GatewayHostName = "edge.local:8883"
	if c.ConnectHost() != "edge.local:8883" {
		t.Fatalf("with a gateway ConnectHost is %q", c.ConnectHost())
	}
	if c.ResourceURI() != "hub.example.net/devices/dev1/modules/m1" {
		t.Fatalf("the gateway must not change the resource: %q", c.ResourceURI())
	}
}
