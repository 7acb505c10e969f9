package pool

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotconn/iotconn/core/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitLimit = 10 * time.Second

// fakeShared is a connection the fake opener made. Attach refuses devices whose id starts with "bad".
type fakeShared struct {
	first  transport.DialParams
	done   chan struct{}
	closes atomic.Int32

	mu    sync.Mutex
	ended bool
	conns map[*fakeConn]struct{}
	peak  int // the most devices attached at once
}

func (s *fakeShared) Attach(ctx context.Context, p transport.DialParams) (transport.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, &transport.Error{Kind: transport.KindTimeout, Op: "attach", Err: err}
	}
	if strings.HasPrefix(p.DeviceID, "bad") {
		return nil, &transport.Error{Kind: transport.KindAuth, Op: "attach", Err: errBadDevice}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return nil, &transport.Error{Kind: transport.KindProtocol, Op: "attach", Err: errEnded}
	}
	c := &fakeConn{s: s, p: p}
	s.conns[c] = struct{}{}
	s.peak = max(s.peak, len(s.conns))
	return c, nil
}

var (
	errBadDevice = errors.New("refused")
	errEnded     = errors.New("attach on an ended connection")
)

func (s *fakeShared) Done() <-chan struct{} { return s.done }

func (s *fakeShared) Close() error {
	s.closes.Add(1)
	s.end()
	return nil
}

// end ends the connection as a Shared must: Done first, then each attached device's loss, with no lock held.
func (s *fakeShared) end() {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	close(s.done)
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		c.p.Handler.OnConnectionLost(&transport.Error{Kind: transport.KindNetwork, Op: "connection lost"})
	}
}

func (s *fakeShared) attached() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

type fakeConn struct {
	s      *fakeShared
	p      transport.DialParams
	closes atomic.Int32
}

func (c *fakeConn) Send(_ *transport.Message, done func(error))    { done(nil) }
func (c *fakeConn) Request(_ *transport.Request, done func(error)) { done(nil) }
func (c *fakeConn) RenewToken(context.Context, string) error       { return nil }
func (c *fakeConn) Close() error {
	c.closes.Add(1)
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	return nil
}

// step scripts one opening: it waits for hold (or its context, unless ignoreCtx) and then fails with err, if set.
type step struct {
	hold      chan struct{}
	ignoreCtx bool
	err       error
}

// fakeOpener opens fakeShared connections; the i-th opening follows steps[i], later ones succeed at once.
type fakeOpener struct {
	mu     sync.Mutex
	steps  []step
	calls  int
	opened []*fakeShared
	called chan int // each opening's number, from 1
}

func newOpener(steps ...step) *fakeOpener {
	return &fakeOpener{steps: steps, called: make(chan int, 10000)}
}

func (o *fakeOpener) open(ctx context.Context, first transport.DialParams) (Shared, error) {
	o.mu.Lock()
	o.calls++
	n := o.calls
	var st step
	if n <= len(o.steps) {
		st = o.steps[n-1]
	}
	o.mu.Unlock()
	o.called <- n
	if st.hold != nil {
		if st.ignoreCtx {
			<-st.hold
		} else {
			select {
			case <-st.hold:
			case <-ctx.Done():
				return nil, &transport.Error{Kind: transport.KindTimeout, Op: "connect", Err: ctx.Err()}
			}
		}
	}
	if st.err != nil {
		return nil, st.err
	}
	s := &fakeShared{first: first, done: make(chan struct{}), conns: map[*fakeConn]struct{}{}}
	o.mu.Lock()
	o.opened = append(o.opened, s)
	o.mu.Unlock()
	return s, nil
}

func (o *fakeOpener) opens() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.calls
}

func (o *fakeOpener) shared(i int) *fakeShared {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.opened[i]
}

// waitCalled waits for the n-th opening to start.
func (o *fakeOpener) waitCalled(t *testing.T, n int) {
	t.Helper()
	for {
		select {
		case got := <-o.called:
			if got >= n {
				return
			}
		case <-time.After(waitLimit):
			t.Fatalf("opening %d did not start", n)
		}
	}
}

// device is a Handler that records its link's loss.
type device struct{ lost chan *transport.Error }

func (d *device) OnMessage(*transport.Message)          {}
func (d *device) OnInbound(*transport.Inbound)          {}
func (d *device) OnConnectionLost(err *transport.Error) { d.lost <- err }

