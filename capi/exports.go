package main

// The //export wrappers: each validates its arguments, recovers panics into IOTCONN_EINTERNAL and calls the
// engine. The preamble may only declare (cgo's rule for files with //export).

/*
#cgo CFLAGS: -I${SRCDIR}/../include
#define IOTCONN_CAPI_BUILD
#include "iotconn.h"
*/
import "C"

import (
	"context"
	"time"
	"unsafe"

	"github.com/iotconn/iotconn/core"
)

func fail(err *core.Error) C.int {
	setLastError(err.Error())
	return -C.int(err.Code)
}

// failErr reports an error returned by the engine.
func failErr(err error) C.int {
	setLastError(err.Error())
	return errorCode(err)
}

func invalid(format string, args ...any) C.int {
	return fail(core.Errorf(core.CodeInvalidArgument, format, args...))
}

// recoverTo turns a panic in an export into IOTCONN_EINTERNAL: a Go panic must never unwind into C.
func recoverTo(rc *C.int) {
	if r := recover(); r != nil {
		*rc = fail(core.Errorf(core.CodeInternal, "panic: %v", r))
	}
}

func msDuration(ms C.uint32_t) time.Duration { return time.Duration(ms) * time.Millisecond }

// Static strings for the *_str functions, made once; C callers never free them.
var (
	statusStrs, reasonStrs, codeStrs []*C.char
	unknownStr                       = C.CString("Unknown")
	unknownCodeStr                   = C.CString("unknown error")
)

func init() {
	for s := core.StatusDisconnected; s <= core.StatusDisabled; s++ {
		statusStrs = append(statusStrs, C.CString(s.String()))
	}
	for r := core.ReasonConnectionOk; r <= core.ReasonClientClose; r++ {
		reasonStrs = append(reasonStrs, C.CString(r.String()))
	}
	for c := core.CodeOK; c <= core.CodeLast; c++ {
		codeStrs = append(codeStrs, C.CString(c.String()))
	}
}

func pick(strs []*C.char, i C.int, unknown *C.char) *C.char {
	if i >= 0 && int(i) < len(strs) {
		return strs[i]
	}
	return unknown
}

//export iotconn_strerror
func iotconn_strerror(code C.int) *C.char { return pick(codeStrs, -code, unknownCodeStr) }

//export iotconn_status_str
func iotconn_status_str(status C.int) *C.char { return pick(statusStrs, status, unknownStr) }

//export iotconn_reason_str
func iotconn_reason_str(reason C.int) *C.char { return pick(reasonStrs, reason, unknownStr) }

//export iotconn_client_create
func iotconn_client_create(connStr *C.char, opts *C.iotconn_options_t, out **C.iotconn_client_t) (rc C.int) {
	defer recoverTo(&rc)
	if connStr == nil || out == nil {
		return invalid("connection_string and out_client must not be NULL")
	}
	o, cerr := goOptions(opts)
	if cerr != nil {
		return fail(cerr)
	}
	h, err := createClient(C.GoString(connStr), o)
	if err != nil {
		return failErr(err)
	}
	*out = handleOf(h)
	return 0
}

//export iotconn_client_destroy
func iotconn_client_destroy(client *C.iotconn_client_t) (rc C.int) {
	defer recoverTo(&rc)
	if inCallback() {
		return fail(core.Errorf(core.CodeState, "iotconn_client_destroy called from inside a callback"))
	}
	if err := destroyClient(uintptr(unsafe.Pointer(client))); err != nil {
		return failErr(err)
	}
	return 0
}

//export iotconn_connect
func iotconn_connect(client *C.iotconn_client_t, timeoutMS C.uint32_t) (rc C.int) {
	defer recoverTo(&rc)
	e, cerr := lookup(uintptr(unsafe.Pointer(client)))
	if cerr != nil {
		return fail(cerr)
	}
	ctx := context.Background()
	if timeoutMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, msDuration(timeoutMS))
		defer cancel()
	}
	if err := e.client.Connect(ctx); err != nil {
		return failErr(err)
	}
	return 0
}

//export iotconn_connect_cancel
func iotconn_connect_cancel(client *C.iotconn_client_t) (rc C.int) {
	defer recoverTo(&rc)
	e, cerr := lookup(uintptr(unsafe.Pointer(client)))
	if cerr != nil {
		return fail(cerr)
	}
	e.client.CancelConnect()
	return 0
}

