// Package fuzz holds fuzz targets that drive a process of their own: FuzzCABI feeds the C ABI harness.
package fuzz

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// harnessPath is tests/c/fuzz_abi as CMake builds it (./build.sh), or $IOTCONN_FUZZ_ABI.
func harnessPath() string {
	if p := os.Getenv("IOTCONN_FUZZ_ABI"); p != "" {
		return p
	}
	p, _ := filepath.Abs("../../build/tests/c/fuzz_abi")
	return p
}

// programTimeout bounds one program. The harness's own watchdog reports a step that hangs after 4-8 s (with the
// program); this is the backstop should the harness itself stop answering.
const programTimeout = 30 * time.Second

// harness is one fuzz_abi --serve process: a program goes in as a length-prefixed frame, one byte comes back
// when it ran and every invariant held; the process aborts (and the pipe ends) when one broke.
type harness struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *os.File
	stderr bytes.Buffer // written by exec's copier until Wait returns
}

// startHarness starts the harness with its durable-queue directories under dir.
func startHarness(path, dir string) (*harness, error) {
	h := &harness{cmd: exec.Command(path, "--serve")}
	h.cmd.Env = append(os.Environ(), "IOTCONN_FUZZ_DIR="+dir)
	h.cmd.Stderr = &h.stderr
	// The fuzzing coordinator may kill a worker; its harness must not outlive it.
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := h.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe() // an *os.File, so reads can have a deadline
	if err != nil {
		return nil, err
	}
	h.cmd.Stdout = w
	if err := h.cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	w.Close()
	h.in, h.out = in, r
	return h, nil
}

// run sends one program and waits for its verdict.
func (h *harness) run(prog []byte) error {
	frame := binary.LittleEndian.AppendUint32(nil, uint32(len(prog)))
	if _, err := h.in.Write(append(frame, prog...)); err != nil {
		return fmt.Errorf("writing the program: %w", err)
	}
	h.out.SetReadDeadline(time.Now().Add(programTimeout))
	var ack [1]byte
	if _, err := io.ReadFull(h.out, ack[:]); err != nil {
		return fmt.Errorf("no verdict: %w", err)
	}
	return nil
}

// stop ends the process: closing stdin makes it exit; a kill by its PID if it does not within the timeout.
func (h *harness) stop() string {
	h.in.Close()
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(programTimeout):
		h.cmd.Process.Kill()
		<-done
	}
	h.out.Close()
	return h.stderr.String()
}

// One harness per process (each fuzz worker is a process); replaced after a failure.
var (
	harnessMu sync.Mutex
	current   *harness
)

// FuzzCABI runs programs of calls into every exported function of libiotconn.so with random, NULL, destroyed and
// foreign handles, bad struct sizes, NULL fields and huge lengths (tests/c/fuzz_abi.c reads the bytes and checks
// the invariants: documented codes, iotconn_last_error() set on every failure, ids 1, 2, ... and at most one
// completion each, no crash). The harness is a separate process because a Go test can neither use cgo nor load a
// second Go runtime. Go's coverage guidance does not see inside it, so mutation starts from the seeds below,
// which walk each entry point once.
func FuzzCABI(f *testing.F) {
	path := harnessPath()
	if _, err := os.Stat(path); err != nil {
		f.Skipf("the C ABI fuzz harness is not built (%v): run ./build.sh first", err)
	}
	dir := f.TempDir() // removed by the testing package, also when the harness was killed
	for _, seed := range cabiSeeds {
		f.Add(seed)
	}
	f.Cleanup(func() {
		harnessMu.Lock()
		defer harnessMu.Unlock()
		if current != nil {
			current.stop()
			current = nil
		}
	})
	f.Fuzz(func(t *testing.T, prog []byte) {
		harnessMu.Lock()
		defer harnessMu.Unlock()
		if current == nil {
			h, err := startHarness(path, dir)
			if err != nil {
				t.Fatal(err)
			}
			current = h
		}
		if err := current.run(prog); err != nil {
			stderr := current.stop()
			current = nil
			t.Fatalf("program %x: %v\n%s", prog, err, stderr)
		}
	})
}

