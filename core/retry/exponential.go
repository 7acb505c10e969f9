package retry

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// Jitter selects how an Exponential policy randomises its delays.
type Jitter int

const (
	// JitterDefault is the .NET SDK's scheme: the growing term is scaled by a random delta in [0.8, 1.2] x deltaBackoff.
	JitterDefault Jitter = 0
	// JitterFull draws the whole delay uniformly between minBackoff and the un-jittered capped delay (AWS "full
	// jitter"), which spreads out a fleet of devices that lost the hub at the same moment.
	JitterFull Jitter = 1
	// JitterDecorrelated draws each delay between minBackoff and three times the previous one (AWS "decorrelated
	// jitter"): no two devices keep a common schedule, whatever their attempt counts.
	JitterDecorrelated Jitter = 2
)

// Unlimited as a retry count retries for ever.
const Unlimited = -1

// Exponential is the .NET SDK's ExponentialBackoff retry policy, with delays that stay random at both ends.
//
// Notation: n >= 1 is the retry attempt (1 after the first failure), U[a, b] a uniform draw with nanosecond
// resolution, both ends included, drawn afresh for each delay, and c = U[max(minBackoff, 0.8*maxBackoff),
// maxBackoff] the jittered cap.
//
// JitterDefault, the .NET formula (its 0-based retry count is our n-1) with both ends randomised and its lower
// half random too (AWS "equal jitter"):
//
//	n = 1:   min(minBackoff + U[0, 0.8*deltaBackoff], c)
//	n >= 2:  U[max(minBackoff, x/2), x],  x = min(minBackoff + (2^(n-1) - 1) * d, c),  d = U[0.8*deltaBackoff, 1.2*deltaBackoff]
//
// .NET waits exactly minBackoff first and exactly maxBackoff once the formula passes it; both constants keep a
// fleet that lost the hub together retrying in step (DESIGN.md rule 7). Its +-20 % delta still keeps devices at the
// same attempt within a fifth of each other, so a hub admitting R connects/s after an outage took 2 x N/R to take
// back N devices (bench/fleet); drawing each delay over the upper half of .NET's term brought that to 1.31 x.
// Large n saturate at c instead of overflowing a double-to-TimeSpan conversion as .NET does.
//
// JitterFull:
//
//	n = 1:   as JitterDefault
//	n >= 2:  U[minBackoff, min(minBackoff + (2^(n-1) - 1) * deltaBackoff, maxBackoff)]
//
// JitterDecorrelated, AWS's formula (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/)
// with the jittered cap; deltaBackoff is not used, and minBackoff must be above 0, since every delay grows from it:
//
//	delay(n) = min(U[minBackoff, 3 * delay(n-1)], c),  delay(0) = minBackoff
//
// delay(n-1) is the delay this policy value returned for the previous attempt; attempt 1 starts a new chain. The
// engine gives each client its own copy (Clone), so clients sharing a value do not share a chain.
//
// A deltaBackoff of 0 under JitterDefault and JitterFull, or minBackoff = maxBackoff, gives constant delays: the
// application asked for them.
type Exponential struct {
	retryCount                           int
	minBackoff, maxBackoff, deltaBackoff time.Duration
	jitter                               Jitter

	mu   *sync.Mutex   // guards r, shared by clones, and prev
	r    *rand.Rand    // nil: the package-level source, already safe for concurrent use
	prev time.Duration // JitterDecorrelated: the delay returned last
}

