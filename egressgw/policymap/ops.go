package policymap

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/egressha/egressha/egressgw/egresspolicy"
	"github.com/egressha/egressha/egressgw/tables"
)

// Ops writes egress-policy-entries into a PolicyMap. It implements the
// statedb reconciler's Operations (incremental Update and Delete, and Prune,
// the periodic full resync) and BatchOperations (so a round deletes before
// it inserts, which matters when the map is nearly full).
//
// Ops keeps one piece of state: the keys the map had no room for, which
// drive the map-full metrics and log lines. The reconciler calls Ops from
// one goroutine; the mutex only makes Rejected safe to call from others.
type Ops struct {
	log     *slog.Logger
	m       PolicyMap
	metrics *Metrics

	mu       sync.Mutex
	rejected map[egresspolicy.Key]struct{}

	// Pin state, used by Prune only (the reconciler's goroutine).
	pinHealth cell.Health // nil until RegisterReconciler sets it
	now       func() time.Time
	// pinRepair is the pin change found by a resync whose reprogramming
	// has not completed yet (a resync without error completes it).
	pinRepair *pinRepair
	// pinOK is the health message while the pin is the map held.
	pinOK string
	// incompatibleID is the ID of the incompatible map last reported, so
	// it is logged and counted once.
	incompatibleID ebpf.MapID
}

// PinChecker is a PolicyMap pinned on bpffs whose handle can go stale:
// BPFPolicyMap. Prune calls CheckPin at every full resync.
type PinChecker interface {
	CheckPin() (PinCheck, error)
}

// pinRepair is a pin change a resync found, and when.
type pinRepair struct {
	PinCheck
	at time.Time
}

var (
	_ reconciler.Operations[*tables.PolicyEntry]      = (*Ops)(nil)
	_ reconciler.BatchOperations[*tables.PolicyEntry] = (*Ops)(nil)
)

// NewOps returns the operations on m.
func NewOps(log *slog.Logger, m PolicyMap, metrics *Metrics) *Ops {
	return &Ops{log: log, m: m, metrics: metrics, rejected: map[egresspolicy.Key]struct{}{}, now: time.Now}
}

// Update writes the row's entry. A full map yields a MapFullError, which
// the reconciler stores in the row's status and retries with backoff.
func (o *Ops) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *tables.PolicyEntry) error {
	k := normalize(e.Key)
	err := o.write(k, e.Value)
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case err == nil:
		o.setRejectedLocked(k, false)
	case errors.Is(err, ErrMapFull):
		o.setRejectedLocked(k, true)
	}
	return err
}

// Delete removes the row's entry; an entry that is not there is fine.
func (o *Ops) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *tables.PolicyEntry) error {
	k := normalize(e.Key)
	o.mu.Lock()
	o.setRejectedLocked(k, false) // no longer desired, whatever happens below
	o.mu.Unlock()
	return o.m.Delete(k)
}

// UpdateBatch implements reconciler.BatchOperations.
func (o *Ops) UpdateBatch(ctx context.Context, txn statedb.ReadTxn, batch []reconciler.BatchEntry[*tables.PolicyEntry]) {
	for i := range batch {
		batch[i].Result = o.Update(ctx, txn, batch[i].Revision, batch[i].Object)
	}
}

// DeleteBatch implements reconciler.BatchOperations.
func (o *Ops) DeleteBatch(ctx context.Context, txn statedb.ReadTxn, batch []reconciler.BatchEntry[*tables.PolicyEntry]) {
	for i := range batch {
		batch[i].Result = o.Delete(ctx, txn, batch[i].Revision, batch[i].Object)
	}
}

// Prune is the full resync: it compares the whole map with the whole
// table and repairs drift. It deletes every key no row asks for (entries
// of deleted pods or policies the agent missed, and foreign entries), then
// rewrites the entries of rows the reconciler reports Done whose map entry
// is missing or holds another value (someone wrote the map behind our
// back). Rows still Pending or in Error are left to the incremental
// reconciliation and its retries, which record the outcome in the row.
//
// The reconciler calls Prune only once the table is initialized; together
// with RegisterReconciler's gate this guarantees that a partially computed
// table never deletes a correct entry.
//
// Before that, Prune checks that the map held is still the pinned one
// (checkPin): if the pin was replaced, the handle now is the new map and
// this resync writes every Done row into it (Pending and Error rows are
// written by the reconciler's retries, also into the new map).
func (o *Ops) Prune(ctx context.Context, txn statedb.ReadTxn, objs iter.Seq2[*tables.PolicyEntry, statedb.Revision]) error {
	pinErr := o.checkPin()
	err := o.prune(ctx, txn, objs)
	o.finishPinRepair(errors.Join(pinErr, err))
	return errors.Join(pinErr, err)
}