// Seeds in the harness's byte format (fuzz_abi.c: op byte = index into ops[], then each op's own bytes).
// Handle bytes: 0 = the first live client, 8/9 = slot 0/1 as it is (live or destroyed), 10 NULL, 11 foreign,
// 12 s d = slot s's handle + d, 14 + 8 bytes = any value.
const (
	opCreate   = 0
	opDestroy  = 2
	opConnect  = 3
	opSend     = 4
	opRetry    = 7
	opRegister = 8
	opPoll     = 10
	opStatus   = 11
	opClose    = 12
	opCopy     = 13
	opStrings  = 14
	opTwin     = 16
	opRespond  = 18
)

var (
	createThread = []byte{opCreate, 0, 0, 1, 0, 1} // slot 0, refused port, defaults, THREAD
	createPoll   = []byte{opCreate, 1, 0, 1, 1, 1} // slot 1, POLL
	onSends      = []byte{opRegister, 0, 1, 1}     // our send callback, counting for the live client
	onStatus     = []byte{opRegister, 0, 0, 1}
	onLog        = []byte{opRegister, 0, 3, 1}
	sendGood     = []byte{opSend, 0, 1, 1}
	// slot 0, THREAD, with our twin and reported callbacks (bit 0x10 of the out byte)
	createTwin = []byte{opCreate, 0, 0, 1, 0, 0x11}
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var cabiSeeds = [][]byte{
	// A client's life: callbacks, sends (ids 1..3), a refused connect, close, a send after close, destroy twice.
	cat(createThread, onStatus, onSends, onLog, sendGood, sendGood, sendGood, []byte{opConnect, 0, 5},
		[]byte{opStatus, 0, 3}, []byte{opClose, 0}, sendGood, []byte{opStatus, 8, 3}, []byte{opDestroy, 8},
		[]byte{opDestroy, 8}, []byte{opSend, 8, 1, 1}),
	// The same in POLL mode, polled.
	cat(createPoll, onStatus, onSends, sendGood, []byte{opConnect, 0, 3}, []byte{opPoll, 0, 2},
		[]byte{opClose, 0}, []byte{opPoll, 0, 1}, []byte{opPoll, 0, 1}),
	// Every entry point with NULL (10), foreign (11), neighbouring (12) and arbitrary (14) handles.
	cat([]byte{opDestroy, 10}, []byte{opConnect, 11, 0, 0}, []byte{opSend, 10, 1, 1}, []byte{opRetry, 11, 1},
		[]byte{opRegister, 10, 0, 1, 0, 0, 0, 0, 0, 0, 0, 42}, []byte{opPoll, 11, 0}, []byte{opStatus, 10, 3},
		[]byte{opClose, 11}, createThread, []byte{opSend, 12, 0, 0, 1, 1}, []byte{opClose, 12, 0, 0xff},
		[]byte{opDestroy, 14, 0x40, 0, 0, 0, 0, 0, 0, 2}, []byte{opStatus, 14, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 3}),
	// Message structs (kind 2: size, payload, four ids, properties, then the out_id byte): size 0, NULL payload of
	// SIZE_MAX bytes, one byte over the limit, empty payload, properties NULL with SIZE_MAX of them, two
	// properties with separators in them, a NULL key.
	cat(createThread, onSends,
		[]byte{opSend, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1},
		[]byte{opSend, 0, 2, 7, 1, 1, 0, 0, 0, 0, 0, 1},
		[]byte{opSend, 0, 2, 7, 3, 1, 0, 0, 0, 0, 0, 1},
		[]byte{opSend, 0, 2, 7, 0, 0, 0, 0, 0, 0, 1},
		[]byte{opSend, 0, 2, 7, 4, 0, 9, 2, 1, 0, 0, 1, 0, 1},
		[]byte{opSend, 0, 2, 7, 4, 1, 0, 0, 0, 0, 0, 2, 2, 1, 2, 'k', '1', 3, '=', '&', 'v', 1, 1, 'x', 0, 1},
		[]byte{opSend, 0, 2, 7, 4, 0, 1, 0, 0, 0, 0, 2, 1, 5, 1, 'v', 1}),
	// Retry policies: NULL, the default, custom without and with a callback, unknown kind, min above max.
	cat(createThread, []byte{opRetry, 0, 0}, []byte{opRetry, 0, 1},
		[]byte{opRetry, 0, 2, 7, 2, 3, 0, 1, 0, 2, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		[]byte{opRetry, 0, 2, 7, 2, 3, 0, 1, 0, 2, 0, 3, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
		[]byte{opRetry, 0, 2, 7, 3, 3, 0, 1, 0, 2, 0, 3, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
		[]byte{opRetry, 0, 2, 7, 0, 3, 9, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, []byte{opConnect, 0, 9}),
	// iotconn_message_copy: a good message, NULL, size one short, one with properties, no out pointer; then the
	// names of codes and enums, in and out of range.
	cat([]byte{opCopy, 1, 1}, []byte{opCopy, 0, 1}, []byte{opCopy, 2, 1, 0, 0, 0, 0, 0, 0, 1},
		[]byte{opCopy, 2, 7, 2, 3, 'a', 'b', 'c', 1, 1, 0, 0, 2, 1, 1, 1, 'k', 1, 'v', 1}, []byte{opCopy, 1, 0},
		[]byte{opStrings, 7}, []byte{opStrings, 9}, []byte{opStrings, 200, 0x80, 0, 0, 0}),
	// Options structs (kind 2: size, transport, ca_file, ca_pem, cert, key, four u32s, queue bytes, timeout,
	// dispatch, then the out byte): all fields set, size 0, transport -1, dispatch 2, PEM text that is no
	// certificate; then a NULL and a malformed connection string.
	cat([]byte{opCreate, 2, 0, 2, 7, 1, 0, 1, 0, 0, 2, 5, 1, 3, 0, 0, 5, 1, 1, 1},
		[]byte{opCreate, 3, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1},
		[]byte{opCreate, 3, 0, 2, 7, 4, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1},
		[]byte{opCreate, 3, 0, 2, 7, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 2, 1},
		[]byte{opCreate, 3, 0, 2, 7, 0, 0, 0, 4, 'j', 'u', 'n', 'k', 0, 0, 0, 0, 0, 0, 1, 0, 0, 1},
		[]byte{opCreate, 3, 6, 1, 0, 1}, []byte{opCreate, 3, 7, 5, 'H', '=', ';', ';', 'x', 1, 0, 1}),
	// Twins and methods (twin op: handle, report?, out_id?, then the patch form): a GET (id 1), a good patch (id 2),
	// patches refused as not an object, over 32 KB and NULL, a send (id 3: one sequence); answers to a call that
	// never came and with a NULL request id; a GET without the twin callback (ESTATE); after close, a GET and an
	// answer (ECLOSED).
	cat(createTwin, onSends, []byte{opRegister, 0, 6, 1}, []byte{opRegister, 0, 7, 1}, []byte{opTwin, 0, 0, 1},
		[]byte{opTwin, 0, 1, 1, 0}, []byte{opTwin, 0, 1, 1, 2}, []byte{opTwin, 0, 1, 1, 7}, []byte{opTwin, 0, 1, 1, 8, 0},
		sendGood, []byte{opRespond, 0, 1, 3, 'r', 'i', 'd', 2, 0, 200}, []byte{opRespond, 0, 0, 0, 0, 200},
		[]byte{opRegister, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0}, []byte{opTwin, 0, 0, 1},
		[]byte{opRegister, 0, 4, 1}, []byte{opConnect, 0, 5}, []byte{opClose, 0}, []byte{opTwin, 0, 0, 1},
		[]byte{opRespond, 0, 1, 1, 'r', 2, 0, 200}),
}
