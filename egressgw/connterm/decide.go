package connterm

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/egressha/egressha/egressgw/egresspolicy"
)

// SNATSource is what a map value says about the source address that a
// connection of the pod has after SNAT, i.e. the address the server knows
// it by.
//
// The value on the pod's node does not always carry that address: in basic
// mode a node that has the gateway's interface programs its own address
// there (entries.localEgressIPs), not the active node's, and a
// CiliumEgressGatewayPolicy's egress IP is 0.0.0.0 on every node but the
// serving one. The address is exact only when Addr is valid; otherwise the
// source is "the gateway node's own address", known by Gateway.
type SNATSource struct {
	// Addr is the SNAT address (a virtual IP, or the active node's
	// address as its status publishes it); invalid when not known here.
	Addr netip.Addr
	// Gateway is the gateway node's IP (the map value's gateway IP).
	Gateway netip.Addr
}

// Same reports whether connections that left with s still work with o:
// both exact and the same address, or, when either is not exact, the same
// gateway node (whose own address they then have).
func (s SNATSource) Same(o SNATSource) bool {
	if s.Addr.IsValid() && o.Addr.IsValid() {
		return s.Addr == o.Addr
	}
	return s.Gateway == o.Gateway
}

func (s SNATSource) String() string {
	if s.Addr.IsValid() {
		return s.Addr.String()
	}
	return "the own address of gateway " + s.Gateway.String()
}

// SourceOf returns the SNAT source of a map value; ok is false for a value
// without a real gateway (drop, excluded CIDR). localEgress holds this
// node's own addresses of basic-mode gateways (egress-local-gateways'
// LocalEgressIP): a value carrying one of them carries this node's
// substitute, not the gateway's address.
func SourceOf(v egresspolicy.Value, localEgress map[netip.Addr]bool) (SNATSource, bool) {
	if v.IsDrop() || v.IsExcluded() || !v.GatewayIP.IsValid() {
		return SNATSource{}, false
	}
	s := SNATSource{Gateway: v.GatewayIP}
	if v.EgressIP.IsValid() && v.EgressIP != egresspolicy.EgressIPNotFound && !localEgress[v.EgressIP] {
		s.Addr = v.EgressIP
	}
	return s, true
}

// Termination says which TCP connections of one pod IP to end: those with
// local address Source and a remote address whose longest match among the
// pod's destinations is Dest, i.e. inside Dest and in none of Except (the
// more specific destinations of the pod: excluded CIDRs, or CIDRs whose
// traffic goes elsewhere).
type Termination struct {
	Source netip.Addr
	Dest   netip.Prefix
	Except []netip.Prefix
	// From and To are the SNAT sources before and after; Policy the
	// policy owning the new entry.
	From, To SNATSource
	Policy   string
}

// Matches reports whether a connection from local to remote is one t ends.
func (t *Termination) Matches(local, remote netip.Addr) bool {
	if local != t.Source || !t.Dest.Contains(remote) {
		return false
	}
	for _, e := range t.Except {
		if e.Contains(remote) {
			return false
		}
	}
	return true
}

// Reason is the decision in words, for the log.
func (t *Termination) Reason() string {
	return fmt.Sprintf("egress source changed from %s to %s (gateway %s -> %s, policy %s)",
		t.From, t.To, t.From.Gateway, t.To.Gateway, t.Policy)
}

// Tracker decides, from the successive rows of egress-policy-entries of
// the pods it is told about, which connections can no longer work: it
// remembers, per pod IP and destination, the SNAT source of the last value
// with a real gateway. A value without one (drop: no active node; an
// excluded CIDR) keeps what is remembered, so a gateway that goes from
// node A to no node and later to node B ends A's connections when B takes
// over (they are dead either way, but only then will the pod's retries be
// answered). What is remembered for a destination goes when the pod's row
// stops having it (the policy no longer selects the pod, or no longer
// lists the destination): connections then leave as if there were no
// policy, which is nothing to terminate for, as in Cilium.
//
// It is pure (no I/O, no clock); not safe for concurrent use.
type Tracker struct {
	last map[netip.Addr]map[netip.Prefix]SNATSource
}

// NewTracker returns an empty Tracker.
func NewTracker() *Tracker {
	return &Tracker{last: map[netip.Addr]map[netip.Prefix]SNATSource{}}
}

// Update takes the current targets of source (nil: no row) and returns the
// terminations they imply, in destination order. localEgress: see
// SourceOf.
func (t *Tracker) Update(source netip.Addr, targets []egresspolicy.Target, localEgress map[netip.Addr]bool) []Termination {
	prev := t.last[source]
	if len(targets) == 0 {
		delete(t.last, source)
		return nil
	}
	next := make(map[netip.Prefix]SNATSource, len(targets))
	var out []Termination
	for _, tg := range targets {
		old, hadOld := prev[tg.Dest]
		cur, real := SourceOf(tg.Value, localEgress)
		if !real {
			if hadOld {
				next[tg.Dest] = old
			}
			continue
		}
		next[tg.Dest] = cur
		if !hadOld || old.Same(cur) {
			continue
		}
		out = append(out, Termination{
			Source: source, Dest: tg.Dest, Except: moreSpecific(targets, tg.Dest),
			From: old, To: cur, Policy: tg.Policy,
		})
	}
	if len(next) == 0 {
		delete(t.last, source)
	} else {
		t.last[source] = next
	}
	return out
}

// Forget drops what is remembered of source (not a local pod any more).
func (t *Tracker) Forget(source netip.Addr) { delete(t.last, source) }

// Sources returns the pod IPs with something remembered, sorted.
func (t *Tracker) Sources() []netip.Addr {
	return slices.SortedFunc(maps.Keys(t.last), netip.Addr.Compare)
}

// moreSpecific returns the destinations of targets strictly inside d.
func moreSpecific(targets []egresspolicy.Target, d netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, tg := range targets {
		if tg.Dest.Bits() > d.Bits() && d.Contains(tg.Dest.Addr()) {
			out = append(out, tg.Dest)
		}
	}
	return out
}
