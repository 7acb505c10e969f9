package retry

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Jitter selects how an Exponential policy randomises its delays.
type Jitter int

const (
	// JitterDefault is the .NET SDK's scheme: the growing term is scaled by a random delta in [0.8, 1.2] x deltaBackoff.
	JitterDefault Jitter = 0
	// JitterFull draws the whole delay uniformly between minBackoff and the un-jittered capped delay (AWS "full
	// jitter"), which spreads out a fleet of devices that lost the hub at the same moment.
	JitterFull Jitter = 1
)

// Unlimited as a retry count retries for ever.
const Unlimited = -1

// Exponential is the .NET SDK's ExponentialBackoff retry policy.
//
// With JitterDefault the delay before retry attempt n (n = 1 after the first failure) is
//
//	min(minBackoff + (2^(n-1) - 1) * d, maxBackoff), d uniform in [0.8*deltaBackoff, 1.2*deltaBackoff]
//
// which matches the .NET SDK (its 0-based retry count is our n-1). Differences from .NET: d is drawn with nanosecond
// resolution and an inclusive upper bound where .NET draws whole milliseconds below 1.2*delta, and large n saturate
// at maxBackoff instead of overflowing a double-to-TimeSpan conversion.
//
// With JitterFull the delay is uniform in [minBackoff, min(minBackoff + (2^(n-1) - 1) * deltaBackoff, maxBackoff)]:
// full jitter floored at minBackoff.
type Exponential struct {
	retryCount                           int
	minBackoff, maxBackoff, deltaBackoff time.Duration
	jitter                               Jitter

	mu *sync.Mutex // guards r, which *rand.Rand needs for concurrent use
	r  *rand.Rand  // nil: the package-level source, already safe for concurrent use
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
	case jitter != JitterDefault && jitter != JitterFull:
		return nil, fmt.Errorf("unknown jitter mode %d", jitter)
	}
	return &Exponential{retryCount: retryCount, minBackoff: minBackoff, maxBackoff: maxBackoff,
		deltaBackoff: deltaBackoff, jitter: jitter, mu: new(sync.Mutex)}, nil
}

// DefaultExponential is the .NET SDK's default policy: unlimited retries, 100 ms to 10 s, 100 ms delta.
func DefaultExponential() *Exponential {
	return &Exponential{retryCount: Unlimited, minBackoff: 100 * time.Millisecond, maxBackoff: 10 * time.Second,
		deltaBackoff: 100 * time.Millisecond, jitter: JitterDefault, mu: new(sync.Mutex)}
}

// WithRand returns a copy of e that draws its jitter from r (tests pass a seeded source). The copy serialises its
// use of r, so it stays safe for concurrent use.
func (e *Exponential) WithRand(r *rand.Rand) *Exponential {
	c := *e
	c.mu, c.r = new(sync.Mutex), r
	return &c
}

// ShouldRetry retries while attempt <= the retry count (always for Unlimited) and returns the delay for attempt.
func (e *Exponential) ShouldRetry(attempt int, _ error) (bool, time.Duration) {
	if e.retryCount != Unlimited && attempt > e.retryCount {
		return false, 0
	}
	return true, e.Delay(attempt)
}

// Delay is the randomised delay before retry attempt (values below 1 count as 1), whatever the retry count.
func (e *Exponential) Delay(attempt int) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.draw(e.r, attempt)
}

// draw computes the delay for attempt with randomness from r (nil: the package-level source).
func (e *Exponential) draw(r *rand.Rand, attempt int) time.Duration {
	if e.jitter == JitterFull {
		return uniform(r, e.minBackoff, e.capped(attempt, e.deltaBackoff))
	}
	d := uniform(r, e.deltaBackoff-e.deltaBackoff/5, satAdd(e.deltaBackoff, e.deltaBackoff/5))
	return e.capped(attempt, d)
}

// capped is min(minBackoff + (2^(attempt-1) - 1) * d, maxBackoff), computed without overflow for any attempt.
func (e *Exponential) capped(attempt int, d time.Duration) time.Duration {
	n := max(attempt, 1) - 1
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

// BackOff adapts e to github.com/cenkalti/backoff/v4 (for backoff.Retry and friends). backoff's own
// ExponentialBackOff cannot express the .NET formula: it multiplies the previous interval and jitters it by a
// factor around itself, while .NET adds (2^(n-1) - 1) random deltas to a fixed minimum, so the schedule here
// implements NextBackOff itself and leaves the retry count to backoff.WithMaxRetries.
func (e *Exponential) BackOff() backoff.BackOff {
	s := &schedule{policy: e}
	if e.retryCount == Unlimited {
		return s
	}
	return backoff.WithMaxRetries(s, uint64(e.retryCount))
}

// schedule counts attempts for the stateful backoff.BackOff interface.
type schedule struct {
	policy  *Exponential
	attempt int
}

func (s *schedule) NextBackOff() time.Duration {
	if s.attempt < math.MaxInt {
		s.attempt++
	}
	return s.policy.Delay(s.attempt)
}

func (s *schedule) Reset() { s.attempt = 0 }

// NoRetry never retries: the first failure is final.
type NoRetry struct{}

func (NoRetry) ShouldRetry(int, error) (bool, time.Duration) { return false, 0 }

// throttling is the slower schedule for throttling errors.
var throttling = &Exponential{retryCount: Unlimited, minBackoff: 10 * time.Second, maxBackoff: 60 * time.Second,
	deltaBackoff: 5 * time.Second, jitter: JitterDefault}

// ThrottleDelay is the wait before retry attempt after a throttling error: the server's retryAfter when positive,
// else JitterDefault's formula with 10 s min, 60 s max and 5 s delta. r nil uses the package-level source; a
// non-nil r must not be shared between goroutines without the caller's own locking.
func ThrottleDelay(attempt int, retryAfter time.Duration, r *rand.Rand) time.Duration {
	if retryAfter > 0 {
		return retryAfter
	}
	return throttling.draw(r, attempt)
}

// MinAttemptSpacing is the CPU guard: an attempt never starts sooner than this after the previous one started.
const MinAttemptSpacing = time.Second

// Spaced stretches delay so the next attempt starts no sooner than MinAttemptSpacing after attemptStart.
func Spaced(attemptStart, now time.Time, delay time.Duration) time.Duration {
	return max(delay, attemptStart.Add(MinAttemptSpacing).Sub(now), 0)
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
