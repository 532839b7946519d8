package policymap

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/egressha/egressha/egressgw/tables"
)

// ReconcilerConfig tunes RegisterReconciler.
type ReconcilerConfig struct {
	// ResyncInterval is how often the whole map is compared with the table
	// (Ops.Prune). Must be positive.
	ResyncInterval time.Duration
	// RetryMin and RetryMax bound the exponential backoff of a failed
	// write (e.g. a full map) before it is retried.
	RetryMin, RetryMax time.Duration
}

// DefaultReconcilerConfig retries a failed write after 100ms, backing off
// to 10s: a rejected entry is retried soon after room appears, and a
// transient failure during a failover does not wait for a minute.
var DefaultReconcilerConfig = ReconcilerConfig{
	ResyncInterval: time.Minute,
	RetryMin:       100 * time.Millisecond,
	RetryMax:       10 * time.Second,
}

// stopTimeout bounds how long stopping the gated reconciler may take.
const stopTimeout = 10 * time.Second

// RegisterReconciler reconciles tbl into the map of ops with a statedb
// reconciler: incremental Update/Delete of changed rows, plus a full
// resync (Ops.Prune) once the table is initialized and then every
// cfg.ResyncInterval.
//
// The reconciler starts only once tbl is initialized, i.e. once every
// initializer registered on it is done. Until then it neither writes nor
// deletes anything. That is what makes an agent restart safe: the map
// keeps the entries of the previous run, the datapath keeps using them,
// and nothing is removed or rewritten from a table computed from inputs
// that have not all synced (a half-computed table could otherwise write
// a drop value, or prune, for a pod whose gateway is not known yet).
// Whoever fills tbl must therefore register its initializer when it is
// constructed, before the hive starts, and mark it done only after its
// inputs synced and it committed the complete desired state.
func RegisterReconciler(p reconciler.Params, tbl statedb.RWTable[*tables.SourceEntries], ops *Ops, cfg ReconcilerConfig) (reconciler.Reconciler[*tables.SourceEntries], error) {
	if cfg.ResyncInterval <= 0 {
		return nil, fmt.Errorf("the map resync interval must be positive, got %s", cfg.ResyncInterval)
	}
	// The pin check of every full resync reports in a scope of its own.
	ops.pinHealth = p.Health.NewScope("pinned-map")
	outer := p.Lifecycle
	gated := cell.NewDefaultLifecycle(nil, 0, time.Second)
	p.Lifecycle = gated
	r, err := reconciler.Register(p, tbl,
		(*tables.SourceEntries).Clone,
		(*tables.SourceEntries).SetStatus,
		(*tables.SourceEntries).GetStatus,
		ops, ops,
		reconciler.WithPruning(cfg.ResyncInterval),
		// Prune repairs drifted values too, so periodic refreshing (which
		// rewrites every row to Refreshing) is not needed.
		reconciler.WithRefreshing(0, nil),
		reconciler.WithRetry(cfg.RetryMin, cfg.RetryMax),
	)
	if err != nil {
		return nil, err
	}

	g := p.Jobs.NewGroup(p.Health, outer)
	g.Add(job.OneShot("wait-for-desired-entries", func(ctx context.Context, health cell.Health) error {
		health.OK("Waiting for " + tbl.Name() + " to be initialized before writing " + PolicyMapName)
		_, initialized := tbl.Initialized(p.DB.ReadTxn())
		select {
		case <-ctx.Done():
			return nil
		case <-initialized:
		}
		p.Log.Info("Desired egress entries are complete; reconciling them into "+PolicyMapName,
			"entries", tbl.NumObjects(p.DB.ReadTxn()), "resyncInterval", cfg.ResyncInterval)
		if err := gated.Start(p.Log, ctx); err != nil {
			return fmt.Errorf("starting the %s reconciler: %w", PolicyMapName, err)
		}
		health.OK("Reconciler started")
		<-ctx.Done()
		stopCtx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := gated.Stop(p.Log, stopCtx); err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("stopping the %s reconciler: %w", PolicyMapName, err)
		}
		return nil
	}))
	return r, nil
}
