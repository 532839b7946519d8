package localgateways

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb"

	datapathtables "github.com/cilium/cilium/pkg/datapath/tables"
	"github.com/cilium/cilium/pkg/hive"

	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/reflectors"
	"github.com/egressha/egressha/egressgw/tables"
	"github.com/egressha/egressha/internal/testcells"
)

// countingGateways counts the calls of Initialized, i.e. the rounds of the
// job's wait for its inputs.
type countingGateways struct {
	statedb.Table[*tables.EgressGateway]
	calls atomic.Int64
}

func (c *countingGateways) Initialized(txn statedb.ReadTxn) (bool, <-chan struct{}) {
	c.calls.Add(1)
	return c.Table.Initialized(txn)
}

// TestWaitsWithoutSpinning: with the devices initialized (their watch
// channel closed) and the gateways not yet, the job waits for the
// gateways instead of looping on the closed channel, and starts once they
// are there.
func TestWaitsWithoutSpinning(t *testing.T) {
	gws := &countingGateways{}
	var (
		db         *statedb.DB
		gwTable    statedb.RWTable[*tables.EgressGateway]
		gwDone     func(statedb.WriteTxn)
		localTable statedb.Table[*tables.LocalGateway]
	)
	h := hive.New(
		cell.Provide(
			func() config.Enabled { return true },
			datapathtables.NewDeviceTable,
			statedb.RWTable[*datapathtables.Device].ToTable,
			tables.NewEgressGatewaysTable,
			func(t statedb.RWTable[*tables.EgressGateway]) statedb.Table[*tables.EgressGateway] {
				gws.Table = t
				return gws
			},
		),
		cell.Invoke(statedb.RegisterTable[*datapathtables.Device]),
		cell.Invoke(func(d *statedb.DB, t statedb.RWTable[*tables.EgressGateway]) {
			db, gwTable = d, t
			wtxn := d.WriteTxn(t)
			gwDone = t.RegisterInitializer(wtxn, "test-gateways")
			wtxn.Commit()
		}),
		reflectors.LocalNodeCell,
		Cell,
		cell.Invoke(func(t statedb.Table[*tables.LocalGateway]) { localTable = t }),
	)
	log := hivetest.Logger(t)
	if err := h.Start(log, context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Stop(log, context.Background()) })

	time.Sleep(200 * time.Millisecond)
	if n := gws.calls.Load(); n > 10 {
		t.Fatalf("the job checked its inputs %d times in 200ms while waiting for the gateways: it spins", n)
	}
	if ok, _ := localTable.Initialized(db.ReadTxn()); ok {
		t.Fatal("egress-local-gateways initialized before the gateways were")
	}
	wtxn := db.WriteTxn(gwTable)
	gwDone(wtxn)
	wtxn.Commit()
	testcells.Eventually(t, "egress-local-gateways initialized", func() bool {
		ok, _ := localTable.Initialized(db.ReadTxn())
		return ok
	})
}