//export iotconn_send
func iotconn_send(client *C.iotconn_client_t, msg *C.iotconn_message_t, outID *C.uint64_t) (rc C.int) {
	defer recoverTo(&rc)
	e, cerr := lookup(uintptr(unsafe.Pointer(client)))
	if cerr != nil {
		return fail(cerr)
	}
	if msg == nil {
		return invalid("msg must not be NULL")
	}
	m, cerr := goMessage(msg)
	if cerr != nil {
		return fail(cerr)
	}
	if len(m.Payload) == 0 {
		return invalid("the payload is empty")
	}
	id, err := e.client.Send(m)
	if err != nil {
		return failErr(err)
	}
	if outID != nil {
		*outID = C.uint64_t(id)
	}
	return 0
}

//export iotconn_queue_recovered
func iotconn_queue_recovered(client *C.iotconn_client_t, outCount *C.uint64_t) (rc C.int) {
	defer recoverTo(&rc)
	return storeCount(client, outCount, (*core.Client).Recovered)
}

// storeCount answers a getter of one of a client's counts: the handle's checks, then *outCount.
func storeCount(client *C.iotconn_client_t, outCount *C.uint64_t, count func(*core.Client) int) C.int {
	e, cerr := lookup(uintptr(unsafe.Pointer(client)))
	if cerr != nil {
		return fail(cerr)
	}
	if outCount == nil {
		return invalid("out_count must not be NULL")
	}
	*outCount = C.uint64_t(count(e.client))
	return 0
}

//export iotconn_set_retry_policy
func iotconn_set_retry_policy(client *C.iotconn_client_t, policy *C.iotconn_retry_policy_t) (rc C.int) {
	defer recoverTo(&rc)
	e, cerr := lookup(uintptr(unsafe.Pointer(client)))
	if cerr != nil {
		return fail(cerr)
	}
	if policy == nil {
		return invalid("policy must not be NULL")
	}
	p, cerr := goPolicy(policy)
	if cerr != nil {
		return fail(cerr)
	}
	if err := e.client.SetRetryPolicy(p); err != nil {
		return failErr(err)
	}
	return 0
}

// registerExport is the body of the iotconn_register_*_callback exports.
func registerExport(client *C.iotconn_client_t, slot func(*entry) *atomicFn, fn unsafe.Pointer,
	user C.uintptr_t) (rc C.int) {
	defer recoverTo(&rc)
	e, cerr := lookup(uintptr(unsafe.Pointer(client)))
	if cerr != nil {
		return fail(cerr)
	}
	e.register(slot(e), uintptr(fn), uintptr(user))
	return 0
}

//export iotconn_register_status_callback
func iotconn_register_status_callback(client *C.iotconn_client_t, cb C.iotconn_status_cb, user C.uintptr_t) C.int {
	return registerExport(client, func(e *entry) *atomicFn { return &e.status }, unsafe.Pointer(cb), user)
}

//export iotconn_register_message_callback
func iotconn_register_message_callback(client *C.iotconn_client_t, cb C.iotconn_message_cb, user C.uintptr_t) C.int {
	return registerExport(client, func(e *entry) *atomicFn { return &e.message }, unsafe.Pointer(cb), user)
}

//export iotconn_register_send_callback
func iotconn_register_send_callback(client *C.iotconn_client_t, cb C.iotconn_send_cb, user C.uintptr_t) C.int {
	return registerExport(client, func(e *entry) *atomicFn { return &e.send }, unsafe.Pointer(cb), user)
}

//export iotconn_register_log_callback
func iotconn_register_log_callback(client *C.iotconn_client_t, cb C.iotconn_log_cb, user C.uintptr_t) C.int {
	return registerExport(client, func(e *entry) *atomicFn { return &e.log }, unsafe.Pointer(cb), user)
}

//export iotconn_register_twin_callback
func iotconn_register_twin_callback(client *C.iotconn_client_t, cb C.iotconn_twin_cb, user C.uintptr_t) C.int {
	return registerExport(client, func(e *entry) *atomicFn { return &e.twin }, unsafe.Pointer(cb), user)
}

