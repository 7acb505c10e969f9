package mqtt

import (
	"io"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// wsConn carries MQTT over a WebSocket as the net.Conn paho reads and writes: every write is one binary message,
// and reads run across message boundaries. We dial the WebSocket ourselves (not paho.NewWebsocket) so the dial
// honours the context, uses no proxy from the environment, and classifies TLS failures as the TCP path does.
type wsConn struct {
	*websocket.Conn
	readMu  sync.Mutex
	current io.Reader // the message being read, nil between messages
	writeMu sync.Mutex
}

func (w *wsConn) Read(p []byte) (int, error) {
	w.readMu.Lock()
	defer w.readMu.Unlock()
	for {
		if w.current == nil {
			var err error
			if _, w.current, err = w.NextReader(); err != nil {
				return 0, err
			}
		}
		n, err := w.current.Read(p)
		if err == io.EOF {
			w.current = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// Write sends p as one binary message; gorilla allows one writer at a time, and paho's writer and pinger share it.
func (w *wsConn) Write(p []byte) (int, error) {
	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	if err := w.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *wsConn) SetDeadline(t time.Time) error {
	if err := w.SetReadDeadline(t); err != nil {
		return err
	}
	return w.SetWriteDeadline(t)
}
