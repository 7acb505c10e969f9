package hubsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// twin is a device twin's desired and reported property sections with their versions.
type twin struct {
	Desired         map[string]any `json:"desired"`
	DesiredVersion  int            `json:"desiredVersion"`
	Reported        map[string]any `json:"reported"`
	ReportedVersion int            `json:"reportedVersion"`
}

func (t *twin) init() {
	if t.Desired == nil {
		t.Desired = map[string]any{}
	}
	if t.Reported == nil {
		t.Reported = map[string]any{}
	}
	// IoT Hub starts both sections at version 1.
	t.DesiredVersion = max(t.DesiredVersion, 1)
	t.ReportedVersion = max(t.ReportedVersion, 1)
}

// document renders the twin as the device sees it on $iothub/twin/res/200.
func (t *twin) document() []byte {
	doc := map[string]any{
		"desired":  withVersion(t.Desired, t.DesiredVersion),
		"reported": withVersion(t.Reported, t.ReportedVersion),
	}
	b, _ := json.Marshal(doc) // maps of decoded JSON always marshal
	return b
}

func withVersion(section map[string]any, version int) map[string]any {
	out := make(map[string]any, len(section)+1)
	for k, v := range section {
		out[k] = v
	}
	out["$version"] = version
	return out
}

// patchReported merges a reported-properties patch and returns the new reported version.
func (t *twin) patchReported(body []byte) (int, error) {
	patch, err := decodePatch(body)
	if err != nil {
		return 0, err
	}
	mergePatch(t.Reported, patch)
	t.ReportedVersion++
	return t.ReportedVersion, nil
}

// patchDesired merges a desired-properties patch and returns the notification payload the device receives.
func (t *twin) patchDesired(body []byte) (version int, notification []byte, err error) {
	patch, err := decodePatch(body)
	if err != nil {
		return 0, nil, err
	}
	mergePatch(t.Desired, patch)
	t.DesiredVersion++
	notification, _ = json.Marshal(withVersion(patch, t.DesiredVersion))
	return t.DesiredVersion, notification, nil
}

// decodePatch reads a JSON object, keeping numbers as written; "$"-prefixed keys are the hub's and are dropped.
func decodePatch(body []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var patch map[string]any
	if err := dec.Decode(&patch); err != nil {
		return nil, fmt.Errorf("twin patch is not a JSON object: %w", err)
	}
	if patch == nil {
		return nil, errors.New("twin patch is not a JSON object")
	}
	if dec.More() {
		return nil, errors.New("twin patch has data after the JSON object")
	}
	for k := range patch {
		if strings.HasPrefix(k, "$") {
			delete(patch, k)
		}
	}
	return patch, nil
}

// mergePatch applies a JSON merge patch (RFC 7396): null deletes a key, objects merge, anything else replaces.
func mergePatch(dst, patch map[string]any) {
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(dst, k)
		case map[string]any:
			sub, ok := dst[k].(map[string]any)
			if !ok {
				sub = map[string]any{}
				dst[k] = sub
			}
			mergePatch(sub, pv)
		default:
			dst[k] = v
		}
	}
}
