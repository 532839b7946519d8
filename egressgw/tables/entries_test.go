package tables

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/egressha/egressha/egressgw/egresspolicy"
)

func testEntry(src, dst string, s reconciler.Status) *PolicyEntry {
	return &PolicyEntry{
		Entry: egresspolicy.Entry{
			Key:    egresspolicy.Key{Source: netip.MustParseAddr(src), Dest: netip.MustParsePrefix(dst)},
			Value:  egresspolicy.Value{EgressIP: netip.MustParseAddr("192.0.2.1"), GatewayIP: netip.MustParseAddr("172.18.0.2")},
			Policy: "p",
		},
		Status: s,
	}
}

func keysOf(seq func(func(*PolicyEntry, statedb.Revision) bool)) []string {
	var out []string
	for e := range seq {
		out = append(out, e.Key.String())
	}
	return out
}

// TestPolicyEntriesIndexes covers the indexes of egress-policy-entries:
// the key, the source, and the sparse status index, which answers the
// queries of reconciler.NewStatusIndex for every status but Done.
func TestPolicyEntriesIndexes(t *testing.T) {
	db := statedb.New()
	tbl, err := NewPolicyEntriesTable(db)
	if err != nil {
		t.Fatal(err)
	}
	status := reconciler.NewStatusIndex((*PolicyEntry).GetStatus) // what others query with

	wtxn := db.WriteTxn(tbl)
	for _, e := range []*PolicyEntry{
		testEntry("10.0.0.1", "198.51.100.0/24", reconciler.StatusPending()),
		testEntry("10.0.0.1", "203.0.113.0/24", reconciler.StatusDone()),
		testEntry("10.0.0.2", "198.51.100.0/24", reconciler.StatusError(errors.New("map full"))),
		testEntry("10.0.0.3", "198.51.100.0/24", reconciler.StatusRefreshing()),
	} {
		if _, _, err := tbl.Insert(wtxn, e); err != nil {
			t.Fatal(err)
		}
	}
	txn := wtxn.Commit()

	check := func(what string, got []string, want ...string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: got %q, want %q", what, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: got %q, want %q", what, got, want)
			}
		}
	}
	check("source 10.0.0.1", keysOf(tbl.List(txn, PolicyEntrySourceIndex.Query(netip.MustParseAddr("10.0.0.1")))),
		"10.0.0.1 198.51.100.0/24", "10.0.0.1 203.0.113.0/24")
	check("source 10.0.0.4", keysOf(tbl.List(txn, PolicyEntrySourceIndex.Query(netip.MustParseAddr("10.0.0.4")))))
	check("pending", keysOf(tbl.List(txn, status.Query(reconciler.StatusKindPending))), "10.0.0.1 198.51.100.0/24")
	check("error", keysOf(tbl.List(txn, status.Query(reconciler.StatusKindError))), "10.0.0.2 198.51.100.0/24")
	check("refreshing", keysOf(tbl.List(txn, status.Query(reconciler.StatusKindRefreshing))), "10.0.0.3 198.51.100.0/24")
	check("done (not indexed)", keysOf(tbl.List(txn, status.Query(reconciler.StatusKindDone))))

	// Status changes move rows in and out of the status index; the other
	// indexes keep them.
	wtxn = db.WriteTxn(tbl)
	for e := range tbl.All(wtxn) {
		if _, _, err := tbl.Insert(wtxn, e.Clone().SetStatus(reconciler.StatusDone())); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := tbl.Insert(wtxn, testEntry("10.0.0.2", "203.0.113.0/24", reconciler.StatusPending())); err != nil {
		t.Fatal(err)
	}
	txn = wtxn.Commit()
	check("pending after", keysOf(tbl.List(txn, status.Query(reconciler.StatusKindPending))), "10.0.0.2 203.0.113.0/24")
	check("error after", keysOf(tbl.List(txn, status.Query(reconciler.StatusKindError))))
	check("refreshing after", keysOf(tbl.List(txn, status.Query(reconciler.StatusKindRefreshing))))
	check("source 10.0.0.2 after", keysOf(tbl.List(txn, PolicyEntrySourceIndex.Query(netip.MustParseAddr("10.0.0.2")))),
		"10.0.0.2 198.51.100.0/24", "10.0.0.2 203.0.113.0/24")
	if n := tbl.NumObjects(txn); n != 5 {
		t.Fatalf("%d rows, want 5", n)
	}

	wtxn = db.WriteTxn(tbl)
	if _, _, err := tbl.Delete(wtxn, testEntry("10.0.0.2", "203.0.113.0/24", reconciler.StatusPending())); err != nil {
		t.Fatal(err)
	}
	txn = wtxn.Commit()
	check("pending after delete", keysOf(tbl.List(txn, status.Query(reconciler.StatusKindPending))))
	check("source 10.0.0.2 after delete", keysOf(tbl.List(txn, PolicyEntrySourceIndex.Query(netip.MustParseAddr("10.0.0.2")))),
		"10.0.0.2 198.51.100.0/24")
}
