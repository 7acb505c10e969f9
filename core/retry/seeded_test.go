package retry

import (
	"math/rand/v2"
	"sync"
)

// WithRand returns a copy of e that draws its jitter from r, so that a test sees the same values on every run.
// The copy serialises its use of r, so it stays safe for concurrent use.
func (e *Exponential) WithRand(r *rand.Rand) *Exponential {
	c := *e
	c.mu, c.r, c.prev = new(sync.Mutex), r, 0
	return &c
}
