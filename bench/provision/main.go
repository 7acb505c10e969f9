// Command provision measures a fleet of provisioned devices in one process against hubsim's two hubs and DPS, in
// process: N devices of one enrollment group register, then their hub goes down and comes back (the cached hub is
// retried: no registration expected), then the group is moved to the other hub (the old one deletes the devices:
// one registration each expected, spread so that DPS's admission rate, hubsim's --dps-quota, is not exceeded).
// It writes the figures as JSON (bench/results/provision.json; plot.py draws them):
//
//	go run ./bench/provision [-n 1000] [-quota 1000] [-outage 5s] [-spread auto] [-pause 35s] [-out FILE]
//
// The fleet hint (Options.ReconnectSpread) is 1.1 x N / the quota's rate per second unless -spread says otherwise
// (0: off); every client is on one shared dispatcher.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotconn/iotconn/core"
	"github.com/iotconn/iotconn/hubsim"
)

// settle bounds each phase: every device must be connected again within it.
const settle = 10 * time.Minute

func main() {
	n := flag.Int("n", 1000, "devices")
	quota := flag.Int("quota", 1000, "DPS registrations admitted a minute (hubsim --dps-quota); 0 = no cap")
	outage := flag.Duration("outage", 5*time.Second, "how long the hub is down")
	pause := flag.Duration("pause", core.DefaultBackoffResetAfter+5*time.Second,
		"the quiet time before each fault: longer than BackoffResetAfter, so every link counts as stable")
	spreadFlag := flag.String("spread", "auto", "the fleet hint (a duration, 0 = off, auto = 1.1 N / the quota's rate)")
	out := flag.String("out", "bench/results/provision.json", "where the JSON goes")
	flag.Parse()
	spread, err := fleetHint(*spreadFlag, *n, *quota)
	if err == nil {
		var r *Result
		if r, err = run(*n, *quota, *outage, spread, *pause); err == nil {
			err = write(*out, r)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "provision:", err)
		os.Exit(1)
	}
}

func fleetHint(flagValue string, n, quota int) (time.Duration, error) {
	if flagValue != "auto" {
		return time.ParseDuration(flagValue)
	}
	if quota == 0 {
		return 0, nil
	}
	return time.Duration(1.1 * float64(n) / (float64(quota) / 60) * float64(time.Second)), nil
}

// Result is what the JSON holds.
type Result struct {
	Date      string  `json:"date"`
	Machine   string  `json:"machine"`
	Command   string  `json:"command"`
	N         int     `json:"n"`
	Quota     int     `json:"quota_per_minute"`
	SpreadS   float64 `json:"reconnect_spread_s"`
	OutageS   float64 `json:"outage_s"`
	PauseS    float64 `json:"pause_before_faults_s"`
	Phases    []Phase `json:"phases"`
	Summaries string  `json:"summary"`
}

// Phase is one step of the run: what DPS counted and how the fleet came back.
type Phase struct {
	Name          string  `json:"name"`
	Registrations int     `json:"registrations"`   // assignments DPS made during the phase
	PerDeviceMin  int     `json:"per_device_min"`  // registrations the clients counted, the fewest
	PerDeviceMax  int     `json:"per_device_max"`  // and the most
	Refused429    int     `json:"refused_429"`     // registrations DPS answered 429 (its quota)
	AllBackS      float64 `json:"all_connected_s"` // from the fault until every device was connected on its hub
	MaxPerMinute  int     `json:"max_in_any_60s"`  // the most assignments in any 60 s window (sliding)
	MaxPerSecond  int     `json:"max_in_any_1s"`   // ... in any 1 s window
	PerSecond     []int   `json:"per_second"`      // assignments in each second from the fault on
	OnHub         string  `json:"hub"`             // where every device is at the end
	Elapsed       float64 `json:"phase_s"`         // the phase's length
}

// fleet is the devices and what DPS reported.
type fleet struct {
	clients   []*core.Client
	connected atomic.Int64  // devices whose last status is Connected
	refused   atomic.Int64  // 429 answers to registrations
	changed   chan struct{} // capacity 1: "connected changed"
}

