package hubsim

import (
	"errors"
	"fmt"
	"time"
)

// DPSFaultKind names a DPS fault; the strings are also the control API's "kind" values.
type DPSFaultKind string

// DPS fault kinds.
const (
	DPSFaultDown     DPSFaultKind = "down"     // reset every connection and refuse connects for Duration
	DPSFaultThrottle DPSFaultKind = "throttle" // answer requests 429 with retry-after RetryAfter
	DPSFaultError    DPSFaultKind = "error"    // answer requests with Status (default 500)
	DPSFaultClear    DPSFaultKind = "clear"    // end a throttle or error fault, and a down (listeners reopen now)
)

// DPSFault is one DPS fault. Throttle and error last for Duration, or for the next Count requests (registers and
// polls), whichever ends first; with neither, until cleared.
type DPSFault struct {
	Kind       DPSFaultKind
	Duration   time.Duration
	Count      int
	RetryAfter time.Duration // throttle: the retry-after; 0 = 5 s. Error: sent when not 0
	Status     int           // error: 500..599; 0 = 500
}

// dpsFaultState is the fault answering requests now; d.mu guards it.
type dpsFaultState struct {
	kind       DPSFaultKind // "" = none
	until      time.Time    // zero = no time limit
	left       int          // requests still to answer; 0 = no count limit
	status     int
	retryAfter int // seconds, -1 none
}

// Fault injects a DPS fault.
func (d *DPS) Fault(f DPSFault) error {
	select {
	case <-d.done:
		return ErrClosed
	default:
	}
	if f.Duration < 0 || f.Count < 0 || f.RetryAfter < 0 {
		return errors.New("fault duration, count and retry-after must not be negative")
	}
	st := dpsFaultState{kind: f.Kind, left: f.Count, retryAfter: -1}
	if f.Duration > 0 {
		st.until = time.Now().Add(f.Duration)
	}
	if f.RetryAfter > 0 {
		st.retryAfter = int((f.RetryAfter + time.Second - 1) / time.Second)
	}
	switch f.Kind {
	case DPSFaultDown:
		if f.Duration <= 0 {
			return errors.New("down needs a duration")
		}
		d.downMu.Lock()
		d.down++
		gen := d.down
		d.stop(d.listeners(), false)
		d.downMu.Unlock()
		d.after(f.Duration, func() { d.endDown(gen) })
	case DPSFaultThrottle:
		st.status = 429
		if st.retryAfter < 0 {
			st.retryAfter = 5
		}
	case DPSFaultError:
		st.status = f.Status
		if st.status == 0 {
			st.status = 500
		}
		if st.status < 500 || st.status > 599 {
			return fmt.Errorf("error fault status must be 500..599, got %d", st.status)
		}
	case DPSFaultClear:
		st = dpsFaultState{}
		d.downMu.Lock()
		gen := d.down
		d.downMu.Unlock()
		d.endDown(gen)
	default:
		return fmt.Errorf("unknown DPS fault kind %q", f.Kind)
	}
	if f.Kind != DPSFaultDown {
		d.mu.Lock()
		d.fault = st
		d.mu.Unlock()
	}
	d.events.emit(Event{Kind: EventFault, Reason: describeDPSFault(f)})
	return nil
}

// endDown reopens the listeners if down fault gen is the latest and still on; a later down, or a clear, ends it
// otherwise.
func (d *DPS) endDown(gen int) {
	d.downMu.Lock()
	defer d.downMu.Unlock()
	if gen != d.down || d.downEnded == gen {
		return
	}
	d.downEnded = gen
	d.reopen(d.listeners(), d.events)
}

func describeDPSFault(f DPSFault) string {
	s := string(f.Kind)
	if f.Duration > 0 {
		s += " for " + f.Duration.String()
	}
	if f.Count > 0 {
		s += fmt.Sprintf(" for %d requests", f.Count)
	}
	return s
}

// faultAnswer is the answer a throttle or error fault gives the next request, if one is on.
func (d *DPS) faultAnswer() (dpsAnswer, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := &d.fault
	if f.kind == "" {
		return dpsAnswer{}, false
	}
	if !f.until.IsZero() && time.Now().After(f.until) {
		*f = dpsFaultState{}
		return dpsAnswer{}, false
	}
	status, retryAfter := f.status, f.retryAfter
	if f.left > 0 {
		if f.left--; f.left == 0 {
			*f = dpsFaultState{}
		}
	}
	if status == 429 {
		return dpsError(429, 1, "Too many requests", retryAfter), true
	}
	return dpsError(status, 0, "Service unavailable (fault injection)", retryAfter), true
}

// tokenBucket admits up to perMinute events a minute, refilled evenly; d.mu guards it.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

// admitRegistration takes a token for a register request, or says how long until one is there.
func (d *DPS) admitRegistration() (wait time.Duration, ok bool) {
	rate := d.cfg.RegistrationsPerMinute
	if rate <= 0 {
		return 0, true
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	b := &d.quota
	if b.last.IsZero() {
		b.tokens = float64(rate)
	} else {
		b.tokens = min(float64(rate), b.tokens+now.Sub(b.last).Minutes()*float64(rate))
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) / float64(rate) * float64(time.Minute)), false
}
