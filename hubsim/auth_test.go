package hubsim

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/iothub"
)

func TestParseUsernameForms(t *testing.T) {
	for _, c := range []struct {
		user, clientID string
		want           identity
		host           string
	}{
		{"localhost/d1/?api-version=2021-04-12", "d1", identity{device: "d1"}, "localhost"},
		{"localhost:18883/d1/?api-version=2021-04-12&DeviceClientType=x%2F1", "d1", identity{device: "d1"}, "localhost:18883"},
		{"localhost/d1/api-version=2018-06-30", "d1", identity{device: "d1"}, "localhost"},
		{"localhost/d1", "d1", identity{device: "d1"}, "localhost"},
		{"localhost/d1/", "d1", identity{device: "d1"}, "localhost"},
		{"localhost/d1/m1/?api-version=2021-04-12", "d1/m1", identity{"d1", "m1"}, "localhost"},
		{"localhost/d?=1/?api-version=1", "d?=1", identity{device: "d?=1"}, "localhost"},
		// A user name for another identity than the client id still parses; the hub then rejects the mismatch.
		{"localhost/d2/?api-version=1", "d1", identity{device: "d2"}, "localhost"},
	} {
		host, id, err := parseUsername(c.user, c.clientID)
		if err != nil || id != c.want || host != c.host {
			t.Errorf("parseUsername(%q, %q) = %q, %+v, %v; want %q, %+v", c.user, c.clientID, host, id, err, c.host, c.want)
		}
	}
	for _, bad := range []string{"", "localhost", "/d1/?api-version=1", "localhost//?api-version=1", "localhost/a/b/c/?x=1"} {
		if _, _, err := parseUsername(bad, "zz"); err == nil {
			t.Errorf("parseUsername(%q) accepted a malformed user name", bad)
		}
	}
}

func TestCheckTokenCases(t *testing.T) {
	key := randomKey()
	id := identity{device: "d1"}
	now := time.Now()
	tok := func(resource, k string, exp time.Time) *iothub.SAS {
		s, err := iothub.ParseSAS(sasToken(t, resource, k, exp))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ok := []*iothub.SAS{
		tok("localhost/devices/d1", key, now.Add(time.Minute)),
		tok("localhost:18883/devices/d1", key, now.Add(time.Minute)),
		tok("LOCALHOST/devices/d1/", key, now.Add(time.Minute)),
		tok("localhost/devices", key, now.Add(time.Minute)),
		tok("127.0.0.1:8883", key, now.Add(time.Minute)),
	}
	for _, s := range ok {
		if r := checkToken(s, id, []string{randomKey(), key}, hostNames, now, 0); r != nil {
			t.Errorf("token for %s refused: %v", s.Resource, r)
		}
	}
	expired := tok("localhost/devices/d1", key, now.Add(-30*time.Second))
	if r := checkToken(expired, id, []string{key}, hostNames, now, time.Minute); r != nil {
		t.Errorf("token expired within the skew refused: %v", r)
	}
	for name, c := range map[string]*iothub.SAS{
		"expired":      expired,
		"other device": tok("localhost/devices/d2", key, now.Add(time.Minute)),
		"prefix only":  tok("localhost/devices/d", key, now.Add(time.Minute)),
		"module scope": tok("localhost/devices/d1/modules/m", key, now.Add(time.Minute)),
		"other host":   tok("myhub.azure-devices.net/devices/d1", key, now.Add(time.Minute)),
		"wrong key":    tok("localhost/devices/d1", randomKey(), now.Add(time.Minute)),
	} {
		r := checkToken(c, id, []string{key}, hostNames, now, 0)
		if r == nil || r.kind != rejectNotAuthorized {
			t.Errorf("%s: got %v, want not authorized", name, r)
		}
	}
	policy, err := iothub.ParseSAS(strings.Replace(sasToken(t, "localhost", key, now.Add(time.Minute)), "&se=", "&skn=owner&se=", 1))
	if err != nil {
		t.Fatal(err)
	}
	if r := checkToken(policy, id, []string{key}, hostNames, now, 0); r == nil {
		t.Error("policy token accepted")
	}
}

func TestRegistryValidation(t *testing.T) {
	r := openRegistry(t, t.TempDir())
	for _, bad := range []string{"", "has space", "slash/", strings.Repeat("x", 129), "tab\t", "é"} {
		if _, err := r.addOne(DeviceSpec{ID: bad}); err == nil {
			t.Errorf("id %q accepted", bad)
		}
	}
	if _, err := r.addOne(DeviceSpec{ID: "d1", Key: "not base64!"}); err == nil {
		t.Error("bad key accepted")
	}
	if _, err := r.addOne(DeviceSpec{ID: "d-1:.+%_#*?!(),=@$'"}); err != nil {
		t.Errorf("IoT Hub's special characters refused: %v", err)
	}
	if _, err := r.addOne(DeviceSpec{ID: "d1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.addOne(DeviceSpec{ID: "d1"}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate: got %v, want ErrExists", err)
	}
}