//export iotconn_register_reported_callback
func iotconn_register_reported_callback(client *C.iotconn_client_t, cb C.iotconn_reported_cb,
	user C.uintptr_t) C.int {
	return registerExport(client, func(e *entry) *atomicFn { return &e.reported }, unsafe.Pointer(cb), user)
}

//export iotconn_register_desired_callback
func iotconn_register_desired_callback(client *C.iotconn_client_t, cb C.iotconn_desired_cb, user C.uintptr_t) C.int {
	return registerExport(client, func(e *entry) *atomicFn { return &e.desired }, unsafe.Pointer(cb), user)
}

//export iotconn_register_method_callback
func iotconn_register_method_callback(client *C.iotconn_client_t, cb C.iotconn_method_cb, user C.uintptr_t) C.int {
	return registerExport(client, func(e *entry) *atomicFn { return &e.method }, unsafe.Pointer(cb), user)
}

// needCallback refuses a request whose completion callback is not registered: its one result would reach nobody,
// and without it the links do not subscribe to the answer.
func needCallback(slot *atomicFn, call, register string) *core.Error {
	if slot.Load() == nil {
		return core.Errorf(core.CodeState, "%s needs %s before iotconn_connect", call, register)
	}
	return nil
}

// borrowedJSON is len bytes at p, still in the caller's memory (the engine copies what it keeps); NULL is
// allowed only when nullOK and len is 0.
func borrowedJSON(p *C.char, n C.size_t, what string, nullOK bool) ([]byte, *core.Error) {
	switch {
	case p == nil && (n != 0 || !nullOK):
		return nil, core.Errorf(core.CodeInvalidArgument, "%s is NULL but its length is %d", what, n)
	case p == nil:
		return nil, nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), n), nil
}

//export iotconn_twin_get
func iotconn_twin_get(client *C.iotconn_client_t, outID *C.uint64_t) (rc C.int) {
	defer recoverTo(&rc)
	e, cerr := lookup(uintptr(unsafe.Pointer(client)))
	if cerr != nil {
		return fail(cerr)
	}
	if cerr := needCallback(&e.twin, "iotconn_twin_get", "iotconn_register_twin_callback"); cerr != nil {
		return fail(cerr)
	}
	id, err := e.client.GetTwin()
	if err != nil {
		return failErr(err)
	}
	if outID != nil {
		*outID = C.uint64_t(id)
	}
	return 0
}

//export iotconn_twin_report
func iotconn_twin_report(client *C.iotconn_client_t, patch *C.char, n C.size_t, outID *C.uint64_t) (rc C.int) {
	defer recoverTo(&rc)
	e, cerr := lookup(uintptr(unsafe.Pointer(client)))
	if cerr != nil {
		return fail(cerr)
	}
	b, cerr := borrowedJSON(patch, n, "patch_json", false)
	if cerr != nil {
		return fail(cerr)
	}
	if cerr := needCallback(&e.reported, "iotconn_twin_report", "iotconn_register_reported_callback"); cerr != nil {
		return fail(cerr)
	}
	id, err := e.client.PatchReported(b)
	if err != nil {
		return failErr(err)
	}
	if outID != nil {
		*outID = C.uint64_t(id)
	}
	return 0
}

//export iotconn_method_respond
func iotconn_method_respond(client *C.iotconn_client_t, requestID *C.char, status C.int, payload *C.char,
	n C.size_t) (rc C.int) {
	defer recoverTo(&rc)
	e, cerr := lookup(uintptr(unsafe.Pointer(client)))
	if cerr != nil {
		return fail(cerr)
	}
	if requestID == nil {
		return invalid("request_id must not be NULL")
	}
	b, cerr := borrowedJSON(payload, n, "payload_json", true)
	if cerr != nil {
		return fail(cerr)
	}
	if err := e.client.RespondMethod(C.GoString(requestID), int(status), b); err != nil {
		return failErr(err)
	}
	return 0
}

//export iotconn_poll
func iotconn_poll(client *C.iotconn_client_t, timeoutMS C.uint32_t) (rc C.int) {
	defer recoverTo(&rc)
	e, cerr := lookup(uintptr(unsafe.Pointer(client)))
	if cerr != nil {
		return fail(cerr)
	}
	n, err := e.client.Poll(msDuration(timeoutMS))
	if err != nil {
		return failErr(err)
	}
	return C.int(min(n, 1<<30))
}

