package policymap

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/netip"
	"slices"
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
// statedb reconciler's Operations (incremental Update and Delete of a
// source's row, and Prune, the periodic full resync) and BatchOperations
// (so a round deletes before it inserts, which matters when the map is
// nearly full).
//
// A row holds every entry of one source IP; Update expands it to its map
// keys. The reconciler hands Update the new row only, so Ops keeps, per
// source, the targets it wrote into the map (written: the row's own
// shared slice once a row is fully written, so it costs a map slot per
// source). Update then writes only the keys whose value changed and
// deletes the keys the row no longer has; Delete removes every key the row
// or the map held for the source.
//
// Ops also keeps the keys the map had no room for, which drive the
// map-full metrics and log lines. The reconciler calls Ops from one
// goroutine; the mutex only makes Rejected safe to call from others.
type Ops struct {
	log     *slog.Logger
	m       PolicyMap
	metrics *Metrics

	// written is, per source (its IPv4 bytes: a smaller map slot than a
	// netip.Addr), the targets in the map as far as Ops wrote them
	// (sorted by destination). Owned by the reconciler's goroutine,
	// as is writes, the buffer of the writes an update plans.
	written map[[4]byte][]egresspolicy.Target
	writes  []plannedWrite
	// Buffers of update and writeAll, reused from round to round.
	rowsBuf []rowUpdate
	keysBuf []egresspolicy.Key
	valsBuf []egresspolicy.Value

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
	_ reconciler.Operations[*tables.SourceEntries]      = (*Ops)(nil)
	_ reconciler.BatchOperations[*tables.SourceEntries] = (*Ops)(nil)
)

// NewOps returns the operations on m.
func NewOps(log *slog.Logger, m PolicyMap, metrics *Metrics) *Ops {
	return &Ops{
		log: log, m: m, metrics: metrics,
		written:  map[[4]byte][]egresspolicy.Target{},
		rejected: map[egresspolicy.Key]struct{}{},
		now:      time.Now,
	}
}

// Update makes the map hold exactly the row's entries for its source: it
// deletes the keys the source had and the row no longer has (first, so
// they make room), then writes the keys that are new or whose value
// changed. Keys that fail stay as they were; the first error is returned
// (a full map as a MapFullError, with how many more keys failed), which
// the reconciler stores in the row's status and retries with backoff.
// Other rows are never touched.
func (o *Ops) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *tables.SourceEntries) error {
	var res [1]error
	o.update([]*tables.SourceEntries{e}, res[:])
	return res[0]
}

// rowUpdate is the progress of Update for one row.
type rowUpdate struct {
	old, want []egresspolicy.Target
	errs      []error
	failed    map[netip.Prefix]bool // destinations whose delete or write failed
}

func (u *rowUpdate) fail(d netip.Prefix, err error) {
	if u.failed == nil {
		u.failed = map[netip.Prefix]bool{}
	}
	u.failed[d] = true
	u.errs = append(u.errs, err)
}

// update is Update for several rows (of distinct sources), result i for
// row i: the deletes of each row first, then the writes of all rows
// together, in batches when the map can (BatchWriter).
func (o *Ops) update(rows []*tables.SourceEntries, results []error) {
	us := o.rowsBuf[:0]
	for range rows {
		us = append(us, rowUpdate{})
	}
	defer func() {
		clear(us) // drop the references to rows and errors
		o.rowsBuf = us[:0]
	}()
	o.writes = o.writes[:0]
	for r, e := range rows {
		u := &us[r]
		u.old, u.want = o.written[e.Source.As4()], e.Targets
		old, want := u.old, u.want
		// Delete what the row no longer has.
		for i, j := 0, 0; i < len(old); {
			c := -1
			if j < len(want) {
				c = egresspolicy.ComparePrefix(old[i].Dest, want[j].Dest)
			}
			switch {
			case c < 0:
				if err := o.m.Delete(egresspolicy.Key{Source: e.Source, Dest: old[i].Dest.Masked()}); err != nil {
					u.fail(old[i].Dest, err)
				}
				i++
			case c > 0:
				j++
			default:
				i++
				j++
			}
		}
		// Plan the writes of what is new or changed.
		for i, j := 0, 0; j < len(want); j++ {
			t := want[j]
			for i < len(old) && egresspolicy.ComparePrefix(old[i].Dest, t.Dest) < 0 {
				i++
			}
			if i < len(old) && old[i].Dest == t.Dest && old[i].Value == t.Value {
				continue
			}
			o.writes = append(o.writes, plannedWrite{
				key: egresspolicy.Key{Source: e.Source, Dest: t.Dest.Masked()}, value: t.Value, row: r, dest: t.Dest,
			})
		}
	}
	o.writeAll(o.writes, func(w *plannedWrite, err error) {
		if err != nil {
			us[w.row].fail(w.dest, err)
		}
		o.noteWrite(w.key, err)
	})
	for r, e := range rows {
		u := &us[r]
		if u.failed == nil {
			o.written[e.Source.As4()] = u.want
			results[r] = nil
			continue
		}
		o.written[e.Source.As4()] = afterFailures(u.old, u.want, u.failed)
		results[r] = u.errs[0]
		if n := len(u.errs); n > 1 {
			// One line in the row's status, not one per key.
			results[r] = fmt.Errorf("%w (and %d more of the %d entries of %s)", u.errs[0], n-1, len(u.want), e.Source)
		}
	}
}

