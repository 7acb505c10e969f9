package provisioning

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// CacheFile is the name of the assignment cache in a client's queue directory.
const CacheFile = "dps-assignment.json"

// Assignment is what the cache keeps: which registration it is (so a cache of another one is not used), and where
// DPS assigned it.
type Assignment struct {
	Host           string    `json:"provisioningHost"`
	IDScope        string    `json:"idScope"`
	RegistrationID string    `json:"registrationId"`
	AssignedHub    string    `json:"assignedHub"`
	DeviceID       string    `json:"deviceId"`
	At             time.Time `json:"assignedAt"`
}

// Matches says whether a is an assignment of the registration cfg names (registration ids compare without case,
// as DPS does).
func (a *Assignment) Matches(cfg Config) bool {
	return a != nil && a.Host == cfg.Host && a.IDScope == cfg.IDScope &&
		strings.EqualFold(a.RegistrationID, cfg.RegistrationID) && a.AssignedHub != "" && a.DeviceID != ""
}

// LoadCache reads the assignment cached at path; nil and no error when there is none.
func LoadCache(path string) (*Assignment, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("assignment cache: %w", err)
	}
	var a Assignment
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("assignment cache %s: %w", path, err)
	}
	return &a, nil
}

// SaveCache writes a to path atomically: a temporary file beside it, fsynced, renamed over it, and the directory
// fsynced, so a crash leaves the old assignment or the new one, never a torn file.
func SaveCache(path string, a Assignment) (err error) {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("assignment cache: %w", err)
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("assignment cache: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("assignment cache: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		derr = d.Sync()
		d.Close()
		if derr != nil {
			return fmt.Errorf("assignment cache: %w", derr)
		}
	}
	return nil
}
