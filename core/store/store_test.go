package store

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/iotconn/iotconn/core/transport"
)

func mustOpen(t *testing.T, dir string) (*Store, []Record) {
	t.Helper()
	s, recs, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s, recs
}

func TestCommittedRecordsSurviveReopenInKeyOrder(t *testing.T) {
	dir := t.TempDir()
	s, recs := mustOpen(t, dir)
	if len(recs) != 0 {
		t.Fatalf("a new store holds %d records", len(recs))
	}
	deadline := time.Unix(1700000000, 123456789)
	full := Record{Key: 2, Deadline: deadline, Msg: transport.Message{
		Payload: []byte{0, 1, 2, 255}, MessageID: "m-2", CorrelationID: "c", ContentType: "application/json",
		ContentEncoding: "utf-8", Properties: [][2]string{{"k1", "v1"}, {"k2", ""}},
	}}
	empty := Record{Key: 1, Deadline: deadline} // nil payload and properties stay nil
	third := Record{Key: 300, Deadline: deadline.Add(time.Hour), Msg: transport.Message{Payload: []byte("x"), MessageID: "m-300"}}
	patch := Record{Key: 7, Kind: KindReported, Deadline: deadline, Msg: transport.Message{Payload: []byte(`{"fw":1}`)}}
	if err := s.Commit([]Record{full, empty, third, patch}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(nil, []uint64{300, 999}); err != nil { // deleting an absent key is no error
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, recs = mustOpen(t, dir)
	defer s.Close()
	want := []Record{empty, full, patch}
	for i := range recs {
		recs[i].Deadline = recs[i].Deadline.In(deadline.Location())
	}
	if !reflect.DeepEqual(recs, want) {
		t.Fatalf("reopened:\n got %+v\nwant %+v", recs, want)
	}
}

func TestSecondOpenOfTheSameDirIsRefusedNotBlocked(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, dir)
	defer s.Close()
	_, _, err := Open(dir)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func TestUnusableOrCorruptStoresAreErrors(t *testing.T) {
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := t.TempDir()
	if err := os.WriteFile(filepath.Join(garbage, FileName), []byte(strings.Repeat("not a bbolt file ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	badRecord := t.TempDir()
	db, err := bolt.Open(filepath.Join(badRecord, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketName)
		if err != nil {
			return err
		}
		return b.Put([]byte{0, 0, 0, 0, 0, 0, 0, 1}, []byte{recordVersion, 2, 50, 'a'}) // id says 50 bytes, has 1
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	for name, dir := range map[string]string{"empty": "", "not a directory": notADir, "garbage file": garbage,
		"truncated record": badRecord} {
		if s, _, err := Open(dir); err == nil {
			s.Close()
			t.Errorf("%s: opened", name)
		}
	}
}

func TestDecodeRejectsEveryTruncation(t *testing.T) {
	full := encode(&Record{Deadline: time.Unix(5, 0), Msg: transport.Message{Payload: []byte("payload"),
		MessageID: "mid", Properties: [][2]string{{"a", "b"}}}})
	for n := 0; n < len(full); n++ {
		var r Record
		if err := decode(full[:n], &r); err == nil {
			t.Fatalf("decoded a record cut to %d of %d bytes", n, len(full))
		}
	}
	var r Record
	if err := decode(append(full, 0), &r); err == nil {
		t.Fatal("decoded a record with a trailing byte")
	}
	if err := decode(full, &r); err != nil || string(r.Msg.Payload) != "payload" {
		t.Fatalf("full record: %v %+v", err, r)
	}
}

// A record written before reported patches were queued (version 1: no kind byte) is read as a message.
func TestVersionOneRecordsAreMessages(t *testing.T) {
	r := Record{Kind: KindReported, Deadline: time.Unix(5, 0),
		Msg: transport.Message{Payload: []byte("p"), MessageID: "m"}}
	v2 := encode(&r)
	v1 := append([]byte{1}, v2[2:]...)
	var got Record
	if err := decode(v1, &got); err != nil || got.Kind != KindMessage || string(got.Msg.Payload) != "p" ||
		got.Msg.MessageID != "m" {
		t.Fatalf("version 1: %v %+v", err, got)
	}
	if err := decode(append([]byte{recordVersion, 9}, v2[2:]...), &got); err == nil {
		t.Fatal("decoded an unknown kind")
	}
}
