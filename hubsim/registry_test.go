package hubsim

import (
	"errors"
	"fmt"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// openRegistry loads dir's registry as a restarted hub would; the registry is closed when the test ends.
func openRegistry(t testing.TB, dir string) *registry {
	t.Helper()
	r, err := loadRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.close() })
	return r
}

// fleet returns n device specs fleet-0000, fleet-0001, ...
func fleet(n int) []DeviceSpec {
	specs := make([]DeviceSpec, n)
	for i := range specs {
		specs[i] = DeviceSpec{ID: fmt.Sprintf("fleet-%04d", i)}
	}
	return specs
}

func TestAddDevicesRegistersABatchThatSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	h, err := Start(Config{Dir: dir, MQTTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	specs := fleet(2000)
	key := randomKey()
	specs[7].Key, specs[9].Disabled = key, true
	added, err := h.AddDevices(specs)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != len(specs) || added[7].PrimaryKey != key || added[9].Status != StatusDisabled || added[8].Status != StatusEnabled {
		t.Fatalf("AddDevices returned %d devices, #7 %+v, #9 %+v", len(added), added[7], added[9])
	}
	for i, d := range added {
		if d.ID != specs[i].ID || d.PrimaryKey == "" || d.SecondaryKey == "" {
			t.Fatalf("device %d: %+v, want id %s with keys", i, d, specs[i].ID)
		}
	}
	_ = h.Close()

	h2 := startHub(t, func(c *Config) { c.Dir = dir })
	got := h2.Devices()
	if len(got) != len(added) {
		t.Fatalf("after restart %d devices, want %d", len(got), len(added))
	}
	for i, d := range got { // fleet ids sort in creation order
		if d != added[i] {
			t.Fatalf("after restart %+v, want %+v", d, added[i])
		}
	}
}

func TestAddDevicesWithABadEntryRegistersNone(t *testing.T) {
	h := startHub(t, nil)
	addDevice(t, h, "d1")
	for _, c := range []struct {
		name string
		bad  DeviceSpec
		want error // nil: any error
	}{
		{"bad id", DeviceSpec{ID: "bad id"}, nil},
		{"empty id", DeviceSpec{}, nil},
		{"module id", DeviceSpec{ID: "d1/m"}, errDeviceIDInvalid},
		{"bad key", DeviceSpec{ID: "x", Key: "not base64!"}, nil},
		{"registered id", DeviceSpec{ID: "d1"}, ErrExists},
		{"id given twice", DeviceSpec{ID: "fleet-0001"}, ErrExists},
	} {
		specs := append(fleet(3), c.bad)
		if _, err := h.AddDevices(specs); err == nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want an error wrapping %v", c.name, err, c.want)
		}
		if n := len(h.Devices()); n != 1 {
			t.Errorf("%s: %d devices registered, want only d1", c.name, n)
		}
	}
	// A single add keeps AddDevice's error text; a batch names the culprit.
	_, one := h.AddDevice("d1", "")
	_, batch := h.AddDevices(append(fleet(1), DeviceSpec{ID: "d1"}))
	if one == nil || batch == nil || batch.Error() != `entry 1 ("d1"): `+one.Error() {
		t.Errorf("errors: single %v, batch %v", one, batch)
	}
	_ = h.Close() // releases the registry's file lock
	if r := openRegistry(t, h.cfg.Dir); len(r.devices) != 1 {
		t.Fatalf("registry file: %d devices; want only d1", len(r.devices))
	}
}

func TestAddDevicesForgetsTheBatchWhenTheSaveFails(t *testing.T) {
	h := startHub(t, nil)
	// A closed database fails every commit, as a broken disk would, even for root.
	st := h.reg.st
	if err := st.db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.AddDevices(fleet(10)); err == nil {
		t.Fatal("AddDevices succeeded without saving")
	}
	if _, err := h.AddDevice("d1", ""); err == nil {
		t.Fatal("AddDevice succeeded without saving")
	}
	if n := len(h.Devices()); n != 0 {
		t.Fatalf("%d devices registered after failed saves", n)
	}
	_ = st.sync().wait() // the writer is done with the closed database (the failed batches' deletions fail too)
	db, err := bolt.Open(st.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	st.db = db
	if _, err := h.AddDevices(fleet(10)); err != nil {
		t.Fatalf("after the failure: %v", err)
	}
}
