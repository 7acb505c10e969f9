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

// The registry lives in registry.db (see store); registry.json is where hubsim kept it before, as one JSON document
// rewritten whole on every change, and is migrated on the first start that finds no registry.db.
const (
	registryDB         = "registry.db"
	legacyRegistryFile = "registry.json"
)

// Device is one identity of the registry as the Go API and the control API show it.
type Device struct {
	ID           string `json:"id"`
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
	Status       string `json:"status"` // "enabled" or "disabled"
	Connected    bool   `json:"connected"`
	Connections  int    `json:"connections"` // accepted connects since the hub started
	PendingC2D   int    `json:"pendingC2D"`  // C2D messages queued and not yet acknowledged
	Auth         string `json:"auth"`        // AuthSAS, AuthSelfSigned or AuthCA
	// AuthSelfSigned: the certificate thumbprints the device may present.
	PrimaryThumbprint   string `json:"primaryThumbprint,omitempty"`
	SecondaryThumbprint string `json:"secondaryThumbprint,omitempty"`
}

// Device status strings, as IoT Hub's registry spells them.
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"
)

// deviceRecord is what the registry file keeps per device.
type deviceRecord struct {
	ID           string   `json:"id"`
	PrimaryKey   string   `json:"primaryKey"`
	SecondaryKey string   `json:"secondaryKey"`
	Disabled     bool     `json:"disabled,omitempty"`
	Twin         twin     `json:"twin"`
	Auth         string   `json:"auth,omitempty"` // "" = AuthSAS
	Thumbprints  []string `json:"thumbprints,omitempty"`
}

// registry is the device list, in memory and persisted. It knows nothing of transports; the hub's lock guards it.
// Memory is the truth the hub serves; every change queues the changed records to the store under the same lock.
type registry struct {
	st      *store
	devices map[string]*deviceRecord
}

// loadRegistry opens dir's registry, creating it (from an old registry.json if there is one) when missing.
func loadRegistry(dir string) (*registry, error) {
	path := filepath.Join(dir, registryDB)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := createRegistry(dir); err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
	} else if err != nil {
		return nil, err
	}
	r := &registry{devices: map[string]*deviceRecord{}}
	st, err := openStore(path, r.loadRecord)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	r.st = st
	return r, nil
}

func (r *registry) loadRecord(data []byte) error {
	d, err := decodeRecord(data)
	if err != nil {
		return err
	}
	r.devices[d.ID] = d
	return nil
}

// decodeRecord reads a device record, keeping twin numbers exactly as written.
func decodeRecord(data []byte) (*deviceRecord, error) {
	var d deviceRecord
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&d); err != nil {
		return nil, err
	}
	if err := validateIdentity(d.ID); err != nil {
		return nil, err
	}
	d.Twin.init()
	return &d, nil
}

// createRegistry creates registry.db with the devices of registry.json, if an older hubsim left one, and then
// renames registry.json to registry.json.migrated. A crash before the database is in place leaves registry.json to
// migrate again; one after leaves registry.db, which wins from then on.
func createRegistry(dir string) error {
	legacy := filepath.Join(dir, legacyRegistryFile)
	data, err := os.ReadFile(legacy)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	recs := map[string][]byte{}
	if data != nil {
		var stored struct {
			Devices []json.RawMessage `json:"devices"`
		}
		if err := json.Unmarshal(data, &stored); err != nil {
			return fmt.Errorf("%s: %w", legacy, err)
		}
		for _, raw := range stored.Devices {
			d, err := decodeRecord(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", legacy, err)
			}
			recs[d.ID] = encodeRecord(d)
		}
	}
	if err := createStore(filepath.Join(dir, registryDB), recs); err != nil {
		return err
	}
	if data == nil {
		return nil
	}
	return os.Rename(legacy, legacy+".migrated")
}

func encodeRecord(d *deviceRecord) []byte {
	b, _ := json.Marshal(d) // strings, bools, ints and decoded JSON always marshal
	return b
}

// persist queues the records as they are now for one commit. Call it under the hub's lock and wait outside it.
func (r *registry) persist(recs ...*deviceRecord) *commit {
	puts := make(map[string][]byte, len(recs))
	for _, d := range recs {
		puts[d.ID] = encodeRecord(d)
	}
	return r.st.put(puts)
}

// forget removes records whose registration failed to commit, from memory and, should a later commit have written
// one of them, from disk.
func (r *registry) forget(recs []*deviceRecord) {
	dels := make(map[string][]byte, len(recs))
	for _, d := range recs {
		delete(r.devices, d.ID)
		dels[d.ID] = nil
	}
	r.st.put(dels)
}

// reload replaces memory with what is on disk once everything queued is, as a restart of hubsim would see it.
func (r *registry) reload() error {
	if err := r.st.sync().wait(); err != nil {
		return err
	}
	old := r.devices
	r.devices = map[string]*deviceRecord{}
	if err := r.st.load(r.loadRecord); err != nil {
		r.devices = old
		return err
	}
	return nil
}

func (r *registry) close() error { return r.st.close() }

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
			for _, d := range recs {
				delete(r.devices, d.ID)
			}
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
	if err := validateAuth(s); err != nil {
		return nil, err
	}
	if s.Auth == AuthSelfSigned || s.Auth == AuthCA { // no keys: a token never authenticates it
		d := &deviceRecord{ID: s.ID, Disabled: s.Disabled, Auth: s.Auth, Thumbprints: append([]string(nil), s.Thumbprints...)}
		d.Twin.init()
		r.devices[s.ID] = d
		return d, nil
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

// validateAuth checks a spec's authentication type against its key and thumbprints.
func validateAuth(s DeviceSpec) error {
	switch s.Auth {
	case "", AuthSAS:
		if len(s.Thumbprints) > 0 {
			return errors.New("thumbprints are for auth " + AuthSelfSigned)
		}
	case AuthSelfSigned:
		if len(s.Thumbprints) == 0 || len(s.Thumbprints) > 2 {
			return fmt.Errorf("auth %s needs one or two thumbprints, got %d", AuthSelfSigned, len(s.Thumbprints))
		}
	case AuthCA:
		if len(s.Thumbprints) > 0 {
			return errors.New("thumbprints are for auth " + AuthSelfSigned)
		}
	default:
		return fmt.Errorf("auth must be %q, %q or %q, got %q", AuthSAS, AuthSelfSigned, AuthCA, s.Auth)
	}
	if s.Auth != "" && s.Auth != AuthSAS && s.Key != "" {
		return errors.New("a key is for auth " + AuthSAS)
	}
	return nil
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
func validateDeviceID(id string) error { return checkID("device id", id, "-:.+%_#*?!(),=@$'") }

// checkID allows 1..128 ASCII letters, digits and the punctuation in extra.
func checkID(what, id, extra string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("%s must have 1..128 characters, got %d", what, len(id))
	}
	for _, c := range id {
		isAlnum := c < 128 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9')
		if !isAlnum && !strings.ContainsRune(extra, c) {
			return fmt.Errorf("%s %q: character %q is not allowed", what, id, c)
		}
	}
	return nil
}

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return base64.StdEncoding.EncodeToString(b)
}
