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
	counting := &countingFacts{Table: facts}
	h := &heartbeatJob{p: heartbeatParams{DB: db, LocalGateways: counting, CEGPs: cegps, LocalNode: &reflectors.LocalNodeLabels{}}}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if h.waitForInputs(ctx, testcells.NopHealth{}) {
		t.Fatal("waitForInputs reported its inputs ready")
	}
	if n := counting.calls.Load(); n > 10 {
		t.Fatalf("waitForInputs went round %d times in 200ms while egress-cegps was not initialized: it spins", n)
	}
}