func (o *Ops) prune(_ context.Context, _ statedb.ReadTxn, objs iter.Seq2[*tables.PolicyEntry, statedb.Revision]) error {
	type row struct {
		v    egresspolicy.Value
		done bool
	}
	desired := map[egresspolicy.Key]row{}
	for e := range objs {
		desired[normalize(e.Key)] = row{e.Value, e.Status.Kind == reconciler.StatusKindDone}
	}
	current := map[egresspolicy.Key]egresspolicy.Value{}
	if err := o.m.IterateWithCallback(func(k egresspolicy.Key, v egresspolicy.Value) { current[k] = v }); err != nil {
		return fmt.Errorf("reading %s: %w", PolicyMapName, err)
	}

	var errs []error
	deleted, written := 0, 0
	// Delete first: what is freed makes room for what is missing.
	for k := range current {
		if _, ok := desired[k]; ok {
			continue
		}
		if err := o.m.Delete(k); err != nil {
			errs = append(errs, fmt.Errorf("deleting stale entry %s: %w", k, err))
			continue
		}
		delete(current, k)
		deleted++
	}
	var full error
	nowFull := map[egresspolicy.Key]bool{}
	for k, r := range desired {
		if cur, ok := current[k]; !r.done || (ok && cur == r.v) {
			continue
		}
		err := o.write(k, r.v)
		switch {
		case err == nil:
			current[k] = r.v
			written++
		case errors.Is(err, ErrMapFull):
			nowFull[k] = true
			full = err
		default:
			errs = append(errs, fmt.Errorf("restoring entry %s -> %s: %w", k, r.v, err))
		}
	}

	o.mu.Lock()
	for k := range o.rejected {
		if _, ok := desired[k]; !ok {
			o.setRejectedLocked(k, false)
		}
	}
	for k := range nowFull {
		o.setRejectedLocked(k, true)
	}
	o.mu.Unlock()

	o.metrics.Entries.Set(float64(len(current)))
	o.metrics.ResyncRepairs.WithLabelValues("deleted").Add(float64(deleted))
	o.metrics.ResyncRepairs.WithLabelValues("written").Add(float64(written))
	if deleted+written > 0 {
		o.log.Info("Full resync repaired "+PolicyMapName,
			"deletedEntries", deleted, "restoredEntries", written, "entries", len(current))
	}
	if full != nil {
		errs = append(errs, fmt.Errorf("%d entries could not be restored: %w", len(nowFull), full))
	}
	return errors.Join(errs...)
}

