package core

import (
	"sync"

	"github.com/iotconn/iotconn/core/internal/notify"
	"github.com/iotconn/iotconn/core/store"
)

// journal is durable mode's writer. One goroutine commits accepted messages to the store and removes completed
// ones; every Send waiting while a commit runs goes into the next one, so concurrent senders share an fsync
// (group commit) and a lone sender waits for exactly one.
type journal struct {
	c  *Client
	st *store.Store

	mu      sync.Mutex
	puts    []journalPut // in id order: put is called under c.mu, which assigns the ids
	dels    []uint64
	nextKey uint64

	wake chan struct{} // capacity 1: "puts or dels may be waiting"
	stop chan struct{}
	done chan struct{}
}

type journalPut struct {
	m       *outMessage
	written chan *Error // capacity 1: nil once on disk
}

// newJournal starts the writer; recs are the records the store held, so keys continue after the last.
func newJournal(c *Client, st *store.Store, recs []store.Record) *journal {
	j := &journal{c: c, st: st, nextKey: 1, wake: make(chan struct{}, 1), stop: make(chan struct{}),
		done: make(chan struct{})}
	if len(recs) > 0 {
		j.nextKey = recs[len(recs)-1].Key + 1
	}
	go j.run()
	return j
}

// put schedules m's write and returns where its outcome will be reported. Called with c.mu held.
func (j *journal) put(m *outMessage) <-chan *Error {
	p := journalPut{m: m, written: make(chan *Error, 1)}
	j.mu.Lock()
	m.key, m.writing = j.nextKey, true
	j.nextKey++
	j.puts = append(j.puts, p)
	j.mu.Unlock()
	notify.Raise(j.wake)
	return p.written
}

// remove schedules the removal of a completed message's record; nobody waits for it. If the process dies
// first, the next client sends the message again with the same $.mid: delivery stays at least once.
func (j *journal) remove(key uint64) {
	j.mu.Lock()
	j.dels = append(j.dels, key)
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
			recs[i] = store.Record{Key: p.m.key, Deadline: p.m.deadline, Msg: p.m.wire}
		}
		var werr *Error
		if err := j.st.Commit(recs, dels); err != nil {
			werr = &Error{Code: CodeStore, Msg: "queue directory: " + err.Error(), Err: err}
			if len(dels) > 0 {
				j.c.logf(LogWarn, "%d delivered messages stay on disk (%v); a restart sends them again", len(dels), err)
			}
		}
		j.c.written(puts, werr)
	}
}

// close commits what is still waiting, stops the writer and releases the store. Called once, by the loop's
// shutdown, after Close marked the client closed (so no put comes later).
func (j *journal) close() {
	close(j.stop)
	<-j.done
	if err := j.st.Close(); err != nil {
		j.c.logf(LogWarn, "queue directory: %v", err)
	}
}

// written moves committed messages into the send queue and answers their Sends. A failed write rejects the
// message (its Send returns the error, no completion follows). A message written after Close completes at once
// with CodeClosed and stays on disk for the next client.
func (c *Client) written(puts []journalPut, err *Error) {
	var closed []*outMessage
	c.mu.Lock()
	for _, p := range puts {
		m := p.m
		m.writing = false
		switch {
		case err != nil:
			c.finishLocked(m)
		case c.closed:
			closed = append(closed, m)
		default:
			c.enqueueLocked(m)
		}
	}
	c.mu.Unlock()
	for _, p := range puts {
		p.written <- err
	}
	for _, m := range closed {
		c.complete(m, SendFailed, c.closedError())
	}
	notify.Raise(c.kick)
}

// closedError is the completion of a message Close ended.
func (c *Client) closedError() *Error {
	if c.journal != nil {
		return Errorf(CodeClosed, "client closed; the message stays in %s for the next client", c.opts.QueueDir)
	}
	return Errorf(CodeClosed, "client closed")
}
