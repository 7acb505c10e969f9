package hubsim

import (
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/iotconn/iotconn/core/iothub"
)

// identity names a device or one of its modules.
type identity struct{ device, module string }

func (id identity) String() string { return iothub.ClientID(id.device, id.module) }

// credentials are what a device presents when it connects, whatever the transport.
type credentials struct {
	clientID string
	username string
	password string
	certs    []*x509.Certificate // the TLS client certificate chain, leaf first; nil when none
}

// rejectKind classifies a refused connect; each transport maps it to its own code (MQTT: see mqttConnackCode).
type rejectKind int

const (
	rejectBadUsernameOrPassword rejectKind = iota // malformed user name, password that is not a SAS token
	rejectNotAuthorized                           // wrong key, expired token, token scope not covering the device
	rejectIdentifier                              // unknown device, client id not matching the user name
	rejectDisabled                                // device disabled in the registry
	rejectUnavailable                             // throttled or refused by a fault: the connection closes unanswered
	rejectServerUnavailable                       // throttled, answered "server unavailable" (the throttle's answer)
)

// rejection is why a connect was refused.
type rejection struct {
	kind   rejectKind
	reason string
}

func (r *rejection) Error() string { return r.reason }

func reject(kind rejectKind, reason string) *rejection { return &rejection{kind: kind, reason: reason} }

// parseUsername reads IoT Hub's MQTT user name "{host}/{device}[/{module}]/?api-version=..&..", leniently: the
// query may come without '?', and may be missing. clientID disambiguates ids that contain '?' or '='.
func parseUsername(username, clientID string) (host string, id identity, err error) {
	host, rest, ok := strings.Cut(username, "/")
	if !ok || host == "" {
		return "", identity{}, errors.New("user name must be {host}/{deviceId}/?api-version=...")
	}
	if clientID != "" && strings.HasPrefix(rest, clientID) && isQueryTail(rest[len(clientID):]) {
		d, m, _ := strings.Cut(clientID, "/")
		return host, identity{d, m}, nil
	}
	path, _, _ := strings.Cut(rest, "?")
	segs := strings.Split(strings.TrimSuffix(path, "/"), "/")
	if last := segs[len(segs)-1]; len(segs) > 1 && strings.Contains(last, "=") {
		segs = segs[:len(segs)-1] // the query written without '?'
	}
	for _, s := range segs {
		if s == "" {
			return "", identity{}, errors.New("user name has an empty device or module id")
		}
	}
	switch len(segs) {
	case 1:
		return host, identity{device: segs[0]}, nil
	case 2:
		return host, identity{device: segs[0], module: segs[1]}, nil
	}
	return "", identity{}, errors.New("user name has too many path segments")
}

// isQueryTail reports whether s, what follows the client id in a user name, holds no further path segment.
func isQueryTail(s string) bool {
	if s == "" {
		return true
	}
	if s[0] != '/' {
		return false
	}
	path, _, _ := strings.Cut(s[1:], "?")
	return path == "" || (!strings.Contains(path, "/") && strings.Contains(path, "="))
}

// hostMatches reports whether a host name from a user name or token names this hub; any port is accepted because
// clients put the hub's port in HostName and it then shows up in both.
func hostMatches(host string, names []string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() { // a hub on a loopback address of its own is named by it
		return true
	}
	for _, n := range names {
		if strings.EqualFold(host, n) {
			return true
		}
	}
	return false
}

// checkToken verifies a device SAS token for id against the device's keys.
func checkToken(tok *iothub.SAS, id identity, keys []string, hostNames []string, now time.Time, skew time.Duration) *rejection {
	if tok.KeyName != "" {
		return reject(rejectNotAuthorized, "token signed with shared access policy "+tok.KeyName+"; hubsim accepts device keys only")
	}
	if !scopeCovers(tok.Resource, id, hostNames) {
		return reject(rejectNotAuthorized, "token scope "+tok.Resource+" does not cover "+id.String())
	}
	signed := false
	for _, k := range keys {
		signed = signed || tok.Verify(k)
	}
	if !signed {
		return reject(rejectNotAuthorized, "token signature does not match the device keys")
	}
	if now.After(tok.Expiry.Add(skew)) {
		return reject(rejectNotAuthorized, "token expired at "+tok.Expiry.UTC().Format(time.RFC3339))
	}
	return nil
}

// scopeCovers reports whether resource is a path prefix of the identity's resource "{host}/devices/{d}[/modules/{m}]".
func scopeCovers(resource string, id identity, hostNames []string) bool {
	segs := strings.Split(strings.TrimSuffix(resource, "/"), "/")
	if !hostMatches(segs[0], hostNames) {
		return false
	}
	want := []string{"devices", id.device}
	if id.module != "" {
		want = append(want, "modules", id.module)
	}
	rest := segs[1:]
	if len(rest) > len(want) {
		return false
	}
	for i, s := range rest {
		if s != want[i] {
			return false
		}
	}
	return true
}
