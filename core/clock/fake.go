package clock

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Fake is a clock that moves only when a test calls Advance. It records every timer created so a test can read
// the delays the code under test asked for.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	pending []*fakeTimer
	created chan time.Duration // durations of new timers, in creation order
}

type fakeTimer struct {
	f        *Fake
	deadline time.Time
	c        chan time.Time
	fired    bool
}

// createdBacklog bounds how many unread timer creations are kept; beyond it NewTimer would block the code
// under test, which a test that never calls NextTimer must not suffer, so older records are dropped instead.
const createdBacklog = 1024

// NewFake returns a fake clock reading start.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, created: make(chan time.Duration, createdBacklog)}
}

func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer that fires once Advance reaches now+d; d <= 0 fires at once.
func (f *Fake) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	t := &fakeTimer{f: f, deadline: f.now.Add(d), c: make(chan time.Time, 1)}
	if d <= 0 {
		t.fire(f.now)
	} else {
		f.pending = append(f.pending, t)
	}
	f.mu.Unlock()
	select {
	case f.created <- d:
	default:
		select { // full: drop the oldest record, keep the newest
		case <-f.created:
		default:
		}
		select {
		case f.created <- d:
		default:
		}
	}
	return t
}

// Advance moves the clock forward by d and fires every timer that is due, earliest first.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	sort.SliceStable(f.pending, func(i, j int) bool { return f.pending[i].deadline.Before(f.pending[j].deadline) })
	kept := f.pending[:0]
	for _, t := range f.pending {
		if !t.deadline.After(f.now) {
			t.fire(f.now)
		} else {
			kept = append(kept, t)
		}
	}
	f.pending = kept
}

// NextTimer waits until a timer not yet reported is created and returns the duration it was created with.
func (f *Fake) NextTimer(ctx context.Context) (time.Duration, error) {
	select {
	case d := <-f.created:
		return d, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// fire must be called with f.mu held.
func (t *fakeTimer) fire(now time.Time) {
	t.fired = true
	t.c <- now
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	if t.fired {
		return false
	}
	for i, p := range t.f.pending {
		if p == t {
			t.f.pending = append(t.f.pending[:i], t.f.pending[i+1:]...)
			break
		}
	}
	t.fired = true // a stopped timer never fires
	return true
}
