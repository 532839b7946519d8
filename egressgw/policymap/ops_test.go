package policymap

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"golang.org/x/sys/unix"

	"github.com/egressha/egressha/egressgw/egresspolicy"
	"github.com/egressha/egressha/egressgw/policymap/mapstest"
	"github.com/egressha/egressha/egressgw/tables"
)

// row is the row of k's source with the one entry k -> v.
func row(k egresspolicy.Key, v egresspolicy.Value, kind reconciler.StatusKind) *tables.SourceEntries {
	return &tables.SourceEntries{
		Source:  k.Source,
		Targets: []egresspolicy.Target{{Dest: k.Dest, Value: v, Policy: "p"}},
		Status:  reconciler.Status{Kind: kind},
	}
}

func rows(rs ...*tables.SourceEntries) func(func(*tables.SourceEntries, statedb.Revision) bool) {
	return func(yield func(*tables.SourceEntries, statedb.Revision) bool) {
		for i, r := range rs {
			if !yield(r, statedb.Revision(i+1)) {
				return
			}
		}
	}
}

func TestClassifyUpdateError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		full bool
	}{
		{nil, false},
		{fmt.Errorf("update map %s: %w", PolicyMapName, unix.ENOSPC), true},
		{fmt.Errorf("key too big for map: %w", unix.E2BIG), true},
		{fmt.Errorf("update: %w", unix.ENOMEM), false},
		{errors.New("something else"), false},
	} {
		got := classifyUpdateError(tc.err, 2)
		if tc.err == nil {
			if got != nil {
				t.Errorf("nil classified as %v", got)
			}
			continue
		}
		if errors.Is(got, ErrMapFull) != tc.full {
			t.Errorf("%v: full=%v, want %v", tc.err, !tc.full, tc.full)
		}
		if !errors.Is(got, tc.err) {
			t.Errorf("%v: classification lost the kernel error", tc.err)
		}
		if tc.full {
			var mf *MapFullError
			if !errors.As(got, &mf) || mf.MaxEntries != 2 {
				t.Errorf("%v: want a *MapFullError with MaxEntries 2, got %#v", tc.err, got)
			}
			if want := "map full: raise egress-gateway-policy-map-max (now 2)"; got.Error() != want {
				t.Errorf("message %q, want %q", got.Error(), want)
			}
		}
	}
}

func TestOpsUpdateDelete(t *testing.T) {
	ctx := context.Background()
	m := mapstest.New(16)
	ops := NewOps(hivetest.Logger(t), m, NewMetrics())
	a := key("10.0.0.1", "192.0.2.0/24")
	if err := ops.Update(ctx, nil, 0, row(a, val("203.0.113.1", "172.18.0.2"), reconciler.StatusKindPending)); err != nil {
		t.Fatal(err)
	}
	if got := m.Entries[a]; got != val("203.0.113.1", "172.18.0.2") {
		t.Fatalf("after insert: %v", got)
	}
	if err := ops.Update(ctx, nil, 0, row(a, egresspolicy.DropValue, reconciler.StatusKindPending)); err != nil {
		t.Fatal(err)
	}
	if got := m.Entries[a]; got != egresspolicy.DropValue {
		t.Fatalf("after update: %v", got)
	}
	// Host bits are masked, as the map stores keys.
	if err := ops.Update(ctx, nil, 0, row(key("10.0.0.1", "198.51.100.7/24"), egresspolicy.ExcludedValue, reconciler.StatusKindPending)); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Entries[key("10.0.0.1", "198.51.100.0/24")]; !ok {
		t.Fatalf("destination not masked: %v", m.Entries)
	}
	if err := ops.Delete(ctx, nil, 0, row(a, egresspolicy.DropValue, reconciler.StatusKindDone)); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Entries[a]; ok {
		t.Fatal("entry not deleted")
	}
	if err := ops.Delete(ctx, nil, 0, row(a, egresspolicy.DropValue, reconciler.StatusKindDone)); err != nil {
		t.Fatalf("deleting a missing entry: %v", err)
	}
	m.UpdateErr = fmt.Errorf("update: %w", unix.ENOMEM)
	if err := ops.Update(ctx, nil, 0, row(a, egresspolicy.DropValue, reconciler.StatusKindPending)); err == nil || errors.Is(err, ErrMapFull) {
		t.Fatalf("ENOMEM: want a plain error, got %v", err)
	}
}

