package writer

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/statedb"

	"github.com/egressha/egressha/egressgw/reflectors"
	"github.com/egressha/egressha/egressgw/tables"
	"github.com/egressha/egressha/internal/testcells"
)

// countingFacts counts the rounds of waitForInputs (one Initialized call
// of egress-local-gateways per round).
type countingFacts struct {
	statedb.Table[*tables.LocalGateway]
	calls atomic.Int64
}

func (c *countingFacts) Initialized(txn statedb.ReadTxn) (bool, <-chan struct{}) {
	c.calls.Add(1)
	return c.Table.Initialized(txn)
}

// TestWaitForInputsWithoutSpinning: with egress-local-gateways initialized
// (its init channel closed) and egress-cegps and the node's labels not,
// waitForInputs waits instead of looping on the closed channel, and gives
// up when its context ends.
func TestWaitForInputsWithoutSpinning(t *testing.T) {
	db := statedb.New()
	facts, err := tables.NewLocalGatewaysTable(db)
	if err != nil {
		t.Fatal(err)
	}
	cegps, err := tables.NewCEGPsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	wtxn := db.WriteTxn(cegps)
	cegps.RegisterInitializer(wtxn, "test-cegps")
	wtxn.Commit()
	vips, err := tables.NewVirtualIPsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	counting := &countingFacts{Table: facts}
	h := &heartbeatJob{p: heartbeatParams{DB: db, LocalGateways: counting, CEGPs: cegps, VIPs: vips, LocalNode: &reflectors.LocalNodeLabels{}}}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if h.waitForInputs(ctx, testcells.NopHealth{}) {
		t.Fatal("waitForInputs reported its inputs ready")
	}
	if n := counting.calls.Load(); n > 10 {
		t.Fatalf("waitForInputs went round %d times in 200ms while egress-cegps was not initialized: it spins", n)
	}
}

// TestWaitForInputsWaitsForTheVIPController: every other input is there,
// but the VIP controller has not looked at its gateways yet: the first
// report waits for it (after an agent restart it would otherwise say
// VirtualIPNotReady for the active node's VIP and move the role).
func TestWaitForInputsWaitsForTheVIPController(t *testing.T) {
	db := statedb.New()
	facts, err := tables.NewLocalGatewaysTable(db)
	if err != nil {
		t.Fatal(err)
	}
	vips, err := tables.NewVirtualIPsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	wtxn := db.WriteTxn(vips)
	vipDone := vips.RegisterInitializer(wtxn, "test-vip-controller")
	wtxn.Commit()
	labels := reflectors.NewStaticLocalNodeLabels(map[string]string{"a": "b"})
	h := &heartbeatJob{p: heartbeatParams{DB: db, LocalGateways: facts, VIPs: vips, LocalNode: labels}}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if h.waitForInputs(ctx, testcells.NopHealth{}) {
		t.Fatal("waitForInputs went on before the VIP controller's first look")
	}
	wtxn = db.WriteTxn(vips)
	vipDone(wtxn)
	wtxn.Commit()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !h.waitForInputs(ctx, testcells.NopHealth{}) {
		t.Fatal("waitForInputs did not go on once every input was there")
	}
}
