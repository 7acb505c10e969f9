package hubsim

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/iotconn/iotconn/core/iothub"
)

// The DPS's HTTPS device endpoint and its control API.

// servedConn is a connection the DPS accepted (and its faults can cut) handed to its http.Server; ended is closed
// when the server is done with it.
type servedConn struct {
	net.Conn
	once  sync.Once
	ended chan struct{}
}

func (c *servedConn) Close() error {
	c.once.Do(func() { close(c.ended) })
	return c.Conn.Close()
}

// connQueue is the net.Listener of the DPS's http.Server: the accept loop of the https listener feeds it.
type connQueue struct{ d *DPS }

func (q connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.d.webConns:
		return c, nil
	case <-q.d.done:
		return nil, net.ErrClosed
	}
}

func (q connQueue) Close() error   { return nil }
func (q connQueue) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func (d *DPS) startWeb() {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /{scope}/registrations/{regId}/register", d.handleHTTPRegister)
	mux.HandleFunc("GET /{scope}/registrations/{regId}/operations/{opId}", d.handleHTTPStatus)
	mux.HandleFunc("POST /{scope}/registrations/{regId}", d.handleHTTPLookup)
	mux.HandleFunc("GET "+wsPath, d.handleWebSocket)
	d.web = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: connectTimeout,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) }}
	srv := d.web
	d.spawn(func() { _ = srv.Serve(connQueue{d}) })
}

// serveHTTPS runs TLS on an accepted connection and hands it to the http.Server until the server closes it.
func (d *DPS) serveHTTPS(hc *hubConn) {
	tc := tls.Server(hc, d.tlsConf)
	hc.setTop(tc)
	c := &servedConn{Conn: tc, ended: make(chan struct{})}
	select {
	case d.webConns <- c:
	case <-d.done:
		return
	}
	select {
	case <-c.ended:
	case <-hc.killed:
	case <-d.done:
	}
}

// connKey keys the request's connection in its context, for the TLS client certificate.
type connKey struct{}

// httpProof reads the SAS token of the Authorization header, or without one the TLS client certificate chain; a
// request with neither is refused.
func (d *DPS) httpProof(w http.ResponseWriter, r *http.Request) (proof, bool) {
	if r.PathValue("scope") != d.cfg.IDScope {
		writeDPSAnswer(w, dpsError(404, 1, "unknown id scope "+r.PathValue("scope"), -1))
		return proof{}, false
	}
	auth := r.Header.Get("Authorization")
	if c, _ := r.Context().Value(connKey{}).(net.Conn); auth == "" && c != nil {
		if certs := peerCertificates(c); len(certs) > 0 {
			return proof{certs: certs}, true
		}
	}
	tok, err := iothub.ParseSAS(auth)
	if err != nil {
		a := dpsError(401, 2, "Unauthorized: Authorization: "+err.Error(), -1)
		d.refused(r.PathValue("regId"), r.RemoteAddr, a)
		writeDPSAnswer(w, a)
		return proof{}, false
	}
	return proof{token: tok}, true
}

func (d *DPS) handleHTTPRegister(w http.ResponseWriter, r *http.Request) {
	p, ok := d.httpProof(w, r)
	if !ok {
		return
	}
	var req struct {
		RegistrationID string         `json:"registrationId"`
		Payload        map[string]any `json:"payload"`
	}
	regID := r.PathValue("regId")
	if body, err := readBody(r); err != nil || (len(body) > 0 && decodeJSON(body, &req) != nil) {
		writeDPSAnswer(w, dpsError(400, 4, "request body is not a registration request", -1))
		return
	}
	if req.RegistrationID != "" && req.RegistrationID != regID {
		writeDPSAnswer(w, dpsError(400, 4, "registrationId "+req.RegistrationID+" is not the path's "+regID, -1))
		return
	}
	writeDPSAnswer(w, d.register(regID, p, r.RemoteAddr))
}

func (d *DPS) handleHTTPStatus(w http.ResponseWriter, r *http.Request) {
	if p, ok := d.httpProof(w, r); ok {
		writeDPSAnswer(w, d.operationStatus(r.PathValue("regId"), r.PathValue("opId"), p, r.RemoteAddr))
	}
}

func (d *DPS) handleHTTPLookup(w http.ResponseWriter, r *http.Request) {
	if p, ok := d.httpProof(w, r); ok {
		writeDPSAnswer(w, d.statusLookup(r.PathValue("regId"), p, r.RemoteAddr))
	}
}

// dpsUpgrader accepts DPS's one WebSocket subprotocol; devices send no browser origin worth checking.
var dpsUpgrader = websocket.Upgrader{Subprotocols: []string{"mqtt"}, CheckOrigin: func(*http.Request) bool { return true }}

// handleWebSocket runs MQTT over WebSocket on the HTTPS port, as DPS serves both on 443 (the SDKs' MqttWs
// transports dial wss://{host}:443/$iothub/websocket). The connection stays the DPS's to cut, like any other.
func (d *DPS) handleWebSocket(w http.ResponseWriter, r *http.Request) {
	c, _ := r.Context().Value(connKey{}).(*servedConn)
	if c == nil {
		http.Error(w, "no connection", http.StatusInternalServerError)
		return
	}
	ws, err := dpsUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	hc := hubConnOf(c.Conn)
	wc := &wsConn{ws: ws, hc: hc}
	hc.setTop(wc)
	_ = wc.SetDeadline(time.Now().Add(connectTimeout)) // replaces the HTTP server's; mochi keeps it from CONNECT on
	_ = d.mqtt.srv.EstablishConnection("dps-ws", wc)
	d.mqtt.links.Delete(wc)
}

