// Command iotconn-hubsim runs the local IoT Hub emulator. It prints its addresses, the CA path and a connection
// string per device, then "hubsim: ready", then one line per connect, disconnect, reject and fault.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/iotconn/iotconn/hubsim"
)

type deviceFlags []string

func (d *deviceFlags) String() string     { return strings.Join(*d, ",") }
func (d *deviceFlags) Set(v string) error { *d = append(*d, v); return nil }

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "iotconn-hubsim:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "mint-cert" {
		return mintCert(args[1:], stdout)
	}
	fs := flag.NewFlagSet("iotconn-hubsim", flag.ContinueOnError)
	var cfg hubsim.Config
	var devices deviceFlags
	var devicesFile string
	var extraHubs, enrollments, groups deviceFlags
	var dcfg hubsim.DPSConfig
	fs.StringVar(&cfg.Dir, "dir", "", "state directory: CA, server certificate, registry (required)")
	fs.StringVar(&cfg.MQTTAddr, "mqtt", hubsim.DefaultMQTTAddr, "MQTT over TLS listen address")
	fs.StringVar(&cfg.TCPAddr, "tcp", "", "plain MQTT listen address (off when empty)")
	fs.StringVar(&cfg.WSAddr, "ws", "", "MQTT over WebSocket (TLS) listen address (off when empty)")
	fs.StringVar(&cfg.AMQPAddr, "amqp", "", "AMQP 1.0 over TLS listen address, IoT Hub's port 5671 (off when empty)")
	fs.StringVar(&cfg.AMQPWSAddr, "amqp-ws", "", "AMQP over WebSocket (TLS) listen address; the --ws address serves both (off when empty)")
	fs.StringVar(&cfg.HostName, "hostname", "", "HostName of the printed connection strings (default localhost[:PORT]), "+
		"e.g. 127.0.0.1 for SDKs that dial fixed ports")
	fs.StringVar(&cfg.ControlAddr, "control", "127.0.0.1:8080", "HTTP control API listen address")
	fs.Var(&devices, "device", "register a device ID or ID:KEY (base64), or a module DEVICE/MODULE[:KEY]; repeatable")
	fs.StringVar(&devicesFile, "devices-file", "", "register the devices in this file, one ID or ID:KEY a line")
	fs.DurationVar(&cfg.TokenGrace, "token-grace", 0, "drop a connection this long after its SAS token expired")
	fs.DurationVar(&cfg.ClockSkew, "clock-skew", 0, "tolerated SAS token expiry skew")
	fs.Var(&extraHubs, "hub", "run another hub whose TLS MQTT listens on ADDR[@CONTROL_ADDR] (state in DIR/hubN); repeatable")
	fs.StringVar(&dcfg.MQTTAddr, "dps-mqtt", "", "DPS over MQTT (TLS) listen address (DPS off when no --dps-* address)")
	fs.StringVar(&dcfg.HTTPSAddr, "dps-https", "", "DPS over HTTPS listen address")
	fs.StringVar(&dcfg.ControlAddr, "dps-control", "127.0.0.1:0", "DPS control API listen address")
	fs.StringVar(&dcfg.IDScope, "id-scope", hubsim.DefaultIDScope, "DPS id scope")
	fs.DurationVar(&dcfg.RetryAfter, "dps-retry-after", 3*time.Second, "retry-after of DPS's assigning answers (whole seconds)")
	fs.IntVar(&dcfg.AssigningPolls, "dps-assigning-polls", 0, "status polls of an operation answered \"assigning\" before it shows assigned")
	fs.IntVar(&dcfg.RegistrationsPerMinute, "dps-quota", 0, "DPS registrations admitted a minute, the rest answered 429 (0 = no cap; DPS's is 1000)")
	fs.Var(&enrollments, "enrollment", "DPS individual enrollment REGID[:KEY] (random key when none); repeatable")
	fs.Var(&groups, "enrollment-group", "DPS enrollment group GROUPID[:KEY] (random key when none); repeatable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if cfg.Dir == "" {
		return errors.New("--dir is required")
	}
	if devicesFile != "" {
		listed, err := readDevicesFile(devicesFile)
		if err != nil {
			return fmt.Errorf("--devices-file: %w", err)
		}
		devices = append(devices, listed...)
	}
	log := &heldWriter{out: stdout}
	cfg.Log = log
	// Stop on a signal that arrives while starting, too.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(stop)

	hub, err := hubsim.Start(cfg)
	if err != nil {
		return err
	}
	defer hub.Close()
	specs, err := newDevices(hub, devices)
	if err != nil {
		return err
	}
	devs, mods := splitModules(specs)
	if _, err := hub.AddDevices(devs); err != nil {
		return err
	}
	for _, m := range mods {
		d, mod, _ := strings.Cut(m.ID, "/")
		if _, err := hub.AddModule(d, mod, m.Key); err != nil {
			return err
		}
	}
	hubs := []*hubsim.Hub{hub}
	for i, spec := range extraHubs {
		mqttAddr, controlAddr, _ := strings.Cut(spec, "@")
		if controlAddr == "" {
			controlAddr = "127.0.0.1:0"
		}
		name := fmt.Sprintf("hub%d", i+2)
		h, err := hubsim.Start(hubsim.Config{Dir: filepath.Join(cfg.Dir, name), CADir: cfg.Dir, MQTTAddr: mqttAddr,
			ControlAddr: controlAddr, ClockSkew: cfg.ClockSkew, TokenGrace: cfg.TokenGrace, Log: hubsim.TagLog(log, name)})
		if err != nil {
			return fmt.Errorf("--hub %s: %w", spec, err)
		}
		defer h.Close()
		hubs = append(hubs, h)
	}
	var dps *hubsim.DPS
	if dcfg.MQTTAddr != "" || dcfg.HTTPSAddr != "" {
		dcfg.Hubs, dcfg.Log = hubs, log
		if dps, err = hubsim.StartDPS(dcfg); err != nil {
			return err
		}
		defer dps.Close()
		if err := enroll(dps, enrollments, false); err != nil {
			return fmt.Errorf("--enrollment: %w", err)
		}
		if err := enroll(dps, groups, true); err != nil {
			return fmt.Errorf("--enrollment-group: %w", err)
		}
	} else if len(enrollments)+len(groups) > 0 {
		return errors.New("--enrollment and --enrollment-group need --dps-mqtt or --dps-https")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "hubsim: mqtts %s\n", hub.Addr())
	if a := hub.TCPAddr(); a != "" {
		fmt.Fprintf(&b, "hubsim: tcp %s\n", a)
	}
	if a := hub.WSAddr(); a != "" {
		fmt.Fprintf(&b, "hubsim: ws %s\n", a)
	}
	if a := hub.AMQPAddr(); a != "" {
		fmt.Fprintf(&b, "hubsim: amqps %s\n", a)
	}
	if a := hub.AMQPWSAddr(); a != "" {
		fmt.Fprintf(&b, "hubsim: amqp-ws %s\n", a)
	}
	if u := hub.ControlURL(); u != "" {
		fmt.Fprintf(&b, "hubsim: control %s\n", u)
	}
	fmt.Fprintf(&b, "hubsim: ca %s\n", hub.CAFile())
	for _, d := range hub.Devices() {
		cs, err := hub.ConnectionString(d.ID)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "hubsim: device %s %s\n", d.ID, cs)
	}
	for i, h := range hubs[1:] {
		fmt.Fprintf(&b, "hubsim: hub%d %s mqtts %s control %s\n", i+2, h.HostName(), h.Addr(), h.ControlURL())
	}
	if dps != nil {
		if a := dps.MQTTAddr(); a != "" {
			fmt.Fprintf(&b, "hubsim: dps mqtts %s\n", a)
		}
		if a := dps.HTTPSAddr(); a != "" {
			fmt.Fprintf(&b, "hubsim: dps https %s\n", a)
		}
		fmt.Fprintf(&b, "hubsim: dps control %s\n", dps.ControlURL())
		fmt.Fprintf(&b, "hubsim: dps idscope %s\n", dps.IDScope())
		for _, e := range dps.Enrollments() {
			if e.GroupID != "" {
				fmt.Fprintf(&b, "hubsim: dps group %s %s\n", e.GroupID, e.PrimaryKey)
			} else {
				fmt.Fprintf(&b, "hubsim: dps enrollment %s %s\n", e.RegistrationID, e.PrimaryKey)
			}
		}
	}
	b.WriteString("hubsim: ready\n")
	if err := log.release(b.String()); err != nil {
		return err
	}
	sig := <-stop
	log.Write([]byte(fmt.Sprintf("hubsim: stopping on %s\n", sig)))
	return nil
}

