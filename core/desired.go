package core

import (
	"encoding/json"
	"errors"

	"github.com/iotconn/iotconn/core/internal/notify"
	"github.com/iotconn/iotconn/core/internal/reqresp"
	"github.com/iotconn/iotconn/core/transport"
)

// Desired properties reach the application as OnDesired(version, patch), each version at most once and in
// increasing order. The hub sends a patch only to a live link, so after every connect (a lost link, a token
// renewal) the engine GETs the twin and delivers the whole desired section if its $version moved past the last
// one delivered: nothing that changed while the device was offline is missed. Patches that arrive while that GET
// is outstanding wait for its answer, then go out if they are newer: a patch may overtake the GET's answer on the
// wire, and delivering it first would make the GET's older version look already seen.

// desiredState is what was delivered and what waits. Guarded by Client.mu.
type desiredState struct {
	version int64            // the last version delivered
	sync    *reqresp.Request // the GET after connecting, until it succeeds: patches wait for it
	held    []heldPatch      // patches that arrived meanwhile, in order
}

type heldPatch struct {
	version int64
	patch   []byte
}

// startSync GETs the twin for the link that just came up, if it subscribed to twins for OnDesired; without
// OnDesired, patches held for an earlier link's GET are released (to nobody, or to a handler set since).
func (c *Client) startSync(linkFeatures transport.Feature) {
	c.mu.Lock()
	if c.handlers.OnDesired == nil || linkFeatures&transport.FeatureTwin == 0 {
		c.desired.sync = nil
		c.releaseHeldLocked()
		c.mu.Unlock()
		return
	}
	// FailOnLoss: a lost link's GET is not sent again, the next link makes its own.
	r := &reqresp.Request{Op: "twin.sync", Kind: reqresp.FailOnLoss, Deadline: c.clk.Now().Add(c.opts.OperationTimeout),
		Data: &request{kind: transport.RequestTwinGet, sync: true}}
	c.desired.sync = r
	c.mu.Unlock()
	c.reqs.Add(r) // the loop adds it before Close can end the table
}

// synced takes the answer to a GET after connecting. One that failed on its live link (no answer in time, or
// the hub refused: a fleet reconnecting at once meets the twin-read throttle) is asked again on the throttling
// schedule; patches keep waiting for it, so none is delivered out of order.
func (c *Client) synced(res reqresp.Result, err *Error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if res.Req != c.desired.sync || res.Err != nil && !errors.Is(res.Err, reqresp.ErrTimeout) {
		return // replaced by a later link's GET; or its link ended, and the next link makes its own
	}
	version, desired := int64(0), json.RawMessage(nil)
	if err == nil {
		if version, desired, err = desiredSection(res.Resp.Payload); err == nil {
			c.desired.sync = nil
			c.deliverDesiredLocked(version, desired)
			c.releaseHeldLocked()
			return
		}
	}
	c.events.push(event{kind: evLog, level: LogWarn,
		text: "the twin GET after connecting failed (" + err.Msg + "); desired patches wait for the next one"})
	notify.Raise(c.resync)
}

// desiredSection reads the desired section of a whole twin and its $version.
func desiredSection(twin []byte) (int64, json.RawMessage, *Error) {
	var doc struct {
		Desired json.RawMessage `json:"desired"`
	}
	var section struct {
		Version *int64 `json:"$version"`
	}
	if json.Unmarshal(twin, &doc) != nil || json.Unmarshal(doc.Desired, &section) != nil || section.Version == nil {
		return 0, nil, Errorf(CodeProtocol, "the hub's twin has no desired section with a $version")
	}
	return *section.Version, doc.Desired, nil
}

// desiredPatch takes a desired-properties patch from the hub.
func (c *Client) desiredPatch(version int64, patch []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.desired.sync != nil {
		c.desired.held = append(c.desired.held, heldPatch{version, patch})
		return
	}
	c.deliverDesiredLocked(version, patch)
}

func (c *Client) releaseHeldLocked() {
	for _, h := range c.desired.held {
		c.deliverDesiredLocked(h.version, h.patch)
	}
	c.desired.held = nil
}

// deliverDesiredLocked queues OnDesired for a version later than the last delivered, and drops any other; under
// Client.mu, so updates are queued in the order of their versions.
func (c *Client) deliverDesiredLocked(version int64, patch []byte) {
	if c.handlers.OnDesired == nil || version <= c.desired.version {
		return
	}
	c.desired.version = version
	c.events.push(event{kind: evDesired, version: version, payload: patch})
}
