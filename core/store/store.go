// Package store keeps the durable outbound queue: accepted device-to-cloud messages and reported-properties
// patches on disk, in order, until they are delivered, expire or fail. It is a thin layer over bbolt (one file,
// copy-on-write B+tree, fsync on every commit, an exclusive file lock), so a crash at any moment leaves the last
// committed state.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/iotconn/iotconn/core/transport"
)

// FileName is the store's file inside the queue directory.
const FileName = "queue.db"

// LockTimeout bounds the wait for another client's (or process's) lock on the same directory.
const LockTimeout = time.Second

var bucketName = []byte("outbound")

// ErrLocked says that another client or process holds the directory's queue.
var ErrLocked = errors.New("the queue is in use by another client or process")

// Kind is what a record holds.
type Kind uint8

const (
	KindMessage  Kind = 0 // a device-to-cloud message
	KindReported Kind = 1 // a reported-properties patch: Msg.Payload alone
)

// Record is one queued entry as kept on disk. Key orders the queue; the caller assigns it in acceptance order.
type Record struct {
	Key      uint64
	Kind     Kind
	Deadline time.Time // when the entry expires
	Msg      transport.Message
}

// Store is one open queue directory. Commit and Close must not be called concurrently with each other.
type Store struct {
	db   *bolt.DB
	path string
}

// Open opens (creating if needed) the queue in dir and returns it with every record still in it, in key order.
// A directory that cannot be used, a corrupt file or a lock held elsewhere are errors, never panics.
func Open(dir string) (s *Store, recs []Record, err error) {
	if dir == "" {
		return nil, nil, errors.New("queue directory is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, FileName)
	defer func() { // bbolt panics on some kinds of corrupt pages
		if r := recover(); r != nil {
			err = fmt.Errorf("%s is corrupt: %v", path, r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: LockTimeout})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, nil, fmt.Errorf("%s: %w (waited %v for its lock)", path, ErrLocked, LockTimeout)
	case err != nil:
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	s = &Store{db: db, path: path}
	if recs, err = s.load(); err != nil {
		db.Close()
		return nil, nil, err
	}
	return s, recs, nil
}

func (s *Store) load() ([]Record, error) {
	var recs []Record
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketName)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("a key of %d bytes", len(k))
			}
			r := Record{Key: binary.BigEndian.Uint64(k)}
			if err := decode(v, &r); err != nil {
				return fmt.Errorf("record %d: %w", r.Key, err)
			}
			recs = append(recs, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("%s is corrupt: %w", s.path, err)
	}
	return recs, nil
}

// Commit writes puts and removes dels in one transaction and returns once it is on disk (fsynced).
func (s *Store) Commit(puts []Record, dels []uint64) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s is corrupt: %v", s.path, r)
		}
	}()
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		var key [8]byte
		for i := range puts {
			binary.BigEndian.PutUint64(key[:], puts[i].Key)
			if err := b.Put(key[:], encode(&puts[i])); err != nil {
				return err
			}
		}
		for _, k := range dels {
			binary.BigEndian.PutUint64(key[:], k)
			if err := b.Delete(key[:]); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close releases the file and its lock.
func (s *Store) Close() error { return s.db.Close() }

// recordVersion starts every encoded record, so the layout can change without misreading old files. Version 1,
// written before reported patches were queued, has no kind byte: its records are messages.
const recordVersion = 2

// encode lays out a record: version, kind, deadline (Unix ns), then length-prefixed message id, correlation id,
// content type, content encoding, payload, and the property count followed by each key and value.
func encode(r *Record) []byte {
	m := &r.Msg
	n := 32 + len(m.Payload) + len(m.MessageID) + len(m.CorrelationID) + len(m.ContentType) + len(m.ContentEncoding)
	for _, p := range m.Properties {
		n += 8 + len(p[0]) + len(p[1])
	}
	b := make([]byte, 0, n)
	b = append(b, recordVersion, byte(r.Kind))
	b = binary.AppendVarint(b, r.Deadline.UnixNano())
	for _, s := range []string{m.MessageID, m.CorrelationID, m.ContentType, m.ContentEncoding} {
		b = appendBytes(b, []byte(s))
	}
	b = appendBytes(b, m.Payload)
	b = binary.AppendUvarint(b, uint64(len(m.Properties)))
	for _, p := range m.Properties {
		b = appendBytes(appendBytes(b, []byte(p[0])), []byte(p[1]))
	}
	return b
}

func appendBytes(b, s []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

var errTruncated = errors.New("truncated record")

// decoder reads what encode wrote; the first failure sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errTruncated
		return nil
	}
	v := append([]byte(nil), d.b[:n]...) // bbolt's memory is valid only inside the transaction
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

func decode(b []byte, r *Record) error {
	switch {
	case len(b) == 0:
		return errTruncated
	case b[0] == 1:
		b = b[1:]
	case b[0] != recordVersion:
		return errors.New("unknown record version")
	case len(b) < 2:
		return errTruncated
	case Kind(b[1]) != KindMessage && Kind(b[1]) != KindReported:
		return fmt.Errorf("unknown record kind %d", b[1])
	default:
		r.Kind, b = Kind(b[1]), b[2:]
	}
	ns, n := binary.Varint(b)
	if n <= 0 {
		return errTruncated
	}
	d := &decoder{b: b[n:]}
	r.Deadline = time.Unix(0, ns)
	m := &r.Msg
	m.MessageID, m.CorrelationID, m.ContentType, m.ContentEncoding = d.string(), d.string(), d.string(), d.string()
	m.Payload = d.bytes()
	count := d.uvarint()
	if count > uint64(len(d.b)) { // each property needs at least two bytes
		return errTruncated
	}
	for range count {
		k, v := d.string(), d.string()
		m.Properties = append(m.Properties, [2]string{k, v})
	}
	switch {
	case d.err != nil:
		return d.err
	case len(d.b) != 0:
		return fmt.Errorf("%d bytes after the record", len(d.b))
	}
	return nil
}
