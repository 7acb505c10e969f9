package core

import "fmt"

// Code is the error code every layer shares; capi returns it negated as IOTCONN_E* (Code 1 -> -1).
type Code int

const (
	CodeOK              Code = 0
	CodeInvalidArgument Code = 1  // bad argument: NULL, bad size, malformed connection string or option
	CodeBadHandle       Code = 2  // unknown, destroyed or foreign handle
	CodeClosed          Code = 3  // the client was closed
	CodeQueueFull       Code = 4  // the outbound queue is at its count or byte limit
	CodeTimeout         Code = 5  // the operation timeout elapsed
	CodeAuth            Code = 6  // bad credential (wrong key, expired or wrongly scoped token)
	CodeDeviceDisabled  Code = 7  // the device is disabled or unknown to the hub
	CodeRetryExpired    Code = 8  // the retry policy gave up
	CodeTooLarge        Code = 9  // payload or message over the hub's limit
	CodeNetwork         Code = 10 // network-level failure (DNS, refused, unreachable)
	CodeState           Code = 11 // not allowed in the current state (e.g. connect twice)
	CodeInternal        Code = 12 // a bug: a recovered panic or a broken invariant
	CodeProtocol        Code = 13 // the peer broke the protocol or closed the connection
	CodeThrottled       Code = 14 // the hub throttled the device and retrying gave up
	CodeDropped         Code = 15 // dropped by the drop-oldest overflow policy to make room for a newer message
	CodeStore           Code = 16 // the durable queue's directory cannot be used: unwritable, corrupt or in use
	CodeCanceled        Code = 17 // the connect was cancelled (CancelConnect, or the caller's context)
	CodeInDoubt         Code = 18 // handed to the network, never acknowledged: it may have reached the hub

	// CodeLast is the highest code; loops over every code end here.
	CodeLast = CodeInDoubt
)

var codeNames = map[Code]string{
	CodeOK: "ok", CodeInvalidArgument: "invalid argument", CodeBadHandle: "bad handle", CodeClosed: "client closed",
	CodeQueueFull: "queue full", CodeTimeout: "timeout", CodeAuth: "authentication failed",
	CodeDeviceDisabled: "device disabled or not found", CodeRetryExpired: "retry expired",
	CodeTooLarge: "message too large", CodeNetwork: "network error", CodeState: "invalid state",
	CodeInternal: "internal error", CodeProtocol: "protocol error", CodeThrottled: "throttled",
	CodeDropped: "dropped from a full queue", CodeStore: "queue store error", CodeCanceled: "cancelled",
	CodeInDoubt: "sent, not acknowledged: may have arrived",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("error %d", int(c))
}

// Error is the error type the engine returns to callers: a code for programs and a message for people.
type Error struct {
	Code Code
	Msg  string
	Err  error // the underlying cause, if any
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return e.Code.String()
	}
	return e.Code.String() + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}