// NewExponential returns an Exponential policy; see the type's documentation for the formulas.
func NewExponential(retryCount int, minBackoff, maxBackoff, deltaBackoff time.Duration, jitter Jitter) (*Exponential, error) {
	switch {
	case retryCount < Unlimited:
		return nil, fmt.Errorf("retry count %d is invalid: use a count >= 0 or Unlimited (-1)", retryCount)
	case minBackoff < 0 || maxBackoff < 0 || deltaBackoff < 0:
		return nil, fmt.Errorf("backoff durations must not be negative (min %v, max %v, delta %v)", minBackoff, maxBackoff, deltaBackoff)
	case minBackoff > maxBackoff:
		return nil, fmt.Errorf("minimum backoff %v is greater than maximum backoff %v", minBackoff, maxBackoff)
	case jitter != JitterDefault && jitter != JitterFull && jitter != JitterDecorrelated:
		return nil, fmt.Errorf("unknown jitter mode %d", jitter)
	case jitter == JitterDecorrelated && minBackoff == 0:
		return nil, fmt.Errorf("decorrelated jitter grows every delay from the minimum backoff, which must be above 0")
	}
	return &Exponential{retryCount: retryCount, minBackoff: minBackoff, maxBackoff: maxBackoff,
		deltaBackoff: deltaBackoff, jitter: jitter, mu: new(sync.Mutex)}, nil
}

// DefaultExponential is the .NET SDK's default policy: unlimited retries, 100 ms to 10 s, 100 ms delta.
func DefaultExponential() *Exponential {
	return &Exponential{retryCount: Unlimited, minBackoff: 100 * time.Millisecond, maxBackoff: 10 * time.Second,
		deltaBackoff: 100 * time.Millisecond, jitter: JitterDefault, mu: new(sync.Mutex)}
}

// Clone returns a copy of e with its own decorrelated chain, drawing from the same source.
func (e *Exponential) Clone() *Exponential {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := *e
	c.prev = 0
	return &c
}

