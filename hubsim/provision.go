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
		h.dropSession(s, "device credentials changed by provisioning", dropAuth)
	}
	return err
}

// RemoveDevice deletes a device and its modules from the registry, dropping their live connections and queued C2D
// messages; their connects are then refused as unknown devices (CONNACK 2).
func (h *Hub) RemoveDevice(id string) error {
	if strings.Contains(id, "/") {
		return fmt.Errorf("%w: %q contains '/'", errDeviceIDInvalid, id)
	}
	_, missing, err := h.removeDevices([]string{id})
	if err == nil && len(missing) > 0 {
		err = fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return err
}

// removeDevices is RemoveDevice for many devices in one registry commit, as a move of a whole group needs; it
// returns the twins the devices had and the ids that were not registered.
func (h *Hub) removeDevices(ids []string) (twins map[string]*twin, missing []string, err error) {
	wanted := make(map[string]bool, len(ids))
	for _, id := range ids {
		wanted[id] = true
	}
	twins = map[string]*twin{}
	var gone []*deviceRecord
	var live []*session
	h.mu.Lock()
	for key, rec := range h.reg.devices {
		dev, _, isModule := strings.Cut(key, "/")
		if !wanted[dev] {
			continue
		}
		gone = append(gone, rec)
		delete(h.c2d, key)
		if s := h.sessions[key]; s != nil {
			live = append(live, s)
		}
		if !isModule {
			twins[key] = twinCopy(rec)
		}
	}
	for _, id := range ids {
		if _, ok := h.reg.devices[id]; !ok {
			missing = append(missing, id)
		}
	}
	h.reg.forget(gone)
	saved := h.reg.st.sync()
	h.mu.Unlock()
	for _, s := range live {
		h.dropSession(s, "device deleted", dropDisabled)
	}
	return twins, missing, saved.wait()
}

// twinOf returns a copy of a device's twin, nil when the device is not registered.
func (h *Hub) twinOf(id string) *twin {
	h.mu.Lock()
	defer h.mu.Unlock()
	if rec, ok := h.reg.devices[id]; ok {
		return twinCopy(rec)
	}
	return nil
}

// twinCopy deep-copies a record's twin through its stored form; h.mu held.
func twinCopy(rec *deviceRecord) *twin {
	cp, err := decodeRecord(encodeRecord(rec))
	if err != nil {
		return nil
	}
	return &cp.Twin
}
