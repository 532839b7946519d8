package egresspolicy

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
)

// Compute returns every desired entry, sorted by key with unique keys, and
// the conditions of every policy (see Conditions).
//
// The entries are the union of ForEndpoint over the endpoints. When two
// endpoints hold the same IP (an IP reused while a stale endpoint still
// exists) and need different values for one key, the map can hold only one:
// the entry whose (Policy, Value) sorts first is kept and a
// ReasonDuplicateSourceIP conflict names both owners.
func Compute(policies []Policy, gateways map[string]Gateway, endpoints []Endpoint) ([]Entry, map[string][]Condition) {
	r := newResolver(policies, gateways)

	// Endpoints with the same set of selecting policies get the same
	// entries apart from the source IP: resolve each set once.
	type memo struct {
		tmpl      []tmplEntry
		conflicts []Conflict
	}
	cache := map[string]*memo{}
	var (
		order   = make([]int, 0, len(endpoints))
		results = make([]*memo, len(endpoints))
		sel     []int
		keyBuf  []byte
		lv      = new(labelView)
		total   int
	)
	for i := range endpoints {
		ep := &endpoints[i]
		if !ep.IP.Is4() {
			continue
		}
		sel = r.selecting(ep, lv, sel[:0])
		if len(sel) == 0 {
			continue
		}
		keyBuf = keyBuf[:0]
		for _, s := range sel {
			keyBuf = binary.AppendUvarint(keyBuf, uint64(s))
			// A spreading policy's value depends on the endpoint.
			keyBuf = binary.AppendUvarint(keyBuf, uint64(r.picks[s]))
		}
		m, ok := cache[string(keyBuf)]
		if !ok {
			m = &memo{}
			m.tmpl, m.conflicts = r.resolve(sel)
			cache[string(keyBuf)] = m
		}
		results[i] = m
		order = append(order, i)
		total += len(m.tmpl)
	}

	// Entries of one endpoint come out sorted by destination; emitting the
	// endpoints in IP order gives a sorted table unless two share an IP.
	slices.SortFunc(order, func(a, b int) int { return endpoints[a].IP.Compare(endpoints[b].IP) })
	entries := make([]Entry, 0, total)
	sharedIP := false
	for j, i := range order {
		if j > 0 && endpoints[order[j-1]].IP == endpoints[i].IP {
			sharedIP = true
		}
		entries = appendEntries(entries, endpoints[i].IP, results[i].tmpl)
	}

	conflictSet := map[Conflict]struct{}{}
	for _, m := range cache {
		for _, c := range m.conflicts {
			conflictSet[c] = struct{}{}
		}
	}
	if sharedIP {
		entries = mergeShared(entries, conflictSet)
	}
	conflicts := make([]Conflict, 0, len(conflictSet))
	for c := range conflictSet {
		conflicts = append(conflicts, c)
	}
	slices.SortFunc(conflicts, Conflict.compare)
	return entries, Conditions(policies, gateways, conflicts)
}

// mergeShared sorts entries and leaves one per key, recording a conflict
// where endpoints sharing an IP disagree.
func mergeShared(entries []Entry, conflicts map[Conflict]struct{}) []Entry {
	slices.SortFunc(entries, compareEntry)
	out := entries[:0]
	for _, e := range entries {
		if n := len(out); n > 0 && out[n-1].Key == e.Key {
			if w := out[n-1]; w.Value != e.Value || w.Policy != e.Policy {
				conflicts[Conflict{Reason: ReasonDuplicateSourceIP, Winner: w.Policy, Loser: e.Policy, CIDR: e.Dest, Source: e.Source}] = struct{}{}
			}
			continue
		}
		out = append(out, e)
	}
	return out
}

func compareEntry(a, b Entry) int {
	if c := a.Key.Compare(b.Key); c != 0 {
		return c
	}
	if c := strings.Compare(a.Policy, b.Policy); c != 0 {
		return c
	}
	return a.Value.compare(b.Value)
}

