package main

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/iotconn/iotconn/core"
)

// A handle given to C is an id with handleTag set, never a Go pointer (the C side may keep it anywhere and Go
// may not hand out its pointers). The tag puts every handle outside any address a process can map, so a stray or
// foreign pointer is never mistaken for one, and a destroyed id is never reused.
const handleTag = uintptr(1) << (unsafe.Sizeof(uintptr(0))*8 - 2)

// handleTable maps the handles of one kind of object to the objects. Every table draws its ids from lastID, so a
// handle of one kind is never valid as another.
type handleTable[T any] struct {
	m   sync.Map // handle value -> *T
	bad *core.Error
}

var (
	lastID      atomic.Uintptr
	clients     = handleTable[entry]{bad: core.Errorf(core.CodeBadHandle, "unknown, destroyed or foreign client handle")}
	dispatchers = handleTable[core.Dispatcher]{
		bad: core.Errorf(core.CodeBadHandle, "unknown, destroyed or foreign dispatcher handle")}
	admissions = handleTable[core.Admission]{
		bad: core.Errorf(core.CodeBadHandle, "unknown, destroyed or foreign admission handle")}
)

func (t *handleTable[T]) add(v *T) uintptr {
	h := handleTag | lastID.Add(1)
	t.m.Store(h, v)
	return h
}

func (t *handleTable[T]) lookup(h uintptr) (*T, *core.Error) {
	if h&handleTag != 0 {
		if v, ok := t.m.Load(h); ok {
			return v.(*T), nil
		}
	}
	return nil, t.bad
}

// remove takes the handle out of the table; only one caller gets the object.
func (t *handleTable[T]) remove(h uintptr) (*T, *core.Error) {
	if h&handleTag != 0 {
		if v, ok := t.m.LoadAndDelete(h); ok {
			return v.(*T), nil
		}
	}
	return nil, t.bad
}

// entry is one client and the C callbacks registered on it. The engine's handlers read the current registration
// on every event. Those of twins and methods are installed only while their C callback is registered, because
// the engine subscribes a link to twins (methods) only when their handlers are set at dial time, and a Basic-tier
// hub drops a device that subscribes: each registration installs the handlers anew (see register).
type entry struct {
	client                *core.Client
	status, message, send atomicFn
	log                   atomicFn
	twin, reported        atomicFn
	desired, method       atomicFn
	installMu             sync.Mutex // orders concurrent registrations' SetHandlers with their stores

	// Callbacks running now. Destroy sets destroying, unregisters every callback and waits for inflight to
	// reach zero, so that no callback runs (and touches the application's user data) once
	// iotconn_client_destroy has returned. The lock is taken only while a destroy waits.
	inflight   atomic.Int64
	destroying atomic.Bool
	mu         sync.Mutex
	idle       sync.Cond
}

// call runs fn with the callback registered in slot, if any, counted in inflight.
func (e *entry) call(slot *atomicFn, fn func(*fnRef)) {
	e.inflight.Add(1)
	defer func() {
		if e.inflight.Add(-1) == 0 && e.destroying.Load() {
			e.mu.Lock()
			e.idle.Broadcast()
			e.mu.Unlock()
		}
	}()
	if f := slot.Load(); f != nil {
		fn(f)
	}
}

// unregisterAll removes every callback and waits until those already running have returned.
func (e *entry) unregisterAll() {
	e.destroying.Store(true)
	for _, slot := range []*atomicFn{&e.status, &e.message, &e.send, &e.log, &e.twin, &e.reported, &e.desired,
		&e.method} {
		slot.Store(nil)
	}
	e.mu.Lock()
	for e.inflight.Load() > 0 {
		e.idle.Wait()
	}
	e.mu.Unlock()
}

// handlers are the engine handlers for the callbacks registered now (see entry).
func (e *entry) handlers() core.Handlers {
	h := core.Handlers{
		OnStatus: func(s core.ConnectionStatus, r core.ConnectionStatusChangeReason) {
			e.call(&e.status, func(f *fnRef) { f.status(s, r) })
		},
		OnMessage: func(m *core.Message) {
			e.call(&e.message, func(f *fnRef) { f.message(m) })
		},
		OnSendComplete: func(id uint64, result core.SendResult, err *core.Error) {
			e.call(&e.send, func(f *fnRef) { f.sendComplete(id, result, err) })
		},
		OnLog: func(level core.LogLevel, msg string) {
			e.call(&e.log, func(f *fnRef) { f.log(level, msg) })
		},
	}
	if e.twin.Load() != nil {
		h.OnTwin = func(id uint64, twin []byte, err *core.Error) {
			e.call(&e.twin, func(f *fnRef) { f.twinResult(id, twin, err) })
		}
	}
	if e.reported.Load() != nil {
		h.OnReported = func(id uint64, version int64, err *core.Error) {
			e.call(&e.reported, func(f *fnRef) { f.reportedResult(id, version, err) })
		}
	}
	if e.desired.Load() != nil {
		h.OnDesired = func(version int64, patch []byte) {
			e.call(&e.desired, func(f *fnRef) { f.desiredPatch(version, patch) })
		}
	}
	if e.method.Load() != nil {
		h.OnMethod = func(requestID, name string, payload []byte) {
			e.call(&e.method, func(f *fnRef) { f.methodCall(requestID, name, payload) })
		}
	}
	return h
}

// register stores (or with fn 0 removes) a callback and installs the engine handlers that the registrations now
// ask for.
func (e *entry) register(slot *atomicFn, fn, user uintptr) {
	e.installMu.Lock()
	defer e.installMu.Unlock()
	if fn == 0 {
		slot.Store(nil)
	} else {
		slot.Store(&fnRef{fn: fn, user: user})
	}
	e.client.SetHandlers(e.handlers())
}

// createClient makes a client with the table's handlers and returns its handle (iotconn_client_create in Go terms,
// so that Go tests can drive the same path).
func createClient(connStr string, o core.Options) (uintptr, error) {
	return addClient(core.NewClient(connStr, o))
}

// addClient gives a new client its handle and its handlers.
func addClient(c *core.Client, err error) (uintptr, error) {
	if err != nil {
		return 0, err
	}
	e := &entry{client: c}
	e.idle.L = &e.mu
	h := clients.add(e)
	c.SetHandlers(e.handlers())
	return h, nil
}

// destroyClient takes the handle out of the table, closes its client and waits until no callback of it runs
// (iotconn_client_destroy in Go terms).
func destroyClient(h uintptr) error {
	e, cerr := clients.remove(h)
	if cerr != nil {
		return cerr
	}
	// Close first, so that the final events (Disabled / Client_Close, failed sends) still reach the callbacks.
	err := e.client.Close()
	<-e.client.Done() // never inside a callback: iotconn_client_destroy refuses that
	e.unregisterAll()
	return err
}

func lookup(h uintptr) (*entry, *core.Error) { return clients.lookup(h) }

// atomicFn holds one registered callback; nil when none.
type atomicFn = atomic.Pointer[fnRef]
