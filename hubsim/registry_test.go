package hubsim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// registryState is what a restarted hub must show of every identity: registry entry and twin.
func registryState(t testing.TB, h *Hub) map[string]string {
	t.Helper()
	state := map[string]string{}
	for _, d := range h.Devices() {
		tw, err := h.Twin(d.ID)
		if err != nil {
			t.Fatal(err)
		}
		state[d.ID] = fmt.Sprintf("%s %s %s %s", d.PrimaryKey, d.SecondaryKey, d.Status, tw)
	}
	return state
}

func sameState(t testing.TB, what string, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d identities, want %d", what, len(got), len(want))
	}
	for id, w := range want {
		if got[id] != w {
			t.Fatalf("%s: %s is %q, want %q", what, id, got[id], w)
		}
	}
}

// copyRegistry copies dir's registry.db to a new state dir: with the hub still running, that is what a hubsim
// killed at this moment would restart from.
func copyRegistry(t testing.TB, dir string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, registryDB))
	if err != nil {
		t.Fatal(err)
	}
	crashed := t.TempDir()
	if err := os.WriteFile(filepath.Join(crashed, registryDB), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return crashed
}

func TestRegistryChangesAreOnDiskOnceAcknowledged(t *testing.T) {
	h := startHub(t, nil)
	dv := mustConnect(t, h, addDevice(t, h, "d1"))
	addDevice(t, h, "d2")
	addDevice(t, h, "d3")
	if _, err := h.AddModule("d1", "m", ""); err != nil {
		t.Fatal(err)
	}
	dv.subscribe(t, "$iothub/twin/res/#", 0)
	dv.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid=1", 1, []byte(`{"temp":21.50,"n":12345678901234567890}`))
	if m := dv.waitMsg(t, "$iothub/twin/res/"); m.Topic() != "$iothub/twin/res/204/?$rid=1&$version=2" {
		t.Fatalf("reported patch response %s", m.Topic())
	}
	if _, err := h.UpdateDesired("d1", []byte(`{"fan":"on"}`)); err != nil {
		t.Fatal(err)
	}
	if err := h.SetDeviceEnabled("d2", false); err != nil {
		t.Fatal(err)
	}
	if err := h.rotateKey("d3"); err != nil {
		t.Fatal(err)
	}
	// Last, so that no later change's commit carries it: its return alone must mean it is on disk.
	if _, err := h.patchReported(identity{device: "d1", module: "m"}, []byte(`{"module":true}`)); err != nil {
		t.Fatal(err)
	}
	want := registryState(t, h)
	if !strings.Contains(want["d1"], `"n":12345678901234567890`) || !strings.Contains(want["d1"], `"temp":21.50`) {
		t.Fatalf("twin %s", want["d1"])
	}

	crashed := startHub(t, func(c *Config) { c.Dir = copyRegistry(t, h.cfg.Dir) })
	sameState(t, "after a crash", registryState(t, crashed), want)
	if err := h.Fault(Fault{Kind: FaultRestart}); err != nil {
		t.Fatal(err)
	}
	sameState(t, "after the restart fault", registryState(t, h), want)
	_ = h.Close()
	sameState(t, "after a restart", registryState(t, startHub(t, func(c *Config) { c.Dir = h.cfg.Dir })), want)
}

func TestRegistryCommitTornByACrashLeavesThePreviousOne(t *testing.T) {
	h := startHub(t, nil)
	addDevice(t, h, "d1")
	if _, err := h.patchReported(identity{device: "d1"}, []byte(`{"step":1}`)); err != nil {
		t.Fatal(err)
	}
	want := registryState(t, h)
	if _, err := h.patchReported(identity{device: "d1"}, []byte(`{"step":2}`)); err != nil {
		t.Fatal(err)
	}
	crashed := copyRegistry(t, h.cfg.Dir)
	path := filepath.Join(crashed, registryDB)
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	// bbolt alternates two meta pages, the last step of a commit; tear the last commit's one.
	meta := int64(tx.ID()%2) * int64(db.Info().PageSize)
	_ = tx.Rollback()
	_ = db.Close()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 64), meta+16); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	sameState(t, "after a torn commit", registryState(t, startHub(t, func(c *Config) { c.Dir = crashed })), want)
}

