package egresspolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
)

// PolicyFromObject converts an EgressGatewayPolicy. It is lenient: what it
// cannot use (an unparsable or IPv6 CIDR, a selector that is invalid or has
// neither podSelector nor namespaceSelector) is left out and described in
// the returned error, and the rest of the policy is still returned and
// usable. The CRD refuses all of these; the checks guard against objects
// written before validation or by a newer CRD. CIDRs with host bits set are
// masked.
func PolicyFromObject(obj *v1alpha1.EgressGatewayPolicy) (Policy, error) {
	p := Policy{Name: obj.Name, Gateway: obj.Spec.EgressGatewayName}
	var errs []error
	var v6 []string

	parse := func(field string, cidrs []v1alpha1.IPv4CIDR) []netip.Prefix {
		out := make([]netip.Prefix, 0, len(cidrs))
		for i, c := range cidrs {
			pfx, err := netip.ParsePrefix(strings.TrimSpace(string(c)))
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("%s[%d] %q is not a CIDR, ignored", field, i, c))
			case !pfx.Addr().Is4():
				v6 = append(v6, fmt.Sprintf("%s[%d] %s", field, i, c))
			default:
				out = append(out, pfx.Masked())
			}
		}
		return out
	}
	p.Destinations = parse("destinationCIDRs", obj.Spec.DestinationCIDRs)
	p.Exclusions = parse("excludedCIDRs", obj.Spec.ExcludedCIDRs)
	if len(v6) > 0 {
		errs = append(errs, fmt.Errorf("IPv6 is not supported, ignored: %s", strings.Join(v6, ", ")))
	}
	if len(p.Destinations) == 0 {
		errs = append(errs, errors.New("no usable IPv4 destinationCIDRs: the policy sends no traffic to the gateway"))
	}

	for i, s := range obj.Spec.Selectors {
		sel, err := NewSelector(s.PodSelector, s.NamespaceSelector)
		if err != nil {
			errs = append(errs, fmt.Errorf("selectors[%d] ignored: %w", i, err))
			continue
		}
		p.Selectors = append(p.Selectors, sel)
	}
	return p, errors.Join(errs...)
}

// NewSelector converts one spec.selectors entry with Cilium's semantics:
// podSelector is matched against the identity labels, namespaceSelector
// against the namespace labels (io.cilium.k8s.namespace.labels.<key>), both
// must match when both are set, an empty namespaceSelector selects every
// namespace and an empty podSelector every pod. Unlike Cilium, the
// namespace keys are not validated with the prefix prepended, so a long
// namespace label key still works.
func NewSelector(pod, ns *metav1.LabelSelector) (Selector, error) {
	var s Selector
	if pod == nil && ns == nil {
		return s, errors.New("neither podSelector nor namespaceSelector is set")
	}
	if pod != nil {
		sel, err := metav1.LabelSelectorAsSelector(pod)
		if err != nil {
			return s, fmt.Errorf("podSelector: %w", err)
		}
		s.Pod = sel
	}
	if ns != nil {
		sel, err := metav1.LabelSelectorAsSelector(ns)
		if err != nil {
			return s, fmt.Errorf("namespaceSelector: %w", err)
		}
		s.Namespace = sel
		s.AnyNamespace = len(ns.MatchLabels)+len(ns.MatchExpressions) == 0
	}
	return s, nil
}

// GatewayFromObject takes what the map needs from an EgressGateway's
// status. The egress IP is status.egressIP; in VirtualIPAddress mode, while
// status.egressIP is empty, the virtual IP of the spec. An address that
// cannot be used is left invalid (the gateway is then not Active, or has no
// egress IP) and described in the error.
func GatewayFromObject(obj *v1alpha1.EgressGateway) (Gateway, error) {
	st := &obj.Status
	g := Gateway{Name: obj.Name, ActiveNode: st.ActiveNodeName}
	var errs []error

	addr := func(field, s string) netip.Addr {
		if s == "" {
			return netip.Addr{}
		}
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || !usableIPv4(a) {
			errs = append(errs, fmt.Errorf("%s %q is not a usable IPv4 address", field, s))
			return netip.Addr{}
		}
		return a
	}
	if st.ActiveNodeName != "" {
		g.GatewayIP = addr("status.activeNodeInternalIP", st.ActiveNodeInternalIP)
		if st.ActiveNodeInternalIP == "" {
			errs = append(errs, fmt.Errorf("status.activeNodeInternalIP is empty although active node is %q", st.ActiveNodeName))
		}
	}
	egress, field := st.EgressIP, "status.egressIP"
	if egress == "" && obj.Spec.SourceIP.Mode == v1alpha1.SourceIPModeVirtualIP && obj.Spec.SourceIP.VirtualIPAddress != nil {
		egress, field = string(obj.Spec.SourceIP.VirtualIPAddress.IP), "spec.sourceIP.virtualIPAddress.ip"
	}
	g.EgressIP = addr(field, egress)
	return g, errors.Join(errs...)
}
