// Package core is iotconn's engine: one Client per device identity, used by the C ABI (capi/) and the tests.
//
// # Layers
//
// From the application down:
//
//	Client API        api.go, client.go: NewClient, Connect, Send, Poll, Close; twin.go: GetTwin, PatchReported;
//	                  methods.go: RespondMethod; validation (limits.go, core/iothub's limits)
//	events            events.go: one FIFO per client of status changes, completions, messages, twin results,
//	                  desired updates, method calls, logs and custom retry questions; handlers run from it on
//	                  the dispatcher goroutine or inside Poll, or, for a client of a shared Dispatcher
//	                  (dispatcher.go), on its goroutine or in Dispatcher.Poll
//	fleet             admission.go: a connect budget a process's clients share; the fleet hint
//	                  (Options.ReconnectSpread) is applied where the supervisor schedules a retry
//	supervisor        link.go: the loop goroutine, one select over every event, with an explicit phase (idle,
//	                  dialing, connected, backing off, asking the policy, gave up, closed); owns the live link,
//	                  every timer and the status machine (machine.go: the transition table; classify.go:
//	                  transport failures to reasons)
//	outbound queue    core/internal/outbox: every accepted message and reported patch until its one completion,
//	                  with its rules on link loss and reconnect; memory mode, or durable (durable.go: the journal
//	                  over core/store)
//	request/response  core/internal/reqresp: request ids, deadlines and link-loss rules of twin, method and DPS
//	                  requests; twin.go puts twins on it: GetTwin, PatchReported (queued in the outbound queue
//	                  until handed to a link, then a request), the hub's answers; desired.go: desired updates,
//	                  the GET after every connect, each version delivered once; methods.go: method calls, open
//	                  until RespondMethod, on their own link only
//	provisioning      provisioned.go: a client that finds its hub through DPS (NewProvisionedClient), the
//	                  assignment cache and when to register again, run by the supervisor as part of an attempt;
//	                  core/provisioning: the DPS registration client (MQTT) and the cache file
//	auth              core/auth: connection strings and credentials; core/iothub: IoT Hub's wire conventions
//	transport         core/transport (the seam: dial with features C2D/twin/methods, Send, Request, inbound
//	                  messages and twin/method traffic, token renewal), core/transport/mqtt (paho.mqtt.golang),
//	                  core/transport/amqp (Azure/go-amqp: CBS, renewal in place), core/transport/pool (one Dialer
//	                  several clients share: their links multiplexed onto shared connections; AMQP's connections
//	                  come from it, shared with Options.AMQPPool); the protocols a client may use are a registry
//	                  (transports.go)
//
// # Goroutines of a client, and who stops each
//
//   - loop (link.go), started by NewClient: stopped by Close, which cancels stopCtx; it closes loopDone as its
//     last act, after shutdown failed what was pending and finished the event queue.
//   - runDispatcher (events.go), thread dispatch mode only, started by NewClient: ends once the loop finished the
//     event queue and every event in it was dispatched; closes dispatcherDone. Close waits for it (unless Close
//     runs on it, from a handler).
//   - a shared Dispatcher's goroutine (dispatcher.go), thread mode, started by NewDispatcher: serves every attached
//     client's queue in turn in place of their own runDispatcher; ends once Dispatcher.Close found every attached
//     client closed and their final events dispatched. A poll-mode Dispatcher has none: Dispatcher.Poll serves.
//   - the outbox's journal (outbox/durable.go), durable mode only, started by NewClient: stopped by
//     Outbox.Shutdown, which the loop's shutdown calls after Close refused every later Add.
//   - per live link, the transport's goroutines (for MQTT: paho's, and, only while they have work, the publisher
//     and the waiter of conn.go and the batch writer's flusher; for AMQP: the device's writer, settler, receive
//     loops and acker, and go-amqp's link and session goroutines): stopped by Conn.Close, which the loop calls in
//     dropConn, so none outlives the loop. A shared AMQP connection's own goroutines (its CBS reader and watcher,
//     go-amqp's reader and writer) end when the pool closes it, as its last device leaves.
//   - per dial, context.AfterFunc watchers tying the dial to Close and to the first Connect's context: stopped by
//     the dial's deferred stop calls.
//
// # Locks
//
//   - Client.mu guards the status (cur), handlers, policy, closed, connecting and the desired updates delivered
//     and waiting (desired).
//   - Client.sendMu serialises handing queued messages and requests to the live link (flush, from the loop, Send
//     and the request calls) and guards live, the link the loop publishes, its generation and the method calls
//     open on the links.
//   - Outbox.mu guards the outbound queue and every entry's flags; journal.mu the journal's puts, dels and keys.
//   - Table.mu (reqresp) guards the outstanding requests: their ids, deadlines and whether they were sent.
//   - eventQueue.mu guards the event FIFO; Dispatcher.mu the clients it serves and those with events waiting.
//   - Client.pollMu serialises Poll calls.
//
// Lock order: Client.mu before eventQueue.mu (a status change and a desired update are pushed under Client.mu,
// so events keep the order of changes and of versions) and before Dispatcher.mu (that push then signals the
// client's Dispatcher, if any); Outbox.mu before journal.mu (Add puts under Outbox.mu); sendMu before Outbox.mu,
// Table.mu and the transport's own lock (flush takes ready messages and requests and sends them under sendMu),
// and before eventQueue.mu (a method call is pushed under sendMu, which tells whether its link is live yet).
// Client.mu, Outbox.mu and Table.mu are never held together, and the outbox calls the client back with no lock
// held. A transport never holds its own lock while it calls the engine back, and calls the Handler (whose
// method calls take sendMu) only from its own goroutines, never from inside Send or Request; done callbacks may
// run inside them, so they take only locks that come after sendMu. The engine holds no lock but sendMu while it
// calls the transport.
//
// No lock is held while application code runs: handlers and custom retry policies run from the event queue, or
// on the loop goroutine for a thread-mode custom policy, with no engine lock held, so they may call Send, Close
// and the twin and method calls. RespondMethod waits for its write with no lock held, and neither the loop nor
// the transport ever waits for a handler, so a handler may call it too.
package core