var (
	testCert     *x509.Certificate
	testCertOnce sync.Once
)

// roots returns a new pool holding the same CA each time, as clients loading one CA file get.
func roots(t testing.TB) *x509.CertPool {
	testCertOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
			NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<32, 0), IsCA: true, BasicConstraintsValid: true}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		if testCert, err = x509.ParseCertificate(der); err != nil {
			panic(err)
		}
	})
	p := x509.NewCertPool()
	p.AddCert(testCert)
	return p
}

func params(t testing.TB, id string) transport.DialParams {
	return transport.DialParams{
		Host: "hub.example.net", DeviceID: id, Token: "SharedAccessSignature sr=x",
		TLS:     &tls.Config{ServerName: "hub.example.net", RootCAs: roots(t), MinVersion: tls.VersionTLS12},
		Handler: &device{lost: make(chan *transport.Error, 1)},
	}
}

func dialCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

func mustDial(t testing.TB, pl *Pool, p transport.DialParams) transport.Conn {
	t.Helper()
	c, err := pl.Dial(dialCtx(t), p)
	if err != nil {
		t.Fatalf("Dial %s: %v", p.DeviceID, err)
	}
	return c
}

// sharedOf is the connection a Conn the pool returned is attached to.
func sharedOf(c transport.Conn) *fakeShared { return c.(*conn).Conn.(*fakeConn).s }

// dialAll dials every p at once and returns the conns and errors in the order of ps.
func dialAll(t testing.TB, pl *Pool, ps []transport.DialParams) ([]transport.Conn, []error) {
	conns, errs := make([]transport.Conn, len(ps)), make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() { conns[i], errs[i] = pl.Dial(dialCtx(t), p) })
	}
	wg.Wait()
	return conns, errs
}

func devices(t testing.TB, prefix string, n int) []transport.DialParams {
	ps := make([]transport.DialParams, n)
	for i := range ps {
		ps[i] = params(t, fmt.Sprintf("%s%d", prefix, i))
	}
	return ps
}

// eventually polls the pool's state, which no event announces, until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not in time", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func openingIs(pl *Pool, want ...int) func() bool {
	return func() bool { return slices.Equal(pl.Stats().Opening, want) }
}

func wantStats(t *testing.T, pl *Pool, live ...int) {
	t.Helper()
	if s := pl.Stats(); !slices.Equal(s.Live, live) || len(s.Opening) > 0 {
		t.Fatalf("stats %+v, want live %v and nothing opening", s, live)
	}
}

func closeAll(t *testing.T, conns []transport.Conn) {
	t.Helper()
	for _, c := range conns {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFillsConnectionsToTheLimit(t *testing.T) {
	o := newOpener()
	pl := New(o.open, nil, 0)
	defer pl.Close()
	conns, errs := dialAll(t, pl, devices(t, "d", 2*MaxDevices+1))
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	wantStats(t, pl, MaxDevices, MaxDevices, 1)
	if o.opens() != 3 {
		t.Fatalf("%d openings, want 3", o.opens())
	}
	var attached []int
	for i := range 3 {
		s := o.shared(i)
		attached = append(attached, s.attached())
		if s.peak > MaxDevices {
			t.Fatalf("connection %d carried %d devices", i, s.peak)
		}
	}
	if slices.Sort(attached); !slices.Equal(attached, []int{1, MaxDevices, MaxDevices}) {
		t.Fatalf("attached %v", attached)
	}
	closeAll(t, conns)
	wantStats(t, pl)
	for i := range 3 {
		if n := o.shared(i).closes.Load(); n != 1 {
			t.Fatalf("connection %d closed %d times", i, n)
		}
	}
}

func TestRedialAfterTheConnectionDiedOpensOnce(t *testing.T) {
	const n = 500
	gate := make(chan struct{})
	o := newOpener(step{}, step{hold: gate})
	pl := New(o.open, nil, 0)
	defer pl.Close()
	ps := devices(t, "d", n)
	conns, errs := dialAll(t, pl, ps)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	first := o.shared(0)
	// Each device redials when told its link was lost, as the engine does: close the old Conn, dial again.
	redialed := make([]transport.Conn, n)
	redialErrs := make([]error, n)
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() {
			select {
			case <-p.Handler.(*device).lost:
			case <-time.After(waitLimit):
				redialErrs[i] = errors.New("no loss reported")
				return
			}
			conns[i].Close()
			redialed[i], redialErrs[i] = pl.Dial(dialCtx(t), p)
		})
	}
	first.end()
	o.waitCalled(t, 2)
	eventually(t, "every device waits for the one opening", openingIs(pl, n))
	close(gate)
	wg.Wait()
	if err := errors.Join(redialErrs...); err != nil {
		t.Fatal(err)
	}
	if o.opens() != 2 {
		t.Fatalf("%d openings, want 2", o.opens())
	}
	wantStats(t, pl, n)
	if got := first.closes.Load(); got != 1 {
		t.Fatalf("the dead connection was closed %d times", got)
	}
	for _, c := range redialed {
		if sharedOf(c) != o.shared(1) {
			t.Fatal("a device is not on the new connection")
		}
	}
	closeAll(t, redialed)
}

