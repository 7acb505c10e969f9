package auth

import (
	"strings"
	"testing"

	"github.com/iotconn/iotconn/core/iothub"
)

// FuzzParseConnectionString checks that any input parses or fails cleanly, and that what parses is consistent.
// Seeds are in testdata/fuzz/FuzzParseConnectionString.
func FuzzParseConnectionString(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConnectionString(s)
		if err != nil {
			if c != nil {
				t.Fatalf("error %v with a result", err)
			}
			return
		}
		credentials := 0
		for _, has := range []bool{c.SharedAccessKey != "", c.SharedAccessSignature != "", c.X509} {
			if has {
				credentials++
			}
		}
		if c.HostName == "" || c.DeviceID == "" || credentials != 1 {
			t.Fatalf("%q parsed into an unusable %+v", s, c)
		}
		again, err := ParseConnectionString(format(c))
		if err != nil || *again != *c {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
		// A credential is either made or refused with an error; a SAS that fails to parse is the only
		// credential error the parser lets through.
		if _, err := NewCredential(c, 0); err != nil && c.SharedAccessSignature == "" {
			t.Fatalf("parsed %+v but NewCredential failed: %v", c, err)
		}
	})
}

// FuzzParseSAS checks iothub.ParseSAS on arbitrary tokens. Seeds are in testdata/fuzz/FuzzParseSAS.
func FuzzParseSAS(f *testing.F) {
	f.Fuzz(func(t *testing.T, token string) {
		sas, err := iothub.ParseSAS(token)
		if err != nil {
			return
		}
		if sas.RawResource == "" || sas.Expiry.Unix() <= 0 || !strings.HasPrefix(token, "SharedAccessSignature ") {
			t.Fatalf("%q parsed into %+v", token, sas)
		}
		sas.Verify("a2V5") // must not panic on any parsed token
	})
}
