package hubsim

import (
	"fmt"
	"slices"
	"strings"
)

// The hub's side of DPS: what the provisioning service does to a hub's registry when it assigns a device there or
// moves it away.

// provision makes id an enabled device with the credentials DPS gives it, creating it or updating an existing
// one, as DPS does on assignment; twin, when not nil, replaces the device's twin (a migration from another hub). It
// returns once the change is on disk, and drops a live connection made with other credentials.
func (h *Hub) provision(id string, c hubCred, twin *twin) error {
	if strings.Contains(id, "/") {
		return fmt.Errorf("%w: %q contains '/'", errDeviceIDInvalid, id)
	}
	spec := DeviceSpec{ID: id, Key: c.primary, Auth: c.auth, Thumbprints: c.thumbprints}
	if err := validateAuth(spec); err != nil {
		return err
	}
	if c.auth == "" {
		for _, k := range []string{c.primary, c.secondary} {
			if err := validateKey(k); err != nil {
				return err
			}
		}
	}
	if c.caPEM != "" {
		if err := h.AddCA([]byte(c.caPEM)); err != nil {
			return err
		}
	}
	h.mu.Lock()
	rec, ok := h.reg.devices[id]
	if !ok {
		recs, err := h.reg.add([]DeviceSpec{spec})
		if err != nil {
			h.mu.Unlock()
			return err
		}
		rec = recs[0]
	}
	changed := ok && (rec.PrimaryKey != c.primary || rec.SecondaryKey != c.secondary || rec.Auth != c.auth ||
		!slices.Equal(rec.Thumbprints, c.thumbprints))
	rec.PrimaryKey, rec.SecondaryKey, rec.Disabled = c.primary, c.secondary, false
	rec.Auth, rec.Thumbprints = c.auth, append([]string(nil), c.thumbprints...)
	if twin != nil {
		rec.Twin = *twin
	}
	saved := h.reg.persist(rec)
	s := h.sessions[id]
	h.mu.Unlock()
	err := saved.wait()
	if changed && s != nil {
		h.dropSession(s, "device credentials changed by provisioning", false)
	}
	return err
}

// RemoveDevice deletes a device and its modules from the registry, dropping their live connections and queued C2D
// messages; their connects are then refused as unknown devices (CONNACK 2).
func (h *Hub) RemoveDevice(id string) error {
	if strings.Contains(id, "/") {
		return fmt.Errorf("%w: %q contains '/'", errDeviceIDInvalid, id)
	}
	h.mu.Lock()
	if _, ok := h.reg.devices[id]; !ok {
		h.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	var gone []*deviceRecord
	var live []*session
	for key, rec := range h.reg.devices {
		if key == id || strings.HasPrefix(key, id+"/") {
			gone = append(gone, rec)
			delete(h.c2d, key)
			if s := h.sessions[key]; s != nil {
				live = append(live, s)
			}
		}
	}
	h.reg.forget(gone)
	saved := h.reg.st.sync()
	h.mu.Unlock()
	for _, s := range live {
		h.dropSession(s, "device deleted", false)
	}
	return saved.wait()
}

// twinOf returns a copy of a device's twin, nil when the device is not registered.
func (h *Hub) twinOf(id string) *twin {
	h.mu.Lock()
	defer h.mu.Unlock()
	rec, ok := h.reg.devices[id]
	if !ok {
		return nil
	}
	cp, err := decodeRecord(encodeRecord(rec))
	if err != nil {
		return nil
	}
	return &cp.Twin
}
