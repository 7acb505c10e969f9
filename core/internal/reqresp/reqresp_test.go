package reqresp

import (
	"errors"
	"slices"
	"testing"
	"time"
)

var t0 = time.Unix(1700000000, 0)

func rids(rs []*Request) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.RID
	}
	return out
}

func ops(rs []Result) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Req.Op
	}
	return out
}

func TestAResponseEndsItsRequestOnce(t *testing.T) {
	tb := NewTable()
	get := &Request{Op: "twin.get", Deadline: t0.Add(time.Minute)}
	tb.Add(get)
	if _, ok := tb.Resolve(get.RID, Response{Status: 200}); ok {
		t.Fatal("resolved a request not yet sent")
	}
	if got := rids(tb.Ready()); !slices.Equal(got, []string{get.RID}) {
		t.Fatalf("ready %v", got)
	}
	res, ok := tb.Resolve(get.RID, Response{Status: 200, Payload: []byte("{}")})
	if !ok || res.Req != get || res.Resp.Status != 200 || res.Err != nil {
		t.Fatalf("resolve: %+v %v", res, ok)
	}
	if _, ok := tb.Resolve(get.RID, Response{Status: 200}); ok {
		t.Fatal("a second response for the same request id was taken")
	}
	if !tb.NextDeadline().IsZero() {
		t.Fatal("a deadline with nothing outstanding")
	}
}

func TestLinkLossRetriesOrFailsByKindAndKeepsTheOrder(t *testing.T) {
	tb := NewTable()
	get := &Request{Op: "twin.get", Kind: Retry, Deadline: t0.Add(time.Minute)}
	method := &Request{Op: "method.respond", Kind: FailOnLoss, Deadline: t0.Add(time.Minute)}
	patch := &Request{Op: "twin.report", Kind: Retry, Deadline: t0.Add(time.Minute)}
	tb.Add(get)
	tb.Add(method)
	tb.Add(patch)
	tb.Ready()
	late := &Request{Op: "twin.report", Kind: Retry, Deadline: t0.Add(time.Minute)} // not sent yet: it waits
	tb.Add(late)
	oldGet := get.RID
	lost := errors.New("connection lost")
	failed := tb.LinkLost(lost)
	if len(failed) != 1 || failed[0].Req != method || !errors.Is(failed[0].Err, lost) {
		t.Fatalf("failed %+v", failed)
	}
	if _, ok := tb.Resolve(oldGet, Response{Status: 200}); ok {
		t.Fatal("a response to the lost link's request id was taken")
	}
	again := tb.Ready()
	if len(again) != 3 || again[0] != get || again[1] != patch || again[2] != late || get.RID == oldGet {
		t.Fatalf("resent %v (get was %s)", rids(again), oldGet)
	}
}

func TestDeadlinesAndFailAll(t *testing.T) {
	tb := NewTable()
	soon := &Request{Op: "soon", Deadline: t0.Add(time.Second)}
	later := &Request{Op: "later", Deadline: t0.Add(time.Hour)}
	waiting := &Request{Op: "waiting", Deadline: t0.Add(time.Second)}
	tb.Add(soon)
	tb.Add(later)
	tb.Ready()
	tb.Add(waiting)
	if next := tb.NextDeadline(); !next.Equal(t0.Add(time.Second)) {
		t.Fatalf("next deadline %v", next)
	}
	expired := tb.Expire(t0.Add(time.Second))
	if got := ops(expired); !slices.Equal(got, []string{"soon", "waiting"}) || !errors.Is(expired[0].Err, ErrTimeout) {
		t.Fatalf("expired %v", expired)
	}
	if len(tb.Ready()) != 0 {
		t.Fatal("an expired request is still waiting for a link")
	}
	closed := errors.New("closed")
	failed := tb.FailAll(closed)
	if got := ops(failed); !slices.Equal(got, []string{"later"}) || !errors.Is(failed[0].Err, closed) {
		t.Fatalf("failed %v", failed)
	}
	tb.Add(&Request{Op: "last", Deadline: t0.Add(time.Hour)})
	if got := ops(tb.Close(closed)); !slices.Equal(got, []string{"last"}) {
		t.Fatalf("closed %v", got)
	}
	if err := tb.Add(&Request{Op: "late"}); !errors.Is(err, ErrClosed) || len(tb.Ready()) != 0 {
		t.Fatalf("Add after Close: %v", err)
	}
}