// plannedWrite is one key an update writes.
type plannedWrite struct {
	key   egresspolicy.Key
	value egresspolicy.Value
	row   int          // index of the row in the update
	dest  netip.Prefix // the target's destination as the row has it
}

// writeAll writes ws and reports each outcome (a full map classified) to
// done, in order. A map that can write in batches (BatchWriter) gets
// batches; the key a batch stopped at is written alone, to learn its own
// error, and the batch goes on after it.
func (o *Ops) writeAll(ws []plannedWrite, done func(*plannedWrite, error)) {
	bw, ok := o.m.(BatchWriter)
	if !ok || len(ws) < 2 {
		for i := range ws {
			done(&ws[i], o.write(ws[i].key, ws[i].value))
		}
		return
	}
	keys, vals := o.keysBuf[:0], o.valsBuf[:0]
	for i := range ws {
		keys, vals = append(keys, ws[i].key), append(vals, ws[i].value)
	}
	o.keysBuf, o.valsBuf = keys[:0], vals[:0]
	for i := 0; i < len(ws); {
		n, err := bw.UpdateBatch(keys[i:], vals[i:])
		for j := i; j < i+n; j++ {
			done(&ws[j], nil)
		}
		i += n
		if err != nil && i < len(ws) {
			done(&ws[i], o.write(ws[i].key, ws[i].value))
			i++
		}
	}
}

// afterFailures is what the map holds for a source after an Update from
// old to want in which the deletes and writes of the destinations in
// failed failed: a failed delete or write leaves the key as it was.
func afterFailures(old, want []egresspolicy.Target, failed map[netip.Prefix]bool) []egresspolicy.Target {
	var out []egresspolicy.Target
	i, j := 0, 0
	for i < len(old) || j < len(want) {
		c := 0
		switch {
		case i == len(old):
			c = 1
		case j == len(want):
			c = -1
		default:
			c = egresspolicy.ComparePrefix(old[i].Dest, want[j].Dest)
		}
		switch {
		case c < 0: // only in old: deleted unless that failed
			if failed[old[i].Dest] {
				out = append(out, old[i])
			}
			i++
		case c > 0: // only in want: written unless that failed
			if !failed[want[j].Dest] {
				out = append(out, want[j])
			}
			j++
		default: // in both: rewritten unless that failed
			if failed[want[j].Dest] {
				out = append(out, old[i])
			} else {
				out = append(out, want[j])
			}
			i++
			j++
		}
	}
	return out
}

// noteWrite records whether k is rejected after a write that returned err.
func (o *Ops) noteWrite(k egresspolicy.Key, err error) {
	full := errors.Is(err, ErrMapFull)
	// Only the reconciler's goroutine writes rejected, so reading its
	// length here needs no lock.
	if !full && (err != nil || len(o.rejected) == 0) {
		return
	}
	o.mu.Lock()
	o.setRejectedLocked(k, full)
	o.mu.Unlock()
}

