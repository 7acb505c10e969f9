package hubsim

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// defaultMethodTimeout applies when a method call gives no ?timeout=.
const defaultMethodTimeout = 30 * time.Second

// maxControlBody bounds request bodies of the control API.
const maxControlBody = 1 << 20

func (h *Hub) startControl(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /devices", h.handleListDevices)
	mux.HandleFunc("POST /devices", h.handleAddDevice)
	mux.HandleFunc("POST /devices/{id}/modules", h.handleAddModule)
	// A module's routes are its device's under /modules/{mid} (as in IoT Hub's service API), the same handlers.
	for _, base := range []string{"/devices/{id}", "/devices/{id}/modules/{mid}"} {
		mux.HandleFunc("GET "+base, h.handleGetDevice)
		mux.HandleFunc("PATCH "+base, h.handlePatchDevice)
		mux.HandleFunc("GET "+base+"/messages", h.handleMessages)
		mux.HandleFunc("GET "+base+"/twin", h.handleGetTwin)
		mux.HandleFunc("PATCH "+base+"/twin/desired", h.handlePatchDesired)
		mux.HandleFunc("POST "+base+"/methods/{name}", h.handleMethod)
	}
	mux.HandleFunc("POST /devices/{id}/c2d", h.handleC2D) // IoT Hub has no C2D for modules
	mux.HandleFunc("POST /faults", h.handleFault)
	mux.HandleFunc("POST /cas", h.handleAddCA)
	mux.HandleFunc("POST /certificates", handleMintCert)
	h.control = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	h.controlURL = "http://" + ln.Addr().String()
	srv := h.control
	if !h.spawn(func() { _ = srv.Serve(ln) }) {
		_ = ln.Close()
		return ErrClosed
	}
	return nil
}

type deviceJSON struct {
	Device
	ConnectionString string `json:"connectionString"`
}

func (h *Hub) deviceJSON(d Device) deviceJSON {
	return deviceJSON{Device: d, ConnectionString: h.connectionString(d)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	status := http.StatusBadRequest
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrNotConnected):
		status = http.StatusNotFound
	case errors.Is(err, ErrExists):
		status = http.StatusConflict
	case errors.Is(err, ErrMethodTimeout):
		status = http.StatusGatewayTimeout
	case errors.Is(err, ErrClosed):
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

// readJSON decodes a bounded JSON body.
func readJSON(r *http.Request, v any) error {
	b, err := readBody(r)
	if err != nil {
		return err
	}
	return decodeJSON(b, v)
}

// decodeJSON rejects unknown fields so typos are reported.
func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxControlBody+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxControlBody {
		return nil, errors.New("request body exceeds 1 MiB")
	}
	return b, nil
}

func (h *Hub) handleListDevices(w http.ResponseWriter, _ *http.Request) {
	out := []deviceJSON{}
	for _, d := range h.Devices() {
		out = append(out, h.deviceJSON(d))
	}
	writeJSON(w, http.StatusOK, out)
}

// deviceRequest is one device of POST /devices.
type deviceRequest struct {
	ID          string   `json:"id"`
	Key         string   `json:"key"`
	Status      string   `json:"status"`
	Auth        string   `json:"auth"`
	Thumbprints []string `json:"thumbprints"`
}

// handleAddDevice registers one device (a JSON object) or many (an array of them, all or none, one registry commit).
func (h *Hub) handleAddDevice(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var reqs []deviceRequest
	batch := bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("["))
	if batch {
		err = decodeJSON(body, &reqs)
	} else {
		reqs = make([]deviceRequest, 1)
		err = decodeJSON(body, &reqs[0])
	}
	if err != nil {
		writeError(w, err)
		return
	}
	specs := make([]DeviceSpec, len(reqs))
	for i, req := range reqs {
		enabled, err := parseStatus(req.Status)
		if err != nil {
			writeError(w, err)
			return
		}
		specs[i] = DeviceSpec{ID: req.ID, Key: req.Key, Disabled: !enabled, Auth: req.Auth, Thumbprints: req.Thumbprints}
	}
	devs, err := h.AddDevices(specs)
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]deviceJSON, len(devs))
	for i, d := range devs {
		out[i] = h.deviceJSON(d)
	}
	if batch {
		writeJSON(w, http.StatusCreated, out)
	} else {
		writeJSON(w, http.StatusCreated, out[0])
	}
}

func parseStatus(s string) (enabled bool, err error) {
	switch s {
	case "", StatusEnabled:
		return true, nil
	case StatusDisabled:
		return false, nil
	}
	return false, fmt.Errorf("status must be %q or %q, got %q", StatusEnabled, StatusDisabled, s)
}

// handleAddModule registers a module of an existing device: {"id","key"?}.
func (h *Hub) handleAddModule(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	d, err := h.AddModule(r.PathValue("id"), req.ID, req.Key)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, h.deviceJSON(d))
}

// identityOf is the identity a request's path names: "{id}", or "{id}/{mid}" under /modules/{mid}.
func identityOf(r *http.Request) string {
	if m := r.PathValue("mid"); m != "" {
		return r.PathValue("id") + "/" + m
	}
	return r.PathValue("id")
}

func (h *Hub) handleGetDevice(w http.ResponseWriter, r *http.Request) {
	d, err := h.Device(identityOf(r))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, h.deviceJSON(d))
}

