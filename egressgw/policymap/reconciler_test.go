package policymap

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/cilium/cilium/pkg/hive"
	"github.com/cilium/cilium/pkg/hive/health/types"
	"github.com/cilium/cilium/pkg/metrics"

	"github.com/egressha/egressha/egressgw/egresspolicy"
	"github.com/egressha/egressha/egressgw/policymap/mapstest"
	"github.com/egressha/egressha/egressgw/tables"
	"github.com/egressha/egressha/internal/testcells"
)

const testModule = "egressha-maps-test"

// harness runs RegisterReconciler in a hive, with egress-policy-entries
// and one initializer standing in for the table's producer.
type harness struct {
	t        *testing.T
	db       *statedb.DB
	tbl      statedb.RWTable[*tables.SourceEntries]
	health   statedb.Table[types.Status]
	r        reconciler.Reconciler[*tables.SourceEntries]
	ops      *Ops
	metrics  *Metrics
	initDone func(statedb.WriteTxn)
}

func newHarness(t *testing.T, m PolicyMap) *harness {
	h := &harness{t: t}
	hv := hive.New(cell.Module(testModule, "egressha maps test",
		metrics.Metric(NewMetrics),
		cell.ProvidePrivate(tables.NewPolicyEntriesTable),
		// The producer registers its initializer while it is constructed.
		cell.Invoke(func(db *statedb.DB, tbl statedb.RWTable[*tables.SourceEntries]) {
			wtxn := db.WriteTxn(tbl)
			h.initDone = tbl.RegisterInitializer(wtxn, "test-inputs")
			wtxn.Commit()
		}),
		cell.Invoke(func(p reconciler.Params, tbl statedb.RWTable[*tables.SourceEntries], met *Metrics, health statedb.Table[types.Status]) error {
			h.db, h.tbl, h.metrics, h.health = p.DB, tbl, met, health
			h.ops = NewOps(p.Log, m, met)
			cfg := DefaultReconcilerConfig
			cfg.ResyncInterval = time.Hour // tests trigger it with r.Prune()
			cfg.RetryMax = 200 * time.Millisecond
			var err error
			h.r, err = RegisterReconciler(p, tbl, h.ops, cfg)
			return err
		}),
	))
	log := hivetest.Logger(t)
	if err := hv.Start(log, context.Background()); err != nil {
		t.Fatalf("hive start: %v", err)
	}
	t.Cleanup(func() {
		if err := hv.Stop(log, context.Background()); err != nil {
			t.Errorf("hive stop: %v", err)
		}
	})
	return h
}

// markInitialized is the producer saying its inputs synced.
func (h *harness) markInitialized() {
	wtxn := h.db.WriteTxn(h.tbl)
	h.initDone(wtxn)
	wtxn.Commit()
}

// insert writes the rows of the entries' sources: each source's row
// holds exactly the entries given for it (in one call), replacing what it
// held.
func (h *harness) insert(entries ...egresspolicy.Entry) {
	bySource := map[netip.Addr]*tables.SourceEntries{}
	for _, e := range entries {
		r := bySource[e.Source]
		if r == nil {
			r = &tables.SourceEntries{Source: e.Source, Status: reconciler.StatusPending()}
			bySource[e.Source] = r
		}
		r.Targets = append(r.Targets, egresspolicy.Target{Dest: e.Dest, Value: e.Value, Policy: e.Policy})
	}
	wtxn := h.db.WriteTxn(h.tbl)
	for _, r := range bySource {
		slices.SortFunc(r.Targets, func(a, b egresspolicy.Target) int { return egresspolicy.ComparePrefix(a.Dest, b.Dest) })
		h.tbl.Insert(wtxn, r)
	}
	wtxn.Commit()
}

// delete deletes the row of k's source.
func (h *harness) delete(k egresspolicy.Key) {
	wtxn := h.db.WriteTxn(h.tbl)
	h.tbl.Delete(wtxn, &tables.SourceEntries{Source: k.Source})
	wtxn.Commit()
}

// status is the status of the row of k's source.
func (h *harness) status(k egresspolicy.Key) reconciler.Status {
	e, _, ok := h.tbl.Get(h.db.ReadTxn(), tables.SourceEntriesByIP(k.Source))
	if !ok {
		h.t.Fatalf("no row for %s", k.Source)
	}
	return e.Status
}

func (h *harness) waitStatus(k egresspolicy.Key, kind reconciler.StatusKind) reconciler.Status {
	h.t.Helper()
	testcells.Eventually(h.t, "row "+k.String()+" to be "+string(kind), func() bool { return h.status(k).Kind == kind })
	return h.status(k)
}

