package connterm

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/egresspolicy"
	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/tables"
)

// jobFixture is the job over real statedb tables, driven step by step
// with a fake clock and a recording terminate.
type jobFixture struct {
	t       *testing.T
	db      *statedb.DB
	entries statedb.RWTable[*tables.SourceEntries]
	eps     statedb.RWTable[*tables.Endpoint]
	lgw     statedb.RWTable[*tables.LocalGateway]
	entIter statedb.ChangeIterator[*tables.SourceEntries]
	epIter  statedb.ChangeIterator[*tables.Endpoint]
	job     *ctJob
	now     time.Time
	calls   [][]Termination
	log     bytes.Buffer
}

func newJobFixture(t *testing.T) *jobFixture {
	f := &jobFixture{t: t, db: statedb.New(), now: time.Unix(1000, 0)}
	var err error
	if f.entries, err = tables.NewPolicyEntriesTable(f.db); err != nil {
		t.Fatal(err)
	}
	if f.eps, err = tables.NewEndpointsTable(f.db); err != nil {
		t.Fatal(err)
	}
	if f.lgw, err = tables.NewLocalGatewaysTable(f.db); err != nil {
		t.Fatal(err)
	}
	p := params{
		Log: slog.New(slog.NewTextHandler(&f.log, nil)), DB: f.db, Enabled: true, Config: DefaultConfig,
		Metrics: newMetrics(), Entries: f.entries, Endpoints: f.eps, LocalGateways: f.lgw,
	}
	f.job = newJob(p, func(ts []Termination) (Result, error) {
		f.calls = append(f.calls, ts)
		res := Result{Destroyed: make([]int, len(ts)), Failed: map[string]int{}, Namespaces: 2}
		for i := range res.Destroyed {
			res.Destroyed[i] = 3
		}
		return res, nil
	})
	f.job.now = func() time.Time { return f.now }
	wtxn := f.db.WriteTxn(f.entries, f.eps)
	f.entIter, _ = f.entries.Changes(wtxn)
	f.epIter, _ = f.eps.Changes(wtxn)
	wtxn.Commit()
	return f
}

func (f *jobFixture) endpoint(ip netip.Addr, origin tables.EndpointOrigin) {
	wtxn := f.db.WriteTxn(f.eps)
	_, _, _ = f.eps.Insert(wtxn, &tables.Endpoint{Endpoint: egresspolicy.Endpoint{IP: ip}, Origin: origin})
	wtxn.Commit()
}

func (f *jobFixture) row(ip netip.Addr, kind reconciler.StatusKind, ts ...egresspolicy.Target) {
	wtxn := f.db.WriteTxn(f.entries)
	if len(ts) == 0 {
		_, _, _ = f.entries.Delete(wtxn, &tables.SourceEntries{Source: ip})
	} else {
		_, _, _ = f.entries.Insert(wtxn, &tables.SourceEntries{Source: ip, Targets: ts, Status: reconciler.Status{Kind: kind}})
	}
	wtxn.Commit()
}

func (f *jobFixture) localEgress(ip string) {
	wtxn := f.db.WriteTxn(f.lgw)
	_, _, _ = f.lgw.Insert(wtxn, &tables.LocalGateway{LocalFact: heartbeat.LocalFact{Gateway: "gw",
		Mode: v1alpha1.SourceIPModePrimaryIP, Basic: heartbeat.GatewayReport{Ready: true, EgressIP: ip}}})
	wtxn.Commit()
}

