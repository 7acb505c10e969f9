package retry

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
)

const samples = 2000

var errFailed = errors.New("attempt failed")

// bounds returns the formula's limits for attempt, computed independently of the package code (big steps in float).
func bounds(attempt int, minB, maxB, lowD, highD time.Duration) (time.Duration, time.Duration) {
	steps := math.Pow(2, float64(attempt-1)) - 1
	at := func(d time.Duration) time.Duration {
		v := float64(minB) + steps*float64(d)
		if v >= float64(maxB) {
			return maxB
		}
		return time.Duration(v)
	}
	return at(lowD), at(highD)
}

func mustExponential(t *testing.T, count int, minB, maxB, delta time.Duration, j Jitter) *Exponential {
	t.Helper()
	e, err := NewExponential(count, minB, maxB, delta, j)
	if err != nil {
		t.Fatal(err)
	}
	return e.WithRand(rand.New(rand.NewPCG(1, 2)))
}

func TestJitterDefaultFollowsTheDotNetFormula(t *testing.T) {
	minB, maxB, delta := 2*time.Second, 90*time.Second, time.Second
	e := mustExponential(t, Unlimited, minB, maxB, delta, JitterDefault)
	for attempt := 1; attempt <= 10; attempt++ {
		lo, hi := bounds(attempt, minB, maxB, 800*time.Millisecond, 1200*time.Millisecond)
		seen := map[time.Duration]bool{}
		var least, most time.Duration = math.MaxInt64, 0
		for range samples {
			ok, d := e.ShouldRetry(attempt, errFailed)
			if !ok {
				t.Fatalf("attempt %d: unlimited policy gave up", attempt)
			}
			if d < lo || d > hi {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, lo, hi)
			}
			seen[d] = true
			least, most = min(least, d), max(most, d)
		}
		switch {
		case attempt == 1 && (len(seen) != 1 || least != minB):
			t.Fatalf("attempt 1: want exactly minBackoff %v, got %d values from %v", minB, len(seen), least)
		case lo == maxB && (len(seen) != 1 || least != maxB):
			t.Fatalf("attempt %d: want the cap %v, got %d values from %v", attempt, maxB, len(seen), least)
		case attempt > 1 && lo < maxB:
			// The jitter must use most of its range, not sit at one value.
			if len(seen) < samples/2 || most-least < (hi-lo)*8/10 {
				t.Fatalf("attempt %d: %d distinct delays spanning %v of [%v, %v]", attempt, len(seen), most-least, lo, hi)
			}
		}
	}
}

func TestJitterFullIsUniformBetweenMinAndTheCap(t *testing.T) {
	minB, maxB, delta := time.Second, 30*time.Second, time.Second
	e := mustExponential(t, Unlimited, minB, maxB, delta, JitterFull)
	for attempt := 1; attempt <= 8; attempt++ {
		_, hi := bounds(attempt, minB, maxB, delta, delta)
		var least, most time.Duration = math.MaxInt64, 0
		below := 0 // samples in the lower half, for a crude uniformity check
		for range samples {
			_, d := e.ShouldRetry(attempt, errFailed)
			if d < minB || d > hi {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, minB, hi)
			}
			least, most = min(least, d), max(most, d)
			if d < minB+(hi-minB)/2 {
				below++
			}
		}
		if attempt == 1 {
			if most != minB {
				t.Fatalf("attempt 1: full jitter over an empty range gave %v, want %v", most, minB)
			}
			continue
		}
		if most-least < (hi-minB)*9/10 {
			t.Fatalf("attempt %d: delays span only %v of [%v, %v]", attempt, most-least, minB, hi)
		}
		if below < samples*4/10 || below > samples*6/10 {
			t.Fatalf("attempt %d: %d of %d samples in the lower half; not uniform", attempt, below, samples)
		}
	}
}

func TestLargeAttemptsSaturateAtTheCap(t *testing.T) {
	for _, j := range []Jitter{JitterDefault, JitterFull} {
		e := mustExponential(t, Unlimited, 0, time.Hour, 100*time.Millisecond, j)
		for _, attempt := range []int{40, 61, 62, 63, 64, 1000, math.MaxInt} {
			_, d := e.ShouldRetry(attempt, errFailed)
			if d < 0 || d > time.Hour {
				t.Fatalf("jitter %d attempt %d: delay %v outside [0, 1h]", j, attempt, d)
			}
			if j == JitterDefault && d != time.Hour {
				t.Fatalf("attempt %d: delay %v, want the cap", attempt, d)
			}
		}
	}
	// Durations near the limit of time.Duration must not wrap around.
	e := mustExponential(t, Unlimited, 0, math.MaxInt64, math.MaxInt64/2, JitterDefault)
	for attempt := 1; attempt <= 70; attempt++ {
		if _, d := e.ShouldRetry(attempt, errFailed); d < 0 {
			t.Fatalf("attempt %d: negative delay %v", attempt, d)
		}
	}
}

