package iothub

import "testing"

// Microsoft's documented example (concepts-symmetric-key-attestation: "Group enrollments"): the device key derived
// from a group key for one registration id.
func TestDeriveDeviceKeyDocumentedExample(t *testing.T) {
	got, err := DeriveDeviceKey("8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
		"sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6")
	if err != nil {
		t.Fatal(err)
	}
	if want := "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="; got != want {
		t.Fatalf("derived key %s, want %s", got, want)
	}
	if _, err := DeriveDeviceKey("not base64!", "x"); err == nil {
		t.Fatal("a group key that is not base64 was accepted")
	}
}

func TestDPSTopics(t *testing.T) {
	for _, c := range []struct {
		topic      string
		status     int
		rid        string
		retryAfter int
	}{
		{DPSResponseTopic(202, "r1", 3), 202, "r1", 3},
		{DPSResponseTopic(200, "r2", -1), 200, "r2", -1},
		{"$dps/registrations/res/429/?$rid=7&retry-after=x", 429, "7", -1},
	} {
		status, rid, ra, ok := ParseDPSResponse(c.topic)
		if !ok || status != c.status || rid != c.rid || ra != c.retryAfter {
			t.Errorf("%s: got %d %q %d %v", c.topic, status, rid, ra, ok)
		}
	}
	if _, _, _, ok := ParseDPSResponse("$iothub/twin/res/200/?$rid=1"); ok {
		t.Error("a twin response parsed as a DPS response")
	}
	if got := DPSStatusTopic("1", "op"); got != "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1&operationId=op" {
		t.Error(got)
	}
	if got := DPSUsername("0ne1", "dev"); got != "0ne1/registrations/dev/api-version=2019-03-31" {
		t.Error(got)
	}
}
