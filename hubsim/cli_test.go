package hubsim

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotconn/iotconn/core/iothub"
)

// cliProcess is a running iotconn-hubsim binary and its stdout lines.
type cliProcess struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan error
}

func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "iotconn-hubsim")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/iotconn-hubsim").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func startCLI(t *testing.T, bin string, args ...string) *cliProcess {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &cliProcess{cmd: cmd, lines: make(chan string, 1000), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// next returns the next stdout line.
func (p *cliProcess) next(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			t.Fatal("hubsim exited early")
		}
		return l
	case <-time.After(waitLimit):
		t.Fatal("hubsim printed nothing")
		return ""
	}
}

// startupLines reads up to and including "hubsim: ready".
func (p *cliProcess) startupLines(t *testing.T) []string {
	t.Helper()
	var lines []string
	for i := 0; i < 10000; i++ {
		l := p.next(t)
		lines = append(lines, l)
		if l == "hubsim: ready" {
			return lines
		}
	}
	t.Fatalf("no ready line in %q", lines)
	return nil
}

// stop sends SIGTERM and waits for a clean exit.
func (p *cliProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for range p.lines { // drain so the process never blocks on stdout
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("hubsim exited with %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("hubsim did not exit on SIGTERM")
	}
}

func TestCLIPrintsContractLinesServesAndStopsOnSIGTERM(t *testing.T) {
	bin := buildCLI(t)
	dir := t.TempDir()
	key := randomKey()
	p := startCLI(t, bin, "--dir", dir, "--mqtt", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0",
		"--amqp", "127.0.0.1:0", "--amqp-ws", "127.0.0.1:0", "--control", "127.0.0.1:0", "--device", "d1/m1",
		"--device", "d1", "--device", "d2:"+key)
	lines := p.startupLines(t)
	patterns := []string{
		`^hubsim: mqtts 127\.0\.0\.1:(\d+)$`,
		`^hubsim: tcp 127\.0\.0\.1:\d+$`,
		`^hubsim: ws 127\.0\.0\.1:\d+$`,
		`^hubsim: amqps 127\.0\.0\.1:\d+$`,
		`^hubsim: amqp-ws 127\.0\.0\.1:\d+$`,
		`^hubsim: control (http://127\.0\.0\.1:\d+)$`,
		`^hubsim: ca (/.+/ca\.pem)$`,
		`^hubsim: device d1 (HostName=localhost:\d+;DeviceId=d1;SharedAccessKey=[A-Za-z0-9+/=]+)$`,
		`^hubsim: device d1/m1 HostName=localhost:\d+;DeviceId=d1;ModuleId=m1;SharedAccessKey=[A-Za-z0-9+/=]+$`,
		`^hubsim: device d2 (HostName=localhost:\d+;DeviceId=d2;SharedAccessKey=` + regexp.QuoteMeta(key) + `)$`,
		`^hubsim: ready$`,
	}
	if len(lines) != len(patterns) {
		t.Fatalf("startup lines:\n%s", strings.Join(lines, "\n"))
	}
	groups := make([][]string, len(lines))
	for i, pat := range patterns {
		if groups[i] = regexp.MustCompile(pat).FindStringSubmatch(lines[i]); groups[i] == nil {
			t.Fatalf("line %d %q does not match %s", i, lines[i], pat)
		}
	}
	port, controlURL, caFile, cs := groups[0][1], groups[5][1], groups[6][1], groups[7][1]
	if !strings.Contains(cs, "HostName=localhost:"+port+";") || filepath.Dir(caFile) != dir {
		t.Fatalf("connection string %q or CA %q does not match the listener", cs, caFile)
	}

	// A device connects with the printed connection string and the printed CA; the connect is logged.
	fields := map[string]string{}
	for _, kv := range strings.Split(cs, ";") {
		k, v, _ := strings.Cut(kv, "=")
		fields[k] = v
	}
	h := &Hub{cfg: Config{Dir: dir}} // only for caPool(CAFile)
	opts := paho.NewClientOptions().AddBroker("ssl://127.0.0.1:" + port).SetClientID("d1").
		SetUsername(iothub.Username(fields["HostName"], "d1", "")).
		SetPassword(sasToken(t, iothub.ResourceURI(fields["HostName"], "d1", ""), fields["SharedAccessKey"], time.Now().Add(time.Hour))).
		SetTLSConfig(&tls.Config{RootCAs: caPool(t, h), ServerName: "localhost"}).SetAutoReconnect(false).SetConnectRetry(false)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
		t.Fatalf("connect with the printed connection string: %v", tok.Error())
	}
	if l := p.next(t); !strings.HasPrefix(l, "hubsim: connect d1 from 127.0.0.1:") {
		t.Fatalf("log line %q", l)
	}
	c.Disconnect(100)
	if l := p.next(t); !strings.HasPrefix(l, "hubsim: disconnect d1") {
		t.Fatalf("log line %q", l)
	}

	resp, err := http.Get(controlURL + "/devices/d2")
	if err != nil {
		t.Fatal(err)
	}
	var d deviceJSON
	err = json.NewDecoder(resp.Body).Decode(&d)
	resp.Body.Close()
	if err != nil || d.PrimaryKey != key {
		t.Fatalf("control API device: %+v, %v", d, err)
	}
	p.stop(t)

	// A second run on the same dir lists the stored devices without --device.
	p2 := startCLI(t, bin, "--dir", dir, "--mqtt", "127.0.0.1:0", "--control", "127.0.0.1:0")
	lines = p2.startupLines(t)
	joined := strings.Join(lines, "\n")
	if len(lines) != 7 || !strings.Contains(joined, "hubsim: device d1 ") || !strings.Contains(joined, "SharedAccessKey="+key) {
		t.Fatalf("second run lines:\n%s", joined)
	}
	p2.stop(t)
}

