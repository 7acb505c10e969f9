package hubsim

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

// wsPath is where IoT Hub serves MQTT and AMQP over WebSocket.
const wsPath = "/$iothub/websocket"

// WebSocket subprotocols hubsim serves.
const (
	wsMQTT = "mqtt"
	wsAMQP = "AMQPWSB10"
)

// webSocketServer returns a listener's connection handler serving the given subprotocols, the first being the
// one a client gets when it offers none. An upgrade that offers only others is refused with 400, so a client
// fails at once instead of waiting on a protocol nobody speaks.
func (h *Hub) webSocketServer(protocols ...string) func(*hubConn) {
	up := websocket.Upgrader{
		Subprotocols: protocols,
		CheckOrigin:  func(*http.Request) bool { return true }, // devices send no browser origin worth checking
	}
	return func(hc *hubConn) { h.serveWebSocket(hc, &up) }
}

// serveWebSocket runs TLS, the HTTP upgrade and then the chosen protocol on one accepted connection. The upgrade
// is done here rather than by net/http so the connection stays owned, and cut, by the hub like any other.
func (h *Hub) serveWebSocket(hc *hubConn, up *websocket.Upgrader) {
	tc := tls.Server(hc, h.tlsConf)
	hc.setTop(tc)
	br := bufio.NewReader(tc)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	rw := &hijackWriter{conn: tc, brw: bufio.NewReadWriter(br, bufio.NewWriter(tc)), header: http.Header{}}
	if req.URL.Path != wsPath {
		http.Error(rw, "not found", http.StatusNotFound)
		return
	}
	if offered := websocket.Subprotocols(req); len(offered) > 0 && !anyIn(offered, up.Subprotocols) {
		http.Error(rw, fmt.Sprintf("this listener serves the WebSocket subprotocols %v, not %v", up.Subprotocols,
			offered), http.StatusBadRequest)
		return
	}
	ws, err := up.Upgrade(rw, req, nil)
	if err != nil {
		return
	}
	wc := &wsConn{ws: ws, hc: hc}
	hc.setTop(wc)
	proto := ws.Subprotocol()
	if proto == "" {
		proto = up.Subprotocols[0]
	}
	if proto == wsAMQP {
		h.amqp.serve(hc, wc)
	} else {
		h.mqtt.serve("ws", wc)
	}
}

func anyIn(list, set []string) bool {
	for _, s := range list {
		if contains(set, s) {
			return true
		}
	}
	return false
}

// hijackWriter is the http.ResponseWriter of a single request read off a connection the hub owns.
type hijackWriter struct {
	conn        net.Conn
	brw         *bufio.ReadWriter
	header      http.Header
	wroteHeader bool
}

func (w *hijackWriter) Header() http.Header { return w.header }

func (w *hijackWriter) WriteHeader(status int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	fmt.Fprintf(w.brw, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	w.header.Set("Connection", "close")
	_ = w.header.Write(w.brw)
	_, _ = w.brw.WriteString("\r\n")
}

func (w *hijackWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	n, err := w.brw.Write(b)
	if err == nil {
		err = w.brw.Flush()
	}
	return n, err
}

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) { return w.conn, w.brw, nil }

// wsConn carries a protocol's byte stream in binary WebSocket messages.
type wsConn struct {
	ws     *websocket.Conn
	hc     *hubConn
	reader io.Reader
}

func (c *wsConn) Read(b []byte) (int, error) {
	for {
		if c.reader == nil {
			_, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			c.reader = r
		}
		n, err := c.reader.Read(b)
		if err == io.EOF {
			c.reader = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsConn) Write(b []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Close sends a WebSocket close frame, then closes the connection.
func (c *wsConn) Close() error {
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
		time.Now().Add(time.Second))
	return c.ws.Close()
}

func (c *wsConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *wsConn) SetDeadline(t time.Time) error      { return c.ws.NetConn().SetDeadline(t) }
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
