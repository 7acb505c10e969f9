package retry

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/retry/retrytest"
)

const samples = 2000

var errFailed = errors.New("attempt failed")

func mustExponential(t *testing.T, count int, minB, maxB, delta time.Duration, j Jitter) *Exponential {
	t.Helper()
	e, err := NewExponential(count, minB, maxB, delta, j)
	if err != nil {
		t.Fatal(err)
	}
	return e.WithRand(rand.New(rand.NewPCG(1, 2)))
}

// distinctAtLeastHalf fails unless draws holds at least half as many distinct values as samples: a delay that a
// floor, guard or cap turned into a constant would hold one (DESIGN.md rule 7).
func distinctAtLeastHalf(t *testing.T, what string, draws []time.Duration) {
	t.Helper()
	seen := map[time.Duration]bool{}
	for _, d := range draws {
		seen[d] = true
	}
	if len(seen) < len(draws)/2 {
		t.Fatalf("%s: only %d distinct delays in %d draws", what, len(seen), len(draws))
	}
}

// spread returns the smallest and largest draw.
func spread(draws []time.Duration) (least, most time.Duration) {
	least = math.MaxInt64
	for _, d := range draws {
		least, most = min(least, d), max(most, d)
	}
	return least, most
}

// The tests below draw from seeded sources (WithRand), so each run sees the same values: their statistical checks
// are deterministic.

func TestJitterDefaultDrawsOverTheUpperHalfOfTheDotNetFormula(t *testing.T) {
	minB, maxB, delta := 2*time.Second, 90*time.Second, time.Second
	e := mustExponential(t, Unlimited, minB, maxB, delta, JitterDefault)
	for attempt := 1; attempt <= 12; attempt++ {
		lo, hi, termLo := retrytest.DefaultRange(attempt, minB, maxB, delta)
		draws := make([]time.Duration, samples)
		belowTerm := 0 // draws under the lowest value .NET's formula (with its +-20 % delta) can give
		for i := range draws {
			ok, d := e.ShouldRetry(attempt, errFailed)
			if !ok {
				t.Fatalf("attempt %d: unlimited policy gave up", attempt)
			}
			if d < lo || d > hi {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, lo, hi)
			}
			if d < termLo {
				belowTerm++
			}
			draws[i] = d
		}
		distinctAtLeastHalf(t, fmt.Sprintf("attempt %d", attempt), draws)
		if least, most := spread(draws); most-least < (hi-lo)*8/10 {
			t.Fatalf("attempt %d: delays span %v of [%v, %v]", attempt, most-least, lo, hi)
		}
		// Devices at the same attempt must not stay within +-20 % of each other: that kept a fleet in cohorts.
		if attempt >= 3 && belowTerm < samples/4 {
			t.Fatalf("attempt %d: only %d of %d delays below .NET's lowest %v", attempt, belowTerm, samples, termLo)
		}
	}
}

func TestJitterFullIsUniformBetweenMinAndTheCap(t *testing.T) {
	minB, maxB, delta := time.Second, 30*time.Second, time.Second
	e := mustExponential(t, Unlimited, minB, maxB, delta, JitterFull)
	for attempt := 1; attempt <= 8; attempt++ {
		hi := retrytest.Term(attempt, minB, maxB, delta)
		if attempt == 1 {
			hi = minB + 800*time.Millisecond
		}
		draws := make([]time.Duration, samples)
		below := 0 // samples in the lower half, for a crude uniformity check
		for i := range draws {
			_, d := e.ShouldRetry(attempt, errFailed)
			if d < minB || d > hi {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, minB, hi)
			}
			draws[i] = d
			if d < minB+(hi-minB)/2 {
				below++
			}
		}
		distinctAtLeastHalf(t, fmt.Sprintf("attempt %d", attempt), draws)
		if least, most := spread(draws); most-least < (hi-minB)*9/10 {
			t.Fatalf("attempt %d: delays span only %v of [%v, %v]", attempt, most-least, minB, hi)
		}
		if below < samples*4/10 || below > samples*6/10 {
			t.Fatalf("attempt %d: %d of %d samples in the lower half; not uniform", attempt, below, samples)
		}
	}
}