// ForEndpoint returns the entries of one endpoint, sorted by key: nil for an
// endpoint that is not IPv4 or that no policy selects.
func ForEndpoint(policies []Policy, gateways map[string]Gateway, ep Endpoint) []Entry {
	entries, _ := Resolve(policies, gateways, ep)
	return entries
}

// Resolve returns the entries of one endpoint, sorted by key, and the
// overlapping-policy conflicts found for it (sorted). The policies
// selecting the endpoint are resolved as follows, for every prefix K that
// one of them lists as a destination or exclusion:
//
//   - each selecting policy has a verdict for K: the most specific of its
//     own prefixes containing K decides whether the policy sends K through
//     its gateway (a destination) or not (an exclusion; an exclusion beats a
//     destination with the same prefix), or the policy does not apply;
//   - among the policies that send K through their gateway, the one whose
//     deciding destination is the most specific wins, as the LPM lookup
//     would pick it; on a tie (the same destination CIDR) the policy whose
//     name sorts first wins and, if the values differ, a
//     ReasonOverlappingPolicies conflict names both;
//   - the entry for K takes the winner's gateway value; if no policy sends
//     K, it is excluded (owner: the first excluding policy by name).
//
// So an exclusion only removes traffic from its own policy: where another
// policy selecting the pod still covers the excluded CIDR, the entry for
// it carries that policy's value. Because every prefix of every selecting
// policy gets its own entry, the map's longest-prefix lookup then gives
// every destination address exactly this result: the per-pod layout can
// express every combination of policies except a tie. A tie is reported
// only if some destination address actually has the tied CIDR's entry (or
// an entry below it that inherits the tie) as its longest match; a tie that
// other prefixes hide everywhere is no conflict.
//
// The entries do not depend on conflicts elsewhere, so an agent can keep
// each endpoint's conflicts next to its entries and pass their union to
// Conditions; with no IP on two endpoints that gives Compute's conditions.
func Resolve(policies []Policy, gateways map[string]Gateway, ep Endpoint) ([]Entry, []Conflict) {
	if !ep.IP.Is4() {
		return nil, nil
	}
	r := newResolver(policies, gateways)
	sel := r.selecting(&ep, new(labelView), nil)
	if len(sel) == 0 {
		return nil, nil
	}
	tmpl, conflicts := r.resolve(sel)
	return appendEntries(make([]Entry, 0, len(tmpl)), ep.IP, tmpl), conflicts
}

func appendEntries(dst []Entry, src netip.Addr, tmpl []tmplEntry) []Entry {
	for _, t := range tmpl {
		dst = append(dst, Entry{Key: Key{Source: src, Dest: t.dest}, Value: t.val, Policy: t.owner})
	}
	return dst
}

// resolver holds the policies in name order with their gateway values.
// For a spreading policy vals and picks hold the value chosen for the
// endpoint of the last call to selecting.
type resolver struct {
	pols  []*Policy
	vals  []Value
	picks []int
}

func newResolver(policies []Policy, gateways map[string]Gateway) *resolver {
	r := &resolver{pols: make([]*Policy, len(policies)), vals: make([]Value, len(policies)), picks: make([]int, len(policies))}
	for i := range policies {
		r.pols[i] = &policies[i]
	}
	slices.SortStableFunc(r.pols, func(a, b *Policy) int { return strings.Compare(a.Name, b.Name) })
	for i, p := range r.pols {
		if p.Spreads {
			r.vals[i] = DropValue
			continue
		}
		g, ok := gateways[p.Gateway]
		if !ok {
			r.vals[i] = DropValue
			continue
		}
		r.vals[i] = g.Value()
	}
	return r
}

// selecting appends the indices (in name order) of the policies that
// select ep.
func (r *resolver) selecting(ep *Endpoint, lv *labelView, dst []int) []int {
	lv.m, lv.ns = ep.Labels, ep.Namespace
	for i, p := range r.pols {
		if p.selects(lv) && p.onNode(ep) {
			dst = append(dst, i)
			if p.Spreads && len(p.Spread) > 0 {
				r.picks[i] = SpreadIndex(ep.UID, len(p.Spread))
				r.vals[i] = p.Spread[r.picks[i]]
			}
		}
	}
	return dst
}

