package iothub

import "testing"

func TestTwinAndMethodTopicsRoundTrip(t *testing.T) {
	if status, rid, version, ok := ParseTwinResponse(TwinResponseTopic(204, "a1", 7)); !ok || status != 204 ||
		rid != "a1" || version != 7 {
		t.Fatalf("twin response: %d %q %d %v", status, rid, version, ok)
	}
	if status, rid, version, ok := ParseTwinResponse(TwinResponseTopic(200, "9", 0)); !ok || status != 200 ||
		rid != "9" || version != 0 {
		t.Fatalf("twin response without a version: %d %q %d %v", status, rid, version, ok)
	}
	if version, ok := ParseDesired(DesiredTopic(12)); !ok || version != 12 {
		t.Fatalf("desired: %d %v", version, ok)
	}
	if name, rid, ok := ParseMethodRequest(MethodRequestTopic("reboot", "3f")); !ok || name != "reboot" || rid != "3f" {
		t.Fatalf("method: %q %q %v", name, rid, ok)
	}
	for _, bad := range []string{"$iothub/twin/res/x/?$rid=1", "$iothub/twin/res/200/", TopicTwinDesired,
		"$iothub/methods/POST//?$rid=1", "devices/d/messages/events/"} {
		_, _, _, okRes := ParseTwinResponse(bad)
		_, okDes := ParseDesired(bad)
		_, _, okM := ParseMethodRequest(bad)
		if okRes || okDes || okM {
			t.Errorf("%q parsed", bad)
		}
	}
	if rid, ok := TopicQuery(TwinGetTopic("r 1"), "$rid"); !ok || rid != "r 1" {
		t.Fatalf("rid %q", rid)
	}
}
