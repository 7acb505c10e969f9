package hubsim

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

const registryFile = "registry.json"

// Device is one identity of the registry as the Go API and the control API show it.
type Device struct {
	ID           string `json:"id"`
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
	Status       string `json:"status"` // "enabled" or "disabled"
	Connected    bool   `json:"connected"`
	Connections  int    `json:"connections"` // accepted connects since the hub started
	PendingC2D   int    `json:"pendingC2D"`  // C2D messages queued and not yet acknowledged
}

// Device status strings, as IoT Hub's registry spells them.
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"
)

// deviceRecord is what the registry file keeps per device.
type deviceRecord struct {
	ID           string `json:"id"`
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
	Disabled     bool   `json:"disabled,omitempty"`
	Twin         twin   `json:"twin"`
}

// registry is the persisted device list. It knows nothing of transports; the hub's lock guards it.
type registry struct {
	path    string
	devices map[string]*deviceRecord
}

func loadRegistry(dir string) (*registry, error) {
	r := &registry{path: filepath.Join(dir, registryFile), devices: map[string]*deviceRecord{}}
	data, err := os.ReadFile(r.path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	var stored struct {
		Devices []*deviceRecord `json:"devices"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // twin values keep their exact numbers
	if err := dec.Decode(&stored); err != nil {
		return nil, fmt.Errorf("registry %s: %w", r.path, err)
	}
	for _, d := range stored.Devices {
		if err := validateIdentity(d.ID); err != nil {
			return nil, fmt.Errorf("registry %s: %w", r.path, err)
		}
		d.Twin.init()
		r.devices[d.ID] = d
	}
	return r, nil
}

// save writes the registry atomically so a crash never leaves half a file.
func (r *registry) save() error {
	var stored struct {
		Devices []*deviceRecord `json:"devices"`
	}
	for _, id := range r.ids() {
		stored.Devices = append(stored.Devices, r.devices[id])
	}
	data, err := json.MarshalIndent(stored, "", "  ")
	if err != nil {
		return err
	}
	tmp := r.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, r.path)
}

func (r *registry) ids() []string {
	ids := make([]string, 0, len(r.devices))
	for id := range r.devices {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// add creates identities, devices ("d") or modules ("d/m"), all or none: the first bad one fails the lot and those
// added before it are forgotten. A spec's key "" draws a random one; the secondary key is always random.
func (r *registry) add(specs []DeviceSpec) ([]*deviceRecord, error) {
	recs := make([]*deviceRecord, 0, len(specs))
	for i, s := range specs {
		d, err := r.addOne(s)
		if err != nil {
			r.remove(recs)
			if len(specs) > 1 { // name the culprit of a batch; a single add keeps AddDevice's error text
				err = fmt.Errorf("entry %d (%q): %w", i, s.ID, err)
			}
			return nil, err
		}
		recs = append(recs, d)
	}
	return recs, nil
}

func (r *registry) addOne(s DeviceSpec) (*deviceRecord, error) {
	if err := validateIdentity(s.ID); err != nil {
		return nil, err
	}
	if _, ok := r.devices[s.ID]; ok {
		return nil, fmt.Errorf("%w: %s", ErrExists, s.ID)
	}
	key := s.Key
	if key == "" {
		key = randomKey()
	} else if err := validateKey(key); err != nil {
		return nil, err
	}
	d := &deviceRecord{ID: s.ID, PrimaryKey: key, SecondaryKey: randomKey(), Disabled: s.Disabled}
	d.Twin.init()
	r.devices[s.ID] = d
	return d, nil
}

func (r *registry) remove(recs []*deviceRecord) {
	for _, d := range recs {
		delete(r.devices, d.ID)
	}
}

func validateKey(key string) error {
	raw, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return fmt.Errorf("key is not valid base64: %w", err)
	}
	if len(raw) < 16 || len(raw) > 64 {
		return fmt.Errorf("key must decode to 16..64 bytes, got %d", len(raw))
	}
	return nil
}

func validateIdentity(id string) error {
	d, m, isModule := strings.Cut(id, "/")
	if err := validateDeviceID(d); err != nil {
		return err
	}
	if isModule {
		return validateDeviceID(m)
	}
	return nil
}

// validateDeviceID applies IoT Hub's device id rule: 1..128 ASCII letters, digits and - : . + % _ # * ? ! ( ) , = @ $ '
func validateDeviceID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("device id must have 1..128 characters, got %d", len(id))
	}
	for _, c := range id {
		isAlnum := c < 128 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9')
		if !isAlnum && !strings.ContainsRune("-:.+%_#*?!(),=@$'", c) {
			return fmt.Errorf("device id %q: character %q is not allowed", id, c)
		}
	}
	return nil
}

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return base64.StdEncoding.EncodeToString(b)
}
