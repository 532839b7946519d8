package cegp

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"

	"github.com/egressha/egressha/egressgw/egresspolicy"
)

// PolicyFromObject converts a CiliumEgressGatewayPolicy into the
// representation egressgw/egresspolicy computes entries from (named
// PolicyPrefix+name, Spreads set, Spread left for Values to fill) and its
// gateway entries. Like egresspolicy.PolicyFromObject it is lenient: unusable
// CIDRs and selectors are left out and described in the error. IPv6 CIDRs
// (the spec's examples list ::/0) are left out silently: egressha programs
// the IPv4 map only. A broken gateway entry makes the entries nil (the
// policy then drops, as it has no gateway).
func PolicyFromObject(obj *ciliumv2.CiliumEgressGatewayPolicy) (egresspolicy.Policy, []GatewayEntry, error) {
	p := egresspolicy.Policy{Name: PolicyPrefix + obj.Name, Spreads: true}
	var errs []error
	parse := func(field string, cidrs []ciliumv2.CIDR) []netip.Prefix {
		var out []netip.Prefix
		for i, c := range cidrs {
			pfx, err := netip.ParsePrefix(strings.TrimSpace(string(c)))
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("%s[%d] %q is not a CIDR, ignored", field, i, c))
			case pfx.Addr().Is4():
				out = append(out, pfx.Masked())
			}
		}
		return out
	}
	p.Destinations = parse("destinationCIDRs", obj.Spec.DestinationCIDRs)
	p.Exclusions = parse("excludedCIDRs", obj.Spec.ExcludedCIDRs)
	if len(p.Destinations) == 0 {
		errs = append(errs, errors.New("no usable IPv4 destinationCIDRs: the policy sends no traffic to a gateway"))
	}
	for i, s := range obj.Spec.Selectors {
		if s.NodeSelector != nil {
			ns, err := metav1.LabelSelectorAsSelector(ToMetaSelector(s.NodeSelector))
			if err != nil {
				errs = append(errs, fmt.Errorf("selectors[%d].nodeSelector ignored: %w", i, err))
			} else {
				p.NodeSelectors = append(p.NodeSelectors, ns)
			}
		}
		sel, err := egresspolicy.NewSelector(ToMetaSelector(s.PodSelector), ToMetaSelector(s.NamespaceSelector))
		if err != nil {
			errs = append(errs, fmt.Errorf("selectors[%d] ignored: %w", i, err))
			continue
		}
		p.Selectors = append(p.Selectors, sel)
	}
	entries, err := GatewayEntries(&obj.Spec)
	if err != nil {
		errs = append(errs, err)
	}
	return p, entries, errors.Join(errs...)
}

// NodeSelectorsMatch reports whether a node with these labels matches the
// nodeSelector of any gateway entry: such a node is a candidate and must
// renew its heartbeat.
func NodeSelectorsMatch(entries []GatewayEntry, nodeLabels map[string]string) bool {
	for _, e := range entries {
		if e.NodeSelector != nil && e.NodeSelector.Matches(labels.Set(nodeLabels)) {
			return true
		}
	}
	return false
}

// Resolver resolves the egress IP of a gateway entry on the local node, as
// Cilium v1.18 does: egressIP must be on a local device, interface gives
// its first IPv4, neither the first IPv4 of the IPv4 default route's
// interface.
type Resolver func(GatewayEntry) (netip.Addr, error)

// Values returns the map values of a policy's gateway entries that have a
// serving node, sorted by gateway IP as upstream sorts them, for
// egresspolicy.Policy.Spread: gateway IP = the serving node's InternalIP; egress
// IP = on the serving node itself what resolve gives (0.0.0.0, which makes
// the gateway drop, when it fails, as upstream), on every other node
// 0.0.0.0 (upstream programs no egress IP there; only the gateway node
// reads it). errs has one error per failed local resolution.
func Values(sels []EntrySelection, entries []GatewayEntry, localNode string, resolve Resolver) ([]egresspolicy.Value, []error) {
	var out []egresspolicy.Value
	var errs []error
	for _, s := range sels {
		gw, err := netip.ParseAddr(s.InternalIP)
		if s.Node == "" || err != nil || !gw.Is4() {
			continue
		}
		v := egresspolicy.Value{GatewayIP: gw, EgressIP: egresspolicy.EgressIPNotFound}
		if s.Node == localNode && resolve != nil {
			i := slices.IndexFunc(entries, func(e GatewayEntry) bool { return e.Index == s.Index })
			if i < 0 {
				errs = append(errs, fmt.Errorf("gateway entry %d: not in the policy's spec", s.Index))
			} else if ip, err := resolve(entries[i]); err != nil {
				errs = append(errs, fmt.Errorf("gateway entry %d: %w", s.Index, err))
			} else if ip.Is4() {
				v.EgressIP = ip
			}
		}
		out = append(out, v)
	}
	slices.SortStableFunc(out, func(a, b egresspolicy.Value) int { return a.GatewayIP.Compare(b.GatewayIP) })
	return out, errs
}