func TestZeroDeltaGivesMinBackoff(t *testing.T) {
	for _, j := range []Jitter{JitterDefault, JitterFull} {
		e := mustExponential(t, Unlimited, 300*time.Millisecond, time.Second, 0, j)
		for attempt := 1; attempt <= 80; attempt++ {
			if _, d := e.ShouldRetry(attempt, errFailed); d != 300*time.Millisecond {
				t.Fatalf("jitter %d attempt %d: %v, want 300ms", j, attempt, d)
			}
		}
	}
}

func TestRetryCountLimits(t *testing.T) {
	for _, count := range []int{0, 1, 3} {
		e := mustExponential(t, count, 0, time.Second, time.Millisecond, JitterDefault)
		for attempt := 1; attempt <= count+2; attempt++ {
			ok, _ := e.ShouldRetry(attempt, errFailed)
			if want := attempt <= count; ok != want {
				t.Fatalf("count %d attempt %d: retry %v, want %v", count, attempt, ok, want)
			}
		}
	}
	e := mustExponential(t, Unlimited, 0, time.Second, time.Millisecond, JitterDefault)
	for _, attempt := range []int{1, 100, 1 << 20, math.MaxInt} {
		if ok, _ := e.ShouldRetry(attempt, errFailed); !ok {
			t.Fatalf("Unlimited gave up at attempt %d", attempt)
		}
	}
}

func TestDefaultExponentialIsTheDotNetDefault(t *testing.T) {
	e := DefaultExponential().WithRand(rand.New(rand.NewPCG(3, 4)))
	if ok, d := e.ShouldRetry(1, errFailed); !ok || d != 100*time.Millisecond {
		t.Fatalf("attempt 1: %v %v, want retry after 100ms", ok, d)
	}
	lo, hi := bounds(4, 100*time.Millisecond, 10*time.Second, 80*time.Millisecond, 120*time.Millisecond)
	for range samples {
		if _, d := e.ShouldRetry(4, errFailed); d < lo || d > hi {
			t.Fatalf("attempt 4: %v outside [%v, %v]", d, lo, hi)
		}
	}
	if ok, d := e.ShouldRetry(1_000_000, errFailed); !ok || d != 10*time.Second {
		t.Fatalf("attempt 1e6: %v %v, want retry after the 10s cap", ok, d)
	}
}

func TestConstructorErrors(t *testing.T) {
	cases := map[string]struct {
		count         int
		minB, maxB, d time.Duration
		jitter        Jitter
		want          string
	}{
		"count below -1":   {-2, 0, time.Second, 0, JitterDefault, "retry count -2"},
		"negative min":     {1, -1, time.Second, 0, JitterDefault, "negative"},
		"negative max":     {1, 0, -time.Second, 0, JitterDefault, "negative"},
		"negative delta":   {1, 0, time.Second, -time.Millisecond, JitterDefault, "negative"},
		"min above max":    {1, 2 * time.Second, time.Second, 0, JitterDefault, "greater than maximum"},
		"unknown jitter":   {1, 0, time.Second, 0, Jitter(7), "jitter mode 7"},
		"negative jitter":  {1, 0, time.Second, 0, Jitter(-1), "jitter mode -1"},
		"count below -1 b": {math.MinInt, 0, time.Second, 0, JitterDefault, "retry count"},
	}
	for name, c := range cases {
		e, err := NewExponential(c.count, c.minB, c.maxB, c.d, c.jitter)
		if err == nil || e != nil {
			t.Fatalf("%s: got %v, %v; want an error", name, e, err)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: error %q does not mention %q", name, err, c.want)
		}
	}
	if _, err := NewExponential(0, time.Second, time.Second, 0, JitterFull); err != nil {
		t.Fatalf("min == max, zero delta, zero count must be valid: %v", err)
	}
}

func TestWithRandIsReproducibleAndLeavesTheOriginal(t *testing.T) {
	base := DefaultExponential()
	a := base.WithRand(rand.New(rand.NewPCG(9, 9)))
	b := base.WithRand(rand.New(rand.NewPCG(9, 9)))
	if a == base || a.r == base.r {
		t.Fatal("WithRand must return a copy with its own source")
	}
	for attempt := 2; attempt < 50; attempt++ {
		_, da := a.ShouldRetry(attempt, errFailed)
		_, db := b.ShouldRetry(attempt, errFailed)
		if da != db {
			t.Fatalf("attempt %d: same seed gave %v and %v", attempt, da, db)
		}
	}
}

