// Package clock lets the engine's timers be driven by tests (DESIGN.md, engine rule 5).
package clock

import "time"

// Clock is the time source of the engine, the retry policies and token renewal.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer the engine uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}
