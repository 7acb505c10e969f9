// Package auth reads IoT Hub device connection strings and turns them into credentials: SAS tokens made from a
// shared access key (renewable), a SAS token given by the user (fixed), or an X.509 client certificate.
package auth

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"unicode"

	"github.com/iotconn/iotconn/core/iothub"
)

// ConnectionString is a parsed device or module connection string.
type ConnectionString struct {
	HostName              string // IoT Hub host, may carry ":port"
	DeviceID              string
	ModuleID              string // "" for a device
	SharedAccessKey       string // base64
	SharedAccessKeyName   string // policy name when the key is a hub-level policy key
	SharedAccessSignature string // a complete "SharedAccessSignature sr=..." token
	GatewayHostName       string // Edge gateway to connect to instead of HostName
	X509                  bool   // authenticate with a client certificate
}

// Key names as Azure spells them. They match case-insensitively, as in Azure's own parsers (the SDKs build the
// key map with StringComparer.OrdinalIgnoreCase) and because samples vary in case (x509, X509).
const (
	keyHostName              = "HostName"
	keyDeviceID              = "DeviceId"
	keyModuleID              = "ModuleId"
	keySharedAccessKey       = "SharedAccessKey"
	keySharedAccessKeyName   = "SharedAccessKeyName"
	keySharedAccessSignature = "SharedAccessSignature"
	keyGatewayHostName       = "GatewayHostName"
	keyX509                  = "x509"
)

var knownKeys = []string{keyHostName, keyDeviceID, keyModuleID, keySharedAccessKey, keySharedAccessKeyName,
	keySharedAccessSignature, keyGatewayHostName, keyX509}

// maxIDLength is IoT Hub's limit for device and module ids; maxHostLength is DNS's for a host name, which also
// keeps the MQTT user name and the SAS resource far inside their wire limits.
const (
	maxIDLength   = 128
	maxHostLength = 253
)

// ErrTooLong marks a field over its length limit (errors.Is).
var ErrTooLong = errors.New("over the length limit")

// idSpecials are the characters IoT Hub allows in device and module ids besides ASCII letters and digits.
const idSpecials = "-.+%_#*?!(),:=@$'"

