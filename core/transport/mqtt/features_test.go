package mqtt

import (
	"testing"

	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/transporttest"
	"github.com/iotconn/iotconn/hubsim"
)

// The twin and methods features against the emulator: requests are answered by request id, desired updates and
// method calls arrive, and a method answer reaches the caller.
func TestTwinAndMethodFeatures(t *testing.T) {
	h := startHub(t, hubsim.Config{})
	key := transporttest.AddDevice(t, h, "dev1")
	r := transporttest.NewRecorder()
	p := params(t, h, "dev1", key, r)
	p.Features = transport.FeatureTwin | transport.FeatureMethods
	c := mustDial(t, p)
	transporttest.CheckTwinAndMethods(t, h, "dev1", c, r)
	select {
	case m := <-r.Msgs:
		t.Fatalf("a C2D message without the C2D feature: %+v", m)
	default:
	}
}
