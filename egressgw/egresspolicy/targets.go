package egresspolicy

import (
	"encoding/binary"
	"net/netip"
)

// Target is one map entry of an endpoint without its source IP: a
// destination CIDR, its value and the policy that owns it (see Entry).
type Target struct {
	Dest netip.Prefix
	Value
	Policy string
}

// Entry returns the map entry of t for source src.
func (t Target) Entry(src netip.Addr) Entry {
	return Entry{Key: Key{Source: src, Dest: t.Dest}, Value: t.Value, Policy: t.Policy}
}

// Resolver resolves endpoints one at a time against fixed policies and
// gateways, as Resolve does. Endpoints that the same policies select (with
// the same spread pick) get the same targets, so it computes them once and
// returns the same slice to all of them: an agent holding the targets of
// 100,000 endpoints over a few policies holds a few slices, not 100,000.
// The slices it returns are shared and must not be modified.
//
// A Resolver reads policies through pointers, so it is valid only while
// the policies slice it was built from is not modified. Not safe for
// concurrent use.
type Resolver struct {
	r     *resolver
	lv    labelView
	sel   []int
	key   []byte
	cache map[string]*resolved
}

type resolved struct {
	targets   []Target
	conflicts []Conflict
}

// NewResolver returns a Resolver for policies and gateways.
func NewResolver(policies []Policy, gateways map[string]Gateway) *Resolver {
	return &Resolver{r: newResolver(policies, gateways), cache: map[string]*resolved{}}
}

// Resolve returns what the package-level Resolve returns for ep, as the
// targets of ep's IP (sorted by destination) instead of entries. Both
// results are shared (see Resolver); nil for an endpoint that is not IPv4
// or that no policy selects.
func (s *Resolver) Resolve(ep *Endpoint) ([]Target, []Conflict) {
	if !ep.IP.Is4() {
		return nil, nil
	}
	s.sel = s.r.selecting(ep, &s.lv, s.sel[:0])
	s.lv = labelView{} // keep no reference to the endpoint's labels
	if len(s.sel) == 0 {
		return nil, nil
	}
	s.key = s.key[:0]
	for _, i := range s.sel {
		s.key = binary.AppendUvarint(s.key, uint64(i))
		// A spreading policy's value depends on the endpoint.
		s.key = binary.AppendUvarint(s.key, uint64(s.r.picks[i]))
	}
	if res, ok := s.cache[string(s.key)]; ok {
		return res.targets, res.conflicts
	}
	tmpl, conflicts := s.r.resolve(s.sel)
	targets := make([]Target, len(tmpl))
	for i, t := range tmpl {
		targets[i] = Target{Dest: t.dest, Value: t.val, Policy: t.owner}
	}
	if len(conflicts) == 0 {
		conflicts = nil
	}
	s.cache[string(s.key)] = &resolved{targets: targets, conflicts: conflicts}
	return targets, conflicts
}