// ParseConnectionString reads "Key=Value;..." pairs. Values may contain '=' (base64 keys); whitespace around
// fields and one trailing ';' are ignored. Errors name the problem but never repeat a key or signature.
func ParseConnectionString(s string) (*ConnectionString, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimSpace(strings.TrimSuffix(s, ";"))
	if s == "" {
		return nil, errors.New("connection string is empty")
	}
	var c ConnectionString
	var x509Value string
	seen := map[string]bool{}
	for i, field := range strings.Split(s, ";") {
		rawName, value, hasEq := strings.Cut(field, "=")
		name, value := strings.TrimSpace(rawName), strings.TrimSpace(value)
		switch {
		case strings.TrimSpace(field) == "":
			return nil, fmt.Errorf("connection string field %d is empty (two ';' in a row?)", i+1)
		case !hasEq:
			return nil, fmt.Errorf("connection string field %d has no '=': want Key=Value", i+1)
		case name == "":
			return nil, fmt.Errorf("connection string field %d has no key before '='", i+1)
		}
		key := canonicalKey(name)
		if key == "" {
			return nil, fmt.Errorf("connection string has an unknown key %s (known keys: %s)",
				describeKey(i, name), strings.Join(knownKeys, ", "))
		}
		if seen[key] {
			return nil, fmt.Errorf("connection string has %s more than once", key)
		}
		seen[key] = true
		if value == "" {
			return nil, fmt.Errorf("connection string %s has an empty value", key)
		}
		switch key {
		case keyHostName:
			c.HostName = value
		case keyDeviceID:
			c.DeviceID = value
		case keyModuleID:
			c.ModuleID = value
		case keySharedAccessKey:
			c.SharedAccessKey = value
		case keySharedAccessKeyName:
			c.SharedAccessKeyName = value
		case keySharedAccessSignature:
			c.SharedAccessSignature = value
		case keyGatewayHostName:
			c.GatewayHostName = value
		case keyX509:
			x509Value = value
		}
	}
	if x509Value != "" {
		switch strings.ToLower(x509Value) {
		case "true":
			c.X509 = true
		case "false":
		default:
			return nil, fmt.Errorf("connection string x509 must be true or false, not %q", x509Value)
		}
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *ConnectionString) validate() error {
	switch {
	case c.HostName == "":
		return errors.New("connection string has no HostName")
	case c.DeviceID == "":
		return errors.New("connection string has no DeviceId")
	}
	if err := checkHost(keyHostName, c.HostName); err != nil {
		return err
	}
	if c.GatewayHostName != "" {
		if err := checkHost(keyGatewayHostName, c.GatewayHostName); err != nil {
			return err
		}
	}
	if err := checkID(keyDeviceID, c.DeviceID); err != nil {
		return err
	}
	if c.ModuleID != "" {
		if err := checkID(keyModuleID, c.ModuleID); err != nil {
			return err
		}
	}
	key, sig := c.SharedAccessKey != "", c.SharedAccessSignature != ""
	switch {
	case !key && !sig && !c.X509:
		return errors.New("connection string has no credential: give SharedAccessKey, SharedAccessSignature or x509=true")
	case key && sig:
		return errors.New("connection string has both SharedAccessKey and SharedAccessSignature: give only one")
	case (key || sig) && c.X509:
		return errors.New("connection string has x509=true and a shared access credential: give only one")
	case c.SharedAccessKeyName != "" && !key:
		return errors.New("connection string has SharedAccessKeyName without SharedAccessKey")
	}
	if key {
		if b, err := base64.StdEncoding.DecodeString(c.SharedAccessKey); err != nil || len(b) == 0 {
			return errors.New("connection string SharedAccessKey is not valid base64")
		}
	}
	return nil
}

// ConnectHost is where to connect: the gateway when there is one, else the hub (either may carry ":port").
func (c *ConnectionString) ConnectHost() string {
	if c.GatewayHostName != "" {
		return c.GatewayHostName
	}
	return c.HostName
}

// ResourceURI is the SAS resource this device or module authenticates as.
func (c *ConnectionString) ResourceURI() string {
	return iothub.ResourceURI(c.HostName, c.DeviceID, c.ModuleID)
}

func canonicalKey(name string) string {
	for _, k := range knownKeys {
		if strings.EqualFold(name, k) {
			return k
		}
	}
	return ""
}

// describeKey quotes an unknown key name only when it looks like one, so a mangled field such as
// "SharedAccessKey:c2VjcmV0=" never puts the secret into an error message or log.
func describeKey(i int, name string) string {
	looksLikeName := len(name) <= 32 && !strings.ContainsFunc(name, func(r rune) bool {
		return r > unicode.MaxASCII || !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '-')
	})
	if looksLikeName {
		return strconv.Quote(name)
	}
	return fmt.Sprintf("in field %d (not shown: it does not look like a key name)", i+1)
}

// checkHost accepts "host" or "host:port" with a port in 1..65535.
func checkHost(key, v string) error {
	if strings.ContainsFunc(v, unicode.IsSpace) {
		return fmt.Errorf("connection string %s %q contains whitespace", key, v)
	}
	if strings.ContainsAny(v, "/?#@") {
		return fmt.Errorf("connection string %s %q must be a host name with an optional :port, not a URL", key, v)
	}
	host := v
	if strings.Contains(v, ":") && !(strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]")) {
		h, port, err := net.SplitHostPort(v)
		if err != nil {
			return fmt.Errorf("connection string %s %q is not host:port: %v", key, v, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("connection string %s %q has a bad port %q: want 1-65535", key, v, port)
		}
		host = h
	}
	if strings.Trim(host, "[]") == "" {
		return fmt.Errorf("connection string %s %q has no host", key, v)
	}
	if len(host) > maxHostLength {
		return fmt.Errorf("connection string %s is %d characters long; a host name has at most %d: %w", key,
			len(host), maxHostLength, ErrTooLong)
	}
	return nil
}

// checkID applies IoT Hub's rules for device and module ids.
func checkID(key, v string) error {
	if len(v) > maxIDLength {
		return fmt.Errorf("connection string %s is %d characters long; IoT Hub allows %d: %w", key, len(v),
			maxIDLength, ErrTooLong)
	}
	for _, r := range v {
		if r > unicode.MaxASCII || !(unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune(idSpecials, r)) {
			return fmt.Errorf("connection string %s %q has the character %q; IoT Hub allows letters, digits and %s",
				key, v, r, idSpecials)
		}
	}
	return nil
}
