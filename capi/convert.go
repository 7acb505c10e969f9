package main

// Conversions between the header's structs and the engine's types. Structs are read in place in C memory: a Go
// copy could hold an application's arbitrary user value in a pointer-typed field, which Go forbids.

/*
#cgo CFLAGS: -I${SRCDIR}/../include
#define IOTCONN_CAPI_BUILD
#include <stdlib.h>
#include "iotconn.h"
*/
import "C"

import (
	"math"
	"slices"
	"time"
	"unsafe"

	"github.com/iotconn/iotconn/core"
	"github.com/iotconn/iotconn/core/retry"
)

// checkSize validates the size field that starts every struct of the header and returns it. Valid sizes are
// the struct's current size and those of its earlier versions (each ends where a later field was appended);
// fields beyond a caller's size are never read and take their defaults.
func checkSize(p unsafe.Pointer, what string, sizes ...uintptr) (uintptr, *core.Error) {
	size := uintptr(*(*C.size_t)(p))
	if !slices.Contains(sizes, size) {
		return 0, core.Errorf(core.CodeInvalidArgument, "%s size is %d, want %d (use the header's %s_INIT)",
			what, size, sizes[0], what)
	}
	return size, nil
}

// Earlier versions of the structs: options before queue_overflow and queue_dir (V1), before
// backoff_reset_after_ms (V2), before dispatcher (V3), before reconnect_spread_ms (V4), before admission (V5) and
// before amqp_pool (V6), messages before ttl_ms.
var (
	optionsV1Size = unsafe.Offsetof(C.iotconn_options_t{}.queue_overflow)
	optionsV2Size = unsafe.Offsetof(C.iotconn_options_t{}.backoff_reset_after_ms)
	optionsV3Size = unsafe.Offsetof(C.iotconn_options_t{}.dispatcher)
	optionsV4Size = unsafe.Offsetof(C.iotconn_options_t{}.reconnect_spread_ms)
	optionsV5Size = unsafe.Offsetof(C.iotconn_options_t{}.admission)
	optionsV6Size = unsafe.Offsetof(C.iotconn_options_t{}.amqp_pool)
	messageV1Size = unsafe.Offsetof(C.iotconn_message_t{}.ttl_ms)
)

// defaultOptions is IOTCONN_OPTIONS_INIT, used when the caller passes NULL.
var defaultOptions = &C.iotconn_options_t{size: C.size_t(unsafe.Sizeof(C.iotconn_options_t{}))}

func goOptions(p *C.iotconn_options_t) (core.Options, *core.Error) {
	o, size := defaultOptions, uintptr(defaultOptions.size)
	if p != nil {
		var err *core.Error
		if size, err = checkSize(unsafe.Pointer(p), "IOTCONN_OPTIONS", unsafe.Sizeof(*p), optionsV6Size, optionsV5Size,
			optionsV4Size, optionsV3Size, optionsV2Size, optionsV1Size); err != nil {
			return core.Options{}, err
		}
		o = p
	}
	switch o.dispatch {
	case C.IOTCONN_DISPATCH_THREAD, C.IOTCONN_DISPATCH_POLL:
	default:
		return core.Options{}, core.Errorf(core.CodeInvalidArgument, "unknown dispatch mode %d", int(o.dispatch))
	}
	if o.transport < 0 {
		return core.Options{}, core.Errorf(core.CodeInvalidArgument, "unknown transport %d", int(o.transport))
	}
	opts := core.Options{
		Transport:        core.TransportKind(o.transport),
		CAFile:           C.GoString(o.ca_file),
		CertFile:         C.GoString(o.cert_file),
		KeyFile:          C.GoString(o.key_file),
		KeepAlive:        time.Duration(o.keepalive_s) * time.Second,
		SASLifetime:      time.Duration(o.sas_lifetime_s) * time.Second,
		SASRenewMargin:   time.Duration(o.sas_renew_margin_s) * time.Second,
		QueueMaxMessages: int(o.queue_max_messages),
		QueueMaxBytes:    int64(min(uint64(o.queue_max_bytes), 1<<62)),
		OperationTimeout: time.Duration(o.operation_timeout_ms) * time.Millisecond,
		Dispatch:         core.DispatchMode(o.dispatch),
	}
	if o.ca_pem != nil {
		opts.CAPEM = []byte(C.GoString(o.ca_pem))
	}
	if size > optionsV1Size {
		opts.QueueOverflow = core.OverflowPolicy(o.queue_overflow) // the engine rejects unknown values
		opts.QueueDir = C.GoString(o.queue_dir)
	}
	if size > optionsV2Size {
		opts.BackoffResetAfter = time.Duration(o.backoff_reset_after_ms) * time.Millisecond
	}
	if size > optionsV3Size && o.dispatcher != nil {
		d, err := dispatchers.lookup(uintptr(unsafe.Pointer(o.dispatcher)))
		if err != nil {
			return core.Options{}, err
		}
		opts.Dispatcher = d
	}
	if size > optionsV4Size {
		opts.ReconnectSpread = time.Duration(o.reconnect_spread_ms) * time.Millisecond
	}
	if size > optionsV5Size && o.admission != nil {
		a, err := admissions.lookup(uintptr(unsafe.Pointer(o.admission)))
		if err != nil {
			return core.Options{}, err
		}
		opts.Admission = a
	}
	if size > optionsV6Size {
		opts.AMQPPool = int(min(o.amqp_pool, C.IOTCONN_AMQP_POOL_MAX))
	}
	return opts, nil
}