func TestJitterDecorrelatedDrawsFromThePreviousDelay(t *testing.T) {
	minB, maxB := 100*time.Millisecond, 10*time.Second
	e := mustExponential(t, Unlimited, minB, maxB, time.Hour, JitterDecorrelated) // delta is not used
	const chains, steps = 500, 15
	byAttempt := make([][]time.Duration, steps+1)
	for range chains {
		prev := minB
		for attempt := 1; attempt <= steps; attempt++ {
			_, d := e.ShouldRetry(attempt, errFailed)
			if hi := min(3*prev, maxB); d < minB || d > hi {
				t.Fatalf("attempt %d after %v: delay %v outside [%v, %v]", attempt, prev, d, minB, hi)
			}
			byAttempt[attempt] = append(byAttempt[attempt], d)
			prev = d
		}
	}
	mean := func(ds []time.Duration) time.Duration {
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		return sum / time.Duration(len(ds))
	}
	for attempt := 1; attempt <= steps; attempt++ {
		distinctAtLeastHalf(t, fmt.Sprintf("attempt %d", attempt), byAttempt[attempt])
	}
	if m1, m8 := mean(byAttempt[1]), mean(byAttempt[8]); m1 > 250*time.Millisecond || m8 < 2*time.Second {
		t.Fatalf("mean delay %v at attempt 1 and %v at attempt 8: the chain does not grow", m1, m8)
	}
	// Late in a chain many draws pass the cap: AWS's formula puts each of them at exactly maxBackoff, the jittered
	// cap spreads them over [8s, 10s].
	var capped []time.Duration
	for _, d := range byAttempt[steps] {
		if d >= 8*time.Second {
			capped = append(capped, d)
		}
	}
	if len(capped) < chains/5 {
		t.Fatalf("attempt %d: only %d of %d draws reached the cap's range [8s, 10s]", steps, len(capped), chains)
	}
	distinctAtLeastHalf(t, "draws at the cap", capped)
	if least, most := spread(capped); most-least < 1500*time.Millisecond {
		t.Fatalf("draws at the cap span only %v..%v", least, most)
	}
}

func TestCloneHasItsOwnDecorrelatedChain(t *testing.T) {
	minB := 100 * time.Millisecond
	shared := mustExponential(t, Unlimited, minB, time.Hour, 0, JitterDecorrelated)
	own := shared.Clone()
	for attempt := 1; attempt <= 30; attempt++ {
		shared.ShouldRetry(attempt, errFailed) // grows shared's chain far past 3 * minB
	}
	if _, d := own.ShouldRetry(2, errFailed); d > 3*minB {
		t.Fatalf("the clone's second delay %v follows the original's chain; want at most %v", d, 3*minB)
	}
	if _, d := shared.ShouldRetry(1, errFailed); d > 3*minB {
		t.Fatalf("attempt 1 waited %v: it must start a new chain (at most %v)", d, 3*minB)
	}
}

