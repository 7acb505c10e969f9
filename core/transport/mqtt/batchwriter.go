package mqtt

import (
	"net"
	"sync"
	"time"
)

// batchWriter sits between paho and the socket. paho writes each packet with its own Write, which over TLS is
// one record and one syscall per packet; batchWriter lets Write return once the packet is buffered, and a
// flusher goroutine writes whatever piled up meanwhile in a single call. An idle link still sends each packet at
// once; a busy one sends many per syscall. The flusher runs only while there is something to write, so an idle
// link, of the thousands a fleet process holds, keeps no goroutine and no buffer for it. Delivery is still judged by PUBACKs, never by a Write returning.
//
// Write never blocks, so paho's writer always takes the next packet at once. The publisher holds back instead:
// it waits in waitRoom while more than maxPending bytes are unflushed, so a slow link slows the publisher, not
// paho. A flush that makes no progress for flushStall ends the link.
//
// A failed flush is reported by the next Write and also by failing paho's reader (a read deadline in the past),
// so paho reports the loss through its own path. paho's write deadlines are replaced by the flush's.
type batchWriter struct {
	net.Conn

	mu       sync.Mutex
	pending  []byte        // written by paho, not yet flushed
	spare    []byte        // the last flushed buffer, reused for the next batch
	room     chan struct{} // closed and replaced whenever the flusher takes the buffer
	err      error         // the first flush failure; every later Write returns it
	closing  bool
	flushing chan struct{} // non-nil while a flusher runs; closed when it ends
	ended    chan struct{} // closed once no flush will ever run again: failed, or closed and flushed
}

const (
	maxPending = 1 << 20
	// flushChunk and flushStall: a flush writes at most flushChunk per socket write, each within flushStall.
	flushChunk = 16 << 10
	flushStall = 30 * time.Second
	// closeFlushWait is how long Close lets the last packets (DISCONNECT) reach the socket.
	closeFlushWait = 100 * time.Millisecond
	// spareKeep is the largest buffer kept between batches: an idle link does not hold on to a burst's memory.
	spareKeep = 4 << 10
)

func newBatchWriter(nc net.Conn) *batchWriter {
	return &batchWriter{Conn: nc, room: make(chan struct{}), ended: make(chan struct{})}
}

// waitRoom returns once at most maxPending bytes wait for the socket, the writer failed or closed, or stop is
// closed. A nil writer (no socket yet) has room.
func (w *batchWriter) waitRoom(stop <-chan struct{}) {
	for w != nil {
		w.mu.Lock()
		full := len(w.pending) > maxPending && w.err == nil && !w.closing
		room := w.room
		w.mu.Unlock()
		if !full {
			return
		}
		select {
		case <-room:
		case <-w.ended:
			return
		case <-stop:
			return
		}
	}
}

func (w *batchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.err != nil:
		return 0, w.err
	case w.closing:
		return 0, net.ErrClosed
	}
	if w.pending == nil {
		w.pending, w.spare = w.spare[:0], nil
	}
	w.pending = append(w.pending, p...)
	w.startFlusherLocked()
	return len(p), nil
}

// startFlusherLocked starts a flusher unless one runs. The flusher ends once the buffer is empty, so an idle
// link keeps no goroutine for it.
func (w *batchWriter) startFlusherLocked() {
	if w.flushing != nil {
		return
	}
	w.flushing = make(chan struct{})
	go w.flusher(w.flushing)
}

// SetWriteDeadline is ignored: each flush sets its own deadline of publishWait.
func (w *batchWriter) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline applies to reads only, for the same reason.
func (w *batchWriter) SetDeadline(t time.Time) error { return w.Conn.SetReadDeadline(t) }

// flusher writes the buffer out until it is empty, then ends; finished is closed as its last act.
func (w *batchWriter) flusher(finished chan struct{}) {
	defer close(finished)
	for {
		w.mu.Lock()
		out := w.pending
		w.pending = nil
		close(w.room)
		w.room = make(chan struct{})
		if len(out) == 0 {
			w.flushing = nil
			if w.closing {
				close(w.ended)
			}
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		if err := w.flush(out); err != nil {
			w.mu.Lock()
			w.err, w.flushing = err, nil
			close(w.ended)
			w.mu.Unlock()
			w.Conn.SetReadDeadline(time.Now()) // paho's reader fails and reports the loss
			return
		}
		if cap(out) <= spareKeep {
			w.mu.Lock()
			w.spare = out
			w.mu.Unlock()
		}
	}
}

// flush writes out, in chunks each within flushStall.
func (w *batchWriter) flush(out []byte) error {
	for len(out) > 0 {
		n := min(len(out), flushChunk)
		w.Conn.SetWriteDeadline(time.Now().Add(flushStall))
		if _, err := w.Conn.Write(out[:n]); err != nil {
			return err
		}
		out = out[n:]
	}
	return nil
}

// Close flushes what is buffered (for at most closeFlushWait), closes the socket and waits for the flusher.
func (w *batchWriter) Close() error {
	w.mu.Lock()
	first := !w.closing
	w.closing = true
	running := w.flushing
	if first && running == nil && w.err == nil {
		close(w.ended)
	}
	w.mu.Unlock()
	if first && running != nil {
		t := time.NewTimer(closeFlushWait)
		select {
		case <-running:
		case <-t.C:
		}
		t.Stop()
	}
	err := w.Conn.Close() // also ends a flush stuck on a dead socket
	if running != nil {
		<-running
	}
	return err
}