func TestConcurrentUseOfAnInjectedSource(t *testing.T) {
	e := mustExponential(t, Unlimited, 0, time.Minute, time.Second, JitterFull)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempt := 1; attempt <= 500; attempt++ {
				if _, d := e.ShouldRetry(attempt%10+1, errFailed); d < 0 || d > time.Minute {
					t.Errorf("delay %v out of range", d)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestNoRetry(t *testing.T) {
	for _, attempt := range []int{0, 1, 2, 100} {
		if ok, d := (NoRetry{}).ShouldRetry(attempt, errFailed); ok || d != 0 {
			t.Fatalf("NoRetry attempt %d: %v %v", attempt, ok, d)
		}
	}
}

func TestCustomIsAskedWithAttemptAndError(t *testing.T) {
	fatal := errors.New("fatal")
	var p Policy = Custom(func(attempt int, err error) (bool, time.Duration) {
		return attempt < 3 && !errors.Is(err, fatal), time.Duration(attempt) * time.Second
	})
	if ok, d := p.ShouldRetry(2, errFailed); !ok || d != 2*time.Second {
		t.Fatalf("attempt 2: %v %v", ok, d)
	}
	if ok, _ := p.ShouldRetry(3, errFailed); ok {
		t.Fatal("attempt 3 must stop")
	}
	if ok, _ := p.ShouldRetry(1, fatal); ok {
		t.Fatal("the error must reach the policy")
	}
}

func TestThrottleDelay(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for attempt := 1; attempt <= 8; attempt++ {
		lo, hi := bounds(attempt, 10*time.Second, time.Minute, 4*time.Second, 6*time.Second)
		seen := map[time.Duration]bool{}
		for i := range samples {
			src := r
			if i%2 == 1 {
				src = nil // the package-level source
			}
			d := ThrottleDelay(attempt, 0, src)
			if d < lo || d > hi {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, lo, hi)
			}
			seen[d] = true
		}
		if lo < hi && len(seen) < samples/2 {
			t.Fatalf("attempt %d: only %d distinct delays", attempt, len(seen))
		}
	}
	if d := ThrottleDelay(1, 0, r); d != 10*time.Second {
		t.Fatalf("first throttled retry waits %v, want 10s", d)
	}
	for _, attempt := range []int{1, 5, 1000} {
		if d := ThrottleDelay(attempt, 3*time.Second, r); d != 3*time.Second {
			t.Fatalf("attempt %d: retry-after 3s gave %v", attempt, d)
		}
		if d := ThrottleDelay(attempt, 5*time.Minute, nil); d != 5*time.Minute {
			t.Fatalf("attempt %d: retry-after 5m gave %v", attempt, d)
		}
	}
}

func TestSpaced(t *testing.T) {
	start := time.Unix(1700000000, 0)
	cases := []struct {
		elapsed, delay, want time.Duration
	}{
		{0, 0, time.Second}, // instant failure: wait the whole guard
		{300 * time.Millisecond, 100 * time.Millisecond, 700 * time.Millisecond}, // guard longer than the policy's delay
		{300 * time.Millisecond, 2 * time.Second, 2 * time.Second},               // policy's delay longer
		{5 * time.Second, 0, 0}, // attempt took long: no extra wait
		{5 * time.Second, 250 * time.Millisecond, 250 * time.Millisecond},
		{-time.Second, 0, 2 * time.Second}, // clock stepped back: still never negative, guard measured from start
		{time.Second, 0, 0},
		{5 * time.Second, -time.Second, 0}, // a custom policy's negative delay
	}
	for _, c := range cases {
		if got := Spaced(start, start.Add(c.elapsed), c.delay); got != c.want {
			t.Fatalf("elapsed %v delay %v: got %v, want %v", c.elapsed, c.delay, got, c.want)
		}
	}
}

// instantTimer makes backoff.Retry record each wait instead of sleeping.
type instantTimer struct {
	waits []time.Duration
	c     chan time.Time
}

func (t *instantTimer) Start(d time.Duration) {
	t.waits = append(t.waits, d)
	t.c = make(chan time.Time, 1)
	t.c <- time.Time{}
}
func (t *instantTimer) Stop()               {}
func (t *instantTimer) C() <-chan time.Time { return t.c }

func TestBackOffAdapterDrivesBackoffRetry(t *testing.T) {
	e := mustExponential(t, 4, time.Second, 20*time.Second, time.Second, JitterDefault)
	timer := &instantTimer{}
	calls := 0
	err := backoff.RetryNotifyWithTimer(func() error { calls++; return errFailed }, e.BackOff(), nil, timer)
	if !errors.Is(err, errFailed) {
		t.Fatalf("Retry returned %v", err)
	}
	if calls != 5 || len(timer.waits) != 4 {
		t.Fatalf("%d calls and %d waits; want 1 try + 4 retries", calls, len(timer.waits))
	}
	for i, d := range timer.waits {
		lo, hi := bounds(i+1, time.Second, 20*time.Second, 800*time.Millisecond, 1200*time.Millisecond)
		if d < lo || d > hi {
			t.Fatalf("wait %d: %v outside [%v, %v]", i+1, d, lo, hi)
		}
	}

	b := mustExponential(t, Unlimited, 0, time.Minute, time.Second, JitterDefault).BackOff()
	for i := range 100 {
		if d := b.NextBackOff(); d == backoff.Stop {
			t.Fatalf("Unlimited schedule stopped after %d", i)
		}
	}
	b.Reset()
	if d := b.NextBackOff(); d != 0 {
		t.Fatalf("after Reset the first wait is %v, want minBackoff 0", d)
	}
}
