package main

// The C side of the bridge: the thread-local error message, the version (from the header, the one source), and
// the trampolines through which Go calls the application's function pointers. These definitions live in the
// preamble of a file without //export, as cgo requires.

/*
#cgo CFLAGS: -I${SRCDIR}/../include
#define IOTCONN_CAPI_BUILD
#include <stdlib.h>
#include <string.h>
#include "iotconn.h"

static __thread char iotconn_error_buf[1024];
// Callback nesting on this thread, so that destroy can refuse to run inside a callback (it would wait for itself).
static __thread int iotconn_callback_depth;

const char *iotconn_last_error(void) { return iotconn_error_buf; }

void iotconn_free(void *ptr) { free(ptr); }

const char *iotconn_version(int *major, int *minor, int *patch) {
	if (major) *major = IOTCONN_VERSION_MAJOR;
	if (minor) *minor = IOTCONN_VERSION_MINOR;
	if (patch) *patch = IOTCONN_VERSION_PATCH;
	return IOTCONN_VERSION_STRING;
}

static void set_last_error(const char *msg, size_t len) {
	if (len >= sizeof iotconn_error_buf) len = sizeof iotconn_error_buf - 1;
	if (len) memcpy(iotconn_error_buf, msg, len);
	iotconn_error_buf[len] = 0;
}

static int in_callback(void) { return iotconn_callback_depth > 0; }

// Function and user pointers travel through Go as uintptr_t: the application may use any bit pattern as its
// user value, which Go must never hold in a pointer-typed variable.
static iotconn_client_t *handle_of(uintptr_t v) { return (iotconn_client_t *)v; }
static iotconn_dispatcher_t *dispatcher_handle_of(uintptr_t v) { return (iotconn_dispatcher_t *)v; }
static iotconn_admission_t *admission_handle_of(uintptr_t v) { return (iotconn_admission_t *)v; }

static void call_status(uintptr_t fn, int status, int reason, uintptr_t user) {
	iotconn_callback_depth++;
	((iotconn_status_cb)fn)((iotconn_status_t)status, (iotconn_reason_t)reason, (void *)user);
	iotconn_callback_depth--;
}

static void call_message(uintptr_t fn, const iotconn_message_t *msg, uintptr_t user) {
	iotconn_callback_depth++;
	((iotconn_message_cb)fn)(msg, (void *)user);
	iotconn_callback_depth--;
}

// The error message is set in the same C call as the callback, so it lands on the thread that runs it.
static void call_send(uintptr_t fn, uint64_t id, int result, int code, const char *msg, size_t len, uintptr_t user) {
	if (code) set_last_error(msg, len);
	iotconn_callback_depth++;
	((iotconn_send_cb)fn)(id, result, code, (void *)user);
	iotconn_callback_depth--;
}

static void call_twin(uintptr_t fn, uint64_t id, const char *json, size_t len, int code, const char *msg,
		      size_t msg_len, uintptr_t user) {
	if (code) set_last_error(msg, msg_len);
	iotconn_callback_depth++;
	((iotconn_twin_cb)fn)(id, json, len, code, (void *)user);
	iotconn_callback_depth--;
}

static void call_reported(uintptr_t fn, uint64_t id, int64_t version, int code, const char *msg, size_t msg_len,
			  uintptr_t user) {
	if (code) set_last_error(msg, msg_len);
	iotconn_callback_depth++;
	((iotconn_reported_cb)fn)(id, version, code, (void *)user);
	iotconn_callback_depth--;
}

static void call_desired(uintptr_t fn, int64_t version, const char *json, size_t len, uintptr_t user) {
	iotconn_callback_depth++;
	((iotconn_desired_cb)fn)(version, json, len, (void *)user);
	iotconn_callback_depth--;
}

static void call_method(uintptr_t fn, const char *request_id, const char *name, const char *json, size_t len,
			uintptr_t user) {
	iotconn_callback_depth++;
	((iotconn_method_cb)fn)(request_id, name, json, len, (void *)user);
	iotconn_callback_depth--;
}

static void call_log(uintptr_t fn, int level, const char *msg, uintptr_t user) {
	iotconn_callback_depth++;
	((iotconn_log_cb)fn)(level, msg, (void *)user);
	iotconn_callback_depth--;
}

static int call_retry(uintptr_t fn, uint32_t attempt, int code, const char *msg, uint32_t *delay_ms, uintptr_t user) {
	iotconn_callback_depth++;
	int again = ((iotconn_retry_cb)fn)(attempt, code, msg, delay_ms, (void *)user);
	iotconn_callback_depth--;
	return again;
}
*/
import "C"

import (
	"errors"
	"time"
	"unsafe"

	"github.com/iotconn/iotconn/core"
)

// setLastError stores msg as this thread's iotconn_last_error(). It must run inside the export the C caller
// called, which keeps the goroutine on the caller's thread.
func setLastError(msg string) {
	C.set_last_error((*C.char)(unsafe.Pointer(unsafe.StringData(msg))), C.size_t(len(msg)))
}