func (h *harness) waitMap(m PolicyMap, want map[egresspolicy.Key]egresspolicy.Value) {
	h.t.Helper()
	var got map[egresspolicy.Key]egresspolicy.Value
	testcells.Eventually(h.t, "the map to hold the desired entries", func() bool {
		var err error
		got, err = dump(m)
		if err != nil {
			h.t.Fatal(err)
		}
		return maps.Equal(got, want)
	})
}

// degraded returns the error of a Degraded health status of the test
// module, "" if none.
func (h *harness) degraded() string {
	for s := range h.health.All(h.db.ReadTxn()) {
		if s.Level == types.LevelDegraded && strings.Contains(s.ID.String(), testModule) {
			return s.Error
		}
	}
	return ""
}

// pinStatus is the health of the pin check (scope "pinned-map").
func (h *harness) pinStatus() (types.Status, bool) {
	for s := range h.health.All(h.db.ReadTxn()) {
		if id := s.ID.String(); strings.Contains(id, testModule) && strings.Contains(id, "pinned-map") {
			return s, true
		}
	}
	return types.Status{}, false
}

func entry(k egresspolicy.Key, v egresspolicy.Value) egresspolicy.Entry {
	return egresspolicy.Entry{Key: k, Value: v, Policy: "p"}
}

// reconcilerScenario drives RegisterReconciler against m, a map of at least
// 8 entries: restart without removing or rewriting a correct entry, no
// write before the table is initialized, incremental insert/update/delete,
// full resync repairing foreign, stale and drifted entries.
func reconcilerScenario(t *testing.T, m PolicyMap) {
	rec := &recordingMap{PolicyMap: m}
	vA, vB := val("203.0.113.1", "172.18.0.2"), val("203.0.113.1", "172.18.0.3")
	a, b := key("10.244.1.10", "192.0.2.0/24"), key("10.244.1.11", "0.0.0.0/0")
	stale := key("10.244.1.99", "192.0.2.0/24")

	// The previous agent left a correct entry for a and one for a pod that
	// was deleted while the agent was down.
	for k, v := range map[egresspolicy.Key]egresspolicy.Value{a: vA, stale: vB} {
		if err := m.Update(k, v); err != nil {
			t.Fatalf("seeding the map: %v", err)
		}
	}

	h := newHarness(t, rec)
	h.insert(entry(a, vA), entry(b, vB))
	h.r.Prune() // a forced resync must wait too
	time.Sleep(300 * time.Millisecond)
	got, err := dump(m)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, map[egresspolicy.Key]egresspolicy.Value{a: vA, stale: vB}) {
		t.Fatalf("the map changed before the table was initialized: %v", got)
	}
	if n := rec.count(); n != 0 {
		t.Fatalf("%d writes before the table was initialized", n)
	}
	if s := h.status(b); s.Kind != reconciler.StatusKindPending {
		t.Fatalf("row b reconciled before initialization: %v", s)
	}

	h.markInitialized()
	h.waitStatus(a, reconciler.StatusKindDone)
	h.waitStatus(b, reconciler.StatusKindDone)
	h.waitMap(m, map[egresspolicy.Key]egresspolicy.Value{a: vA, b: vB})
	for _, o := range rec.writesTo(a) {
		if o.Delete || o.Value != vA {
			t.Fatalf("the correct entry of a was deleted or changed during the restart: %+v", o)
		}
	}

	// Incremental: change a, delete b.
	vA2 := egresspolicy.DropValue
	h.insert(entry(a, vA2))
	h.waitStatus(a, reconciler.StatusKindDone)
	h.waitMap(m, map[egresspolicy.Key]egresspolicy.Value{a: vA2, b: vB})
	h.delete(b)
	h.waitMap(m, map[egresspolicy.Key]egresspolicy.Value{a: vA2})

	// Drift: a foreign entry, a changed value and a lost entry; the full
	// resync repairs all three.
	c := key("10.244.2.20", "198.51.100.0/24")
	h.insert(entry(c, egresspolicy.ExcludedValue))
	h.waitStatus(c, reconciler.StatusKindDone)
	foreign := key("10.244.9.9", "0.0.0.0/0")
	if err := m.Update(foreign, vB); err != nil {
		t.Fatal(err)
	}
	if err := m.Update(a, vB); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(c); err != nil {
		t.Fatal(err)
	}
	h.r.Prune()
	h.waitMap(m, map[egresspolicy.Key]egresspolicy.Value{a: vA2, c: egresspolicy.ExcludedValue})
	testcells.Eventually(t, "repair metrics", func() bool {
		return h.metrics.ResyncRepairs.WithLabelValues("deleted").Get() >= 2 && // stale, foreign
			h.metrics.ResyncRepairs.WithLabelValues("written").Get() >= 2 // a, c
	})
}