// mintCert writes a test certificate to OUT.pem and its key to OUT-key.pem and prints its SHA-1 thumbprint.
func mintCert(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("iotconn-hubsim mint-cert", flag.ContinueOnError)
	var o hubsim.CertOptions
	var out, issuer string
	var days float64
	var expired bool
	fs.StringVar(&o.CommonName, "cn", "", "subject common name: the device id or registration id (required)")
	fs.StringVar(&out, "out", "", "write OUT.pem and OUT-key.pem (required)")
	fs.StringVar(&issuer, "issuer", "", "sign with ISSUER.pem and ISSUER-key.pem (a --ca certificate); default self-signed")
	fs.BoolVar(&o.CA, "ca", false, "make a CA that can sign device certificates")
	fs.Float64Var(&days, "days", 365, "valid for this many days from now")
	fs.BoolVar(&expired, "expired", false, "make it expired an hour ago")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.CommonName == "" || out == "" || fs.NArg() > 0 {
		return errors.New("mint-cert needs --cn and --out, and no other arguments")
	}
	o.NotAfter = time.Now().Add(time.Duration(days * float64(24*time.Hour)))
	if expired {
		o.NotAfter = time.Now().Add(-time.Hour)
	}
	if issuer != "" {
		certPEM, err := os.ReadFile(issuer + ".pem")
		if err != nil {
			return err
		}
		keyPEM, err := os.ReadFile(issuer + "-key.pem")
		if err != nil {
			return err
		}
		o.Issuer = &hubsim.Cert{CertPEM: string(certPEM), KeyPEM: string(keyPEM)}
	}
	c, err := hubsim.MintCert(o)
	if err != nil {
		return err
	}
	if err := os.WriteFile(out+"-key.pem", []byte(c.KeyPEM), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(out+".pem", []byte(c.CertPEM), 0o644); err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, c.Thumbprint)
	return err
}