func (h *Hub) handlePatchDevice(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Status      string   `json:"status"`
		Thumbprints []string `json:"thumbprints"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Status == "" && req.Thumbprints == nil {
		writeError(w, errors.New(`"status" or "thumbprints" is required`))
		return
	}
	var err error
	if req.Thumbprints != nil {
		err = h.SetThumbprints(identityOf(r), req.Thumbprints)
	}
	if req.Status != "" && err == nil {
		var enabled bool
		if enabled, err = parseStatus(req.Status); err == nil {
			err = h.SetDeviceEnabled(identityOf(r), enabled)
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	h.handleGetDevice(w, r)
}

type messageJSON struct {
	Payload         []byte            `json:"payload"`
	MessageID       string            `json:"messageId"`
	CorrelationID   string            `json:"correlationId"`
	ContentType     string            `json:"contentType"`
	ContentEncoding string            `json:"contentEncoding"`
	Properties      map[string]string `json:"properties"`
	PropertyList    [][2]string       `json:"propertyList"`
	Annotations     map[string]string `json:"annotations,omitempty"`
	ArrivedAt       string            `json:"arrivedAt"`
}

func (h *Hub) handleMessages(w http.ResponseWriter, r *http.Request) {
	id := identityOf(r)
	if _, err := h.Device(id); err != nil {
		writeError(w, err)
		return
	}
	out := []messageJSON{}
	for _, m := range h.Messages(id) {
		out = append(out, messageJSON{
			Payload: m.Payload, MessageID: m.MessageID, CorrelationID: m.CorrelationID, ContentType: m.ContentType,
			ContentEncoding: m.ContentEncoding, Properties: m.Properties, PropertyList: m.PropertyList,
			Annotations: m.Annotations, ArrivedAt: m.ArrivedAt.UTC().Format(time.RFC3339Nano),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Hub) handleC2D(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Payload         *string           `json:"payload"`
		PayloadBase64   *string           `json:"payloadBase64"`
		MessageID       string            `json:"messageId"`
		CorrelationID   string            `json:"correlationId"`
		ContentType     string            `json:"contentType"`
		ContentEncoding string            `json:"contentEncoding"`
		Properties      map[string]string `json:"properties"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	m := C2DMessage{MessageID: req.MessageID, CorrelationID: req.CorrelationID, ContentType: req.ContentType,
		ContentEncoding: req.ContentEncoding, Properties: req.Properties}
	switch {
	case req.Payload != nil && req.PayloadBase64 != nil:
		writeError(w, errors.New(`give "payload" or "payloadBase64", not both`))
		return
	case req.Payload != nil:
		m.Payload = []byte(*req.Payload)
	case req.PayloadBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*req.PayloadBase64)
		if err != nil {
			writeError(w, fmt.Errorf("payloadBase64: %w", err))
			return
		}
		m.Payload = b
	}
	if err := h.SendC2D(r.PathValue("id"), m); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func writeRawJSON(w http.ResponseWriter, status int, doc []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(doc)
}

func (h *Hub) handleGetTwin(w http.ResponseWriter, r *http.Request) {
	doc, err := h.Twin(identityOf(r))
	if err != nil {
		writeError(w, err)
		return
	}
	writeRawJSON(w, http.StatusOK, doc)
}

func (h *Hub) handlePatchDesired(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err == nil {
		body, err = h.UpdateDesired(identityOf(r), body)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeRawJSON(w, http.StatusOK, body)
}

func (h *Hub) handleMethod(w http.ResponseWriter, r *http.Request) {
	timeout := defaultMethodTimeout
	if s := r.URL.Query().Get("timeout"); s != "" {
		secs, err := strconv.ParseFloat(s, 64)
		if err != nil || secs <= 0 || secs > 3600 {
			writeError(w, fmt.Errorf("timeout must be seconds in (0, 3600], got %q", s))
			return
		}
		timeout = time.Duration(secs * float64(time.Second))
	}
	payload, err := readBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(payload) == 0 {
		payload = []byte("null")
	}
	if !json.Valid(payload) {
		writeError(w, errors.New("method payload must be JSON"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	res, err := h.InvokeMethod(ctx, identityOf(r), r.PathValue("name"), payload)
	if err != nil {
		writeError(w, err)
		return
	}
	answer := json.RawMessage(res.Payload)
	if len(res.Payload) == 0 {
		answer = json.RawMessage("null")
	} else if !json.Valid(res.Payload) {
		answer, _ = json.Marshal(string(res.Payload))
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": res.Status, "payload": answer})
}

type faultJSON struct {
	Kind      FaultKind      `json:"kind"`
	Device    string         `json:"device,omitempty"`
	Seconds   float64        `json:"seconds,omitempty"`
	Rate      int            `json:"rate,omitempty"`
	Addr      string         `json:"addr,omitempty"`
	Listener  string         `json:"listener,omitempty"`
	Answer    ThrottleAnswer `json:"answer,omitempty"`
	Condition string         `json:"condition,omitempty"`
}

func (h *Hub) handleFault(w http.ResponseWriter, r *http.Request) {
	var req faultJSON
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	f := Fault{Kind: req.Kind, Device: req.Device, Duration: time.Duration(req.Seconds * float64(time.Second)),
		Rate: req.Rate, Addr: req.Addr, Listener: req.Listener, Answer: req.Answer, Condition: req.Condition}
	if err := h.Fault(f); err != nil {
		writeError(w, err)
		return
	}
	req.Addr = h.Addr()
	if l, _ := h.movedListener(f); l != nil {
		req.Addr = l.address()
	}
	writeJSON(w, http.StatusOK, req)
}
