package main

// The Device Provisioning Service exports: a client created from DPS parameters, its registration count and
// assignment, and one registration outside any client.

/*
#cgo CFLAGS: -I${SRCDIR}/../include
#define IOTCONN_CAPI_BUILD
#include "iotconn.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"time"
	"unsafe"

	"github.com/iotconn/iotconn/core"
)

// goDPSParams reads iotconn_dps_params_t.
func goDPSParams(p *C.iotconn_dps_params_t) (core.Provisioning, *core.Error) {
	if _, err := checkSize(unsafe.Pointer(p), "IOTCONN_DPS_PARAMS", unsafe.Sizeof(*p)); err != nil {
		return core.Provisioning{}, err
	}
	out := core.Provisioning{
		Host:                     C.GoString(p.provisioning_host),
		IDScope:                  C.GoString(p.id_scope),
		RegistrationID:           C.GoString(p.registration_id),
		SymmetricKey:             C.GoString(p.symmetric_key),
		GroupKey:                 C.GoString(p.group_key),
		CacheFile:                C.GoString(p.cache_file),
		ReprovisionAfterFailures: int(min(uint32(p.reprovision_after_failures), 1<<30)),
		ReprovisionAfter:         time.Duration(p.reprovision_after_s) * time.Second,
	}
	if p.payload_json != nil {
		out.Payload = []byte(C.GoString(p.payload_json))
	}
	return out, nil
}

//export iotconn_client_create_dps
func iotconn_client_create_dps(params *C.iotconn_dps_params_t, opts *C.iotconn_options_t,
	out **C.iotconn_client_t) (rc C.int) {
	defer recoverTo(&rc)
	if params == nil || out == nil {
		return invalid("params and out_client must not be NULL")
	}
	p, cerr := goDPSParams(params)
	if cerr != nil {
		return fail(cerr)
	}
	o, cerr := goOptions(opts)
	if cerr != nil {
		return fail(cerr)
	}
	h, err := addClient(core.NewProvisionedClient(p, o))
	if err != nil {
		return failErr(err)
	}
	*out = handleOf(h)
	return 0
}

//export iotconn_dps_registrations
func iotconn_dps_registrations(client *C.iotconn_client_t, outCount *C.uint64_t) (rc C.int) {
	defer recoverTo(&rc)
	return storeCount(client, outCount, (*core.Client).Registrations)
}

//export iotconn_dps_assignment
func iotconn_dps_assignment(client *C.iotconn_client_t, outHub **C.char, outDeviceID **C.char) (rc C.int) {
	defer recoverTo(&rc)
	e, cerr := lookup(uintptr(unsafe.Pointer(client)))
	if cerr != nil {
		return fail(cerr)
	}
	hub, dev := e.client.Assignment()
	for _, f := range []struct {
		out **C.char
		s   string
	}{{outHub, hub}, {outDeviceID, dev}} {
		if f.out == nil {
			continue
		}
		*f.out = nil
		if f.s != "" {
			*f.out = C.CString(f.s)
		}
	}
	return 0
}

//export iotconn_dps_register
func iotconn_dps_register(params *C.iotconn_dps_params_t, opts *C.iotconn_options_t, timeoutMS C.uint32_t,
	out **C.char) (rc C.int) {
	defer recoverTo(&rc)
	if params == nil || out == nil {
		return invalid("params and out_result_json must not be NULL")
	}
	if inCallback() {
		return fail(core.Errorf(core.CodeState, "iotconn_dps_register blocks: not from inside a callback"))
	}
	p, cerr := goDPSParams(params)
	if cerr != nil {
		return fail(cerr)
	}
	o, cerr := goOptions(opts)
	if cerr != nil {
		return fail(cerr)
	}
	if timeoutMS > 0 {
		o.OperationTimeout = msDuration(timeoutMS)
	}
	res, err := core.RegisterDevice(context.Background(), p, o)
	if err != nil {
		return failErr(err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		return fail(core.Errorf(core.CodeInternal, "registration state: %v", err))
	}
	*out = C.CString(string(b))
	return 0
}