// ShouldRetry retries while attempt <= the retry count (always for Unlimited) and returns the delay for attempt
// (values below 1 count as 1).
func (e *Exponential) ShouldRetry(attempt int, _ error) (bool, time.Duration) {
	if e.retryCount != Unlimited && attempt > e.retryCount {
		return false, 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if attempt <= 1 {
		e.prev = 0
	}
	e.prev = e.draw(max(attempt, 1))
	return true, e.prev
}

// draw computes the delay for attempt; e.mu is held.
func (e *Exponential) draw(attempt int) time.Duration {
	c := uniform(e.r, max(e.minBackoff, e.maxBackoff-e.maxBackoff/5), e.maxBackoff)
	switch {
	case e.jitter == JitterDecorrelated:
		prev := e.prev
		if prev == 0 {
			prev = e.minBackoff
		}
		return min(uniform(e.r, e.minBackoff, satMul(prev, 3)), c)
	case attempt == 1:
		return min(satAdd(e.minBackoff, uniform(e.r, 0, e.deltaBackoff-e.deltaBackoff/5)), c)
	case e.jitter == JitterFull:
		return uniform(e.r, e.minBackoff, e.grown(attempt, e.deltaBackoff))
	}
	d := uniform(e.r, e.deltaBackoff-e.deltaBackoff/5, satAdd(e.deltaBackoff, e.deltaBackoff/5))
	x := min(e.grown(attempt, d), c)
	return uniform(e.r, max(e.minBackoff, x/2), x)
}

// grown is min(minBackoff + (2^(attempt-1) - 1) * d, maxBackoff), computed without overflow for any attempt.
func (e *Exponential) grown(attempt int, d time.Duration) time.Duration {
	n := attempt - 1
	if d == 0 || n == 0 {
		return e.minBackoff
	}
	if n >= 62 {
		return e.maxBackoff
	}
	steps := time.Duration(1)<<n - 1
	room := e.maxBackoff - e.minBackoff
	if steps > room/d {
		return e.maxBackoff
	}
	return e.minBackoff + steps*d
}

// NoRetry never retries: the first failure is final.
type NoRetry struct{}

func (NoRetry) ShouldRetry(int, error) (bool, time.Duration) { return false, 0 }

// throttling is the slower schedule for throttling errors: JitterDefault's formula from 10 s to 60 s, 5 s delta.
var throttling = &Exponential{retryCount: Unlimited, minBackoff: 10 * time.Second, maxBackoff: 60 * time.Second,
	deltaBackoff: 5 * time.Second, jitter: JitterDefault, mu: new(sync.Mutex)}

// ThrottleDelay is the wait before the n-th retry in a row that follows a throttling error, when the server named
// no wait of its own: JitterDefault's formula with 10 s min, 60 s max and 5 s delta, so every draw lies in
// [10 s, 60 s] (the first in [10 s, 14 s]).
func ThrottleDelay(n int) time.Duration {
	_, d := throttling.ShouldRetry(n, nil)
	return d
}

// MinAttemptSpacing is the CPU guard's floor: after an attempt that failed within this long of its own start (a
// dial that failed fast: no network), the next one starts no sooner than this after it.
const MinAttemptSpacing = time.Second

// GuardSpread is how far past its floor the guard spreads the next attempt, uniformly, so that devices that lost
// their network together do not retry together (over 2 s, a 100 ms slice gets 5 % of them).
const GuardSpread = 2 * time.Second

// Spaced is the wait before the next attempt when the one that failed started elapsed ago and the policy asked
// for delay. Only an attempt that failed within MinAttemptSpacing of its start is guarded, and only when the
// policy's delay would start the next one sooner than the floor: it then starts at U[MinAttemptSpacing,
// MinAttemptSpacing + GuardSpread] after the failed one started. Any other delay is kept as the policy gave it.
func Spaced(elapsed, delay time.Duration) time.Duration {
	delay, elapsed = max(delay, 0), max(elapsed, 0)
	if elapsed >= MinAttemptSpacing || delay >= MinAttemptSpacing-elapsed {
		return delay
	}
	return MinAttemptSpacing - elapsed + uniform(nil, 0, GuardSpread)
}

// Spread applies the fleet hint: window is how long the fleet that shares this device's hub needs to be admitted
// (devices / the hub's admission rate). The first retry of an outage waits delay + U[0, window], so a fleet that
// lost its hub at once comes back spread evenly over the window, at devices / window per second; each later retry
// waits at least U[window, window + window/LaterSpreadDivisor], so a device that failed keeps about its place in
// the window instead of crowding the others', and no two devices keep a common period (DESIGN.md rule 7). A window
// of 0 leaves delay as it is.
func Spread(window, delay time.Duration, first bool) time.Duration {
	switch {
	case window <= 0:
		return delay
	case first:
		return satAdd(delay, uniform(nil, 0, window))
	}
	return max(delay, uniform(nil, window, satAdd(window, window/LaterSpreadDivisor)))
}

// LaterSpreadDivisor sets how far past the window a later retry under the fleet hint may go: window / 20. A device
// that failed in the first part of the window (the hub still down) comes back that much later than its place, so
// the last of a fleet is back at most 1.05 windows after the hub (bench/fleet measured 1.1 windows with / 10).
const LaterSpreadDivisor = 20

// Jittered is a wait a service asked for, made safe for a fleet: at least d, plus U[0, d/2], so that devices a
// service answered with the same retry-after at the same moment (DPS's quota answers every refused registration
// the seconds until its next admission) do not all come back in the same instant. d <= 0 stays 0.
func Jittered(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return satAdd(d, uniform(nil, 0, d/2))
}

// uniform draws from [lo, hi] (hi >= lo >= 0) using r, or the package-level source when r is nil.
func uniform(r *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	span := uint64(hi-lo) + 1 // hi-lo < 2^63, so this cannot wrap
	if r == nil {
		return lo + time.Duration(rand.Uint64N(span))
	}
	return lo + time.Duration(r.Uint64N(span))
}

// satAdd adds two non-negative durations, saturating at the largest duration.
func satAdd(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// satMul multiplies a non-negative duration by k > 0, saturating at the largest duration.
func satMul(a time.Duration, k int64) time.Duration {
	if a > math.MaxInt64/time.Duration(k) {
		return math.MaxInt64
	}
	return a * time.Duration(k)
}