func TestCLIRegistersADevicesFile(t *testing.T) {
	bin := buildCLI(t)
	dir := t.TempDir()
	key := randomKey()
	var file strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&file, "f%04d\n", i)
	}
	fmt.Fprintf(&file, "\n  keyed:%s \r\nd1\n", key) // blank line, spaces, CRLF, d1 also given by --device
	list := filepath.Join(t.TempDir(), "devices.txt")
	if err := os.WriteFile(list, []byte(file.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--dir", dir, "--mqtt", "127.0.0.1:0", "--control", "127.0.0.1:0", "--device", "d1", "--devices-file", list}
	// deviceLines keeps each device line without its HostName, whose port changes between runs.
	deviceLines := func(lines []string) []string {
		var out []string
		for _, l := range lines {
			if strings.HasPrefix(l, "hubsim: device ") {
				out = append(out, regexp.MustCompile(`HostName=[^;]*;`).ReplaceAllString(l, ""))
			}
		}
		return out
	}
	p := startCLI(t, bin, args...)
	first := deviceLines(p.startupLines(t))
	p.stop(t)
	if len(first) != 1002 || !strings.HasPrefix(first[0], "hubsim: device d1 DeviceId=d1;SharedAccessKey=") ||
		!strings.HasPrefix(first[1000], "hubsim: device f0999 DeviceId=f0999;SharedAccessKey=") ||
		first[1001] != "hubsim: device keyed DeviceId=keyed;SharedAccessKey="+key {
		t.Fatalf("%d device lines, first %q, last %q", len(first), first[0], first[len(first)-1])
	}

	// The same flags on the next run keep the stored devices and their keys.
	p2 := startCLI(t, bin, args...)
	second := deviceLines(p2.startupLines(t))
	p2.stop(t)
	if strings.Join(second, "\n") != strings.Join(first, "\n") {
		t.Fatalf("second run changed the devices: %d lines", len(second))
	}
}

func TestCLIRejectsBadArguments(t *testing.T) {
	bin := buildCLI(t)
	badList := filepath.Join(t.TempDir(), "devices.txt")
	if err := os.WriteFile(badList, []byte("ok1\nok2\nbad id\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badListDir := t.TempDir()
	for _, args := range [][]string{
		{"--mqtt", "127.0.0.1:0"},
		{"--dir", t.TempDir(), "--mqtt", "127.0.0.1:0", "--control", "127.0.0.1:0", "--device", "bad id"},
		{"--dir", t.TempDir(), "--mqtt", "127.0.0.1:0", "--control", "127.0.0.1:0", "--device", "d1:" + randomKey(), "--device", "d1:" + randomKey()},
		{"--dir", t.TempDir(), "--mqtt", "127.0.0.1:0", "--control", "127.0.0.1:0", "--devices-file", filepath.Join(t.TempDir(), "missing")},
		{"--dir", badListDir, "--mqtt", "127.0.0.1:0", "--control", "127.0.0.1:0", "--devices-file", badList},
		{"--dir", t.TempDir(), "--mqtt", "127.0.0.1:0", "--control", "127.0.0.1:0", "--device", "ghost/m1"},
		{"--dir", t.TempDir(), "--bogus"},
	} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 || len(out) == 0 {
			t.Errorf("%v: exit %v, output %q; want a failure with a message", args, err, out)
		}
	}
	// A bad id in the file registers none of the file's devices.
	if r := openRegistry(t, badListDir); len(r.devices) != 0 {
		t.Errorf("after a bad devices file the registry holds %d devices", len(r.devices))
	}
}
