package tables

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"

	"github.com/egressha/egressha/egressgw/egresspolicy"
)

var testValue = egresspolicy.Value{EgressIP: netip.MustParseAddr("192.0.2.1"), GatewayIP: netip.MustParseAddr("172.18.0.2")}

func testRow(src string, s reconciler.Status, dests ...string) *SourceEntries {
	row := &SourceEntries{Source: netip.MustParseAddr(src), Status: s}
	for _, d := range dests {
		row.Targets = append(row.Targets, egresspolicy.Target{Dest: netip.MustParsePrefix(d), Value: testValue, Policy: "p"})
	}
	return row
}

func sourcesOf(seq func(func(*SourceEntries, statedb.Revision) bool)) []string {
	var out []string
	for e := range seq {
		out = append(out, e.Source.String())
	}
	return out
}

// TestPolicyEntriesIndexes covers the indexes of egress-policy-entries:
// the source, and the sparse status index, which answers the queries of
// reconciler.NewStatusIndex for every status but Done.
func TestPolicyEntriesIndexes(t *testing.T) {
	db := statedb.New()
	tbl, err := NewPolicyEntriesTable(db)
	if err != nil {
		t.Fatal(err)
	}
	status := reconciler.NewStatusIndex((*SourceEntries).GetStatus) // what others query with

	wtxn := db.WriteTxn(tbl)
	for _, e := range []*SourceEntries{
		testRow("10.0.0.1", reconciler.StatusPending(), "198.51.100.0/24", "203.0.113.0/24"),
		testRow("10.0.0.2", reconciler.StatusError(errors.New("map full")), "198.51.100.0/24"),
		testRow("10.0.0.3", reconciler.StatusRefreshing(), "198.51.100.0/24"),
		testRow("10.0.0.4", reconciler.StatusDone(), "198.51.100.0/24"),
	} {
		if _, _, err := tbl.Insert(wtxn, e); err != nil {
			t.Fatal(err)
		}
	}
	txn := wtxn.Commit()

	check := func(what string, got []string, want ...string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Fatalf("%s: got %q, want %q", what, got, want)
		}
	}
	row, _, ok := tbl.Get(txn, SourceEntriesByIP(netip.MustParseAddr("10.0.0.1")))
	if !ok || len(row.Targets) != 2 {
		t.Fatalf("row of 10.0.0.1: %v %v", row, ok)
	}
	if _, _, ok := tbl.Get(txn, SourceEntriesByIP(netip.MustParseAddr("10.0.0.9"))); ok {
		t.Fatal("a row for 10.0.0.9")
	}
	check("pending", sourcesOf(tbl.List(txn, status.Query(reconciler.StatusKindPending))), "10.0.0.1")
	check("error", sourcesOf(tbl.List(txn, status.Query(reconciler.StatusKindError))), "10.0.0.2")
	check("refreshing", sourcesOf(tbl.List(txn, status.Query(reconciler.StatusKindRefreshing))), "10.0.0.3")
	check("done (not indexed)", sourcesOf(tbl.List(txn, status.Query(reconciler.StatusKindDone))))

	// Status changes move rows in and out of the status index; the
	// primary index keeps them.
	wtxn = db.WriteTxn(tbl)
	for e := range tbl.All(wtxn) {
		if _, _, err := tbl.Insert(wtxn, e.Clone().SetStatus(reconciler.StatusDone())); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := tbl.Insert(wtxn, testRow("10.0.0.2", reconciler.StatusPending(), "203.0.113.0/24")); err != nil {
		t.Fatal(err)
	}
	txn = wtxn.Commit()
	check("pending after", sourcesOf(tbl.List(txn, status.Query(reconciler.StatusKindPending))), "10.0.0.2")
	check("error after", sourcesOf(tbl.List(txn, status.Query(reconciler.StatusKindError))))
	check("refreshing after", sourcesOf(tbl.List(txn, status.Query(reconciler.StatusKindRefreshing))))
	check("all", sourcesOf(tbl.All(txn)), "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")

	wtxn = db.WriteTxn(tbl)
	if _, _, err := tbl.Delete(wtxn, testRow("10.0.0.2", reconciler.StatusPending())); err != nil {
		t.Fatal(err)
	}
	txn = wtxn.Commit()
	check("pending after delete", sourcesOf(tbl.List(txn, status.Query(reconciler.StatusKindPending))))
	check("all after delete", sourcesOf(tbl.All(txn)), "10.0.0.1", "10.0.0.3", "10.0.0.4")
}