func TestOpsMapFull(t *testing.T) {
	ctx := context.Background()
	m := mapstest.New(2)
	met := NewMetrics()
	ops := NewOps(hivetest.Logger(t), m, met)
	x, y, z := key("10.0.0.1", "0.0.0.0/0"), key("10.0.0.2", "0.0.0.0/0"), key("10.0.0.3", "0.0.0.0/0")
	v := val("203.0.113.1", "172.18.0.2")
	for _, k := range []egresspolicy.Key{x, y} {
		if err := ops.Update(ctx, nil, 0, row(k, v, reconciler.StatusKindPending)); err != nil {
			t.Fatal(err)
		}
	}
	before := maps.Clone(m.Entries)

	err := ops.Update(ctx, nil, 0, row(z, v, reconciler.StatusKindPending))
	if !errors.Is(err, ErrMapFull) || !strings.Contains(err.Error(), "raise egress-gateway-policy-map-max (now 2)") {
		t.Fatalf("third entry in a map of 2: want map full, got %v", err)
	}
	if !maps.Equal(m.Entries, before) {
		t.Fatalf("entries changed by the refused insert: %v", m.Entries)
	}
	if met.MapFull.Get() != 1 || met.RejectedEntries.Get() != 1 || ops.Rejected() != 1 {
		t.Fatalf("metrics: full=%v rejected=%v", met.MapFull.Get(), met.RejectedEntries.Get())
	}
	// Replacing a value in place needs no room.
	if err := ops.Update(ctx, nil, 0, row(y, egresspolicy.DropValue, reconciler.StatusKindPending)); err != nil {
		t.Fatalf("in-place update of a full map: %v", err)
	}
	// Room appears; the retry of z succeeds and the map is no longer full.
	if err := ops.Delete(ctx, nil, 0, row(x, v, reconciler.StatusKindDone)); err != nil {
		t.Fatal(err)
	}
	if met.MapFull.Get() != 1 {
		t.Fatal("map full cleared before the rejected entry was written")
	}
	if err := ops.Update(ctx, nil, 0, row(z, v, reconciler.StatusKindError)); err != nil {
		t.Fatal(err)
	}
	if met.MapFull.Get() != 0 || met.RejectedEntries.Get() != 0 {
		t.Fatalf("metrics after room: full=%v rejected=%v", met.MapFull.Get(), met.RejectedEntries.Get())
	}
	// Deleting a rejected row also clears it.
	if err := ops.Update(ctx, nil, 0, row(x, v, reconciler.StatusKindPending)); !errors.Is(err, ErrMapFull) {
		t.Fatalf("want map full, got %v", err)
	}
	if err := ops.Delete(ctx, nil, 0, row(x, v, reconciler.StatusKindError)); err != nil {
		t.Fatal(err)
	}
	if met.MapFull.Get() != 0 {
		t.Fatal("a deleted row still counts as rejected")
	}
}

// TestOpsFullMapOldKernel: older kernels refuse any write to a full trie,
// even replacing a value. The entry stays as it was and the row reports
// map full.
func TestOpsFullMapOldKernel(t *testing.T) {
	ctx := context.Background()
	m := mapstest.New(1)
	m.OldKernel = true
	met := NewMetrics()
	ops := NewOps(hivetest.Logger(t), m, met)
	x, v := key("10.0.0.1", "0.0.0.0/0"), val("203.0.113.1", "172.18.0.2")
	if err := ops.Update(ctx, nil, 0, row(x, v, reconciler.StatusKindPending)); err != nil {
		t.Fatal(err)
	}
	if err := ops.Update(ctx, nil, 0, row(x, egresspolicy.DropValue, reconciler.StatusKindPending)); !errors.Is(err, ErrMapFull) {
		t.Fatalf("changing the value of a full map on an old kernel: want map full, got %v", err)
	}
	if m.Entries[x] != v || met.MapFull.Get() != 1 {
		t.Fatalf("entry %v, map full %v", m.Entries[x], met.MapFull.Get())
	}
}

func TestOpsPrune(t *testing.T) {
	ctx := context.Background()
	m := mapstest.New(16)
	met := NewMetrics()
	ops := NewOps(hivetest.Logger(t), m, met)

	v1, v2 := val("203.0.113.1", "172.18.0.2"), val("203.0.113.9", "172.18.0.3")
	good := key("10.0.0.1", "192.0.2.0/24")    // Done, correct in the map
	drifted := key("10.0.0.2", "192.0.2.0/24") // Done, someone changed it
	lost := key("10.0.0.3", "192.0.2.0/24")    // Done, someone deleted it
	pending := key("10.0.0.4", "192.0.2.0/24") // not written yet
	failing := key("10.0.0.5", "192.0.2.0/24") // Error: its retry owns it
	stale := key("10.0.0.9", "192.0.2.0/24")   // no row
	foreign := key("10.0.0.9", "0.0.0.0/0")    // no row
	m.Entries = map[egresspolicy.Key]egresspolicy.Value{
		good: v1, drifted: v2, failing: v2, stale: v1, foreign: v2,
	}
	err := ops.Prune(ctx, nil, rows(
		row(good, v1, reconciler.StatusKindDone),
		row(drifted, v1, reconciler.StatusKindDone),
		row(lost, v1, reconciler.StatusKindDone),
		row(pending, v1, reconciler.StatusKindPending),
		row(failing, v1, reconciler.StatusKindError),
	))
	if err != nil {
		t.Fatal(err)
	}
	want := map[egresspolicy.Key]egresspolicy.Value{good: v1, drifted: v1, lost: v1, failing: v2}
	if !maps.Equal(m.Entries, want) {
		t.Fatalf("after prune:\n got %v\nwant %v", m.Entries, want)
	}
	if d, w := met.ResyncRepairs.WithLabelValues("deleted").Get(), met.ResyncRepairs.WithLabelValues("written").Get(); d != 2 || w != 2 {
		t.Fatalf("repairs: deleted %v written %v, want 2 and 2", d, w)
	}
	if met.Entries.Get() != 4 {
		t.Fatalf("entries metric %v, want 4", met.Entries.Get())
	}

	// An empty table (initialized: nothing is desired) empties the map.
	if err := ops.Prune(ctx, nil, rows()); err != nil {
		t.Fatal(err)
	}
	if len(m.Entries) != 0 {
		t.Fatalf("entries left: %v", m.Entries)
	}
}