func inCallback() bool { return C.in_callback() != 0 }

func handleOf(v uintptr) *C.iotconn_client_t { return C.handle_of(C.uintptr_t(v)) }

func dispatcherHandleOf(v uintptr) *C.iotconn_dispatcher_t {
	return C.dispatcher_handle_of(C.uintptr_t(v))
}

func admissionHandleOf(v uintptr) *C.iotconn_admission_t {
	return C.admission_handle_of(C.uintptr_t(v))
}

// fnRef is a C function pointer and its user value, as registered by the application.
type fnRef struct{ fn, user uintptr }

func (f fnRef) status(s core.ConnectionStatus, r core.ConnectionStatusChangeReason) {
	C.call_status(C.uintptr_t(f.fn), C.int(s), C.int(r), C.uintptr_t(f.user))
}

// message hands m to the callback in one C block that is freed when the callback returns.
func (f fnRef) message(m *core.Message) {
	cm := cMessage(m)
	defer C.free(unsafe.Pointer(cm))
	C.call_message(C.uintptr_t(f.fn), cm, C.uintptr_t(f.user))
}

// completionError is a completion's IOTCONN_E* code and the message its trampoline makes the callback thread's
// iotconn_last_error(), as Go memory borrowed for the call.
func completionError(err *core.Error) (code C.int, msg *C.char, msgLen C.size_t) {
	if err == nil {
		return 0, nil, 0
	}
	s := err.Error()
	return -C.int(err.Code), (*C.char)(unsafe.Pointer(unsafe.StringData(s))), C.size_t(len(s))
}

func (f fnRef) sendComplete(id uint64, result core.SendResult, err *core.Error) {
	code, msg, msgLen := completionError(err)
	C.call_send(C.uintptr_t(f.fn), C.uint64_t(id), C.int(result), code, msg, msgLen, C.uintptr_t(f.user))
}

// cText copies b into C memory with a NUL after it, so that JSON handed to a callback is also a C string; the
// caller frees it once the callback returned.
func cText(b []byte) *C.char {
	p := (*C.char)(C.malloc(C.size_t(len(b) + 1)))
	if p == nil {
		panic("iotconn: out of memory")
	}
	buf := unsafe.Slice((*byte)(unsafe.Pointer(p)), len(b)+1)
	buf[copy(buf, b)] = 0
	return p
}

// twinResult hands the twin (NULL with an error) to the callback.
func (f fnRef) twinResult(id uint64, twin []byte, err *core.Error) {
	var js *C.char
	if err == nil {
		js = cText(twin)
		defer C.free(unsafe.Pointer(js))
	}
	code, msg, msgLen := completionError(err)
	C.call_twin(C.uintptr_t(f.fn), C.uint64_t(id), js, C.size_t(len(twin)), code, msg, msgLen, C.uintptr_t(f.user))
}

func (f fnRef) reportedResult(id uint64, version int64, err *core.Error) {
	code, msg, msgLen := completionError(err)
	C.call_reported(C.uintptr_t(f.fn), C.uint64_t(id), C.int64_t(version), code, msg, msgLen, C.uintptr_t(f.user))
}

func (f fnRef) desiredPatch(version int64, patch []byte) {
	js := cText(patch)
	defer C.free(unsafe.Pointer(js))
	C.call_desired(C.uintptr_t(f.fn), C.int64_t(version), js, C.size_t(len(patch)), C.uintptr_t(f.user))
}

func (f fnRef) methodCall(requestID, name string, payload []byte) {
	rid, cname, js := cText([]byte(requestID)), cText([]byte(name)), cText(payload)
	defer C.free(unsafe.Pointer(rid))
	defer C.free(unsafe.Pointer(cname))
	defer C.free(unsafe.Pointer(js))
	C.call_method(C.uintptr_t(f.fn), rid, cname, js, C.size_t(len(payload)), C.uintptr_t(f.user))
}

func (f fnRef) log(level core.LogLevel, msg string) {
	cs := C.CString(msg)
	defer C.free(unsafe.Pointer(cs))
	C.call_log(C.uintptr_t(f.fn), C.int(level), cs, C.uintptr_t(f.user))
}

// retry asks a custom C retry policy.
func (f fnRef) retry(attempt int, lastErr error) (bool, time.Duration) {
	msg := ""
	if lastErr != nil {
		msg = lastErr.Error()
	}
	cs := C.CString(msg)
	defer C.free(unsafe.Pointer(cs))
	var delayMS C.uint32_t
	again := C.call_retry(C.uintptr_t(f.fn), C.uint32_t(attempt), errorCode(lastErr), cs, &delayMS,
		C.uintptr_t(f.user))
	return again != 0, time.Duration(delayMS) * time.Millisecond
}

// errorCode is the IOTCONN_E* code of err: its core code negated, EINTERNAL for an error the engine did not type.
func errorCode(err error) C.int {
	if err == nil {
		return 0
	}
	var ce *core.Error
	if errors.As(err, &ce) {
		return -C.int(ce.Code)
	}
	return -C.int(core.CodeInternal)
}
