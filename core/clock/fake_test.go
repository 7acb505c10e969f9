package clock

import (
	"context"
	"testing"
	"time"
)

func TestFakeFiresInDeadlineOrderOnlyWhenDue(t *testing.T) {
	start := time.Unix(1000, 0)
	f := NewFake(start)
	late, early := f.NewTimer(3*time.Second), f.NewTimer(time.Second)
	f.Advance(999 * time.Millisecond)
	select {
	case <-early.C():
		t.Fatal("timer fired before its deadline")
	default:
	}
	f.Advance(time.Millisecond)
	if got := <-early.C(); !got.Equal(start.Add(time.Second)) {
		t.Fatalf("fired at %v", got)
	}
	select {
	case <-late.C():
		t.Fatal("later timer fired early")
	default:
	}
	f.Advance(2 * time.Second)
	<-late.C()
	if !f.Now().Equal(start.Add(3 * time.Second)) {
		t.Fatalf("now = %v", f.Now())
	}
}

func TestFakeStopAndImmediate(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	stopped := f.NewTimer(time.Second)
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop should succeed once")
	}
	f.Advance(time.Hour)
	select {
	case <-stopped.C():
		t.Fatal("stopped timer fired")
	default:
	}
	now := f.NewTimer(0)
	select {
	case <-now.C():
	default:
		t.Fatal("zero-duration timer did not fire at once")
	}
	if now.Stop() {
		t.Fatal("Stop of a fired timer reported success")
	}
}

func TestFakeNextTimerReportsRequestedDurations(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.NewTimer(250 * time.Millisecond)
		f.NewTimer(7 * time.Second)
	}()
	defer func() { <-done }()
	for _, want := range []time.Duration{250 * time.Millisecond, 7 * time.Second} {
		got, err := f.NextTimer(ctx)
		if err != nil || got != want {
			t.Fatalf("NextTimer = %v, %v; want %v", got, err, want)
		}
	}
	short, cancelShort := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancelShort()
	if _, err := f.NextTimer(short); err == nil {
		t.Fatal("NextTimer returned without a new timer")
	}
}

func TestFakeKeepsTheNewestRecordsWhenNobodyReads(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	const extra = 5
	timers := make([]Timer, 0, createdBacklog+extra)
	for i := range createdBacklog + extra {
		timers = append(timers, f.NewTimer(time.Duration(i+1)*time.Millisecond)) // never blocks without a reader
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, err := f.NextTimer(ctx); err != nil || got != (extra+1)*time.Millisecond {
		t.Fatalf("oldest kept record = %v, %v; want %v", got, err, (extra+1)*time.Millisecond)
	}
	f.Advance(time.Hour)
	for i, tm := range timers { // dropping a record never drops its timer
		select {
		case <-tm.C():
		default:
			t.Fatalf("timer %d did not fire", i)
		}
	}
}

func TestRealClockTimer(t *testing.T) {
	c := Real()
	tm := c.NewTimer(time.Millisecond)
	select {
	case <-tm.C():
	case <-time.After(10 * time.Second):
		t.Fatal("real timer never fired")
	}
	if c.Now().IsZero() {
		t.Fatal("zero time")
	}
}