// TestOpsPruneFullMap: the resync deletes before it writes, so stale
// entries make room for missing ones; what still does not fit is reported.
func TestOpsPruneFullMap(t *testing.T) {
	ctx := context.Background()
	m := mapstest.New(2)
	met := NewMetrics()
	ops := NewOps(hivetest.Logger(t), m, met)
	a, b, c, stale := key("10.0.0.1", "0.0.0.0/0"), key("10.0.0.2", "0.0.0.0/0"), key("10.0.0.3", "0.0.0.0/0"), key("10.0.0.9", "0.0.0.0/0")
	v := val("203.0.113.1", "172.18.0.2")
	m.Entries = map[egresspolicy.Key]egresspolicy.Value{a: v, stale: v}
	if err := ops.Prune(ctx, nil, rows(row(a, v, reconciler.StatusKindDone), row(b, v, reconciler.StatusKindDone))); err != nil {
		t.Fatalf("stale entry should have made room: %v", err)
	}
	if !maps.Equal(m.Entries, map[egresspolicy.Key]egresspolicy.Value{a: v, b: v}) {
		t.Fatalf("map %v", m.Entries)
	}
	err := ops.Prune(ctx, nil, rows(row(a, v, reconciler.StatusKindDone), row(b, v, reconciler.StatusKindDone), row(c, v, reconciler.StatusKindDone)))
	if !errors.Is(err, ErrMapFull) {
		t.Fatalf("want map full, got %v", err)
	}
	if met.MapFull.Get() != 1 || ops.Rejected() != 1 {
		t.Fatalf("full=%v rejected=%d", met.MapFull.Get(), ops.Rejected())
	}
	// c's row goes away: nothing is rejected any more.
	if err := ops.Prune(ctx, nil, rows(row(a, v, reconciler.StatusKindDone), row(b, v, reconciler.StatusKindDone))); err != nil {
		t.Fatal(err)
	}
	if met.MapFull.Get() != 0 || ops.Rejected() != 0 {
		t.Fatalf("full=%v rejected=%d after the row went away", met.MapFull.Get(), ops.Rejected())
	}
}

// TestOpsRowPartlyFull: a row of three keys on a map with room for one
// writes what fits, reports map full once for the row (with how many
// more keys failed), keeps what it wrote, and completes on the retry once
// there is room; the unchanged key is not rewritten.
func TestOpsRowPartlyFull(t *testing.T) {
	ctx := context.Background()
	m := mapstest.New(1)
	ops := NewOps(hivetest.Logger(t), m, NewMetrics())
	v := val("203.0.113.1", "172.18.0.2")
	a, b, c := key("10.0.0.1", "10.0.0.0/8"), key("10.0.0.1", "192.0.2.0/24"), key("10.0.0.1", "198.51.100.0/24")
	r := &tables.SourceEntries{Source: a.Source, Status: reconciler.StatusPending(), Targets: []egresspolicy.Target{
		{Dest: a.Dest, Value: v, Policy: "p"}, {Dest: b.Dest, Value: v, Policy: "p"}, {Dest: c.Dest, Value: v, Policy: "p"},
	}}
	err := ops.Update(ctx, nil, 0, r)
	if !errors.Is(err, ErrMapFull) || strings.Count(err.Error(), "map full") != 1 ||
		!strings.HasSuffix(err.Error(), "(and 1 more of the 3 entries of 10.0.0.1)") {
		t.Fatalf("want one map-full error for the row, got %q", err)
	}
	if !maps.Equal(m.Entries, map[egresspolicy.Key]egresspolicy.Value{a: v}) {
		t.Fatalf("map %v, want only the first key", m.Entries)
	}
	rec := &recordingMap{PolicyMap: m}
	ops.m = rec
	m.Max = 3
	if err := ops.Update(ctx, nil, 0, r); err != nil {
		t.Fatalf("retry with room: %v", err)
	}
	if len(m.Entries) != 3 || len(rec.writesTo(a)) != 0 {
		t.Fatalf("after the retry: map %v, %d writes of the key already written", m.Entries, len(rec.writesTo(a)))
	}
}
