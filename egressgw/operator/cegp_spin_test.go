package operator

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/statedb"
	"k8s.io/utils/clock"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/k8s/resource"
)

// countingNodes counts the rounds of CEGPController.Run (it asks whether
// egress-gateway-nodes is initialized once per round).
type countingNodes struct {
	statedb.Table[*NodeRow]
	calls atomic.Int64
}

func (c *countingNodes) Initialized(txn statedb.ReadTxn) (bool, <-chan struct{}) {
	c.calls.Add(1)
	return c.Table.Initialized(txn)
}

// syncedPolicies is a CiliumEgressGatewayPolicy resource that lists no
// policy: one Sync event, then nothing.
type syncedPolicies struct {
	resource.Resource[*ciliumv2.CiliumEgressGatewayPolicy]
}

func (syncedPolicies) Events(ctx context.Context, _ ...resource.EventsOpt) <-chan resource.Event[*ciliumv2.CiliumEgressGatewayPolicy] {
	ch := make(chan resource.Event[*ciliumv2.CiliumEgressGatewayPolicy], 1)
	ch <- resource.Event[*ciliumv2.CiliumEgressGatewayPolicy]{Kind: resource.Sync, Done: func(error) {}}
	return ch
}

// TestCEGPControllerIdlesWhenSynced: with the policies listed and
// egress-gateway-nodes initialized (its init channel closed) and nothing
// changing, Run waits instead of deciding again in a loop.
func TestCEGPControllerIdlesWhenSynced(t *testing.T) {
	db := statedb.New()
	nodesTbl, err := NewNodesTable(db)
	if err != nil {
		t.Fatal(err)
	}
	cegps, err := NewCEGPSelectionTable(db)
	if err != nil {
		t.Fatal(err)
	}
	nodes := &countingNodes{Table: nodesTbl}
	c := NewCEGPController(slog.New(slog.DiscardHandler), db, nodes, cegps, &fakePatcher{}, clock.RealClock{}, syncedPolicies{}, false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, nil) }()
	time.Sleep(200 * time.Millisecond)
	n := nodes.calls.Load()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n > 10 {
		t.Fatalf("Run went round %d times in 200ms with nothing changing: it spins", n)
	}
}
