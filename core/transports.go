package core

import (
	"sync"

	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/amqp"
	"github.com/iotconn/iotconn/core/transport/mqtt"
	"github.com/iotconn/iotconn/core/transport/pool"
)

// protocol is how the engine reaches one wire protocol.
type protocol struct {
	newDialer func() transport.Dialer
	websocket bool // tunnel it in a WebSocket on port 443
	pools     bool // clients may share connections (Options.AMQPPool)
}

// protocols is the registry of the transports a client can use (Options.Transport).
var protocols = map[TransportKind]protocol{
	TransportMQTT:   {newDialer: newMQTTDialer},
	TransportMQTTWS: {newDialer: newMQTTDialer, websocket: true},
	TransportAMQP:   {newDialer: newAMQPDialer, pools: true},
	TransportAMQPWS: {newDialer: newAMQPDialer, websocket: true, pools: true},
}

// MaxAMQPPool is the most devices one pooled AMQP connection carries: IoT Hub takes at most 999 tokens on one.
const MaxAMQPPool = pool.MaxDevices

func newMQTTDialer() transport.Dialer { return mqtt.NewDialer() }
func newAMQPDialer() transport.Dialer { return amqp.NewDialer() }

// amqpPools are the process's shared AMQP dialers, one per AMQPPool value; WebSocket and TLS connections never
// mix inside one (the pool keys its connections by both). A pool keeps no goroutine and closes each connection
// when its last device leaves, so they live as long as the process.
var amqpPools = struct {
	sync.Mutex
	m map[int]*pool.Pool
}{m: map[int]*pool.Pool{}}

// dialer is the dialer of a new client: its own, or the shared pool for poolSize.
func (p protocol) dialer(poolSize int) transport.Dialer {
	if poolSize == 0 {
		return p.newDialer()
	}
	poolSize = min(poolSize, MaxAMQPPool)
	amqpPools.Lock()
	defer amqpPools.Unlock()
	pl := amqpPools.m[poolSize]
	if pl == nil {
		pl = amqp.NewPooled(poolSize)
		amqpPools.m[poolSize] = pl
	}
	return pl
}