// onNode reports whether ep runs on a node the policy's NodeSelectors
// accept (any node when there are none).
func (p *Policy) onNode(ep *Endpoint) bool {
	if len(p.NodeSelectors) == 0 {
		return true
	}
	set := labels.Set(ep.NodeLabels)
	for _, s := range p.NodeSelectors {
		if s.Matches(set) {
			return true
		}
	}
	return false
}

func (p *Policy) selects(lv *labelView) bool {
	for i := range p.Selectors {
		if p.Selectors[i].matches(lv) {
			return true
		}
	}
	return false
}

func (s *Selector) matches(lv *labelView) bool {
	if s.Pod == nil && s.Namespace == nil {
		return false
	}
	if s.Pod != nil && !s.Pod.Matches(lv) {
		return false
	}
	if s.Namespace != nil {
		if s.AnyNamespace {
			return lv.Has(PodNamespaceLabel)
		}
		return s.Namespace.Matches((*nsView)(lv))
	}
	return true
}

// labelView presents an endpoint's identity labels to a labels.Selector,
// with Namespace standing in for a missing io.kubernetes.pod.namespace.
// It is used through a pointer so that the interface conversion does not
// allocate.
type labelView struct {
	m  map[string]string
	ns string
}

func (l *labelView) Has(k string) bool {
	_, ok := l.lookup(k)
	return ok
}

func (l *labelView) Get(k string) string {
	v, _ := l.lookup(k)
	return v
}

func (l *labelView) lookup(k string) (string, bool) {
	if v, ok := l.m[k]; ok {
		return v, true
	}
	if k == PodNamespaceLabel && l.ns != "" {
		return l.ns, true
	}
	return "", false
}

// nsView presents the namespace labels (io.cilium.k8s.namespace.labels.*)
// with the prefix removed, for a namespaceSelector.
type nsView labelView

func (n *nsView) Has(k string) bool {
	_, ok := n.lookup(k)
	return ok
}

func (n *nsView) Get(k string) string {
	v, _ := n.lookup(k)
	return v
}

func (n *nsView) lookup(k string) (string, bool) {
	var buf [128]byte
	b := append(append(buf[:0], NamespaceLabelPrefix...), k...)
	v, ok := n.m[string(b)]
	return v, ok
}

// tmplEntry is an entry without its source IP.
type tmplEntry struct {
	dest  netip.Prefix
	val   Value
	owner string
}

// item is one prefix of one selecting policy.
type item struct {
	pfx  netip.Prefix
	pol  int32 // index into sel
	excl bool
}

