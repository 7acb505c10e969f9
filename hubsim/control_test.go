package hubsim

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/iothub"
)

// call does one control API request and returns the status and the body.
func call(t *testing.T, h *Hub, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, h.ControlURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: waitLimit}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("response %s: %v", b, err)
	}
	return v
}

func TestControlAPIDevices(t *testing.T) {
	h := startHub(t, func(c *Config) { c.ControlAddr = "127.0.0.1:0" })
	key := randomKey()
	code, b := call(t, h, "POST", "/devices", `{"id":"d1","key":"`+key+`"}`)
	d := decode[deviceJSON](t, b)
	if code != 201 || d.ID != "d1" || d.PrimaryKey != key || d.SecondaryKey == "" || d.Status != "enabled" ||
		d.Connected || d.ConnectionString != "HostName="+h.HostName()+";DeviceId=d1;SharedAccessKey="+key {
		t.Fatalf("POST /devices: %d %s", code, b)
	}
	if code, b := call(t, h, "POST", "/devices", `{"id":"off","status":"disabled"}`); code != 201 || decode[deviceJSON](t, b).Status != "disabled" {
		t.Fatalf("POST disabled device: %d %s", code, b)
	}
	for _, c := range []struct {
		method, path, body string
		code               int
	}{
		{"POST", "/devices", `{"id":"d1"}`, 409},
		{"POST", "/devices", `{"id":"bad id"}`, 400},
		{"POST", "/devices", `{"id":"x","status":"sleepy"}`, 400},
		{"POST", "/devices", `{"id":"x","colour":"red"}`, 400},
		{"POST", "/devices", `not json`, 400},
		{"GET", "/devices/ghost", "", 404},
		{"PATCH", "/devices/ghost", `{"status":"disabled"}`, 404},
		{"PATCH", "/devices/d1", `{}`, 400},
		{"GET", "/devices/ghost/messages", "", 404},
		{"POST", "/devices/ghost/c2d", `{"payload":"x"}`, 404},
		{"POST", "/devices/d1/c2d", `{"payload":"x","payloadBase64":"eA=="}`, 400},
		{"GET", "/devices/ghost/twin", "", 404},
		{"PATCH", "/devices/d1/twin/desired", `[1]`, 400},
		{"POST", "/devices/d1/methods/m", `{}`, 404},
		{"POST", "/devices/d1/methods/m?timeout=abc", `{}`, 400},
		{"POST", "/devices/d1/methods/m", `not json`, 400},
		{"POST", "/faults", `{"kind":"earthquake"}`, 400},
		{"POST", "/faults", `{"kind":"kill-tcp","device":"ghost"}`, 404},
		{"POST", "/faults", `{"kind":"blackhole"}`, 400},
		{"POST", "/faults", `{"kind":"throttle","rate":1,"answer":"teapot"}`, 400},
		{"POST", "/faults", `{"kind":"restart","answer":"close"}`, 400},
	} {
		code, b := call(t, h, c.method, c.path, c.body)
		if code != c.code || decode[map[string]string](t, b)["error"] == "" {
			t.Errorf("%s %s %s: %d %s, want %d with an error message", c.method, c.path, c.body, code, b, c.code)
		}
	}

	dv := mustConnect(t, h, d.Device)
	if code, b := call(t, h, "GET", "/devices/d1", ""); code != 200 || !decode[deviceJSON](t, b).Connected || decode[deviceJSON](t, b).Connections != 1 {
		t.Fatalf("GET connected device: %d %s", code, b)
	}
	if code, b := call(t, h, "PATCH", "/devices/d1", `{"status":"disabled"}`); code != 200 || decode[deviceJSON](t, b).Status != "disabled" {
		t.Fatalf("PATCH: %d %s", code, b)
	}
	dv.waitLost(t)
	if code, b := call(t, h, "GET", "/devices", ""); code != 200 || len(decode[[]deviceJSON](t, b)) != 2 {
		t.Fatalf("GET /devices: %d %s", code, b)
	}
}

