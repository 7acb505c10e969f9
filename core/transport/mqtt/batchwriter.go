package mqtt

import (
	"net"
	"sync"
	"time"

	"github.com/iotconn/iotconn/core/internal/notify"
)

// batchWriter sits between paho and the socket. paho writes each packet with its own Write, which over TLS is
// one record and one syscall per packet; batchWriter lets Write return once the packet is buffered, and one
// flusher goroutine writes whatever piled up meanwhile in a single call. An idle link still sends each packet at
// once; a busy one sends many per syscall. Delivery is still judged by PUBACKs, never by a Write returning.
//
// Write never blocks, so paho's writer always takes the next packet at once. The publisher holds back instead:
// it waits in waitRoom while more than maxPending bytes are unflushed, so a slow link slows the publisher, not
// paho. A flush that makes no progress for flushStall ends the link.
//
// A failed flush is reported by the next Write and also by failing paho's reader (a read deadline in the past),
// so paho reports the loss through its own path. paho's write deadlines are replaced by the flush's.
type batchWriter struct {
	net.Conn

	mu      sync.Mutex
	pending []byte        // written by paho, not yet flushed
	room    chan struct{} // closed and replaced whenever the flusher takes the buffer
	err     error         // the first flush failure; every later Write returns it
	closing bool

	kick      chan struct{} // capacity 1: "pending may be non-empty"
	closeOnce sync.Once
	flushed   chan struct{} // closed when the flusher has ended
}

const (
	maxPending = 1 << 20
	// flushChunk and flushStall: a flush writes at most flushChunk per socket write, each within flushStall.
	flushChunk = 16 << 10
	flushStall = 30 * time.Second
	// closeFlushWait is how long Close lets the last packets (DISCONNECT) reach the socket.
	closeFlushWait = 100 * time.Millisecond
)

func newBatchWriter(nc net.Conn) *batchWriter {
	w := &batchWriter{Conn: nc, room: make(chan struct{}), kick: make(chan struct{}, 1), flushed: make(chan struct{})}
	go w.flusher()
	return w
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
		case <-w.flushed:
			return
		case <-stop:
			return
		}
	}
}

func (w *batchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	switch {
	case w.err != nil:
		err := w.err
		w.mu.Unlock()
		return 0, err
	case w.closing:
		w.mu.Unlock()
		return 0, net.ErrClosed
	}
	w.pending = append(w.pending, p...)
	w.mu.Unlock()
	notify.Raise(w.kick)
	return len(p), nil
}

// SetWriteDeadline is ignored: each flush sets its own deadline of publishWait.
func (w *batchWriter) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline applies to reads only, for the same reason.
func (w *batchWriter) SetDeadline(t time.Time) error { return w.Conn.SetReadDeadline(t) }

// flusher writes the buffer out until Close, and then once more.
func (w *batchWriter) flusher() {
	defer close(w.flushed)
	var out []byte
	for {
		<-w.kick
		w.mu.Lock()
		out, w.pending = w.pending, out[:0]
		closing := w.closing
		close(w.room)
		w.room = make(chan struct{})
		w.mu.Unlock()
		if len(out) > 0 && !w.flush(out) {
			return
		}
		if closing {
			return
		}
	}
}

// flush writes out and says whether the link is still good.
func (w *batchWriter) flush(out []byte) bool {
	for len(out) > 0 {
		n := min(len(out), flushChunk)
		w.Conn.SetWriteDeadline(time.Now().Add(flushStall))
		if _, err := w.Conn.Write(out[:n]); err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			w.Conn.SetReadDeadline(time.Now())
			return false
		}
		out = out[n:]
	}
	return true
}

// Close flushes what is buffered (for at most closeFlushWait), closes the socket and waits for the flusher.
func (w *batchWriter) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closing = true
		w.mu.Unlock()
		notify.Raise(w.kick)
		t := time.NewTimer(closeFlushWait)
		defer t.Stop()
		select {
		case <-w.flushed:
		case <-t.C:
		}
	})
	err := w.Conn.Close() // also ends a flush stuck on a dead socket
	<-w.flushed
	return err
}