// mapFullScenario fills m, a map of exactly 2 entries, beyond capacity.
// inPlaceWhenFull says whether the kernel replaces a value in a full LPM
// trie (newer kernels) or refuses it (older ones).
func mapFullScenario(t *testing.T, m PolicyMap, inPlaceWhenFull bool) {
	if m.MaxEntries() != 2 {
		t.Fatalf("mapFullScenario needs a map of 2 entries, got %d", m.MaxEntries())
	}
	h := newHarness(t, m)
	h.markInitialized()
	v := val("203.0.113.1", "172.18.0.2")
	x, y, z := key("10.244.1.1", "0.0.0.0/0"), key("10.244.1.2", "0.0.0.0/0"), key("10.244.1.3", "0.0.0.0/0")
	h.insert(entry(x, v), entry(y, v))
	h.waitStatus(x, reconciler.StatusKindDone)
	h.waitStatus(y, reconciler.StatusKindDone)

	h.insert(entry(z, v))
	s := h.waitStatus(z, reconciler.StatusKindError)
	if want := "map full: raise egress-gateway-policy-map-max (now 2)"; !strings.Contains(s.Error, want) {
		t.Fatalf("row status %q does not say %q", s.Error, want)
	}
	if h.metrics.MapFull.Get() != 1 || h.metrics.RejectedEntries.Get() != 1 {
		t.Fatalf("metrics: full=%v rejected=%v", h.metrics.MapFull.Get(), h.metrics.RejectedEntries.Get())
	}
	testcells.Eventually(t, "module health Degraded with map full", func() bool { return strings.Contains(h.degraded(), "map full") })
	got, err := dump(m)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, map[egresspolicy.Key]egresspolicy.Value{x: v, y: v}) {
		t.Fatalf("entries already present were touched: %v", got)
	}

	// A failover changes y's value while the map is full: newer kernels
	// replace it in place.
	if inPlaceWhenFull {
		h.insert(entry(y, egresspolicy.DropValue))
		h.waitStatus(y, reconciler.StatusKindDone)
		h.waitMap(m, map[egresspolicy.Key]egresspolicy.Value{x: v, y: egresspolicy.DropValue})
		h.insert(entry(y, v))
		h.waitStatus(y, reconciler.StatusKindDone)
	} else {
		t.Log("this kernel refuses in-place updates of a full LPM trie; skipping the value change at capacity")
	}

	// Room appears: z is retried and written.
	h.delete(x)
	h.waitStatus(z, reconciler.StatusKindDone)
	h.waitMap(m, map[egresspolicy.Key]egresspolicy.Value{y: v, z: v})
	testcells.Eventually(t, "map full cleared", func() bool { return h.metrics.MapFull.Get() == 0 })
}

