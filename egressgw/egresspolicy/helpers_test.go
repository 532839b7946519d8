package egresspolicy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// mustPrefixes parses CIDRs.
func mustPrefixes(cidrs ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(cidrs))
	for i, c := range cidrs {
		out[i] = netip.MustParsePrefix(c)
	}
	return out
}

// formatConditions prints conditions one per line, policies by name:
// "<policy> <Type>=<Status> <Reason>: <Message>".
func formatConditions(conds map[string][]Condition) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(conds)) {
		for _, c := range conds[name] {
			fmt.Fprintf(&b, "%s %s=%s %s: %s\n", name, c.Type, c.Status, c.Reason, c.Message)
		}
	}
	return b.String()
}

// checkInvariants checks what must hold for any input:
//   - entries are IPv4, sorted, with unique keys;
//   - Compute is the union of ForEndpoint (merged as Compute documents) and
//     its conditions are Conditions of the union of Resolve's conflicts
//     (when no endpoints share an IP);
//   - the result does not depend on the order of policies or endpoints;
//   - a longest-prefix lookup in the entries gives, for every destination
//     address, what the policies ask (see oracle).
func checkInvariants(t *testing.T, policies []Policy, gateways map[string]Gateway, endpoints []Endpoint) {
	t.Helper()
	entries, conds := Compute(policies, gateways, endpoints)

	for i, e := range entries {
		if !e.Source.Is4() || !e.Dest.Addr().Is4() || e.Dest != e.Dest.Masked() {
			t.Fatalf("entry %v: not an IPv4 key with a masked prefix", e)
		}
		if i > 0 && entries[i-1].Key.Compare(e.Key) >= 0 {
			t.Fatalf("entries not sorted or keys not unique at %d: %v, %v", i, entries[i-1], e)
		}
	}

	// Union of ForEndpoint / Resolve.
	var union []Entry
	var conflicts []Conflict
	ips := map[netip.Addr]int{}
	// One Resolver over every endpoint, sharing its results, must say
	// what Resolve says for each.
	shared := NewResolver(policies, gateways)
	for _, ep := range endpoints {
		es, cs := Resolve(policies, gateways, ep)
		ts, tcs := shared.Resolve(&ep)
		var fromTargets []Entry
		for _, tg := range ts {
			fromTargets = append(fromTargets, tg.Entry(ep.IP))
		}
		if !slices.Equal(fromTargets, es) || !slices.Equal(tcs, cs) {
			t.Fatalf("Resolver and Resolve disagree for %v:\nResolver: %v %v\nResolve:  %v %v", ep.IP, fromTargets, tcs, es, cs)
		}
		if fe := ForEndpoint(policies, gateways, ep); !slices.Equal(fe, es) {
			t.Fatalf("ForEndpoint and Resolve disagree for %v", ep.IP)
		}
		if !slices.IsSortedFunc(es, func(a, b Entry) int { return a.Key.Compare(b.Key) }) {
			t.Fatalf("ForEndpoint(%v) not sorted", ep.IP)
		}
		union = append(union, es...)
		for _, c := range cs {
			if !slices.Contains(conflicts, c) {
				conflicts = append(conflicts, c)
			}
		}
		if ep.IP.Is4() {
			ips[ep.IP]++
		}
	}
	dup := map[Conflict]struct{}{}
	union = mergeShared(union, dup)
	if !slices.Equal(union, entries) {
		t.Fatalf("Compute is not the union of ForEndpoint:\nCompute:\n%s\nunion:\n%s", FormatTable(entries), FormatTable(union))
	}
	sharedIP := false
	for _, n := range ips {
		sharedIP = sharedIP || n > 1
	}
	if !sharedIP {
		slices.SortFunc(conflicts, Conflict.compare)
		if got, want := formatConditions(Conditions(policies, gateways, conflicts)), formatConditions(conds); got != want {
			t.Fatalf("Conditions of Resolve's conflicts differ from Compute's:\n%s\nvs\n%s", got, want)
		}
	}

	// Order independence.
	rp, re := slices.Clone(policies), slices.Clone(endpoints)
	slices.Reverse(rp)
	slices.Reverse(re)
	entries2, conds2 := Compute(rp, gateways, re)
	if !slices.Equal(entries, entries2) {
		t.Fatalf("reversed input changes entries:\n%s\nvs\n%s", FormatTable(entries), FormatTable(entries2))
	}
	if a, b := formatConditions(conds), formatConditions(conds2); a != b {
		t.Fatalf("reversed input changes conditions:\n%s\nvs\n%s", a, b)
	}

	// LPM oracle, per endpoint whose IP is not shared.
	for _, ep := range endpoints {
		if !ep.IP.Is4() || ips[ep.IP] > 1 {
			continue
		}
		checkLPM(t, policies, gateways, ep, entries)
	}
}