func writeDPSAnswer(w http.ResponseWriter, a dpsAnswer) {
	if a.retryAfter >= 0 {
		w.Header().Set("Retry-After", strconv.Itoa(a.retryAfter))
	}
	writeRawJSON(w, a.status, a.body)
}

func (d *DPS) startControl(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hubs", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, d.hubsJSON()) })
	mux.HandleFunc("GET /enrollments", d.handleListEnrollments)
	mux.HandleFunc("GET /enrollmentGroups", d.handleListEnrollments)
	for _, kind := range []string{"enrollments", "enrollmentGroups"} {
		group := kind == "enrollmentGroups"
		mux.HandleFunc("PUT /"+kind+"/{id}", func(w http.ResponseWriter, r *http.Request) { d.handlePutEnrollment(w, r, group) })
		mux.HandleFunc("GET /"+kind+"/{id}", func(w http.ResponseWriter, r *http.Request) { d.handleGetEnrollment(w, r, group) })
		mux.HandleFunc("DELETE /"+kind+"/{id}", func(w http.ResponseWriter, r *http.Request) { d.handleDeleteEnrollment(w, r, group) })
		mux.HandleFunc("POST /"+kind+"/{id}/move", func(w http.ResponseWriter, r *http.Request) { d.handleMove(w, r, group) })
	}
	mux.HandleFunc("GET /registrations", d.handleRegistrations)
	mux.HandleFunc("GET /registrations/{id}", d.handleRegistration)
	mux.HandleFunc("GET /registrationLog", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, d.RegistrationLog())
	})
	mux.HandleFunc("POST /faults", d.handleDPSFault)
	d.control = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	d.controlURL = "http://" + ln.Addr().String()
	srv := d.control
	if !d.spawn(func() { _ = srv.Serve(ln) }) {
		_ = ln.Close()
		return ErrClosed
	}
	return nil
}

type hubJSON struct {
	HostName   string `json:"hostName"`
	MQTTAddr   string `json:"mqtts"`
	ControlURL string `json:"controlUrl,omitempty"`
}

func (d *DPS) hubsJSON() []hubJSON {
	out := make([]hubJSON, len(d.cfg.Hubs))
	for i, h := range d.cfg.Hubs {
		out[i] = hubJSON{HostName: h.HostName(), MQTTAddr: h.Addr(), ControlURL: h.ControlURL()}
	}
	return out
}

func writeDPSError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrEnrollmentNotFound):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
	default:
		writeError(w, err)
	}
}

func (d *DPS) handleListEnrollments(w http.ResponseWriter, r *http.Request) {
	group := r.URL.Path == "/enrollmentGroups"
	out := []Enrollment{}
	for _, e := range d.Enrollments() {
		if e.isGroup() == group {
			out = append(out, e)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (d *DPS) handlePutEnrollment(w http.ResponseWriter, r *http.Request, group bool) {
	var e Enrollment
	if err := readJSON(r, &e); err != nil {
		writeError(w, err)
		return
	}
	id, field := r.PathValue("id"), &e.RegistrationID
	if group {
		field = &e.GroupID
	}
	if *field != "" && *field != id {
		writeError(w, errors.New("the body's id is not the path's "+id))
		return
	}
	*field = id
	stored, err := d.SetEnrollment(e)
	if err != nil {
		writeDPSError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, stored)
}

func (d *DPS) handleGetEnrollment(w http.ResponseWriter, r *http.Request, group bool) {
	get := d.Enrollment
	if group {
		get = d.EnrollmentGroup
	}
	e, err := get(r.PathValue("id"))
	if err != nil {
		writeDPSError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

func (d *DPS) handleDeleteEnrollment(w http.ResponseWriter, r *http.Request, group bool) {
	del := d.DeleteEnrollment
	if group {
		del = d.DeleteEnrollmentGroup
	}
	if err := del(r.PathValue("id")); err != nil {
		writeDPSError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (d *DPS) handleMove(w http.ResponseWriter, r *http.Request, group bool) {
	var req struct {
		IoTHub string `json:"iotHub"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	move := d.MoveEnrollment
	if group {
		move = d.MoveEnrollmentGroup
	}
	if err := move(r.PathValue("id"), req.IoTHub); err != nil {
		writeDPSError(w, err)
		return
	}
	d.handleGetEnrollment(w, r, group)
}

func (d *DPS) handleRegistrations(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]int{"registrations": d.Registrations()})
}

func (d *DPS) handleRegistration(w http.ResponseWriter, r *http.Request) {
	reg, ok := d.Registration(r.PathValue("id"))
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no registration " + r.PathValue("id")})
		return
	}
	writeJSON(w, http.StatusOK, reg)
}

func (d *DPS) handleDPSFault(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Kind       DPSFaultKind `json:"kind"`
		Seconds    float64      `json:"seconds,omitempty"`
		Count      int          `json:"count,omitempty"`
		RetryAfter float64      `json:"retryAfter,omitempty"`
		Status     int          `json:"status,omitempty"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	f := DPSFault{Kind: req.Kind, Duration: time.Duration(req.Seconds * float64(time.Second)), Count: req.Count,
		RetryAfter: time.Duration(req.RetryAfter * float64(time.Second)), Status: req.Status}
	if err := d.Fault(f); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, req)
}
