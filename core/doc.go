// Package core is iotconn's engine: one Client per device identity, used by the C ABI (capi/) and the tests.
//
// # Layers
//
// From the application down:
//
//	Client API        api.go, client.go: NewClient, Connect, Send, Poll, Close; validation (limits.go)
//	events            events.go: one FIFO per client of status changes, completions, messages, logs and custom
//	                  retry questions; handlers run from it on the dispatcher goroutine or inside Poll
//	supervisor        link.go: the loop goroutine; owns the live link, every timer and the status machine
//	                  (machine.go: the transition table; classify.go: transport failures to reasons)
//	outbound queue    client.go (pending, queue), journal.go + core/store (durable mode)
//	auth              core/auth: connection strings and credentials; core/iothub: IoT Hub's wire conventions
//	transport         core/transport (the seam), core/transport/mqtt (paho.mqtt.golang)
//
// # Goroutines of a client, and who stops each
//
//   - loop (link.go), started by NewClient: stopped by Close, which cancels stopCtx; it closes loopDone as its
//     last act, after shutdown failed what was pending and finished the event queue.
//   - runDispatcher (events.go), thread dispatch mode only, started by NewClient: ends once the loop finished the
//     event queue and every event in it was dispatched; closes dispatcherDone. Close waits for it (unless Close
//     runs on it, from a handler).
//   - journal.run (journal.go), durable mode only, started by NewClient: stopped by journal.close, which the loop's
//     shutdown calls after the last put.
//   - per live link, the transport's goroutines (for MQTT: paho's, the publisher and the waiter of conn.go):
//     stopped by Conn.Close, which the loop calls in dropConn, so none outlives the loop.
//   - per dial, context.AfterFunc watchers tying the dial to Close and to the first Connect's context: stopped by
//     the dial's deferred stop calls.
//
// # Locks
//
//   - Client.mu guards the status (cur), handlers, policy, closed, the outbound queue (nextID, pending, queue,
//     bytes, soonest, every outMessage's flags) and connecting.
//   - journal.mu guards the journal's puts, dels and nextKey.
//   - eventQueue.mu guards the event FIFO.
//   - Client.pollMu serialises Poll calls.
//
// Lock order: Client.mu before journal.mu (Send puts under Client.mu) and before eventQueue.mu (a status change is
// pushed under Client.mu, so events keep the order of changes). Nothing takes Client.mu while holding the other
// two. A transport never holds its own lock while it calls the engine back, and the engine never holds
// Client.mu while it calls the transport.
//
// No lock is held while application code runs: handlers and custom retry policies run from the event queue, or
// on the loop goroutine for a thread-mode custom policy, with no engine lock held, so they may call Send and Close.
package core
