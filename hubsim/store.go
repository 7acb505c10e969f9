package hubsim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// storeLockTimeout bounds the wait for the database's file lock, held by another hubsim on the same state dir.
const storeLockTimeout = time.Second

var devicesBucket = []byte("devices")

// store persists the registry in bbolt, one key per identity holding its record as JSON, so a change costs a
// write of that record and a path of the B+tree, not of the whole registry. bbolt commits copy-on-write and fsyncs
// before it flips its checksummed meta page, so a crash at any moment leaves the last commit readable; its file
// lock keeps a second hubsim off the same state dir. Changes are group-committed by one writer goroutine: what is
// queued while a commit runs goes into the next one, so the fsync is shared by everyone waiting and callers hold
// no lock of the hub while they wait.
type store struct {
	db   *bolt.DB
	path string

	mu        sync.Mutex
	next      *commit // changes queued for the writer's next transaction
	closed    bool
	wake      chan struct{} // holds a token whenever next may have changes
	stopped   chan struct{} // closed when the writer has committed everything and returned
	closeOnce sync.Once
	closeErr  error
}

// commit is one transaction of the writer; done is closed once it is on disk, or failed with err.
type commit struct {
	puts map[string][]byte // identity -> record JSON; nil deletes the identity
	done chan struct{}
	err  error
}

func newCommit() *commit { return &commit{puts: map[string][]byte{}, done: make(chan struct{})} }

// wait returns once the commit is durable, or with the reason it is not.
func (c *commit) wait() error {
	<-c.done
	return c.err
}

// createStore writes a new database holding recs beside path and renames it into place, so a crash midway leaves
// no database at path, only a temporary file that the next attempt replaces.
func createStore(path string, recs map[string][]byte) error {
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: storeLockTimeout})
	if err != nil {
		return fmt.Errorf("%s: %w", tmp, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(devicesBucket)
		if err != nil {
			return err
		}
		for id, rec := range recs {
			if err := b.Put([]byte(id), rec); err != nil {
				return err
			}
		}
		return nil
	})
	if closeErr := db.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if closeErr := d.Close(); err == nil {
		err = closeErr
	}
	return err
}

// openStore opens the database at path, calls each for every stored record, and starts the writer.
func openStore(path string, each func(rec []byte) error) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: storeLockTimeout})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("%s is in use by another hubsim (waited %v for its lock)", path, storeLockTimeout)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &store{db: db, path: path, next: newCommit(), wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	if err := s.load(each); err != nil {
		_ = db.Close()
		return nil, err
	}
	go s.run()
	return s, nil
}

// load calls each for every stored record. It reads every page of the bucket, so a corrupt file shows here, where
// bbolt's panic on a bad page becomes an error, and not in a later commit.
func (s *store) load(each func(rec []byte) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s is corrupt: %v", s.path, r)
		}
	}()
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(devicesBucket)
		if b == nil {
			return errors.New("no devices bucket")
		}
		return b.ForEach(func(_, v []byte) error { return each(v) })
	})
	if err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	return nil
}

// put queues records (nil deletes one) for a single transaction and returns it; wait on it for durability.
// Callers queue under the hub's lock, so the disk sees the changes in the order memory does, and wait outside it.
func (s *store) put(recs map[string][]byte) *commit {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c := &commit{done: make(chan struct{}), err: ErrClosed}
		close(c.done)
		return c
	}
	for id, rec := range recs {
		s.next.puts[id] = rec
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return s.next
}

// sync returns a commit that is done once everything queued so far is on disk.
func (s *store) sync() *commit { return s.put(nil) }

// run commits what is queued, one transaction at a time, until close; it commits what close left queued.
func (s *store) run() {
	defer close(s.stopped)
	for range s.wake {
		s.mu.Lock()
		c := s.next
		s.next = newCommit()
		s.mu.Unlock()
		c.err = s.write(c.puts)
		close(c.done)
	}
}

func (s *store) write(puts map[string][]byte) error {
	if len(puts) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(devicesBucket)
		for id, rec := range puts {
			var err error
			if rec == nil {
				err = b.Delete([]byte(id))
			} else {
				err = b.Put([]byte(id), rec)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	return nil
}

// close commits what is queued, stops the writer and closes the database; later puts fail with ErrClosed.
func (s *store) close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.wake)
		s.mu.Unlock()
		<-s.stopped
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}