// enroll creates the enrollments of ID[:KEY] entries: individual ones, or groups.
func enroll(dps *hubsim.DPS, entries []string, group bool) error {
	for _, entry := range entries {
		id, key, _ := strings.Cut(entry, ":")
		e := hubsim.Enrollment{RegistrationID: id, PrimaryKey: key}
		if group {
			e = hubsim.Enrollment{GroupID: id, PrimaryKey: key}
		}
		if _, err := dps.SetEnrollment(e); err != nil {
			return err
		}
	}
	return nil
}

// readDevicesFile reads one ID[:KEY] a line; blank lines are skipped.
func readDevicesFile(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var entries []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			entries = append(entries, line)
		}
	}
	return entries, nil
}

// newDevices returns the ID[:KEY] entries the registry lacks, each once, so they are registered in one batch; a
// device kept in the state dir or given twice with another key is an error.
func newDevices(hub *hubsim.Hub, entries []string) ([]hubsim.DeviceSpec, error) {
	var specs []hubsim.DeviceSpec
	queued := map[string]int{} // id -> its index in specs
	for _, e := range entries {
		id, key, _ := strings.Cut(e, ":")
		if i, ok := queued[id]; ok {
			if key != "" && key != specs[i].Key {
				return nil, fmt.Errorf("device %s is given twice with different keys", id)
			}
			continue
		}
		d, err := hub.Device(id)
		if errors.Is(err, hubsim.ErrNotFound) {
			queued[id] = len(specs)
			specs = append(specs, hubsim.DeviceSpec{ID: id, Key: key})
			continue
		}
		if err != nil {
			return nil, err
		}
		if key != "" && key != d.PrimaryKey && key != d.SecondaryKey {
			return nil, fmt.Errorf("device %s is registered in the state dir with another key", id)
		}
	}
	return specs, nil
}

// splitModules separates the modules ("d/m") from the devices, which go first: a module needs its device.
func splitModules(specs []hubsim.DeviceSpec) (devices, modules []hubsim.DeviceSpec) {
	for _, s := range specs {
		if strings.Contains(s.ID, "/") {
			modules = append(modules, s)
		} else {
			devices = append(devices, s)
		}
	}
	return devices, modules
}

// heldWriter holds log lines written while the hub starts so the startup lines come first.
type heldWriter struct {
	mu       sync.Mutex
	out      io.Writer
	held     bytes.Buffer
	released bool
}

func (w *heldWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.released {
		return w.held.Write(p)
	}
	return w.out.Write(p)
}

func (w *heldWriter) release(startup string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.released = true
	if _, err := io.WriteString(w.out, startup); err != nil {
		return err
	}
	_, err := w.out.Write(w.held.Bytes())
	return err
}