func TestSourceEntriesTableRow(t *testing.T) {
	v2 := egresspolicy.Value{EgressIP: netip.MustParseAddr("192.0.2.9"), GatewayIP: netip.MustParseAddr("172.18.0.3")}
	row := &SourceEntries{
		Source: netip.MustParseAddr("10.0.0.1"),
		Targets: []egresspolicy.Target{
			{Dest: netip.MustParsePrefix("10.0.0.0/8"), Value: testValue, Policy: "a"},
			{Dest: netip.MustParsePrefix("10.1.0.0/16"), Value: egresspolicy.ExcludedValue, Policy: "a"},
			{Dest: netip.MustParsePrefix("192.0.2.0/24"), Value: v2, Policy: "b"},
			{Dest: netip.MustParsePrefix("198.51.100.0/24"), Value: testValue, Policy: "a"},
			{Dest: netip.MustParsePrefix("203.0.113.0/24"), Value: egresspolicy.DropValue, Policy: "c"},
		},
		Status: reconciler.StatusDone(),
	}
	got := row.TableRow()
	want := "10.0.0.0/8,198.51.100.0/24 -> egress 192.0.2.1 gateway 172.18.0.2 (a); " +
		"10.1.0.0/16 -> egress 0.0.0.0 gateway Excluded CIDR (a); " +
		"192.0.2.0/24 -> egress 192.0.2.9 gateway 172.18.0.3 (b); " +
		"203.0.113.0/24 -> egress 0.0.0.0 gateway Not Found (c)"
	if len(got) != len(row.TableHeader()) || got[0] != "10.0.0.1" || got[1] != want {
		t.Fatalf("TableRow:\n got %q\nwant %q", got, want)
	}
	var keys []string
	for e := range row.Entries() {
		keys = append(keys, e.String())
	}
	if len(keys) != 5 || keys[0] != "10.0.0.1 10.0.0.0/8 -> 192.0.2.1 172.18.0.2 (a)" {
		t.Fatalf("Entries: %q", keys)
	}
	if _, err := SourceEntriesIndex.FromString("10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := SourceEntriesIndex.FromString("fd00::1"); err == nil {
		t.Fatal("an IPv6 source key was accepted")
	}
	if k, err := SourceEntriesStatusIndex.FromString("error"); err != nil || !slices.Equal(k, reconciler.StatusKindError.Key()) {
		t.Fatalf("status key of \"error\": %v %v", k, err)
	}
	if _, err := SourceEntriesStatusIndex.FromString("broken"); err == nil || !strings.Contains(err.Error(), "not a status") {
		t.Fatalf("status key of \"broken\": %v", err)
	}
}

// TestOneKeySet: the one-allocation key sets are the keys the indexes
// document (the IPv4 bytes; index.NetIPAddr's 16-byte form).
func TestOneKeySet(t *testing.T) {
	a := netip.MustParseAddr("10.1.2.3")
	if got := SourceEntriesIndex.FromObject(&SourceEntries{Source: a}).First(); !slices.Equal(got, []byte{10, 1, 2, 3}) {
		t.Fatalf("source key %v", got)
	}
	if got, want := EndpointIPIndex.FromObject(&Endpoint{Endpoint: egresspolicy.Endpoint{IP: a}}).First(), index.NetIPAddr(a); !slices.Equal(got, want) {
		t.Fatalf("endpoint key %v, want %v", got, want)
	}
}
