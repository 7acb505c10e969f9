package hubsimtest

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// hostsEnv marks the re-executed test binary and names the file bind-mounted over /etc/hosts.
const hostsEnv = "IOTCONN_TEST_HOSTS_FILE"

// Hosts is /etc/hosts as the test's process sees it: a file of its own, bind-mounted over /etc/hosts in a private
// mount namespace, so that a host name resolves through the system's real resolver path to what the test says.
type Hosts struct {
	path string
	mu   sync.Mutex
	ips  map[string]string // name -> address
}

// Set maps name to ip and rewrites the hosts file in place: truncated and written, never renamed, as a rename
// would leave the bind mount on the old inode. Go's resolver caches the file and sees a change within 5 s
// (by its modification time), so a name's first mapping should come before the process looks any name up.
func (h *Hosts) Set(t testing.TB, name, ip string) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ips[name] = ip
	var b strings.Builder
	b.WriteString("127.0.0.1 localhost\n::1 localhost\n")
	for n, a := range h.ips {
		b.WriteString(a + " " + n + "\n")
	}
	f, err := os.OpenFile(h.path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(b.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// WithHosts runs body with a private /etc/hosts. The test re-executes itself (only it) under `unshare -m`, which
// bind-mounts a temporary file over /etc/hosts in a mount namespace of its own; body runs there, and the outer
// test passes or fails with it. Where that cannot be done (no root, no unshare, no CAP_SYS_ADMIN) the test is
// skipped, saying why.
func WithHosts(t *testing.T, body func(t *testing.T, hosts *Hosts)) {
	t.Helper()
	if path := os.Getenv(hostsEnv); path != "" {
		body(t, &Hosts{path: path, ips: map[string]string{}})
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root, to bind-mount a hosts file in a private mount namespace (unshare -m)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare(1) (util-linux) for a private mount namespace")
	}
	// Root in a container may still lack CAP_SYS_ADMIN, which a mount namespace and a bind mount need.
	probe := t.TempDir() + "/probe"
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(unshare, "-m", "mount", "--bind", probe, probe).CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount in a private mount namespace here (%v: %s)", err, strings.TrimSpace(string(out)))
	}
	hostsFile := t.TempDir() + "/hosts"
	if err := os.WriteFile(hostsFile, []byte("127.0.0.1 localhost\n::1 localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-5*time.Second))
		defer cancel()
	}
	var run []string // this test alone: each level of its name anchored
	for _, part := range strings.Split(t.Name(), "/") {
		run = append(run, "^"+regexp.QuoteMeta(part)+"$")
	}
	args := []string{"-m", "sh", "-c", `mount --bind "$0" /etc/hosts && exec "$@"`, hostsFile, self,
		"-test.run=" + strings.Join(run, "/"), "-test.count=1", "-test.v"}
	cmd := exec.CommandContext(ctx, unshare, args...) // one PID throughout: unshare and sh exec
	cmd.Env = append(os.Environ(), hostsEnv+"="+hostsFile)
	out, err := cmd.CombinedOutput()
	t.Logf("in a private mount namespace:\n%s", out)
	switch {
	case err != nil:
		t.Fatalf("the test in a private mount namespace failed: %v", err)
	case !strings.Contains(string(out), "--- PASS: "+t.Name()):
		t.Fatal("the test in a private mount namespace did not pass")
	}
}