//export iotconn_dispatcher_create
func iotconn_dispatcher_create(dispatch C.int, out **C.iotconn_dispatcher_t) (rc C.int) {
	defer recoverTo(&rc)
	if out == nil {
		return invalid("out_dispatcher must not be NULL")
	}
	d, err := core.NewDispatcher(core.DispatchMode(dispatch))
	if err != nil {
		return failErr(err)
	}
	*out = dispatcherHandleOf(dispatchers.add(d))
	return 0
}

//export iotconn_dispatcher_poll
func iotconn_dispatcher_poll(dispatcher *C.iotconn_dispatcher_t, timeoutMS C.uint32_t) (rc C.int) {
	defer recoverTo(&rc)
	if inCallback() { // a poll inside a callback of the same dispatcher would wait for itself
		return fail(core.Errorf(core.CodeState, "iotconn_dispatcher_poll called from inside a callback"))
	}
	d, cerr := dispatchers.lookup(uintptr(unsafe.Pointer(dispatcher)))
	if cerr != nil {
		return fail(cerr)
	}
	n, err := d.Poll(msDuration(timeoutMS))
	if err != nil {
		return failErr(err)
	}
	return C.int(min(n, 1<<30))
}

//export iotconn_dispatcher_destroy
func iotconn_dispatcher_destroy(dispatcher *C.iotconn_dispatcher_t) (rc C.int) {
	defer recoverTo(&rc)
	if inCallback() {
		return fail(core.Errorf(core.CodeState, "iotconn_dispatcher_destroy called from inside a callback"))
	}
	h := uintptr(unsafe.Pointer(dispatcher))
	d, cerr := dispatchers.lookup(h)
	if cerr != nil {
		return fail(cerr)
	}
	if err := d.Close(); err != nil {
		return failErr(err) // clients still open: the handle stays valid
	}
	if _, cerr := dispatchers.remove(h); cerr != nil {
		return fail(cerr) // another destroy won
	}
	return 0
}

//export iotconn_admission_create
func iotconn_admission_create(perSecond C.double, burst C.uint32_t, out **C.iotconn_admission_t) (rc C.int) {
	defer recoverTo(&rc)
	if out == nil {
		return invalid("out_admission must not be NULL")
	}
	a, err := core.NewAdmission(float64(perSecond), int(min(uint32(burst), 1<<30)))
	if err != nil {
		return failErr(err)
	}
	*out = admissionHandleOf(admissions.add(a))
	return 0
}

//export iotconn_admission_destroy
func iotconn_admission_destroy(admission *C.iotconn_admission_t) (rc C.int) {
	defer recoverTo(&rc)
	if _, cerr := admissions.remove(uintptr(unsafe.Pointer(admission))); cerr != nil {
		return fail(cerr)
	}
	return 0
}

//export iotconn_get_status
func iotconn_get_status(client *C.iotconn_client_t, status *C.iotconn_status_t, reason *C.iotconn_reason_t) (rc C.int) {
	defer recoverTo(&rc)
	e, cerr := lookup(uintptr(unsafe.Pointer(client)))
	if cerr != nil {
		return fail(cerr)
	}
	s, r := e.client.Status()
	if status != nil {
		*status = C.iotconn_status_t(s)
	}
	if reason != nil {
		*reason = C.iotconn_reason_t(r)
	}
	return 0
}

//export iotconn_close
func iotconn_close(client *C.iotconn_client_t) (rc C.int) {
	defer recoverTo(&rc)
	e, cerr := lookup(uintptr(unsafe.Pointer(client)))
	if cerr != nil {
		return fail(cerr)
	}
	if err := e.client.Close(); err != nil {
		return failErr(err)
	}
	if !inCallback() { // in thread mode, the final events reach the callbacks before close returns
		<-e.client.Done()
	}
	return 0
}

//export iotconn_message_copy
func iotconn_message_copy(msg *C.iotconn_message_t, out **C.iotconn_message_t) (rc C.int) {
	defer recoverTo(&rc)
	if msg == nil || out == nil {
		return invalid("msg and out_copy must not be NULL")
	}
	m, cerr := goMessage(msg)
	if cerr != nil {
		return fail(cerr)
	}
	*out = cMessage(m)
	return 0
}