// statusChanged counts a device's status change (on the dispatcher goroutine) and wakes waitConnected.
func (f *fleet) statusChanged(up *atomic.Bool, s core.ConnectionStatus) {
	now := s == core.StatusConnected
	if up.Swap(now) == now {
		return
	}
	if now {
		f.connected.Add(1)
	} else {
		f.connected.Add(-1)
	}
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func run(n, quota int, outage, spread, pause time.Duration) (*Result, error) {
	tmp, err := os.MkdirTemp("", "iotconn-bench-provision-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	hub1, err := hubsim.Start(hubsim.Config{Dir: filepath.Join(tmp, "hub1"), MQTTAddr: "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	defer hub1.Close()
	hub2, err := hubsim.Start(hubsim.Config{Dir: filepath.Join(tmp, "hub2"), CADir: filepath.Join(tmp, "hub1"),
		MQTTAddr: "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	defer hub2.Close()
	dps, err := hubsim.StartDPS(hubsim.DPSConfig{Hubs: []*hubsim.Hub{hub1, hub2}, MQTTAddr: "127.0.0.1:0",
		RegistrationsPerMinute: quota})
	if err != nil {
		return nil, err
	}
	defer dps.Close()
	group, err := dps.SetEnrollment(hubsim.Enrollment{GroupID: "fleet", IoTHubs: []string{hub1.HostName()}})
	if err != nil {
		return nil, err
	}

	f := &fleet{changed: make(chan struct{}, 1)}
	events, unsubscribe := dps.Events()
	done := make(chan struct{})
	var drained sync.WaitGroup
	drained.Add(1)
	go func() { // owned by run: ends when done closes, and run waits for it
		defer drained.Done()
		f.countRefusals(events, done)
	}()
	defer func() {
		unsubscribe()
		close(done)
		drained.Wait()
	}()

	d, err := core.NewDispatcher(core.DispatchThread)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, c := range f.clients {
			c.Close()
		}
		d.Close()
	}()
	for i := 0; i < n; i++ {
		c, err := core.NewProvisionedClient(core.Provisioning{Host: dps.MQTTAddr(), IDScope: dps.IDScope(),
			RegistrationID: fmt.Sprintf("dev-%05d", i), GroupKey: group.PrimaryKey},
			// A first connect under a quota waits for DPS's admissions: longer than the default 4 min may pass.
			core.Options{CAFile: dps.CAFile(), Dispatcher: d, ReconnectSpread: spread, OperationTimeout: settle})
		if err != nil {
			return nil, err
		}
		up := new(atomic.Bool)
		c.SetHandlers(core.Handlers{OnStatus: func(s core.ConnectionStatus, _ core.ConnectionStatusChangeReason) {
			f.statusChanged(up, s)
		}})
		f.clients = append(f.clients, c)
	}

	r := &Result{Date: time.Now().UTC().Format(time.RFC3339), N: n, Quota: quota, SpreadS: spread.Seconds(),
		OutageS: outage.Seconds(), PauseS: pause.Seconds(),
		Machine: fmt.Sprintf("%d CPUs, %s/%s, %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version()),
		Command: fmt.Sprintf("go run ./bench/provision -n %d -quota %d -outage %v -spread %v -pause %v", n, quota,
			outage, spread, pause)}

	// Phase 1: every device registers and connects (Connect waits; the fleet hint does not apply to a first
	// connect).
	r.Phases = append(r.Phases, f.phase("initial provisioning", dps, hub1, func() error {
		return f.connectAll()
	}))
	// Before each fault the fleet stays up longer than BackoffResetAfter: a device whose link came up later than
	// that before it drops again keeps counting its attempts, and its first retry is not the fleet hint's first
	// (U[0, window]) but a later one (at least the window), which would show as a second wave.
	// Phase 2: the hub goes down and comes back; the cached hub is retried.
	time.Sleep(pause)
	r.Phases = append(r.Phases, f.phase("hub down "+outage.String(), dps, hub1, func() error {
		if err := hub1.Fault(hubsim.Fault{Kind: hubsim.FaultHubDown, Duration: outage}); err != nil {
			return err
		}
		return f.waitConnected()
	}))
	// Phase 3: the group moves to hub2; hub1 deletes the devices and drops them.
	time.Sleep(pause)
	r.Phases = append(r.Phases, f.phase("moved to another hub", dps, hub2, func() error {
		if err := dps.MoveEnrollmentGroup("fleet", hub2.HostName()); err != nil {
			return err
		}
		return f.waitConnected()
	}))
	for _, p := range r.Phases {
		if p.OnHub == "" {
			return r, fmt.Errorf("phase %q did not settle: %+v", p.Name, p)
		}
	}
	r.Summaries = fmt.Sprintf("hub down: %d registrations; moved: %d (per device %d..%d), %d refused 429, at most "+
		"%d in any 60 s (quota %d)", r.Phases[1].Registrations, r.Phases[2].Registrations, r.Phases[2].PerDeviceMin,
		r.Phases[2].PerDeviceMax, r.Phases[2].Refused429, r.Phases[2].MaxPerMinute, quota)
	return r, nil
}

func (f *fleet) countRefusals(events <-chan hubsim.Event, done <-chan struct{}) {
	for {
		select {
		case e := <-events:
			if e.Kind == hubsim.EventReject && e.Code == 429 {
				f.refused.Add(1)
			}
		case <-done:
			return
		}
	}
}

// connectAll connects every client, 128 at a time, each within settle.
func (f *fleet) connectAll() error {
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	sem := make(chan struct{}, 128)
	errs := make(chan error, len(f.clients))
	var wg sync.WaitGroup
	for _, c := range f.clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() { // owned by connectAll, which waits for it
			defer wg.Done()
			defer func() { <-sem }()
			if err := c.Connect(ctx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return errors.Join(collect(errs)...)
}

func collect(errs <-chan error) []error {
	var out []error
	for err := range errs {
		out = append(out, err)
	}
	return out
}

// waitConnected waits, within settle, until the devices dropped below N connected and then all are connected
// again.
func (f *fleet) waitConnected() error {
	deadline := time.NewTimer(settle)
	defer deadline.Stop()
	n := int64(len(f.clients))
	dropped := false
	for {
		c := f.connected.Load()
		dropped = dropped || c < n
		if dropped && c == n {
			return nil
		}
		select {
		case <-f.changed:
		case <-deadline.C:
			return fmt.Errorf("%d of %d connected after %v", f.connected.Load(), n, settle)
		}
	}
}

// phase runs step and measures it: DPS's registrations, the clients' counts, 429s, until every device is back.
func (f *fleet) phase(name string, dps *hubsim.DPS, want *hubsim.Hub, step func() error) Phase {
	start := time.Now()
	before := make([]int, len(f.clients))
	for i, c := range f.clients {
		before[i] = c.Registrations()
	}
	regsBefore, refusedBefore := dps.Registrations(), f.refused.Load()
	err := step()
	p := Phase{Name: name, Elapsed: time.Since(start).Seconds(), AllBackS: time.Since(start).Seconds(),
		Registrations: dps.Registrations() - regsBefore, Refused429: int(f.refused.Load() - refusedBefore)}
	p.PerDeviceMin, p.PerDeviceMax = 1<<30, 0
	everyOnHub := err == nil
	for i, c := range f.clients {
		k := c.Registrations() - before[i]
		p.PerDeviceMin, p.PerDeviceMax = min(p.PerDeviceMin, k), max(p.PerDeviceMax, k)
		if hub, _ := c.Assignment(); hub != want.HostName() {
			everyOnHub = false
		}
	}
	if everyOnHub {
		p.OnHub = want.HostName()
	} else if err != nil {
		fmt.Fprintf(os.Stderr, "provision: %s: %v\n", name, err)
	}
	var times []time.Time
	for _, e := range dps.RegistrationLog() {
		if !e.At.Before(start) {
			times = append(times, e.At)
		}
	}
	p.PerSecond, p.MaxPerSecond, p.MaxPerMinute = rates(start, times)
	fmt.Fprintf(os.Stderr, "provision: %s: %d registrations (per device %d..%d), %d refused 429, all back in %.1f s\n",
		name, p.Registrations, p.PerDeviceMin, p.PerDeviceMax, p.Refused429, p.AllBackS)
	return p
}

// rates buckets times by second from start, and finds the most in any 1 s and any 60 s window, sliding.
func rates(start time.Time, times []time.Time) (perSecond []int, max1, max60 int) {
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	for _, t := range times {
		s := int(t.Sub(start) / time.Second)
		for len(perSecond) <= s {
			perSecond = append(perSecond, 0)
		}
		perSecond[s]++
	}
	window := func(w time.Duration) int {
		best, lo := 0, 0
		for hi := range times {
			for times[hi].Sub(times[lo]) >= w {
				lo++
			}
			best = max(best, hi-lo+1)
		}
		return best
	}
	return perSecond, window(time.Second), window(time.Minute)
}

func write(path string, r *Result) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "provision:", r.Summaries)
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