// round is one turn of the job's loop: step, then execute what is due.
func (f *jobFixture) round() {
	f.job.step(f.db.ReadTxn(), f.entIter, f.epIter)
	if ready := f.job.due(); len(ready) > 0 {
		if err := f.job.execute(ready); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *jobFixture) wantCalls(n int) {
	f.t.Helper()
	if len(f.calls) != n {
		f.t.Fatalf("terminate called %d times, want %d: %+v", len(f.calls), n, f.calls)
	}
}

// TestJobTerminatesLocalPodsOnceReconciled: a basic move of a local pod's
// gateway terminates its connections once the new row is in the map; a
// remote pod's row is ignored; a row that stays Pending is done after
// maxHold; a VIP move does nothing.
func TestJobTerminatesLocalPodsOnceReconciled(t *testing.T) {
	f := newJobFixture(t)
	remote := netip.MustParseAddr("10.244.2.20")
	f.localEgress(ethOwn.String())
	f.endpoint(pod, tables.OriginLocal)
	f.endpoint(remote, tables.OriginCiliumEndpoint)
	f.row(pod, reconciler.StatusKindDone, tg(all, val(ethOwn, gwA)))
	f.row(remote, reconciler.StatusKindDone, tg(all, val(ethA, gwA)))
	f.round()
	f.wantCalls(0)

	// The failover: both rows change, Pending until the reconciler
	// wrote them.
	f.row(pod, reconciler.StatusKindPending, tg(all, val(ethOwn, gwB)))
	f.row(remote, reconciler.StatusKindPending, tg(all, val(ethB, gwB)))
	f.round()
	f.wantCalls(0)
	f.row(pod, reconciler.StatusKindDone, tg(all, val(ethOwn, gwB)))
	f.row(remote, reconciler.StatusKindDone, tg(all, val(ethB, gwB)))
	f.round()
	f.wantCalls(1)
	want := []Termination{term(all, node(gwA), node(gwB))}
	if !reflect.DeepEqual(f.calls[0], want) {
		t.Fatalf("terminated %+v, want %+v", f.calls[0], want)
	}
	if n := f.job.Metrics.Terminated.Get(); n != 3 {
		t.Errorf("egressha_connections_terminated_total = %v, want 3", n)
	}
	if !strings.Contains(f.log.String(), "terminated 3 TCP connections of pod IP 10.244.1.10 to 0.0.0.0/0: egress source changed from "+
		"the own address of gateway 198.18.0.11 to the own address of gateway 198.18.0.12") {
		t.Errorf("log does not explain the decision:\n%s", f.log.String())
	}

	// A row the reconciler never reports done: terminated after maxHold.
	f.row(pod, reconciler.StatusKindPending, tg(all, val(ethOwn, gwA)))
	f.round()
	f.wantCalls(1)
	if d, ok := f.job.nextDue(); !ok || d != maxHold {
		t.Fatalf("next due in %v (%v), want %v", d, ok, maxHold)
	}
	f.now = f.now.Add(maxHold)
	f.round()
	f.wantCalls(2)
	if _, ok := f.job.nextDue(); ok {
		t.Fatal("still something pending")
	}

	// To VIP mode on node B (the gateway changed: terminated), then VIP
	// moves: the VIP stays the source, nothing to do.
	f.row(pod, reconciler.StatusKindDone, tg(all, val(vip, gwB)))
	f.round()
	f.wantCalls(3)
	if got := f.calls[2]; len(got) != 1 || got[0].To != exact(vip, gwB) {
		t.Fatalf("basic to VIP: %+v", got)
	}
	f.row(pod, reconciler.StatusKindDone, tg(all, val(vip, gwA)))
	f.round()
	f.row(pod, reconciler.StatusKindDone, tg(all, val(vip, gwB)))
	f.round()
	f.now = f.now.Add(maxHold)
	f.round()
	f.wantCalls(3)
}

// TestJobForgetsPodsThatLeave: a pod that stops being local is forgotten
// with its pending terminations; one that becomes local starts from its
// current row.
func TestJobForgetsPodsThatLeave(t *testing.T) {
	f := newJobFixture(t)
	f.endpoint(pod, tables.OriginLocal)
	f.row(pod, reconciler.StatusKindDone, tg(all, val(ethA, gwA)))
	f.round()
	f.row(pod, reconciler.StatusKindPending, tg(all, val(ethB, gwB)))
	f.round()
	f.endpoint(pod, tables.OriginCiliumEndpoint)
	f.round()
	f.now = f.now.Add(maxHold)
	f.round()
	f.wantCalls(0)

	// Local again: its current row (gateway B) is the start.
	f.endpoint(pod, tables.OriginLocal)
	f.round()
	f.row(pod, reconciler.StatusKindDone, tg(all, val(ethB, gwB)))
	f.round()
	f.wantCalls(0)
	f.row(pod, reconciler.StatusKindDone, tg(all, val(ethA, gwA)))
	f.round()
	f.wantCalls(1)
}

// TestJobMergesMovesBeforeTheyAreProgrammed: A -> B -> C before the map
// has B terminates A's connections once (from A to C); A -> B -> A
// terminates nothing (the map never held B).
func TestJobMergesMovesBeforeTheyAreProgrammed(t *testing.T) {
	f := newJobFixture(t)
	gwC := netip.MustParseAddr("198.18.0.13")
	ethC := netip.MustParseAddr("203.0.113.14")
	f.endpoint(pod, tables.OriginLocal)
	f.row(pod, reconciler.StatusKindDone, tg(all, val(ethA, gwA)))
	f.round()
	f.row(pod, reconciler.StatusKindPending, tg(all, val(ethB, gwB)))
	f.round()
	f.row(pod, reconciler.StatusKindPending, tg(all, val(ethC, gwC)))
	f.round()
	f.row(pod, reconciler.StatusKindDone, tg(all, val(ethC, gwC)))
	f.round()
	f.wantCalls(1)
	if want := []Termination{term(all, exact(ethA, gwA), exact(ethC, gwC))}; !reflect.DeepEqual(f.calls[0], want) {
		t.Fatalf("terminated %+v, want %+v", f.calls[0], want)
	}

	f.row(pod, reconciler.StatusKindPending, tg(all, val(ethB, gwB)))
	f.round()
	f.row(pod, reconciler.StatusKindPending, tg(all, val(ethC, gwC)))
	f.round()
	f.row(pod, reconciler.StatusKindDone, tg(all, val(ethC, gwC)))
	f.round()
	f.now = f.now.Add(maxHold)
	f.round()
	f.wantCalls(1)
	if _, ok := f.job.nextDue(); ok {
		t.Fatal("a move back left something pending")
	}
}

// fakeHealth records the last degradation.
type fakeHealth struct{ degraded chan error }

func (h *fakeHealth) OK(string)                   {}
func (h *fakeHealth) Stopped(string)              {}
func (h *fakeHealth) Degraded(_ string, e error)  { h.degraded <- e }
func (h *fakeHealth) NewScope(string) cell.Health { return h }
func (h *fakeHealth) Close()                      {}

// TestJobRun runs the job's loop: a move of a local pod's row is
// terminated as soon as the row is reconciled, a row left Pending after
// maxHold; an unsupported kernel degrades the health and stops.
func TestJobRun(t *testing.T) {
	f := newJobFixture(t)
	calls := make(chan []Termination, 10)
	var unsupported atomic.Bool
	f.job.terminate = func(ts []Termination) (Result, error) {
		calls <- ts
		if unsupported.Load() {
			return Result{Destroyed: make([]int, len(ts)), Failed: map[string]int{FailureUnsupported: 1}}, ErrUnsupported
		}
		return Result{Destroyed: make([]int, len(ts)), Failed: map[string]int{}}, nil
	}
	f.job.now = time.Now
	health := &fakeHealth{degraded: make(chan error, 1)}
	f.endpoint(pod, tables.OriginLocal)
	f.row(pod, reconciler.StatusKindDone, tg(all, val(ethA, gwA)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.job.run(ctx, health) }()
	t.Cleanup(func() { cancel(); <-done })

	// The job has its own change iterators: give it time to take the
	// first row before moving.
	expectNone := func(d time.Duration) {
		t.Helper()
		select {
		case ts := <-calls:
			t.Fatalf("unexpected termination %+v", ts)
		case <-time.After(d):
		}
	}
	expect := func(d time.Duration) []Termination {
		t.Helper()
		select {
		case ts := <-calls:
			return ts
		case <-time.After(d):
			t.Fatalf("no termination within %v", d)
			return nil
		}
	}
	expectNone(100 * time.Millisecond)
	f.row(pod, reconciler.StatusKindPending, tg(all, val(ethB, gwB)))
	expectNone(100 * time.Millisecond)
	f.row(pod, reconciler.StatusKindDone, tg(all, val(ethB, gwB)))
	if ts := expect(500 * time.Millisecond); len(ts) != 1 || ts[0].To != exact(ethB, gwB) {
		t.Fatalf("terminated %+v", ts)
	}

	start := time.Now()
	unsupported.Store(true)
	f.row(pod, reconciler.StatusKindPending, tg(all, val(ethA, gwA)))
	expect(maxHold + time.Second)
	if d := time.Since(start); d < maxHold-50*time.Millisecond {
		t.Errorf("a Pending row was terminated after %v, before maxHold", d)
	}
	select {
	case err := <-health.degraded:
		if !errors.Is(err, ErrUnsupported) {
			t.Fatalf("degraded with %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("health not degraded on an unsupported kernel")
	}
	f.row(pod, reconciler.StatusKindDone, tg(all, val(ethB, gwB)))
	expectNone(200 * time.Millisecond)
}
