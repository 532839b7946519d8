package leader

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/hive/hivetest"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	k8stesting "k8s.io/client-go/testing"
)

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLeadershipTerms(t *testing.T) {
	l := NewLeadership(hivetest.Logger(t), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var running, started atomic.Int64
	var lastTerm atomic.Uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(ctx, "test", func(ctx context.Context, term uint64) error {
			started.Add(1)
			lastTerm.Store(term)
			running.Add(1)
			defer running.Add(-1)
			<-ctx.Done()
			time.Sleep(20 * time.Millisecond) // End must wait for this
			return nil
		})
	}()

	if l.Leading() {
		t.Fatal("leading before any term")
	}
	l.Begin(ctx, "a")
	waitFor(t, "term 1 runs", time.Second, func() bool { return running.Load() == 1 })
	l.End()
	if n := running.Load(); n != 0 {
		t.Fatalf("End returned with %d callbacks still running", n)
	}
	if l.Leading() {
		t.Fatal("leading after End")
	}

	// A term the elector has already lost (its context is done) never
	// begins: client-go calls OnStartedLeading in a goroutine that may run
	// after OnStoppedLeading.
	lost, lostCancel := context.WithCancel(ctx)
	lostCancel()
	l.Begin(lost, "a")
	if l.Leading() {
		t.Fatal("a term began with a done context")
	}

	// A term ends with its elector's context too.
	termCtx, termCancel := context.WithCancel(ctx)
	l.Begin(termCtx, "a")
	waitFor(t, "term 2 runs", time.Second, func() bool { return running.Load() == 1 && lastTerm.Load() == 2 })
	termCancel()
	waitFor(t, "term 2's callback returns", time.Second, func() bool { return running.Load() == 0 })
	l.End()

	l.Close()
	l.Begin(ctx, "a")
	if l.Leading() {
		t.Fatal("a term began after Close")
	}
	if n := started.Load(); n != 2 {
		t.Fatalf("callback ran %d times, want once per term (2)", n)
	}
	cancel()
	<-done
}

func TestLeadershipRetriesFailedWork(t *testing.T) {
	RetryDelay = 10 * time.Millisecond
	l := NewLeadership(hivetest.Logger(t), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int64
	go l.Run(ctx, "test", func(ctx context.Context, _ uint64) error {
		if calls.Add(1) < 3 {
			return errors.New("boom")
		}
		<-ctx.Done()
		return nil
	})
	l.Begin(ctx, "a")
	waitFor(t, "work started again after failing", time.Second, func() bool { return calls.Load() == 3 })
	l.End()
}

// flakyLeases fails every call while down is set: the API server is
// unreachable for this replica.
type flakyLeases struct {
	coordinationv1client.LeasesGetter
	down *atomic.Bool
}

func (f flakyLeases) Leases(ns string) coordinationv1client.LeaseInterface {
	return flakyLease{LeaseInterface: f.LeasesGetter.Leases(ns), down: f.down}
}

type flakyLease struct {
	coordinationv1client.LeaseInterface
	down *atomic.Bool
}

var errDown = errors.New("API server unreachable")

func (f flakyLease) Get(ctx context.Context, name string, o metav1.GetOptions) (*coordinationv1.Lease, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.LeaseInterface.Get(ctx, name, o)
}

func (f flakyLease) Create(ctx context.Context, l *coordinationv1.Lease, o metav1.CreateOptions) (*coordinationv1.Lease, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.LeaseInterface.Create(ctx, l, o)
}

func (f flakyLease) Update(ctx context.Context, l *coordinationv1.Lease, o metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.LeaseInterface.Update(ctx, l, o)
}

// withResourceVersions makes the fake API server refuse a Lease update
// whose resourceVersion is not the stored one (Conflict), as the real one
// does: two replicas that both think the Lease free cannot both win it.
// The fake's tracker has no such check.
func withResourceVersions(cs *fake.Clientset) *fake.Clientset {
	gvr := coordinationv1.SchemeGroupVersion.WithResource("leases")
	cs.PrependReactor("create", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.CreateAction).GetObject().(*coordinationv1.Lease).DeepCopy()
		l.ResourceVersion = "1"
		return true, l, cs.Tracker().Create(gvr, l, l.Namespace)
	})
	cs.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease).DeepCopy()
		old, err := cs.Tracker().Get(gvr, l.Namespace, l.Name)
		if err != nil {
			return true, nil, err
		}
		if rv := old.(*coordinationv1.Lease).ResourceVersion; rv != l.ResourceVersion {
			return true, nil, apierrors.NewConflict(gvr.GroupResource(), l.Name,
				fmt.Errorf("resourceVersion %s, stored %s", l.ResourceVersion, rv))
		}
		n, _ := strconv.Atoi(l.ResourceVersion)
		l.ResourceVersion = strconv.Itoa(n + 1)
		return true, l, cs.Tracker().Update(gvr, l, l.Namespace)
	})
	return cs
}