// resolve computes the entries (without source) and overlap conflicts for
// an endpoint selected by the policies sel (indices into r.pols, ascending,
// i.e. in name order). See Resolve for the rules.
//
// The prefixes of all selecting policies are sorted by (address, length),
// which is a pre-order walk of the prefix containment tree. Walking it with
// a stack of open prefixes keeps, per policy, the chain of that policy's
// prefixes containing the current one; its top is the policy's verdict.
// Cost: O(n log n + n·len(sel)) for n prefixes.
func (r *resolver) resolve(sel []int) ([]tmplEntry, []Conflict) {
	n := 0
	for _, pi := range sel {
		p := r.pols[pi]
		n += len(p.Destinations) + len(p.Exclusions)
	}
	items := make([]item, 0, n)
	for si, pi := range sel {
		p := r.pols[pi]
		for _, d := range p.Destinations {
			if d.IsValid() && d.Addr().Is4() {
				items = append(items, item{pfx: d.Masked(), pol: int32(si)})
			}
		}
		for _, e := range p.Exclusions {
			if e.IsValid() && e.Addr().Is4() {
				items = append(items, item{pfx: e.Masked(), pol: int32(si), excl: true})
			}
		}
	}
	slices.SortFunc(items, func(a, b item) int {
		if c := comparePrefix(a.pfx, b.pfx); c != 0 {
			return c
		}
		if a.pol != b.pol {
			return int(a.pol - b.pol)
		}
		switch {
		case a.excl == b.excl:
			return 0
		case a.excl:
			return -1
		}
		return 1
	})
	// One item per (prefix, policy); the exclusion sorts first and wins.
	items = slices.CompactFunc(items, func(a, b item) bool { return a.pfx == b.pfx && a.pol == b.pol })

	// A group is the items of one prefix; open groups are the prefixes
	// containing the current one. A tie found at a prefix only counts if
	// some address has that prefix as its longest match, i.e. if the
	// prefix's direct children in the walk do not cover it.
	type group struct {
		start, end  int
		covered     uint64 // addresses covered by direct children
		pendingFrom int    // this group's tail of pending
	}
	var (
		out       = make([]tmplEntry, 0, len(items))
		conflicts []Conflict
		pending   []Conflict
		top       = make([]int32, len(sel)) // per policy: index of its innermost open item, -1 none
		prev      = make([]int32, len(items))
		open      []group
	)
	for i := range top {
		top[i] = -1
	}
	size := func(p netip.Prefix) uint64 { return uint64(1) << (32 - p.Bits()) }
	closeTop := func() {
		g := open[len(open)-1]
		open = open[:len(open)-1]
		for j := g.start; j < g.end; j++ {
			top[items[j].pol] = prev[j]
		}
		if g.covered < size(items[g.start].pfx) {
			for _, c := range pending[g.pendingFrom:] {
				if !slices.Contains(conflicts, c) {
					conflicts = append(conflicts, c)
				}
			}
		}
		pending = pending[:g.pendingFrom]
	}
	for start := 0; start < len(items); {
		end := start + 1
		for end < len(items) && items[end].pfx == items[start].pfx {
			end++
		}
		k := items[start].pfx
		// Close the prefixes that do not contain k, then open k.
		for len(open) > 0 {
			op := items[open[len(open)-1].start].pfx
			if op.Bits() <= k.Bits() && op.Contains(k.Addr()) {
				break
			}
			closeTop()
		}
		if len(open) > 0 {
			open[len(open)-1].covered += size(k)
		}
		for j := start; j < end; j++ {
			prev[j] = top[items[j].pol]
			top[items[j].pol] = int32(j)
		}
		open = append(open, group{start: start, end: end, pendingFrom: len(pending)})

		// Verdicts: the winner is the most specific destination, first by
		// name (sel is in name order, the comparison strict).
		best, bestBits, firstExcl := -1, -1, -1
		for si, t := range top {
			if t < 0 {
				continue
			}
			if items[t].excl {
				if firstExcl < 0 {
					firstExcl = si
				}
				continue
			}
			if b := items[t].pfx.Bits(); b > bestBits {
				best, bestBits = si, b
			}
		}
		start = end
		if best < 0 {
			out = append(out, tmplEntry{dest: k, val: ExcludedValue, owner: r.pols[sel[firstExcl]].Name})
			continue
		}
		val := r.vals[sel[best]]
		for si := best + 1; si < len(top); si++ {
			t := top[si]
			if t < 0 || items[t].excl || items[t].pfx.Bits() != bestBits || r.vals[sel[si]] == val {
				continue
			}
			pending = append(pending, Conflict{
				Reason: ReasonOverlappingPolicies,
				Winner: r.pols[sel[best]].Name,
				Loser:  r.pols[sel[si]].Name,
				CIDR:   items[t].pfx,
			})
		}
		out = append(out, tmplEntry{dest: k, val: val, owner: r.pols[sel[best]].Name})
	}
	for len(open) > 0 {
		closeTop()
	}
	slices.SortFunc(conflicts, Conflict.compare)
	return out, conflicts
}
