package mqtt

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a fresh TCP connection on 127.0.0.1.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestBatchWriterKeepsEveryByteInOrderAndFlushesOnClose(t *testing.T) {
	client, server := tcpPair(t)
	w := newBatchWriter(client)
	var want bytes.Buffer
	for i := range 5000 {
		p := bytes.Repeat([]byte{byte(i)}, 1+i%300)
		want.Write(p)
		if n, err := w.Write(p); err != nil || n != len(p) {
			t.Fatalf("write %d: n=%d err=%v", i, n, err)
		}
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(server)
		got <- b
	}()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want.Bytes()) {
			t.Fatalf("received %d bytes, want the %d written, in order", len(b), want.Len())
		}
	case <-time.After(waitLimit):
		t.Fatal("the peer never saw the end of the stream")
	}
	if _, err := w.Write([]byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

func TestBatchWriterFailedFlushFailsWritesAndReads(t *testing.T) {
	client, server := tcpPair(t)
	w := newBatchWriter(client)
	defer w.Close()
	server.(*net.TCPConn).SetLinger(0)
	server.Close() // a reset: the next socket writes fail
	readErr := make(chan error, 1)
	go func() {
		_, err := w.Read(make([]byte, 1))
		readErr <- err
	}()
	deadline := time.Now().Add(waitLimit)
	for {
		if _, err := w.Write([]byte("packet")); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("writes kept succeeding on a reset connection")
		}
		time.Sleep(time.Millisecond) // a pause between packets, as on a real link; the deadline bounds the loop
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("read succeeded on a failed link")
		}
	case <-time.After(waitLimit):
		t.Fatal("the reader was not woken by the failed flush")
	}
}

func TestBatchWriterWaitRoomHoldsBackOnlyWhenFull(t *testing.T) {
	client, _ := tcpPair(t) // the peer never reads, so the socket fills and flushes stall
	w := newBatchWriter(client)
	stop := make(chan struct{})
	returned := make(chan struct{})
	chunk := make([]byte, 64<<10)
	go func() {
		defer close(returned)
		for range 200 { // 12.5 MiB: more than the socket buffers and maxPending together
			w.waitRoom(stop)
			select {
			case <-stop:
				return
			default:
			}
			w.Write(chunk)
		}
	}()
	select {
	case <-returned:
		t.Fatal("waitRoom never held the writer back although nobody reads")
	case <-time.After(time.Second): // the writer is held back (a bounded wait that must elapse)
	}
	close(stop)
	select {
	case <-returned:
	case <-time.After(waitLimit):
		t.Fatal("waitRoom did not return when stopped")
	}
	w.Close()
}
