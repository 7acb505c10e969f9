// Package iothub holds IoT Hub's wire conventions shared by the client engine and the hub emulator: SAS tokens,
// the MQTT property bag and the topic and user names.
package iothub

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// SAS is a parsed shared access signature token.
type SAS struct {
	RawResource string    // sr exactly as in the token (URL-encoded); the signature covers this form
	Resource    string    // sr decoded, e.g. "myhub.azure-devices.net/devices/dev1"
	Signature   []byte    // sig decoded from base64
	Expiry      time.Time // se
	KeyName     string    // skn, "" for device keys
}

const sasPrefix = "SharedAccessSignature "

// BuildSAS returns a token for resource, signed with the base64 key, valid until expiry.
func BuildSAS(resource, base64Key, keyName string, expiry time.Time) (string, error) {
	key, err := base64.StdEncoding.DecodeString(base64Key)
	if err != nil {
		return "", fmt.Errorf("shared access key is not valid base64: %w", err)
	}
	if len(key) == 0 {
		return "", errors.New("shared access key is empty")
	}
	sr := Escape(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	token := sasPrefix + "sr=" + sr + "&sig=" + Escape(sign(key, sr, se)) + "&se=" + se
	if keyName != "" {
		token += "&skn=" + Escape(keyName)
	}
	return token, nil
}

// ParseSAS reads a token of the form "SharedAccessSignature sr=..&sig=..&se=..[&skn=..]" in any field order.
func ParseSAS(token string) (*SAS, error) {
	body, ok := strings.CutPrefix(token, sasPrefix)
	if !ok {
		return nil, errors.New(`SAS token must start with "SharedAccessSignature "`)
	}
	var s SAS
	var haveSig, haveSE bool
	for _, field := range strings.Split(body, "&") {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return nil, fmt.Errorf("SAS token field %q has no '='", field)
		}
		switch k {
		case "sr":
			dec, err := url.PathUnescape(v)
			if err != nil {
				return nil, fmt.Errorf("SAS token sr: %w", err)
			}
			s.RawResource, s.Resource = v, dec
		case "sig":
			dec, err := url.QueryUnescape(v)
			if err != nil {
				return nil, fmt.Errorf("SAS token sig: %w", err)
			}
			if s.Signature, err = base64.StdEncoding.DecodeString(dec); err != nil {
				return nil, fmt.Errorf("SAS token sig is not base64: %w", err)
			}
			haveSig = true
		case "se":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("SAS token se %q is not a positive integer", v)
			}
			s.Expiry, haveSE = time.Unix(n, 0), true
		case "skn":
			dec, err := url.QueryUnescape(v)
			if err != nil {
				return nil, fmt.Errorf("SAS token skn: %w", err)
			}
			s.KeyName = dec
		}
	}
	switch {
	case s.RawResource == "":
		return nil, errors.New("SAS token has no sr")
	case !haveSig:
		return nil, errors.New("SAS token has no sig")
	case !haveSE:
		return nil, errors.New("SAS token has no se")
	}
	return &s, nil
}

// Verify reports whether the token was signed with the base64 key.
func (s *SAS) Verify(base64Key string) bool {
	key, err := base64.StdEncoding.DecodeString(base64Key)
	if err != nil || len(key) == 0 {
		return false
	}
	want, _ := base64.StdEncoding.DecodeString(sign(key, s.RawResource, strconv.FormatInt(s.Expiry.Unix(), 10)))
	return hmac.Equal(want, s.Signature)
}

func sign(key []byte, rawResource, expiry string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(rawResource + "\n" + expiry))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Escape percent-encodes s as JavaScript's encodeURIComponent does, the form IoT Hub and its SDKs use.
func Escape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}