// rowsScenario drives rows of several keys through RegisterReconciler
// against m, a map of exactly 6 entries: a key removed from a row is
// deleted from the map and a changed one rewritten, without touching the
// row's other keys; a deleted row removes all its keys; the full resync
// removes foreign keys and restores modified and lost ones of every row;
// a row that does not fit gets an Error status of its own while the rows
// that were correct stay Done and in the map, and the row is written once
// room appears.
func rowsScenario(t *testing.T, m PolicyMap) {
	if m.MaxEntries() != 6 {
		t.Fatalf("rowsScenario needs a map of 6 entries, got %d", m.MaxEntries())
	}
	rec := &recordingMap{PolicyMap: m}
	h := newHarness(t, rec)
	h.markInitialized()
	v, v2 := val("203.0.113.1", "172.18.0.2"), val("203.0.113.1", "172.18.0.3")
	a1, a2, a3 := key("10.244.1.1", "10.0.0.0/8"), key("10.244.1.1", "192.0.2.0/24"), key("10.244.1.1", "198.51.100.0/24")
	b1, b2 := key("10.244.1.2", "10.0.0.0/8"), key("10.244.1.2", "192.0.2.0/24")
	h.insert(entry(a1, v), entry(a2, v), entry(a3, egresspolicy.ExcludedValue), entry(b1, v), entry(b2, v))
	h.waitStatus(a1, reconciler.StatusKindDone)
	h.waitStatus(b1, reconciler.StatusKindDone)
	h.waitMap(m, map[egresspolicy.Key]egresspolicy.Value{a1: v, a2: v, a3: egresspolicy.ExcludedValue, b1: v, b2: v})

	// a loses 198.51.100.0/24 and a2 changes value: a3 is deleted, a2
	// rewritten, a1 left alone.
	writesA1 := len(rec.writesTo(a1))
	h.insert(entry(a1, v), entry(a2, v2))
	h.waitMap(m, map[egresspolicy.Key]egresspolicy.Value{a1: v, a2: v2, b1: v, b2: v})
	h.waitStatus(a1, reconciler.StatusKindDone)
	if n := len(rec.writesTo(a1)); n != writesA1 {
		t.Fatalf("the unchanged key %s was written again (%d operations)", a1, n-writesA1)
	}

	// b's row goes: both its keys go.
	h.delete(b1)
	h.waitMap(m, map[egresspolicy.Key]egresspolicy.Value{a1: v, a2: v2})

	// Drift behind the reconciler's back: a foreign key, a modified and
	// a lost key of a; the full resync repairs all of it.
	foreign := key("10.244.9.9", "0.0.0.0/0")
	for _, err := range []error{m.Update(foreign, v), m.Update(a1, egresspolicy.DropValue), m.Delete(a2)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	h.r.Prune()
	h.waitMap(m, map[egresspolicy.Key]egresspolicy.Value{a1: v, a2: v2})

	// c (3 keys) and d (2 keys) arrive: the map has room for 6, a holds
	// 2, so one of them does not fit. That row alone is Error with the
	// map-full message; a stays Done with its entries; nothing that was
	// written is removed.
	c1, c2, c3 := key("10.244.1.3", "10.0.0.0/8"), key("10.244.1.3", "192.0.2.0/24"), key("10.244.1.3", "198.51.100.0/24")
	d1, d2 := key("10.244.1.4", "10.0.0.0/8"), key("10.244.1.4", "192.0.2.0/24")
	h.insert(entry(c1, v), entry(c2, v), entry(c3, v), entry(d1, v), entry(d2, v))
	var full, fits egresspolicy.Key
	testcells.Eventually(t, "one of c and d in Error, the other Done", func() bool {
		sc, sd := h.status(c1).Kind, h.status(d1).Kind
		switch {
		case sc == reconciler.StatusKindError && sd == reconciler.StatusKindDone:
			full, fits = c1, d1
			return true
		case sd == reconciler.StatusKindError && sc == reconciler.StatusKindDone:
			full, fits = d1, c1
			return true
		}
		return false
	})
	if s := h.status(full); !strings.Contains(s.Error, "map full: raise egress-gateway-policy-map-max (now 6)") {
		t.Fatalf("status of the row that does not fit: %q", s.Error)
	}
	if s := h.status(a1); s.Kind != reconciler.StatusKindDone {
		t.Fatalf("row a is %v after another row hit a full map", s)
	}
	got, err := dump(m)
	if err != nil {
		t.Fatal(err)
	}
	if got[a1] != v || got[a2] != v2 || len(got) != 6 {
		t.Fatalf("map after the full-map error: %v", got)
	}
	for k := range got {
		if k.Source == fits.Source {
			continue
		}
		if k.Source != a1.Source && k.Source != full.Source {
			t.Fatalf("unexpected key %s", k)
		}
	}
	if h.metrics.MapFull.Get() != 1 || h.metrics.RejectedEntries.Get() == 0 {
		t.Fatalf("metrics: full=%v rejected=%v", h.metrics.MapFull.Get(), h.metrics.RejectedEntries.Get())
	}

	// a's row goes: room for the rejected row, which its retry writes.
	h.delete(a1)
	h.waitStatus(full, reconciler.StatusKindDone)
	h.waitMap(m, map[egresspolicy.Key]egresspolicy.Value{c1: v, c2: v, c3: v, d1: v, d2: v})
	testcells.Eventually(t, "map full cleared", func() bool { return h.metrics.MapFull.Get() == 0 })
}

// TestReconciler runs the scenarios against the in-memory map; the
// privileged test runs them against a real BPF map.
func TestReconciler(t *testing.T) {
	t.Run("restart-incremental-resync", func(t *testing.T) { reconcilerScenario(t, mapstest.New(16)) })
	t.Run("map-full", func(t *testing.T) { mapFullScenario(t, mapstest.New(2), true) })
	t.Run("rows", func(t *testing.T) { rowsScenario(t, mapstest.New(6)) })
}

func TestRegisterReconcilerRefusesZeroInterval(t *testing.T) {
	_, err := RegisterReconciler(reconciler.Params{}, nil, nil, ReconcilerConfig{})
	if err == nil {
		t.Fatal("a zero resync interval was accepted")
	}
}