// checkPin compares the pin with the map held (if the map is pinned) and
// reports what it found: log, metric, health.
func (o *Ops) checkPin() error {
	pc, ok := o.m.(PinChecker)
	if !ok {
		return nil
	}
	res, err := pc.CheckPin()
	if err != nil {
		err = fmt.Errorf("checking the pin of %s: %w", PolicyMapName, err)
		o.pinDegraded("Cannot check that the pinned "+PolicyMapName+" is the map egressha writes", err)
		return err
	}
	if res.Path == "" {
		return nil // not pinned, or closed: there is no pin to compare with
	}
	switch res.Action {
	case PinKept:
		o.incompatibleID = 0
		if o.pinOK == "" {
			o.pinOK = fmt.Sprintf("Pinned %s is the map written (id %d)", PolicyMapName, res.HeldID)
		}
	case PinReopened, PinRestored:
		o.incompatibleID = 0
		o.metrics.PinChanges.WithLabelValues(res.Action.String()).Inc()
		o.pinRepair = &pinRepair{PinCheck: res, at: o.now()}
		if res.Action == PinReopened {
			o.log.Warn(PolicyMapName+" was replaced under the agent: switched to the pinned map and reprogramming every entry",
				"path", res.Path, "oldMapID", res.HeldID, "newMapID", res.PinnedID)
			o.pinDegraded(fmt.Sprintf("%s was replaced (map id %d -> %d); reprogramming every entry",
				PolicyMapName, res.HeldID, res.PinnedID), errors.New("pinned map replaced"))
		} else {
			o.log.Warn("The pin of "+PolicyMapName+" was removed under the agent: pinned the map in use again",
				"path", res.Path, "oldMapID", res.HeldID, "newMapID", res.PinnedID)
			o.pinDegraded(fmt.Sprintf("The pin of %s was removed; re-pinned map id %d, checking its entries",
				PolicyMapName, res.HeldID), errors.New("pinned map removed"))
		}
	case PinIncompatible:
		if o.incompatibleID != res.PinnedID {
			o.incompatibleID = res.PinnedID
			o.metrics.PinChanges.WithLabelValues(res.Action.String()).Inc()
			o.log.Warn("Another "+PolicyMapName+" with an incompatible spec is pinned: egressha keeps writing the map it "+
				"holds, which the datapath may not use; restart the agent to re-create the map",
				"path", res.Path, "heldMapID", res.HeldID, "pinnedMapID", res.PinnedID, "difference", res.Incompatible)
		}
		o.pinDegraded(fmt.Sprintf("The %s pinned at %s (id %d) has another spec than egressha's; still writing map id %d, "+
			"which the datapath may not use: restart the agent to re-create the map", PolicyMapName, res.Path, res.PinnedID, res.HeldID),
			res.Incompatible)
		return nil
	}
	return nil
}

// finishPinRepair reports the pin healthy once a resync after a pin change
// wrote every entry (err is the resync's error).
func (o *Ops) finishPinRepair(err error) {
	if err != nil || o.incompatibleID != 0 {
		return
	}
	if r := o.pinRepair; r != nil {
		o.pinRepair = nil
		if r.Action == PinReopened {
			o.pinOK = fmt.Sprintf("%s was replaced at %s (map id %d -> %d); every entry was reprogrammed",
				PolicyMapName, r.at.UTC().Format(time.RFC3339), r.HeldID, r.PinnedID)
		} else {
			o.pinOK = fmt.Sprintf("The pin of %s was removed at %s; map id %d, with every entry, was pinned again",
				PolicyMapName, r.at.UTC().Format(time.RFC3339), r.HeldID)
		}
		o.log.Info(o.pinOK)
	}
	if o.pinHealth != nil && o.pinOK != "" {
		o.pinHealth.OK(o.pinOK)
	}
}

func (o *Ops) pinDegraded(reason string, err error) {
	if o.pinHealth != nil {
		o.pinHealth.Degraded(reason, err)
	}
}

// Rejected is the number of desired entries the map has no room for.
func (o *Ops) Rejected() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.rejected)
}

// write stores k -> v and classifies a full map.
func (o *Ops) write(k egresspolicy.Key, v egresspolicy.Value) error {
	return classifyUpdateError(o.m.Update(k, v), o.m.MaxEntries())
}

// setRejectedLocked records whether k is a desired entry the map has no
// room for, and publishes the change. o.mu must be held.
func (o *Ops) setRejectedLocked(k egresspolicy.Key, rejected bool) {
	before := len(o.rejected)
	if rejected {
		o.rejected[k] = struct{}{}
	} else {
		delete(o.rejected, k)
	}
	after := len(o.rejected)
	if before == after {
		return
	}
	o.metrics.RejectedEntries.Set(float64(after))
	switch {
	case before == 0:
		o.metrics.MapFull.Set(1)
		o.log.Error(PolicyMapName+" is full: egress gateway entries are not programmed and their traffic is not "+
			"steered to a gateway; raise --"+MaxEntriesFlag+" (Helm egressGateway.maxPolicyEntries)",
			"maxEntries", o.m.MaxEntries(), "firstRejected", k.String())
	case after == 0:
		o.metrics.MapFull.Set(0)
		o.log.Info(PolicyMapName+" has room again: every desired egress gateway entry is programmed",
			"maxEntries", o.m.MaxEntries())
	}
}

// normalize masks the destination's host bits, as the map stores keys.
func normalize(k egresspolicy.Key) egresspolicy.Key {
	return egresspolicy.Key{Source: k.Source, Dest: k.Dest.Masked()}
}
