// Package retry holds the retry policies; every reconnect and operation retry is decided here (DESIGN.md rule 1).
package retry

import "time"

// Policy decides whether to try again after attempt number attempt (1 for the first failure) failed with lastErr,
// and how long to wait first.
type Policy interface {
	ShouldRetry(attempt int, lastErr error) (retry bool, delay time.Duration)
}

// Custom is a policy written by the application. In poll dispatch mode the engine asks it only from inside Poll,
// on the application's thread, so a Python or C# policy never runs on a Go-created thread.
type Custom func(attempt int, lastErr error) (retry bool, delay time.Duration)

func (f Custom) ShouldRetry(attempt int, lastErr error) (bool, time.Duration) {
	return f(attempt, lastErr)
}
