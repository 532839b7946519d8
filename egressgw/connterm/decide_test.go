package connterm

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/egressha/egressha/egressgw/egresspolicy"
)

var (
	pod    = netip.MustParseAddr("10.244.1.10")
	all    = netip.MustParsePrefix("0.0.0.0/0")
	ext    = netip.MustParsePrefix("198.51.100.0/24")
	exclP  = netip.MustParsePrefix("198.51.100.128/25")
	gwA    = netip.MustParseAddr("198.18.0.11") // InternalIPs
	gwB    = netip.MustParseAddr("198.18.0.12")
	ethA   = netip.MustParseAddr("203.0.113.11") // their eth1 addresses
	ethB   = netip.MustParseAddr("203.0.113.12")
	ethOwn = netip.MustParseAddr("203.0.113.13") // this node's eth1
	vip    = netip.MustParseAddr("203.0.113.50")
	none   = egresspolicy.EgressIPNotFound
)

func val(egress, gw netip.Addr) egresspolicy.Value {
	return egresspolicy.Value{EgressIP: egress, GatewayIP: gw}
}

func tg(d netip.Prefix, v egresspolicy.Value) egresspolicy.Target {
	return egresspolicy.Target{Dest: d, Value: v, Policy: "p"}
}

func row(ts ...egresspolicy.Target) []egresspolicy.Target { return ts }

// step is one row of the pod as the entries controller writes it (nil:
// deleted), the local egress addresses at that moment, and what must be
// terminated then.
type step struct {
	targets []egresspolicy.Target
	local   []netip.Addr
	want    []Termination
}

func term(d netip.Prefix, from, to SNATSource, except ...netip.Prefix) Termination {
	return Termination{Source: pod, Dest: d, Except: except, From: from, To: to, Policy: "p"}
}

func exact(a, gw netip.Addr) SNATSource { return SNATSource{Addr: a, Gateway: gw} }
func node(gw netip.Addr) SNATSource     { return SNATSource{Gateway: gw} }