// checkLPM probes the addresses around every prefix the policies mention
// (every region of the prefix tree contains one) and compares a
// longest-prefix lookup in entries with oracle, and Resolve's conflicts with
// the oracle's ties.
func checkLPM(t *testing.T, policies []Policy, gateways map[string]Gateway, ep Endpoint, entries []Entry) {
	t.Helper()
	var mine []Entry
	for _, e := range entries {
		if e.Source == ep.IP {
			mine = append(mine, e)
		}
	}
	var probes []netip.Addr
	for _, p := range policies {
		for _, pfx := range slices.Concat(p.Destinations, p.Exclusions) {
			if !pfx.Addr().Is4() {
				continue
			}
			pfx = pfx.Masked()
			first := pfx.Addr()
			last := lastAddr(pfx)
			probes = append(probes, first, last, first.Prev(), last.Next())
		}
	}
	probes = append(probes, netip.MustParseAddr("1.2.3.4"), netip.MustParseAddr("255.255.255.255"))
	var wantConflicts []Conflict
	for _, a := range probes {
		if !a.IsValid() {
			continue
		}
		want, wantOK, ties := oracle(policies, gateways, ep, a)
		got, gotOK := lpm(mine, a)
		if gotOK != wantOK || (gotOK && got != want) {
			t.Fatalf("endpoint %v destination %v: map gives %v (routed %v), policies ask %v (routed %v)\n%s",
				ep.IP, a, got, gotOK, want, wantOK, FormatTable(mine))
		}
		for _, c := range ties {
			if !slices.Contains(wantConflicts, c) {
				wantConflicts = append(wantConflicts, c)
			}
		}
	}
	slices.SortFunc(wantConflicts, Conflict.compare)
	if _, got := Resolve(policies, gateways, ep); !slices.Equal(got, wantConflicts) {
		t.Fatalf("endpoint %v: conflicts %v, want %v", ep.IP, got, wantConflicts)
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= ^uint32(0) >> p.Bits()
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// lpm is the datapath lookup: the longest destination containing a; an
// excluded entry or no entry means the egress gateway is not used.
func lpm(entries []Entry, a netip.Addr) (Value, bool) {
	best := -1
	for i, e := range entries {
		if e.Dest.Contains(a) && (best < 0 || e.Dest.Bits() > entries[best].Dest.Bits()) {
			best = i
		}
	}
	if best < 0 || entries[best].IsExcluded() {
		return Value{}, false
	}
	return entries[best].Value, true
}

// oracle is the specification, written independently of resolve: each
// selecting policy decides for a by its own most specific prefix containing
// a (an exclusion beats a destination of the same length); among the
// policies that send a to their gateway, the most specific destination
// wins, then the name that sorts first. The others with the same
// destination and a different value are the conflicts at a.
func oracle(policies []Policy, gateways map[string]Gateway, ep Endpoint, a netip.Addr) (Value, bool, []Conflict) {
	sorted := slices.Clone(policies)
	slices.SortStableFunc(sorted, func(x, y Policy) int { return strings.Compare(x.Name, y.Name) })
	lv := &labelView{m: ep.Labels, ns: ep.Namespace}
	value := func(p *Policy) Value {
		if g, ok := gateways[p.Gateway]; ok {
			return g.Value()
		}
		return DropValue
	}
	type route struct {
		p    *Policy
		bits int
	}
	var routes []route
	bestBits := -1
	for i := range sorted {
		p := &sorted[i]
		if !p.selects(lv) {
			continue
		}
		bits, excl := -1, false
		for _, d := range p.Destinations {
			if d.Addr().Is4() && d.Masked().Contains(a) && d.Bits() > bits {
				bits, excl = d.Bits(), false
			}
		}
		for _, e := range p.Exclusions {
			if e.Addr().Is4() && e.Masked().Contains(a) && e.Bits() >= bits {
				bits, excl = e.Bits(), true
			}
		}
		if bits < 0 || excl {
			continue
		}
		routes = append(routes, route{p, bits})
		bestBits = max(bestBits, bits)
	}
	var winner *Policy
	var ties []Conflict
	for _, r := range routes {
		switch {
		case r.bits != bestBits:
		case winner == nil:
			winner = r.p
		case value(r.p) != value(winner):
			ties = append(ties, Conflict{Reason: ReasonOverlappingPolicies, Winner: winner.Name, Loser: r.p.Name,
				CIDR: netip.PrefixFrom(a, bestBits).Masked()})
		}
	}
	if winner == nil {
		return Value{}, false, nil
	}
	return value(winner), true, ties
}