// TestElection runs client-go's election between two replicas against a
// fake API server, with timings scaled down: a replica cut from the API
// server ends its term within the renew deadline and does not exit, the
// other takes over after the lease duration, and a replica that stops
// releases the Lease so the other takes over at once.
func TestElection(t *testing.T) {
	cs := withResourceVersions(fake.NewClientset())
	cfg := Config{
		// The Lease records whole seconds (Config.Validate).
		EgressGatewayHALeaderLeaseDuration: time.Second,
		EgressGatewayHALeaderRenewDeadline: 500 * time.Millisecond,
		EgressGatewayHALeaderRetryPeriod:   100 * time.Millisecond,
	}
	log := hivetest.Logger(t)
	var aDown atomic.Bool
	a := &Election{Log: log, Leadership: NewLeadership(log, nil), Config: cfg, Namespace: "kube-system", Identity: "a",
		Client: flakyLeases{LeasesGetter: cs.CoordinationV1(), down: &aDown}}
	b := &Election{Log: log, Leadership: NewLeadership(log, nil), Config: cfg, Namespace: "kube-system", Identity: "b",
		Client: cs.CoordinationV1()}
	ctx := context.Background()

	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(ctx)
	waitFor(t, "a leads", 2*time.Second, a.Leadership.Leading)
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Stop(ctx)
	time.Sleep(2 * cfg.EgressGatewayHALeaderLeaseDuration)
	if b.Leadership.Leading() {
		t.Fatal("b leads while a renews")
	}

	// Never two leaders at once: sample both all along.
	var overlap atomic.Bool
	sampling, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go func() {
		for sampling.Err() == nil {
			if a.Leadership.Leading() && b.Leadership.Leading() && !overlap.Swap(true) {
				t.Logf("overlap at %s", time.Now().Format("15:04:05.000"))
			}
			time.Sleep(time.Millisecond)
		}
	}()

	// a is cut from the API server: it stops leading (a renewal fails
	// within the renew deadline, shorter than the lease duration), and b
	// takes over once a's Lease expired.
	aDown.Store(true)
	waitFor(t, "a stops leading", 2*time.Second, func() bool { return !a.Leadership.Leading() })
	waitFor(t, "b takes over", 3*time.Second, b.Leadership.Leading)

	// a is back: it stands again (it did not exit) but b leads.
	aDown.Store(false)
	time.Sleep(2 * cfg.EgressGatewayHALeaderLeaseDuration)
	if a.Leadership.Leading() || !b.Leadership.Leading() {
		t.Fatalf("after a came back: a leading %v, b leading %v", a.Leadership.Leading(), b.Leadership.Leading())
	}

	// b stops (a rolling restart): it releases the Lease, a takes over
	// well before the lease duration.
	stopped := time.Now()
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a takes over after b released", 2*time.Second, a.Leadership.Leading)
	if d := time.Since(stopped); d >= cfg.EgressGatewayHALeaderLeaseDuration {
		t.Errorf("a took over %s after b stopped: the Lease was not released", d)
	}
	if overlap.Load() {
		t.Error("a and b led at the same time")
	}
	lease, err := cs.CoordinationV1().Leases("kube-system").Get(ctx, LeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := lease.Spec.HolderIdentity; h == nil || *h != "a" {
		t.Errorf("Lease holder %v, want a", h)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, c := range []Config{
		{EgressGatewayHALeaderLeaseDuration: time.Second, EgressGatewayHALeaderRenewDeadline: time.Second, EgressGatewayHALeaderRetryPeriod: 100 * time.Millisecond},
		{EgressGatewayHALeaderLeaseDuration: 2 * time.Second, EgressGatewayHALeaderRenewDeadline: time.Second, EgressGatewayHALeaderRetryPeriod: time.Second},
		{EgressGatewayHALeaderLeaseDuration: 2 * time.Second, EgressGatewayHALeaderRenewDeadline: time.Second},
		{EgressGatewayHALeaderLeaseDuration: 1500 * time.Millisecond, EgressGatewayHALeaderRenewDeadline: time.Second, EgressGatewayHALeaderRetryPeriod: 100 * time.Millisecond},
		{EgressGatewayHALeaderLeaseDuration: 500 * time.Millisecond, EgressGatewayHALeaderRenewDeadline: 200 * time.Millisecond, EgressGatewayHALeaderRetryPeriod: 10 * time.Millisecond},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: valid, want an error", c)
		}
	}
}
