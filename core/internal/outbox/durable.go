package outbox

import (
	"sync"

	"github.com/iotconn/iotconn/core/internal/notify"
	"github.com/iotconn/iotconn/core/store"
)

// journal is durable mode's backend: one goroutine commits accepted entries to the store and removes finished
// ones; every Add waiting while a commit runs goes into the next one, so concurrent senders share an fsync
// (group commit) and a lone sender waits for exactly one.
type journal struct {
	o  *Outbox
	st *store.Store

	mu      sync.Mutex
	puts    []journalPut // in id order: put is called under Outbox.mu, which assigns the ids
	dels    []uint64
	nextKey uint64

	wake chan struct{} // capacity 1: "puts or dels may be waiting"
	stop chan struct{}
	done chan struct{}
}

type journalPut struct {
	e       *Entry
	written chan error // capacity 1: nil once on disk
}

// newJournal starts the writer; recs are the records the store held, so keys continue after the last.
func newJournal(o *Outbox, st *store.Store, recs []store.Record) *journal {
	j := &journal{o: o, st: st, nextKey: 1, wake: make(chan struct{}, 1), stop: make(chan struct{}),
		done: make(chan struct{})}
	if len(recs) > 0 {
		j.nextKey = recs[len(recs)-1].Key + 1
	}
	go j.run()
	return j
}

// put schedules e's write and returns where its outcome will be reported. Called with Outbox.mu held.
func (j *journal) put(e *Entry) <-chan error {
	p := journalPut{e: e, written: make(chan error, 1)}
	j.mu.Lock()
	e.key, e.writing = j.nextKey, true
	j.nextKey++
	j.puts = append(j.puts, p)
	j.mu.Unlock()
	notify.Raise(j.wake)
	return p.written
}

// remove schedules the removal of a finished entry's record; nobody waits for it. If the process dies first,
// the next client sends the message again with the same message id: delivery stays at least once.
func (j *journal) remove(e *Entry) {
	j.mu.Lock()
	j.dels = append(j.dels, e.key)
	j.mu.Unlock()
	notify.Raise(j.wake)
}

func (j *journal) run() {
	defer close(j.done)
	stopping := false
	for {
		j.mu.Lock()
		puts, dels := j.puts, j.dels
		j.puts, j.dels = nil, nil
		j.mu.Unlock()
		if len(puts) == 0 && len(dels) == 0 {
			if stopping {
				return
			}
			select {
			case <-j.wake:
			case <-j.stop:
				stopping = true
			}
			continue
		}
		recs := make([]store.Record, len(puts))
		for i, p := range puts {
			recs[i] = store.Record{Key: p.e.key, Kind: p.e.Kind, Deadline: p.e.Deadline, Msg: p.e.Wire}
		}
		err := j.st.Commit(recs, dels)
		if err != nil && len(dels) > 0 {
			j.o.cfg.Logf("%d delivered messages stay on disk (%v); a restart sends them again", len(dels), err)
		}
		j.o.written(puts, err)
	}
}

// close commits what is still waiting, stops the writer and releases the store. Called once, after Close (so no
// put comes later).
func (j *journal) close() {
	close(j.stop)
	<-j.done
	if err := j.st.Close(); err != nil {
		j.o.cfg.Logf("queue directory: %v", err)
	}
}

// written queues committed entries and answers their Adds. A failed write rejects the entry (its Add reports the
// error, no completion follows). An entry written after Close goes to WrittenAfterClose and stays on disk.
func (o *Outbox) written(puts []journalPut, err error) {
	var closed []*Entry
	o.mu.Lock()
	for _, p := range puts {
		e := p.e
		e.writing = false
		switch {
		case err != nil:
			o.finishLocked(e)
		case o.closed:
			closed = append(closed, e)
		default:
			o.enqueueLocked(e)
		}
	}
	o.mu.Unlock()
	for _, p := range puts {
		p.written <- err
	}
	if len(closed) > 0 {
		o.cfg.WrittenAfterClose(closed)
	}
	o.cfg.Queued()
}
