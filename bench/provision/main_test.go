package main

import (
	"testing"
	"time"
)

// The bench in small: 30 devices make no registration across a hub outage and exactly one each when moved.
func TestFleetRegistersOnlyWhenMoved(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hubs and 30 clients")
	}
	r, err := run(30, 0, 2*time.Second, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ total, perDevice int }{{30, 1}, {0, 0}, {30, 1}}
	for i, p := range r.Phases {
		if p.Registrations != want[i].total || p.PerDeviceMin != want[i].perDevice ||
			p.PerDeviceMax != want[i].perDevice {
			t.Errorf("%s: %d registrations, per device %d..%d; want %d, %d each", p.Name, p.Registrations,
				p.PerDeviceMin, p.PerDeviceMax, want[i].total, want[i].perDevice)
		}
	}
}