func TestTracker(t *testing.T) {
	own := []netip.Addr{ethOwn}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"basic move seen from a node without the interface (status egress IP)", []step{
			{targets: row(tg(all, val(ethA, gwA)))},
			{targets: row(tg(all, val(ethB, gwB))), want: []Termination{term(all, exact(ethA, gwA), exact(ethB, gwB))}},
		}},
		{"basic move seen from a node with the interface (its own address in every value)", []step{
			{targets: row(tg(all, val(ethOwn, gwA))), local: own},
			{targets: row(tg(all, val(ethOwn, gwB))), local: own, want: []Termination{term(all, node(gwA), node(gwB))}},
		}},
		{"basic move away from this node (the active one)", []step{
			{targets: row(tg(all, val(ethOwn, gwA))), local: own},
			{targets: row(tg(all, val(ethOwn, gwB))), local: own, want: []Termination{term(all, node(gwA), node(gwB))}},
		}},
		{"VIP move: the source stays the VIP", []step{
			{targets: row(tg(all, val(vip, gwA))), local: own},
			{targets: row(tg(all, val(vip, gwB))), local: own},
			{targets: row(tg(all, val(vip, gwA))), local: own},
		}},
		{"move through drop terminates when the new node takes over", []step{
			{targets: row(tg(all, val(ethA, gwA)))},
			{targets: row(tg(all, egresspolicy.DropValue))},
			{targets: row(tg(all, egresspolicy.DropValue))},
			{targets: row(tg(all, val(ethB, gwB))), want: []Termination{term(all, exact(ethA, gwA), exact(ethB, gwB))}},
		}},
		{"drop and back to the same node: nothing", []step{
			{targets: row(tg(all, val(ethA, gwA)))},
			{targets: row(tg(all, egresspolicy.DropValue))},
			{targets: row(tg(all, val(ethA, gwA)))},
		}},
		{"excluded CIDR is left out of the terminated destination and never terminated itself", []step{
			{targets: row(tg(ext, val(ethA, gwA)), tg(exclP, egresspolicy.ExcludedValue))},
			{targets: row(tg(ext, val(ethB, gwB)), tg(exclP, egresspolicy.ExcludedValue)),
				want: []Termination{term(ext, exact(ethA, gwA), exact(ethB, gwB), exclP)}},
		}},
		{"only the destination whose gateway moved, minus the more specific one that did not", []step{
			{targets: row(tg(all, val(ethA, gwA)), tg(ext, val(vip, gwA)))},
			{targets: row(tg(all, val(ethB, gwB)), tg(ext, val(vip, gwB))),
				want: []Termination{term(all, exact(ethA, gwA), exact(ethB, gwB), ext)}},
		}},
		{"CEGP on a node that serves neither entry (egress IP 0.0.0.0)", []step{
			{targets: row(tg(all, val(none, gwA)))},
			{targets: row(tg(all, val(none, gwB))), want: []Termination{term(all, node(gwA), node(gwB))}},
		}},
		{"CEGP on the old serving node (its egress IP resolved there)", []step{
			{targets: row(tg(all, val(ethA, gwA)))},
			{targets: row(tg(all, val(none, gwB))), want: []Termination{term(all, exact(ethA, gwA), node(gwB))}},
		}},
		{"egress IP resolved later on the same gateway: nothing", []step{
			{targets: row(tg(all, val(none, gwA)))},
			{targets: row(tg(all, val(ethA, gwA)))},
		}},
		{"this node loses the gateway's interface (no substitute any more): same gateway, nothing", []step{
			{targets: row(tg(all, val(ethOwn, gwA))), local: own},
			{targets: row(tg(all, val(ethA, gwA)))},
			{targets: row(tg(all, val(ethOwn, gwA))), local: own},
		}},
		{"unchanged", []step{
			{targets: row(tg(all, val(ethA, gwA)))},
			{targets: row(tg(all, val(ethA, gwA)))},
		}},
		{"basic to VIP mode on the same node changes the source", []step{
			{targets: row(tg(all, val(ethA, gwA)))},
			{targets: row(tg(all, val(vip, gwA))), want: []Termination{term(all, exact(ethA, gwA), exact(vip, gwA))}},
		}},
		{"row deleted (policy no longer selects the pod) forgets: nothing when it comes back elsewhere", []step{
			{targets: row(tg(all, val(ethA, gwA)))},
			{targets: nil},
			{targets: row(tg(all, val(ethB, gwB)))},
		}},
		{"destination dropped from the row forgets it", []step{
			{targets: row(tg(all, val(ethA, gwA)), tg(ext, val(ethA, gwA)))},
			{targets: row(tg(all, val(ethA, gwA)))},
			{targets: row(tg(all, val(ethB, gwB)), tg(ext, val(ethB, gwB))),
				want: []Termination{term(all, exact(ethA, gwA), exact(ethB, gwB), ext)}},
		}},
		{"first value ever seen is never a change", []step{
			{targets: row(tg(all, egresspolicy.DropValue))},
			{targets: row(tg(all, val(ethB, gwB)))},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker()
			for i, s := range tc.steps {
				local := map[netip.Addr]bool{}
				for _, a := range s.local {
					local[a] = true
				}
				got := tr.Update(pod, s.targets, local)
				if !reflect.DeepEqual(got, s.want) {
					t.Fatalf("step %d: got %+v, want %+v", i, got, s.want)
				}
			}
		})
	}
}

func TestTrackerForgetsDeletedRows(t *testing.T) {
	tr := NewTracker()
	tr.Update(pod, row(tg(all, val(ethA, gwA))), nil)
	if got := tr.Sources(); !reflect.DeepEqual(got, []netip.Addr{pod}) {
		t.Fatalf("sources %v", got)
	}
	tr.Update(pod, nil, nil)
	if got := tr.Sources(); len(got) != 0 {
		t.Fatalf("deleted row still remembered: %v", got)
	}
	tr.Update(pod, row(tg(all, val(ethA, gwA))), nil)
	tr.Forget(pod)
	if got := tr.Update(pod, row(tg(all, val(ethB, gwB))), nil); got != nil {
		t.Fatalf("forgotten source terminated: %v", got)
	}
}

func TestTerminationMatches(t *testing.T) {
	tm := term(ext, node(gwA), node(gwB), exclP)
	for _, tc := range []struct {
		local, remote string
		want          bool
	}{
		{"10.244.1.10", "198.51.100.1", true},
		{"10.244.1.10", "198.51.100.127", true},
		{"10.244.1.10", "198.51.100.128", false}, // excluded
		{"10.244.1.10", "198.51.101.1", false},   // outside the destination
		{"10.244.1.11", "198.51.100.1", false},   // another pod
	} {
		if got := tm.Matches(netip.MustParseAddr(tc.local), netip.MustParseAddr(tc.remote)); got != tc.want {
			t.Errorf("%s -> %s: got %v, want %v", tc.local, tc.remote, got, tc.want)
		}
	}
	if r := tm.Reason(); r != "egress source changed from the own address of gateway 198.18.0.11 to the own address of gateway 198.18.0.12 (gateway 198.18.0.11 -> 198.18.0.12, policy p)" {
		t.Errorf("reason %q", r)
	}
}