// goMessage reads a C message; its payload still points into the caller's memory (see below).
func goMessage(p *C.iotconn_message_t) (*core.Message, *core.Error) {
	size, err := checkSize(unsafe.Pointer(p), "IOTCONN_MESSAGE", unsafe.Sizeof(*p), messageV1Size)
	if err != nil {
		return nil, err
	}
	if p.payload == nil && p.payload_len != 0 {
		return nil, core.Errorf(core.CodeInvalidArgument, "payload is NULL but payload_len is %d", p.payload_len)
	}
	if p.properties == nil && p.property_count != 0 {
		return nil, core.Errorf(core.CodeInvalidArgument, "properties is NULL but property_count is %d",
			p.property_count)
	}
	msg := &core.Message{
		MessageID:       C.GoString(p.message_id),
		CorrelationID:   C.GoString(p.correlation_id),
		ContentType:     C.GoString(p.content_type),
		ContentEncoding: C.GoString(p.content_encoding),
	}
	if size > messageV1Size {
		msg.TTL = time.Duration(p.ttl_ms) * time.Millisecond
	}
	if p.payload_len > 0 {
		// Borrowed, not copied: the engine's Send copies what it keeps before returning (core/api.go).
		msg.Payload = unsafe.Slice((*byte)(p.payload), p.payload_len)
	}
	if p.property_count > 0 {
		props := unsafe.Slice(p.properties, p.property_count)
		msg.Properties = make([]core.Property, len(props))
		for i, p := range props {
			if p.key == nil || p.value == nil {
				return nil, core.Errorf(core.CodeInvalidArgument, "property %d has a NULL key or value", i)
			}
			msg.Properties[i] = core.Property{Key: C.GoString(p.key), Value: C.GoString(p.value)}
		}
	}
	return msg, nil
}

// cMessage lays m out in one malloc'd block (struct, property array, then strings and payload), so one free
// releases it. The payload is followed by a NUL byte for the convenience of text payloads.
func cMessage(m *core.Message) *C.iotconn_message_t {
	const msgSize, propSize = unsafe.Sizeof(C.iotconn_message_t{}), unsafe.Sizeof(C.iotconn_property_t{})
	strs := []string{m.MessageID, m.CorrelationID, m.ContentType, m.ContentEncoding}
	for _, p := range m.Properties {
		strs = append(strs, p.Key, p.Value)
	}
	total := msgSize + uintptr(len(m.Properties))*propSize + uintptr(len(m.Payload)) + 1
	for _, s := range strs {
		total += uintptr(len(s)) + 1
	}
	block := C.calloc(1, C.size_t(total))
	if block == nil {
		panic("iotconn: out of memory")
	}
	buf := unsafe.Slice((*byte)(block), total)
	off := msgSize + uintptr(len(m.Properties))*propSize
	put := func(b []byte) *C.char { // copies b and a NUL at off
		p := &buf[off]
		off += uintptr(copy(buf[off:], b)) + 1
		return (*C.char)(unsafe.Pointer(p))
	}
	cm := (*C.iotconn_message_t)(block)
	cm.size = C.size_t(msgSize)
	cm.payload = unsafe.Pointer(put(m.Payload))
	cm.payload_len = C.size_t(len(m.Payload))
	cm.message_id = put([]byte(m.MessageID))
	cm.correlation_id = put([]byte(m.CorrelationID))
	cm.content_type = put([]byte(m.ContentType))
	cm.content_encoding = put([]byte(m.ContentEncoding))
	cm.ttl_ms = C.uint32_t(min(m.TTL.Milliseconds(), math.MaxUint32))
	if len(m.Properties) > 0 {
		props := unsafe.Slice((*C.iotconn_property_t)(unsafe.Pointer(&buf[msgSize])), len(m.Properties))
		for i, p := range m.Properties {
			props[i].key = put([]byte(p.Key))
			props[i].value = put([]byte(p.Value))
		}
		cm.properties = &props[0]
		cm.property_count = C.size_t(len(props))
	}
	return cm
}

// goPolicy turns a C retry policy into the engine's.
func goPolicy(p *C.iotconn_retry_policy_t) (retry.Policy, *core.Error) {
	if _, err := checkSize(unsafe.Pointer(p), "IOTCONN_RETRY_POLICY", unsafe.Sizeof(*p)); err != nil {
		return nil, err
	}
	switch p.kind {
	case C.IOTCONN_RETRY_NONE:
		return retry.NoRetry{}, nil
	case C.IOTCONN_RETRY_CUSTOM:
		if p.custom == nil {
			return nil, core.Errorf(core.CodeInvalidArgument, "custom retry policy without a callback")
		}
		f := fnRef{fn: uintptr(unsafe.Pointer(p.custom)), user: uintptr(p.user)}
		return retry.Custom(f.retry), nil
	case C.IOTCONN_RETRY_EXPONENTIAL:
		ms := func(v C.uint32_t) time.Duration { return time.Duration(v) * time.Millisecond }
		exp, err := retry.NewExponential(int(p.retry_count), ms(p.min_backoff_ms), ms(p.max_backoff_ms),
			ms(p.delta_backoff_ms), retry.Jitter(p.jitter))
		if err != nil {
			return nil, &core.Error{Code: core.CodeInvalidArgument, Msg: err.Error(), Err: err}
		}
		return exp, nil
	}
	return nil, core.Errorf(core.CodeInvalidArgument, "unknown retry policy kind %d", int(p.kind))
}