func TestControlAPIAddsDevicesInBulk(t *testing.T) {
	h := startHub(t, func(c *Config) { c.ControlAddr = "127.0.0.1:0" })
	key := randomKey()
	code, b := call(t, h, "POST", "/devices", ` [{"id":"b1"},{"id":"b2","key":"`+key+`"},{"id":"b3","status":"disabled"}]`)
	got := decode[[]deviceJSON](t, b)
	if code != 201 || len(got) != 3 || got[0].ID != "b1" || got[1].PrimaryKey != key || got[2].Status != "disabled" ||
		got[1].ConnectionString != "HostName="+h.HostName()+";DeviceId=b2;SharedAccessKey="+key {
		t.Fatalf("POST /devices [3 devices]: %d %s", code, b)
	}
	for _, c := range []struct {
		body string
		code int
	}{
		{`[{"id":"ok1"},{"id":"bad id"}]`, 400},
		{`[{"id":"ok1"},{"id":"b1"}]`, 409},
		{`[{"id":"ok1"},{"id":"ok1"}]`, 409},
		{`[{"id":"ok1"},{"id":"x","status":"sleepy"}]`, 400},
		{`[{"id":"ok1"},{"id":"x","colour":"red"}]`, 400},
		{`[{"id":"ok1"},"x"]`, 400},
	} {
		code, b := call(t, h, "POST", "/devices", c.body)
		if code != c.code || decode[map[string]string](t, b)["error"] == "" {
			t.Errorf("POST /devices %s: %d %s, want %d with an error message", c.body, code, b, c.code)
		}
	}
	if code, b := call(t, h, "GET", "/devices", ""); code != 200 || len(decode[[]deviceJSON](t, b)) != 3 {
		t.Fatalf("failed batches registered devices: %d %s", code, b)
	}
	if code, b := call(t, h, "POST", "/devices", `[]`); code != 201 || string(b) != "[]\n" {
		t.Fatalf("POST /devices []: %d %s", code, b)
	}
}

func TestControlAPIMessagesC2DTwinMethodsFaults(t *testing.T) {
	h := startHub(t, func(c *Config) { c.ControlAddr = "127.0.0.1:0" })
	d := addDevice(t, h, "d1")
	dv := mustConnect(t, h, d)
	dv.publish(t, iothub.TelemetryTopic("d1", "", "%24.mid=m1&k=v&a=%20"), 1, []byte{0, 1, 2})
	if _, err := h.WaitMessages(ctxLimit(t), "d1", 1); err != nil {
		t.Fatal(err)
	}
	code, b := call(t, h, "GET", "/devices/d1/messages", "")
	msgs := decode[[]map[string]any](t, b)
	if code != 200 || len(msgs) != 1 || msgs[0]["payload"] != base64.StdEncoding.EncodeToString([]byte{0, 1, 2}) ||
		msgs[0]["messageId"] != "m1" || msgs[0]["properties"].(map[string]any)["k"] != "v" {
		t.Fatalf("messages: %d %s", code, b)
	}
	if got := fmt.Sprint(msgs[0]["propertyList"]); got != "[[k v] [a  ]]" {
		t.Fatalf("propertyList %s in %s", got, b)
	}
	if _, err := time.Parse(time.RFC3339Nano, msgs[0]["arrivedAt"].(string)); err != nil {
		t.Fatalf("arrivedAt: %v", err)
	}

	dv.subscribe(t, iothub.C2DPrefix("d1")+"#", 1)
	if code, b := call(t, h, "POST", "/devices/d1/c2d", `{"payloadBase64":"AAE=","messageId":"c1","properties":{"a":"b"}}`); code != 202 {
		t.Fatalf("c2d: %d %s", code, b)
	}
	m := dv.waitMsg(t, iothub.C2DPrefix("d1"))
	if string(m.Payload()) != "\x00\x01" || !strings.Contains(m.Topic(), "%24.mid=c1") || !strings.HasSuffix(m.Topic(), "&a=b") {
		t.Fatalf("c2d arrived as %s %q", m.Topic(), m.Payload())
	}

	dv.subscribe(t, "$iothub/twin/PATCH/properties/desired/#", 0)
	code, b = call(t, h, "PATCH", "/devices/d1/twin/desired", `{"fan":true}`)
	if code != 200 || !strings.Contains(string(b), `"fan":true`) {
		t.Fatalf("patch desired: %d %s", code, b)
	}
	dv.waitMsg(t, "$iothub/twin/PATCH/properties/desired/?$version=2")
	if code, b := call(t, h, "GET", "/devices/d1/twin", ""); code != 200 || decode[map[string]map[string]any](t, b)["desired"]["$version"] != 2.0 {
		t.Fatalf("twin: %d %s", code, b)
	}

	dv.subscribe(t, "$iothub/methods/POST/#", 0)
	type httpResult struct {
		code int
		body []byte
	}
	results := make(chan httpResult, 2)
	go func() {
		code, b := call(t, h, "POST", "/devices/d1/methods/answer?timeout=5", `{"q":1}`)
		results <- httpResult{code, b}
	}()
	req := dv.waitMsg(t, "$iothub/methods/POST/answer/")
	rid := strings.TrimPrefix(req.Topic(), "$iothub/methods/POST/answer/?$rid=")
	dv.publish(t, "$iothub/methods/res/200/?$rid="+rid, 0, []byte(`{"a":42}`))
	r := <-results
	if r.code != 200 || string(r.body) != `{"payload":{"a":42},"status":200}`+"\n" {
		t.Fatalf("method: %d %s", r.code, r.body)
	}
	go func() {
		code, b := call(t, h, "POST", "/devices/d1/methods/silent?timeout=0.2", ``)
		results <- httpResult{code, b}
	}()
	dv.waitMsg(t, "$iothub/methods/POST/silent/")
	if r := <-results; r.code != 504 {
		t.Fatalf("unanswered method: %d %s", r.code, r.body)
	}

	code, b = call(t, h, "POST", "/faults", `{"kind":"move-port","addr":"127.0.0.1:0"}`)
	f := decode[faultJSON](t, b)
	if code != 200 || f.Kind != FaultMovePort || f.Addr != h.Addr() {
		t.Fatalf("fault: %d %s (hub at %s)", code, b, h.Addr())
	}
	dv.waitLost(t)
}