func TestJoinersRetryWhenTheOpenersDialIsCancelled(t *testing.T) {
	o := newOpener(step{hold: make(chan struct{})}) // the first opening ends only with its context
	pl := New(o.open, nil, 0)
	defer pl.Close()
	ctx, cancel := context.WithCancel(dialCtx(t))
	firstErr := make(chan error, 1)
	go func() {
		_, err := pl.Dial(ctx, params(t, "first"))
		firstErr <- err
	}()
	o.waitCalled(t, 1)

	// A joiner whose own context ends leaves the opening, and its place.
	quitCtx, quit := context.WithCancel(dialCtx(t))
	quitErr := make(chan error, 1)
	go func() {
		_, err := pl.Dial(quitCtx, params(t, "quitter"))
		quitErr <- err
	}()
	eventually(t, "the quitter joins", openingIs(pl, 2))
	quit()
	if err := <-quitErr; transport.KindOf(err) != transport.KindTimeout {
		t.Fatalf("quitter: %v", err)
	}
	eventually(t, "the quitter leaves", openingIs(pl, 1))

	type result struct {
		c   transport.Conn
		err error
	}
	const joiners = 10
	results := make(chan result, joiners)
	for i := range joiners {
		go func() {
			c, err := pl.Dial(dialCtx(t), params(t, fmt.Sprint("j", i)))
			results <- result{c, err}
		}()
	}
	eventually(t, "the joiners join", openingIs(pl, 1+joiners))
	cancel()
	if err := <-firstErr; err == nil {
		t.Fatal("the cancelled Dial succeeded")
	}
	var conns []transport.Conn
	for range joiners {
		r := <-results
		if r.err != nil {
			t.Fatalf("joiner: %v", r.err)
		}
		conns = append(conns, r.c)
	}
	if o.opens() != 2 {
		t.Fatalf("%d openings, want 2", o.opens())
	}
	wantStats(t, pl, joiners)
	closeAll(t, conns)
}

func TestOpeningErrorReachesEveryWaiter(t *testing.T) {
	boom := &transport.Error{Kind: transport.KindNetwork, Op: "connect", Err: errors.New("no route")}
	gate := make(chan struct{})
	o := newOpener(step{hold: gate, err: boom})
	pl := New(o.open, nil, 0)
	defer pl.Close()
	const n = 20
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := pl.Dial(dialCtx(t), params(t, fmt.Sprint("d", i)))
			errs <- err
		}()
	}
	eventually(t, "every Dial waits for the opening", openingIs(pl, n))
	close(gate)
	for range n {
		if err := <-errs; !errors.Is(err, boom) {
			t.Fatalf("Dial: %v, want the opening's error", err)
		}
	}
	if o.opens() != 1 {
		t.Fatalf("%d openings, want 1", o.opens())
	}
	wantStats(t, pl)
	c := mustDial(t, pl, params(t, "later"))
	if o.opens() != 2 {
		t.Fatal("a later Dial did not open anew")
	}
	c.Close()
}

func TestLastDeviceToLeaveClosesTheConnection(t *testing.T) {
	o := newOpener()
	pl := New(o.open, nil, 0)
	defer pl.Close()
	conns, errs := dialAll(t, pl, devices(t, "d", 3))
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	s := o.shared(0)
	closeAll(t, conns[:2])
	if s.closes.Load() != 0 {
		t.Fatal("closed with a device on it")
	}
	wantStats(t, pl, 1)
	closeAll(t, conns[2:])
	if s.closes.Load() != 1 {
		t.Fatal("not closed when its last device left")
	}
	wantStats(t, pl)
	c := mustDial(t, pl, params(t, "later"))
	if sharedOf(c) == s || o.opens() != 2 {
		t.Fatal("a later Dial did not open anew")
	}
	c.Close()
}

