package main

import (
	"maps"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core"
	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/core/transport/mqtt"
)

// headerValues returns every "PREFIX_NAME = value" or "#define PREFIX_NAME value" of include/iotconn.h.
func headerValues(t *testing.T, prefix string) map[string]int {
	t.Helper()
	src, err := os.ReadFile("../include/iotconn.h")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^\s*(?:#define\s+)?` + prefix + `(\w+)\s*=?\s*\(?(-?\d+)\)?,?\s*(?:/\*.*)?$`)
	out := map[string]int{}
	for _, m := range re.FindAllStringSubmatch(string(src), -1) {
		v, err := strconv.Atoi(m[2])
		if err != nil {
			t.Fatal(err)
		}
		out[m[1]] = v
	}
	if len(out) == 0 {
		t.Fatalf("no %s values in the header", prefix)
	}
	return out
}

// The header is the source of truth for the enum names and numbers; the engine's must match it exactly.
func TestHeaderStatusAndReasonMatchEngine(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		n      int
		name   func(v int) string
	}{
		{"IOTCONN_STATUS_", 4, func(v int) string { return core.ConnectionStatus(v).String() }},
		{"IOTCONN_REASON_", 8, func(v int) string { return core.ConnectionStatusChangeReason(v).String() }},
	} {
		vals := headerValues(t, tc.prefix)
		if len(vals) != tc.n {
			t.Errorf("%s: %d values in the header, want %d", tc.prefix, len(vals), tc.n)
		}
		for name, v := range vals {
			if got := strings.ToUpper(tc.name(v)); got != name {
				t.Errorf("%s%s = %d, but the engine names %d %q", tc.prefix, name, v, v, got)
			}
		}
	}
}

func TestHeaderErrorCodesMatchEngine(t *testing.T) {
	vals := headerValues(t, "IOTCONN_E")
	if len(vals) != int(core.CodeLast) {
		t.Errorf("%d error codes in the header, want %d", len(vals), int(core.CodeLast))
	}
	seen := map[int]bool{}
	for name, v := range vals {
		if v >= 0 || v < -int(core.CodeLast) || seen[v] {
			t.Errorf("IOTCONN_E%s = %d: not a distinct negated engine code", name, v)
		}
		seen[v] = true
	}
	want := map[string]core.Code{
		"INVAL": core.CodeInvalidArgument, "BADHANDLE": core.CodeBadHandle, "CLOSED": core.CodeClosed,
		"QUEUEFULL": core.CodeQueueFull, "TIMEOUT": core.CodeTimeout, "AUTH": core.CodeAuth,
		"DISABLED": core.CodeDeviceDisabled, "RETRYEXPIRED": core.CodeRetryExpired, "TOOLARGE": core.CodeTooLarge,
		"NETWORK": core.CodeNetwork, "STATE": core.CodeState, "INTERNAL": core.CodeInternal,
		"PROTOCOL": core.CodeProtocol, "THROTTLED": core.CodeThrottled, "DROPPED": core.CodeDropped,
		"STORE": core.CodeStore, "CANCELED": core.CodeCanceled, "INDOUBT": core.CodeInDoubt,
	}
	for name, code := range want {
		if v, ok := vals[name]; !ok || v != -int(code) {
			t.Errorf("IOTCONN_E%s = %d (present %v), want %d", name, v, ok, -int(code))
		}
	}
}

func TestHeaderAPIEnumsMatchEngine(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		want   map[string]int
	}{
		{"IOTCONN_DISPATCH_", map[string]int{"THREAD": int(core.DispatchThread), "POLL": int(core.DispatchPoll)}},
		{"IOTCONN_TRANSPORT_", map[string]int{"MQTT": int(core.TransportMQTT), "MQTT_WS": int(core.TransportMQTTWS),
			"AMQP": int(core.TransportAMQP), "AMQP_WS": int(core.TransportAMQPWS)}},
		{"IOTCONN_SEND_", map[string]int{"DELIVERED": int(core.SendDelivered), "EXPIRED": int(core.SendExpired),
			"FAILED": int(core.SendFailed)}},
		{"IOTCONN_QUEUE_OVERFLOW_", map[string]int{"REJECT": int(core.OverflowReject),
			"DROP_OLDEST": int(core.OverflowDropOldest)}},
		{"IOTCONN_LOG_", map[string]int{"ERROR": int(core.LogError), "WARN": int(core.LogWarn),
			"INFO": int(core.LogInfo), "DEBUG": int(core.LogDebug)}},
		{"IOTCONN_JITTER_", map[string]int{"DEFAULT": int(retry.JitterDefault), "FULL": int(retry.JitterFull),
			"DECORRELATED": int(retry.JitterDecorrelated)}},
	} {
		got := headerValues(t, tc.prefix)
		if len(got) != len(tc.want) {
			t.Errorf("%s: header has %v, want %v", tc.prefix, got, tc.want)
		}
		for name, v := range tc.want {
			if got[name] != v {
				t.Errorf("%s%s = %d, want %d", tc.prefix, name, got[name], v)
			}
		}
	}
}

// The limits the header documents are the ones the engine applies.
func TestHeaderLimitsMatchEngine(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		want   map[string]int
	}{
		{"IOTCONN_MAX_", map[string]int{"MESSAGE_SIZE": iothub.MaxMessageSize, "MESSAGE_ID_LENGTH": iothub.MaxMessageIDLength,
			"GENERATED_MESSAGE_ID_LENGTH": iothub.MaxGeneratedMessageIDLength, "MQTT_TOPIC_LENGTH": mqtt.MaxTopicLength}},
		{"IOTCONN_MIN_SAS_", map[string]int{"LIFETIME_S": int(core.MinSASLifetime / time.Second),
			"RENEW_MARGIN_S":   int(core.MinSASRenewMargin / time.Second),
			"RENEW_INTERVAL_S": int(core.MinSASRenewInterval / time.Second)}},
	} {
		if got := headerValues(t, tc.prefix); !maps.Equal(got, tc.want) {
			t.Errorf("%s: header has %v, the engine %v", tc.prefix, got, tc.want)
		}
	}
}