// A module is registered under its device and has its own routes: connection state, telemetry, twin, desired
// patches and methods, apart from its device's while both are connected.
func TestControlAPIModules(t *testing.T) {
	h := startHub(t, func(c *Config) { c.ControlAddr = "127.0.0.1:0" })
	d := addDevice(t, h, "d1")
	code, b := call(t, h, "POST", "/devices/d1/modules", `{"id":"m1"}`)
	m := decode[deviceJSON](t, b)
	if code != 201 || m.ID != "d1/m1" ||
		m.ConnectionString != "HostName="+h.HostName()+";DeviceId=d1;ModuleId=m1;SharedAccessKey="+m.PrimaryKey {
		t.Fatalf("POST /devices/d1/modules: %d %s", code, b)
	}
	for _, c := range []struct {
		method, path, body string
		code               int
	}{
		{"POST", "/devices/d1/modules", `{"id":"m1"}`, 409},
		{"POST", "/devices/ghost/modules", `{"id":"m1"}`, 404},
		{"POST", "/devices/d1/modules", `{"id":""}`, 400},
		{"POST", "/devices/d1/modules", `{"id":"a/b"}`, 400},
		{"POST", "/devices/d1/modules", `{"id":"` + strings.Repeat("m", 129) + `"}`, 400},
		{"GET", "/devices/d1/modules/ghost", "", 404},
		{"GET", "/devices/d1/modules/ghost/twin", "", 404},
		{"POST", "/devices/d1/modules/m1/methods/x", `{}`, 404},
	} {
		if code, b := call(t, h, c.method, c.path, c.body); code != c.code {
			t.Errorf("%s %s %s: %d %s, want %d", c.method, c.path, c.body, code, b, c.code)
		}
	}

	mod, dv := mustConnect(t, h, m.Device), mustConnect(t, h, d)
	for _, path := range []string{"/devices/d1", "/devices/d1/modules/m1"} {
		if code, b := call(t, h, "GET", path, ""); code != 200 || !decode[deviceJSON](t, b).Connected {
			t.Fatalf("GET %s with both connected: %d %s", path, code, b)
		}
	}
	mod.publish(t, iothub.TelemetryTopic("d1", "m1", "k=v"), 1, []byte("from the module"))
	if _, err := h.WaitMessages(ctxLimit(t), "d1/m1", 1); err != nil {
		t.Fatal(err)
	}
	code, b = call(t, h, "GET", "/devices/d1/modules/m1/messages", "")
	if msgs := decode[[]messageJSON](t, b); code != 200 || len(msgs) != 1 || string(msgs[0].Payload) != "from the module" {
		t.Fatalf("module messages: %d %s", code, b)
	}
	if code, b := call(t, h, "GET", "/devices/d1/messages", ""); code != 200 || string(b) != "[]\n" {
		t.Fatalf("device messages: %d %s", code, b)
	}

	for _, c := range []*dev{mod, dv} {
		c.subscribe(t, iothub.TopicTwinDesired+"#", 0)
		c.subscribe(t, iothub.TopicMethodsPost+"#", 0)
	}
	if code, b := call(t, h, "PATCH", "/devices/d1/modules/m1/twin/desired", `{"fan":true}`); code != 200 {
		t.Fatalf("patch the module's desired: %d %s", code, b)
	}
	mod.waitMsg(t, iothub.TopicTwinDesired+"?$version=2")
	code, b = call(t, h, "GET", "/devices/d1/modules/m1/twin", "")
	if code != 200 || decode[map[string]map[string]any](t, b)["desired"]["fan"] != true {
		t.Fatalf("module twin: %d %s", code, b)
	}
	if code, b := call(t, h, "GET", "/devices/d1/twin", ""); code != 200 || strings.Contains(string(b), "fan") {
		t.Fatalf("device twin: %d %s", code, b)
	}

	result := make(chan []byte, 1)
	go func() {
		_, b := call(t, h, "POST", "/devices/d1/modules/m1/methods/ping?timeout=5", `1`)
		result <- b
	}()
	req := mod.waitMsg(t, iothub.TopicMethodsPost+"ping/")
	mod.publish(t, iothub.TopicMethodsRes+"200/?$rid="+strings.TrimPrefix(req.Topic(), iothub.TopicMethodsPost+"ping/?$rid="),
		0, []byte(`"pong"`))
	if got := <-result; string(got) != `{"payload":"pong","status":200}`+"\n" {
		t.Fatalf("module method: %s", got)
	}
	select {
	case m := <-dv.msgs:
		t.Fatalf("the device got its module's %s", m.Topic())
	default:
	}
}