func TestEndedConnectionLeavesThePoolAtOnce(t *testing.T) {
	o := newOpener()
	pl := New(o.open, nil, 0)
	defer pl.Close()
	ps := devices(t, "d", 2)
	conns, errs := dialAll(t, pl, ps)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	old := o.shared(0)
	old.end()
	wantStats(t, pl)
	for _, p := range ps {
		<-p.Handler.(*device).lost // buffered: end reported before it returned
	}
	c := mustDial(t, pl, params(t, "new"))
	if sharedOf(c) == old || o.opens() != 2 {
		t.Fatal("attached to the ended connection")
	}
	if old.closes.Load() != 1 {
		t.Fatal("the pool did not close the ended connection")
	}
	closeAll(t, conns) // their places on the ended connection
	if old.closes.Load() != 1 {
		t.Fatal("closed twice")
	}
	wantStats(t, pl, 1)
	c.Close()
}

func TestWhatDevicesMustAgreeOnToShare(t *testing.T) {
	o := newOpener()
	pl := New(o.open, nil, 0)
	defer pl.Close()
	base := mustDial(t, pl, params(t, "base"))
	otherRoots := x509.NewCertPool()
	for _, tc := range []struct {
		name   string
		change func(p *transport.DialParams)
		shares bool
	}{
		{"same roots from another pool", func(p *transport.DialParams) {}, true},
		{"hub host spelled out", func(p *transport.DialParams) { p.HubHost = p.Host }, true},
		{"another host", func(p *transport.DialParams) { p.Host = "gw.example.net" }, false},
		{"through a gateway", func(p *transport.DialParams) { p.HubHost = "other.example.net" }, false},
		{"websocket", func(p *transport.DialParams) { p.WebSocket = true }, false},
		{"server name", func(p *transport.DialParams) { p.TLS.ServerName = "x.example.net" }, false},
		{"other roots", func(p *transport.DialParams) { p.TLS.RootCAs = otherRoots }, false},
		{"insecure", func(p *transport.DialParams) { p.TLS.InsecureSkipVerify = true }, false},
		{"no TLS", func(p *transport.DialParams) { p.TLS = nil }, false},
		{"X.509", func(p *transport.DialParams) { p.TLS.Certificates = []tls.Certificate{{}} }, false},
		{"X.509 by callback", func(p *transport.DialParams) {
			p.TLS.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return nil, nil }
		}, false},
		{"own verification", func(p *transport.DialParams) {
			p.TLS.VerifyConnection = func(tls.ConnectionState) error { return nil }
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := params(t, "dev")
			tc.change(&p)
			var conns []transport.Conn
			for i := range 2 { // twice: what does not share with base shares with its like, except X.509
				p.DeviceID = fmt.Sprint("dev", i)
				conns = append(conns, mustDial(t, pl, p))
			}
			defer closeAll(t, conns)
			a, b := sharedOf(conns[0]), sharedOf(conns[1])
			if got := a == sharedOf(base); got != tc.shares {
				t.Fatalf("shares with base: %v, want %v", got, tc.shares)
			}
			own := p.TLS != nil && (clientCertificate(p.TLS) || p.TLS.VerifyConnection != nil)
			if got := a == b; got == own {
				t.Fatalf("two such devices share: %v, want %v", got, !own)
			}
		})
	}
	base.Close()
	wantStats(t, pl)
}

