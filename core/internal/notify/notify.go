// Package notify is the capacity-1 channel used as a flag: "something may be waiting". Raising it never blocks,
// and a receiver woken after any number of raises looks once at whatever the flag stands for.
package notify

// Raise sets the flag ch (capacity 1) unless it is already set.
func Raise(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
