package cegp

import (
	"net/netip"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	slimv1 "github.com/cilium/cilium/pkg/k8s/slim/k8s/apis/meta/v1"
)

// checkPrefixes: every accepted prefix is a canonical IPv4 prefix (valid,
// IPv4, host bits clear), the masked form of the input CIDR.
func checkPrefixes(t *testing.T, field string, got []netip.Prefix, in string) {
	t.Helper()
	for _, p := range got {
		q, err := netip.ParsePrefix(strings.TrimSpace(in))
		if !p.IsValid() || !p.Addr().Is4() || p != p.Masked() || err != nil || q.Masked() != p {
			t.Fatalf("%s: accepted %v from %q, not its canonical IPv4 prefix", field, p, in)
		}
	}
}

// FuzzPolicyConversion: converting a CiliumEgressGatewayPolicy's CIDRs,
// selectors and gateway entry never panics; accepted CIDRs are canonical
// IPv4; an accepted node selector matches the labels it names; what is
// rejected is named, with its field, in the error.
func FuzzPolicyConversion(f *testing.F) {
	f.Add("10.0.0.0/8", "10.1.0.0/16", "app", "backend", "In", "egress", "", "203.0.113.1")
	f.Add(" 192.0.2.1/24 ", "", "app", "", "Exists", "kubernetes.io/hostname", "eth1", "")
	f.Add("::/0", "2001:db8::/32", "k", "v", "NotIn", "n", "", "2001:db8::1")
	f.Add("not-a-cidr", "10.0.0.0/33", "-bad key", "v", "Bogus", "", "eth1", "203.0.113.1")
	f.Add("0.0.0.0/0", "1.2.3.4/32", "example.com/app", strings.Repeat("v", 64), "DoesNotExist", "a/b/c", "", "1.2.3")
	f.Add("", "", "", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, dst, excl, key, value, op, nodeKey, iface, egressIP string) {
		pod := &slimv1.LabelSelector{
			MatchLabels: map[string]string{key: value},
			MatchExpressions: []slimv1.LabelSelectorRequirement{{
				Key: key, Operator: slimv1.LabelSelectorOperator(op), Values: []string{value},
			}},
		}
		nodeSel := &slimv1.LabelSelector{MatchLabels: map[string]string{nodeKey: value}}
		obj := &ciliumv2.CiliumEgressGatewayPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"}}
		obj.Spec.DestinationCIDRs = []ciliumv2.CIDR{ciliumv2.CIDR(dst)}
		obj.Spec.ExcludedCIDRs = []ciliumv2.CIDR{ciliumv2.CIDR(excl)}
		obj.Spec.Selectors = []ciliumv2.EgressRule{{PodSelector: pod, NodeSelector: nodeSel}}
		obj.Spec.EgressGateway = &ciliumv2.EgressGateway{NodeSelector: nodeSel, Interface: iface, EgressIP: egressIP}

		p, entries, err := PolicyFromObject(obj)
		if p.Name != PolicyPrefix+"p" || !p.Spreads {
			t.Fatalf("policy lost its name or Spreads: %+v", p)
		}
		checkPrefixes(t, "destinationCIDRs", p.Destinations, dst)
		checkPrefixes(t, "excludedCIDRs", p.Exclusions, excl)
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if len(p.Destinations) == 0 && !strings.Contains(msg, "destinationCIDRs") {
			t.Fatalf("destination %q rejected without naming destinationCIDRs: %q", dst, msg)
		}
		// IPv6 exclusions are left out silently, as upstream; anything
		// else unusable is named.
		if _, perr := netip.ParsePrefix(strings.TrimSpace(excl)); perr != nil && !strings.Contains(msg, "excludedCIDRs[0]") {
			t.Fatalf("exclusion %q rejected without naming excludedCIDRs[0]: %q", excl, msg)
		}
		if len(p.Selectors) == 0 && !strings.Contains(msg, "selectors[0]") {
			t.Fatalf("selector rejected without naming selectors[0]: %q", msg)
		}
		want := labels.Set{nodeKey: value}
		switch len(p.NodeSelectors) {
		case 0:
			if !strings.Contains(msg, "selectors[0].nodeSelector") {
				t.Fatalf("node selector rejected without naming selectors[0].nodeSelector: %q", msg)
			}
		case 1:
			if !p.NodeSelectors[0].Matches(want) {
				t.Fatalf("accepted node selector %s does not match %v", p.NodeSelectors[0], want)
			}
		}
		switch {
		case entries == nil:
			if !strings.Contains(msg, "gateway entry 0") {
				t.Fatalf("gateway entry rejected without naming it: %q", msg)
			}
		case len(entries) != 1:
			t.Fatalf("%d entries from one", len(entries))
		default:
			e := entries[0]
			if iface != "" && egressIP != "" {
				t.Fatalf("entry with both interface and egressIP accepted: %+v", e)
			}
			if e.Interface != iface || e.EgressIP.IsValid() != (egressIP != "") || !e.NodeSelector.Matches(want) {
				t.Fatalf("entry %+v does not say what the spec does (interface %q, egressIP %q, labels %v)", e, iface, egressIP, want)
			}
		}
	})
}
