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
	"strings"
	"sync"
	"syscall"

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
	fs := flag.NewFlagSet("iotconn-hubsim", flag.ContinueOnError)
	var cfg hubsim.Config
	var devices deviceFlags
	var devicesFile string
	fs.StringVar(&cfg.Dir, "dir", "", "state directory: CA, server certificate, registry (required)")
	fs.StringVar(&cfg.MQTTAddr, "mqtt", hubsim.DefaultMQTTAddr, "MQTT over TLS listen address")
	fs.StringVar(&cfg.TCPAddr, "tcp", "", "plain MQTT listen address (off when empty)")
	fs.StringVar(&cfg.WSAddr, "ws", "", "MQTT over WebSocket (TLS) listen address (off when empty)")
	fs.StringVar(&cfg.AMQPAddr, "amqp", "", "AMQP 1.0 over TLS listen address, IoT Hub's port 5671 (off when empty)")
	fs.StringVar(&cfg.AMQPWSAddr, "amqp-ws", "", "AMQP over WebSocket (TLS) listen address; the --ws address serves both (off when empty)")
	fs.StringVar(&cfg.HostName, "hostname", "", "HostName of the printed connection strings (default localhost[:PORT]), "+
		"e.g. 127.0.0.1 for SDKs that dial fixed ports")
	fs.StringVar(&cfg.ControlAddr, "control", "127.0.0.1:8080", "HTTP control API listen address")
	fs.Var(&devices, "device", "register a device ID or ID:KEY (base64); repeatable")
	fs.StringVar(&devicesFile, "devices-file", "", "register the devices in this file, one ID or ID:KEY a line")
	fs.DurationVar(&cfg.TokenGrace, "token-grace", 0, "drop a connection this long after its SAS token expired")
	fs.DurationVar(&cfg.ClockSkew, "clock-skew", 0, "tolerated SAS token expiry skew")
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
	if _, err := hub.AddDevices(specs); err != nil {
		return err
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
	b.WriteString("hubsim: ready\n")
	if err := log.release(b.String()); err != nil {
		return err
	}
	sig := <-stop
	log.Write([]byte(fmt.Sprintf("hubsim: stopping on %s\n", sig)))
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