func TestCloseEndsEverything(t *testing.T) {
	gate := make(chan struct{})
	o := newOpener(step{}, step{hold: gate})
	pl := New(o.open, nil, 0)
	ps := devices(t, "d", 2)
	conns, errs := dialAll(t, pl, ps)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan error, 2)
	for i := range 2 { // an opening in progress on another host, and a device waiting for it
		go func() {
			p := params(t, fmt.Sprint("w", i))
			p.Host = "other.example.net"
			_, err := pl.Dial(dialCtx(t), p)
			waiting <- err
		}()
	}
	eventually(t, "the second host's opening", openingIs(pl, 2))
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
	if o.shared(0).closes.Load() != 1 {
		t.Fatal("a live connection was not closed")
	}
	for _, p := range ps {
		select {
		case <-p.Handler.(*device).lost:
		default:
			t.Fatal("an attached device was not told")
		}
	}
	for range 2 {
		if err := <-waiting; !isClosedErr(err) {
			t.Fatalf("Dial in progress: %v", err)
		}
	}
	if _, err := pl.Dial(dialCtx(t), params(t, "late")); !isClosedErr(err) {
		t.Fatalf("Dial after Close: %v", err)
	}
	closeAll(t, conns)
	if err := pl.Close(); err != nil || o.shared(0).closes.Load() != 1 {
		t.Fatalf("second Close: %v, %d closes", err, o.shared(0).closes.Load())
	}
	wantStats(t, pl)
}

func isClosedErr(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.Kind == transport.KindProtocol && errors.Is(err, ErrClosed)
}

func TestCloseWaitsForAnOpeningAndClosesWhatItOpened(t *testing.T) {
	gate := make(chan struct{})
	o := newOpener(step{hold: gate, ignoreCtx: true})
	pl := New(o.open, nil, 0)
	dialed := make(chan error, 1)
	go func() {
		_, err := pl.Dial(dialCtx(t), params(t, "d"))
		dialed <- err
	}()
	o.waitCalled(t, 1)
	closed := make(chan error, 1)
	go func() { closed <- pl.Close() }()
	eventually(t, "Close marks the pool closed", pl.isClosed)
	select {
	case <-closed:
		t.Fatal("Close returned while an opening was in progress")
	default:
	}
	close(gate)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if o.shared(0).closes.Load() != 1 {
		t.Fatal("the connection opened after Close was not closed")
	}
	if err := <-dialed; !isClosedErr(err) {
		t.Fatalf("Dial: %v", err)
	}
}

func TestAttachFailureGivesThePlaceBack(t *testing.T) {
	o := newOpener()
	pl := New(o.open, nil, 2)
	defer pl.Close()
	if _, err := pl.Dial(dialCtx(t), params(t, "bad0")); !errors.Is(err, errBadDevice) {
		t.Fatalf("Dial: %v", err)
	}
	if o.shared(0).closes.Load() != 1 {
		t.Fatal("a connection with no device left stays open")
	}
	wantStats(t, pl)
	a := mustDial(t, pl, params(t, "a"))
	if _, err := pl.Dial(dialCtx(t), params(t, "bad1")); !errors.Is(err, errBadDevice) {
		t.Fatalf("Dial: %v", err)
	}
	b := mustDial(t, pl, params(t, "b"))
	if sharedOf(a) != sharedOf(b) || o.opens() != 2 {
		t.Fatal("the failed device kept its place")
	}
	wantStats(t, pl, 2)
	closeAll(t, []transport.Conn{a, b})
}

func TestConnCloseIsIdempotent(t *testing.T) {
	o := newOpener()
	pl := New(o.open, nil, 0)
	defer pl.Close()
	conns, errs := dialAll(t, pl, devices(t, "d", 2))
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	closeAll(t, []transport.Conn{conns[0], conns[0]})
	wantStats(t, pl, 1)
	if n := conns[0].(*conn).Conn.(*fakeConn).closes.Load(); n != 1 {
		t.Fatalf("the link was closed %d times", n)
	}
	closeAll(t, []transport.Conn{conns[1], conns[1]})
	if n := o.shared(0).closes.Load(); n != 1 {
		t.Fatalf("the connection was closed %d times", n)
	}
	wantStats(t, pl)
}

// Devices come and go concurrently on small connections: none is ever over-filled, no device attaches to a
// closed one (every Dial succeeds), and every connection is closed exactly once at the end.
func TestChurn(t *testing.T) {
	const (
		workers = 64
		rounds  = 50
		limit   = 5
	)
	o := newOpener()
	pl := New(o.open, nil, limit)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			p := params(t, fmt.Sprint("d", w))
			for range rounds {
				c, err := pl.Dial(dialCtx(t), p)
				if err != nil {
					errs <- err
					return
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	wantStats(t, pl)
	for i := range o.opens() {
		s := o.shared(i)
		if s.peak > limit || s.closes.Load() != 1 {
			t.Fatalf("connection %d: peak %d devices, closed %d times", i, s.peak, s.closes.Load())
		}
	}
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
}