// Delete removes every key of the row's source: those the row lists and
// those Ops wrote for it. A key that is not there is fine.
func (o *Ops) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *tables.SourceEntries) error {
	src := e.Source
	var errs []error
	for _, ts := range [][]egresspolicy.Target{o.written[src.As4()], e.Targets} {
		for _, t := range ts {
			k := egresspolicy.Key{Source: src, Dest: t.Dest.Masked()}
			if len(o.rejected) > 0 {
				o.mu.Lock()
				o.setRejectedLocked(k, false) // no longer desired, whatever happens below
				o.mu.Unlock()
			}
			if err := o.m.Delete(k); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	delete(o.written, src.As4())
	return nil
}

// UpdateBatch implements reconciler.BatchOperations: Update for each row,
// with the writes of all rows together (in batches where the map can).
func (o *Ops) UpdateBatch(_ context.Context, _ statedb.ReadTxn, batch []reconciler.BatchEntry[*tables.SourceEntries]) {
	rows := make([]*tables.SourceEntries, len(batch))
	for i := range batch {
		rows[i] = batch[i].Object
	}
	results := make([]error, len(batch))
	o.update(rows, results)
	for i := range batch {
		batch[i].Result = results[i]
	}
}

// DeleteBatch implements reconciler.BatchOperations.
func (o *Ops) DeleteBatch(ctx context.Context, txn statedb.ReadTxn, batch []reconciler.BatchEntry[*tables.SourceEntries]) {
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
// It reads the map once (BPFPolicyMap reads it in batches) and looks each
// key up in the rows, which come sorted by source; nothing is allocated
// per entry unless something needs repairing.
//
// The reconciler calls Prune only once the table is initialized; together
// with RegisterReconciler's gate this guarantees that a partially computed
// table never deletes a correct entry.
//
// Before that, Prune checks that the map held is still the pinned one
// (checkPin): if the pin was replaced, the handle now is the new map and
// this resync writes every Done row into it (Pending and Error rows are
// written by the reconciler's retries, also into the new map).
func (o *Ops) Prune(ctx context.Context, txn statedb.ReadTxn, objs iter.Seq2[*tables.SourceEntries, statedb.Revision]) error {
	pinErr := o.checkPin()
	err := o.prune(ctx, txn, objs)
	o.finishPinRepair(errors.Join(pinErr, err))
	return errors.Join(pinErr, err)
}

// desiredRows are the rows of a resync sorted by source, with a cursor
// for the mostly ordered lookups of a map walk.
type desiredRows struct {
	rows []*tables.SourceEntries
	last int
}

func (d *desiredRows) find(src netip.Addr) *tables.SourceEntries {
	if d.last < len(d.rows) && d.rows[d.last].Source == src {
		return d.rows[d.last]
	}
	if n := d.last + 1; n < len(d.rows) && d.rows[n].Source == src {
		d.last = n
		return d.rows[n]
	}
	i, ok := slices.BinarySearchFunc(d.rows, src, func(r *tables.SourceEntries, a netip.Addr) int { return r.Source.Compare(a) })
	if !ok {
		return nil
	}
	d.last = i
	return d.rows[i]
}

// target finds the target of dest (masked) in ts, sorted by destination.
func target(ts []egresspolicy.Target, dest netip.Prefix) (egresspolicy.Target, bool) {
	if len(ts) <= 8 {
		for _, t := range ts {
			if t.Dest == dest {
				return t, true
			}
		}
		return egresspolicy.Target{}, false
	}
	i, ok := slices.BinarySearchFunc(ts, dest, func(t egresspolicy.Target, d netip.Prefix) int { return egresspolicy.ComparePrefix(t.Dest, d) })
	if !ok {
		return egresspolicy.Target{}, false
	}
	return ts[i], true
}

func (o *Ops) prune(_ context.Context, _ statedb.ReadTxn, objs iter.Seq2[*tables.SourceEntries, statedb.Revision]) error {
	d := &desiredRows{}
	doneKeys := 0
	for e := range objs {
		d.rows = append(d.rows, e)
		if e.Status.Kind == reconciler.StatusKindDone {
			doneKeys += len(e.Targets)
		}
	}
	if !slices.IsSortedFunc(d.rows, func(a, b *tables.SourceEntries) int { return a.Source.Compare(b.Source) }) {
		slices.SortFunc(d.rows, func(a, b *tables.SourceEntries) int { return a.Source.Compare(b.Source) })
	}

	// One walk of the map: keys no row has are stale, keys of Done rows
	// with another value drifted; count the keys of Done rows that are
	// right, so that missing ones show without a set of every key.
	type repair struct {
		k       egresspolicy.Key
		v       egresspolicy.Value
		missing bool // not in the map (else: another value)
	}
	var stale []egresspolicy.Key
	var drifted []repair
	total, right := 0, 0
	if err := o.m.IterateWithCallback(func(k egresspolicy.Key, v egresspolicy.Value) {
		total++
		r := d.find(k.Source)
		if r == nil {
			stale = append(stale, k)
			return
		}
		t, ok := target(r.Targets, k.Dest)
		switch {
		case !ok:
			stale = append(stale, k)
		case r.Status.Kind != reconciler.StatusKindDone:
		case t.Value != v:
			drifted = append(drifted, repair{k: k, v: t.Value})
		default:
			right++
		}
	}); err != nil {
		return fmt.Errorf("reading %s: %w", PolicyMapName, err)
	}

	var errs []error
	deleted, written, added := 0, 0, 0
	// Delete first: what is freed makes room for what is missing.
	for _, k := range stale {
		if err := o.m.Delete(k); err != nil {
			errs = append(errs, fmt.Errorf("deleting stale entry %s: %w", k, err))
			continue
		}
		deleted++
	}
	// Keys of Done rows neither right nor drifted are missing: find them
	// (only then is a set of the map's keys built).
	if missing := doneKeys - right - len(drifted); missing > 0 {
		present := make(map[egresspolicy.Key]struct{}, total)
		if err := o.m.IterateWithCallback(func(k egresspolicy.Key, _ egresspolicy.Value) { present[k] = struct{}{} }); err != nil {
			return errors.Join(append(errs, fmt.Errorf("reading %s: %w", PolicyMapName, err))...)
		}
		for _, r := range d.rows {
			if r.Status.Kind != reconciler.StatusKindDone {
				continue
			}
			for _, t := range r.Targets {
				k := egresspolicy.Key{Source: r.Source, Dest: t.Dest.Masked()}
				if _, ok := present[k]; !ok {
					drifted = append(drifted, repair{k: k, v: t.Value, missing: true})
				}
			}
		}
	}
	var full error
	nowFull := map[egresspolicy.Key]bool{}
	repairedFailed := map[netip.Addr]bool{}
	for _, r := range drifted {
		err := o.write(r.k, r.v)
		switch {
		case err == nil:
			written++
			if r.missing {
				added++
			}
		case errors.Is(err, ErrMapFull):
			nowFull[r.k] = true
			full = err
			repairedFailed[r.k.Source] = true
		default:
			errs = append(errs, fmt.Errorf("restoring entry %s -> %s: %w", r.k, r.v, err))
			repairedFailed[r.k.Source] = true
		}
	}

	// What Ops wrote: a Done row's targets are in the map now (unless
	// their repair failed); sources without a row have nothing.
	for _, r := range d.rows {
		if r.Status.Kind == reconciler.StatusKindDone && !repairedFailed[r.Source] {
			if w := o.written[r.Source.As4()]; len(w) != len(r.Targets) || (len(w) > 0 && &w[0] != &r.Targets[0]) {
				o.written[r.Source.As4()] = r.Targets
			}
		}
	}
	if len(o.written) > len(d.rows) {
		for src := range o.written {
			if d.find(netip.AddrFrom4(src)) == nil {
				delete(o.written, src)
			}
		}
	}

	o.mu.Lock()
	for k := range o.rejected {
		if r := d.find(k.Source); r == nil {
			o.setRejectedLocked(k, false)
		} else if _, ok := target(r.Targets, k.Dest); !ok {
			o.setRejectedLocked(k, false)
		}
	}
	for k := range nowFull {
		o.setRejectedLocked(k, true)
	}
	o.mu.Unlock()

	entries := total - deleted + added
	o.metrics.Entries.Set(float64(entries))
	o.metrics.ResyncRepairs.WithLabelValues("deleted").Add(float64(deleted))
	o.metrics.ResyncRepairs.WithLabelValues("written").Add(float64(written))
	if deleted+written > 0 {
		o.log.Info("Full resync repaired "+PolicyMapName,
			"deletedEntries", deleted, "restoredEntries", written, "entries", entries)
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
		if res.Action == PinReopened {
			// The map now held holds none of what was written.
			o.written = map[[4]byte][]egresspolicy.Target{}
		}
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