func TestReportedPatchIsNotAcknowledgedUnlessSaved(t *testing.T) {
	h := startHub(t, nil)
	dv := mustConnect(t, h, addDevice(t, h, "d1"))
	dv.subscribe(t, "$iothub/twin/res/#", 0)
	st := h.reg.st
	if err := st.db.Close(); err != nil { // fails every commit, as a broken disk would
		t.Fatal(err)
	}
	dv.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid=1", 1, []byte(`{"temp":21}`))
	if m := dv.waitMsg(t, "$iothub/twin/res/"); m.Topic() != "$iothub/twin/res/500/?$rid=1" {
		t.Fatalf("unsaved patch answered %s", m.Topic())
	}
}

func TestRegistryMigratesRegistryJSON(t *testing.T) {
	dir := t.TempDir()
	k := []string{randomKey(), randomKey(), randomKey(), randomKey(), randomKey(), randomKey()}
	// As the hubsim before registry.db wrote it, with the leftovers of crashes: its own temporary file and a
	// migration's half-written database.
	legacy := `{
  "devices": [
    {"id": "d1", "primaryKey": "` + k[0] + `", "secondaryKey": "` + k[1] + `",
     "twin": {"desired": {"n": 12345678901234567890, "x": 1.50}, "desiredVersion": 3,
              "reported": {"temp": {"v": 21.5}}, "reportedVersion": 7}},
    {"id": "d1/m", "primaryKey": "` + k[2] + `", "secondaryKey": "` + k[3] + `",
     "twin": {"desired": {}, "desiredVersion": 1, "reported": {}, "reportedVersion": 1}},
    {"id": "d2", "primaryKey": "` + k[4] + `", "secondaryKey": "` + k[5] + `", "disabled": true,
     "twin": {"desired": null, "desiredVersion": 0, "reported": null, "reportedVersion": 0}}
  ]
}`
	for name, data := range map[string]string{
		legacyRegistryFile:          legacy,
		legacyRegistryFile + ".tmp": legacy[:40],
		registryDB + ".tmp":         "half a database",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{
		"d1":   k[0] + " " + k[1] + ` enabled {"desired":{"$version":3,"n":12345678901234567890,"x":1.50},"reported":{"$version":7,"temp":{"v":21.5}}}`,
		"d1/m": k[2] + " " + k[3] + ` enabled {"desired":{"$version":1},"reported":{"$version":1}}`,
		"d2":   k[4] + " " + k[5] + ` disabled {"desired":{"$version":1},"reported":{"$version":1}}`,
	}
	h := startHub(t, func(c *Config) { c.Dir = dir })
	sameState(t, "migrated", registryState(t, h), want)
	if _, err := os.Stat(filepath.Join(dir, legacyRegistryFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("registry.json still in place: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, legacyRegistryFile+".migrated")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, registryDB+".tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the temporary database is left: %v", err)
	}
	v, err := h.patchReported(identity{device: "d1"}, []byte(`{"temp":null}`))
	if err != nil || v != 8 {
		t.Fatalf("patch after migration: version %d, %v", v, err)
	}
	want["d1"] = k[0] + " " + k[1] + ` enabled {"desired":{"$version":3,"n":12345678901234567890,"x":1.50},"reported":{"$version":8}}`
	_ = h.Close()
	sameState(t, "restarted after migration", registryState(t, startHub(t, func(c *Config) { c.Dir = dir })), want)
}

func TestRegistryCreationIgnoresAHalfWrittenDatabase(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, registryDB+".tmp"), []byte("half a database"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := startHub(t, func(c *Config) { c.Dir = dir })
	d := addDevice(t, h, "d1")
	_ = h.Close()
	if got, err := startHub(t, func(c *Config) { c.Dir = dir }).Device("d1"); err != nil || got != d {
		t.Fatalf("after a restart %+v, %v; want %+v", got, err, d)
	}
}