func TestLargeAttemptsSaturateAtTheJitteredCap(t *testing.T) {
	for _, j := range []Jitter{JitterDefault, JitterFull, JitterDecorrelated} {
		e := mustExponential(t, Unlimited, time.Millisecond, time.Hour, 100*time.Millisecond, j)
		for _, attempt := range []int{40, 61, 62, 63, 64, 1000, math.MaxInt} {
			_, d := e.ShouldRetry(attempt, errFailed)
			if d < time.Millisecond || d > time.Hour {
				t.Fatalf("jitter %d attempt %d: delay %v outside [1ms, 1h]", j, attempt, d)
			}
			if j == JitterDefault && d < 24*time.Minute {
				t.Fatalf("attempt %d: delay %v, want the upper half of the jittered cap, within [24m, 1h]", attempt, d)
			}
		}
	}
	// Durations near the limit of time.Duration must not wrap around.
	for _, j := range []Jitter{JitterDefault, JitterDecorrelated} {
		e := mustExponential(t, Unlimited, 1, math.MaxInt64, math.MaxInt64/2, j)
		for attempt := 1; attempt <= 70; attempt++ {
			if _, d := e.ShouldRetry(attempt, errFailed); d < 1 {
				t.Fatalf("jitter %d attempt %d: delay %v below the minimum", j, attempt, d)
			}
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
	if ok, d := e.ShouldRetry(1, errFailed); !ok || d < 100*time.Millisecond || d > 180*time.Millisecond {
		t.Fatalf("attempt 1: %v %v, want retry after [100ms, 180ms]", ok, d)
	}
	lo, hi, _ := retrytest.DefaultRange(4, 100*time.Millisecond, 10*time.Second, 100*time.Millisecond)
	for range samples {
		if _, d := e.ShouldRetry(4, errFailed); d < lo || d > hi {
			t.Fatalf("attempt 4: %v outside [%v, %v]", d, lo, hi)
		}
	}
	if ok, d := e.ShouldRetry(1_000_000, errFailed); !ok || d < 4*time.Second || d > 10*time.Second {
		t.Fatalf("attempt 1e6: %v %v, want retry within the upper half of the jittered cap, [4s, 10s]", ok, d)
	}
}

func TestConstructorErrors(t *testing.T) {
	cases := map[string]struct {
		count         int
		minB, maxB, d time.Duration
		jitter        Jitter
		want          string
	}{
		"count below -1":        {-2, 0, time.Second, 0, JitterDefault, "retry count -2"},
		"negative min":          {1, -1, time.Second, 0, JitterDefault, "negative"},
		"negative max":          {1, 0, -time.Second, 0, JitterDefault, "negative"},
		"negative delta":        {1, 0, time.Second, -time.Millisecond, JitterDefault, "negative"},
		"min above max":         {1, 2 * time.Second, time.Second, 0, JitterDefault, "greater than maximum"},
		"unknown jitter":        {1, 0, time.Second, 0, Jitter(7), "jitter mode 7"},
		"negative jitter":       {1, 0, time.Second, 0, Jitter(-1), "jitter mode -1"},
		"count below -1 b":      {math.MinInt, 0, time.Second, 0, JitterDefault, "retry count"},
		"decorrelated from 0":   {1, 0, time.Second, 0, JitterDecorrelated, "above 0"},
		"jitter after the last": {1, 0, time.Second, 0, Jitter(3), "jitter mode 3"},
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
	e := mustExponential(t, Unlimited, time.Millisecond, time.Minute, time.Second, JitterDecorrelated)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempt := 1; attempt <= 500; attempt++ {
				if _, d := e.ShouldRetry(attempt%10+1, errFailed); d < time.Millisecond || d > time.Minute {
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
	schedule := throttling.WithRand(rand.New(rand.NewPCG(5, 6))) // ThrottleDelay's schedule, seeded
	for attempt := 1; attempt <= 8; attempt++ {
		lo, hi, _ := retrytest.DefaultRange(attempt, 10*time.Second, time.Minute, 5*time.Second)
		draws := make([]time.Duration, samples)
		for i := range draws {
			_, draws[i] = schedule.ShouldRetry(attempt, errFailed)
			if d := draws[i]; d < lo || d > hi {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, lo, hi)
			}
		}
		distinctAtLeastHalf(t, fmt.Sprintf("attempt %d", attempt), draws)
		// The package-level source, as the engine uses it: bounds only.
		if d := ThrottleDelay(attempt); d < lo || d > hi {
			t.Fatalf("ThrottleDelay(%d) = %v outside [%v, %v]", attempt, d, lo, hi)
		}
	}
}

func TestSpacedKeepsThePolicysDelayUnlessTheAttemptFailedFast(t *testing.T) {
	for _, c := range []struct{ elapsed, delay, want time.Duration }{
		{time.Second, 0, 0}, // the attempt took the floor's length: not guarded
		{5 * time.Second, 250 * time.Millisecond, 250 * time.Millisecond},
		{5 * time.Second, -time.Second, 0},                                       // a custom policy's negative delay
		{300 * time.Millisecond, 700 * time.Millisecond, 700 * time.Millisecond}, // the policy already waits long enough
		{300 * time.Millisecond, 2 * time.Second, 2 * time.Second},
	} {
		if got := Spaced(c.elapsed, c.delay); got != c.want {
			t.Fatalf("elapsed %v delay %v: got %v, want %v", c.elapsed, c.delay, got, c.want)
		}
	}
	for _, c := range []struct{ elapsed, delay time.Duration }{
		{0, 0}, {300 * time.Millisecond, 100 * time.Millisecond}, {999 * time.Millisecond, 0},
		{-time.Second, 0}, // a clock that stepped back counts as no time
	} {
		floor := MinAttemptSpacing - max(c.elapsed, 0)
		for range 100 {
			if got := Spaced(c.elapsed, c.delay); got < floor || got > floor+GuardSpread {
				t.Fatalf("elapsed %v delay %v: got %v, want [%v, %v]", c.elapsed, c.delay, got, floor, floor+GuardSpread)
			}
		}
	}
}

// The guard draws from the package-level source, as the engine does, so this test is not seeded. Each of the 20
// slices of 100 ms expects 1000 of the 20000 draws (standard deviation about 31); a count outside 1000 +- 250 is
// more than 8 standard deviations out: probability below 1e-15 per slice, below 1e-13 for the run.
func TestSpacedSpreadsTheGuardUniformly(t *testing.T) {
	const draws, slices = 20000, 20
	var counts [slices]int
	for range draws {
		d := Spaced(0, 0) - MinAttemptSpacing
		counts[min(int(d/(GuardSpread/slices)), slices-1)]++
	}
	for i, n := range counts {
		if n < 750 || n > 1250 {
			t.Fatalf("slice %d of the guard's spread holds %d of %d draws, want 1000 +- 250: %v", i, n, draws, counts)
		}
	}
}
