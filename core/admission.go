package core

import (
	"math"
	"time"

	"golang.org/x/time/rate"
)

// Admission is a connect budget shared by the clients of one process (a gateway, or a simulator with thousands of
// identities): every connection attempt of every client attached (Options.Admission) takes one token, and an
// attempt without one waits its turn, so the process never asks the hub for more than PerSecond new connections
// per second, however many of its clients lost their link at once. It complements the fleet hint
// (Options.ReconnectSpread), which spreads a fleet across processes: within one process, the budget makes the
// spread exact instead of random.
type Admission struct {
	lim *rate.Limiter
}

// NewAdmission returns a budget of perSecond connects per second, of which at most burst at once.
func NewAdmission(perSecond float64, burst int) (*Admission, error) {
	if !(perSecond > 0) || math.IsInf(perSecond, 0) || burst < 1 {
		return nil, Errorf(CodeInvalidArgument, "an admission budget needs a rate above 0 (got %v) and a burst of at "+
			"least 1 (got %d)", perSecond, burst)
	}
	return &Admission{lim: rate.NewLimiter(rate.Limit(perSecond), burst)}, nil
}

// reserve takes the next token and says how long from now its attempt must wait.
func (a *Admission) reserve(now time.Time) time.Duration {
	return a.lim.ReserveN(now, 1).DelayFrom(now)
}
