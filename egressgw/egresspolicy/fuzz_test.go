package egresspolicy

import (
	"net/netip"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
)

// checkPrefixes: every accepted prefix is a canonical IPv4 prefix (valid,
// IPv4, host bits clear), the masked form of an input CIDR.
func checkPrefixes(t *testing.T, field string, got []netip.Prefix, in []string) {
	t.Helper()
	for _, p := range got {
		if !p.IsValid() || !p.Addr().Is4() || p != p.Masked() {
			t.Fatalf("%s: accepted %v, not a canonical IPv4 prefix", field, p)
		}
		found := false
		for _, s := range in {
			if q, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil && q.Masked() == p {
				found = true
			}
		}
		if !found {
			t.Fatalf("%s: accepted %v, which no input %q spells", field, p, in)
		}
	}
}

// FuzzPolicyConversion: converting an EgressGatewayPolicy's CIDRs and
// selectors never panics; what is accepted is canonical IPv4; what is
// rejected is named, with its field, in the error.
func FuzzPolicyConversion(f *testing.F) {
	f.Add("10.0.0.0/8", "10.1.0.0/16", "app", "backend", "In", "team")
	f.Add(" 192.0.2.1/24 ", "", "app", "", "Exists", "")
	f.Add("2001:db8::/32", "::ffff:10.0.0.0/104", "k", "v", "NotIn", "ns")
	f.Add("not-a-cidr", "10.0.0.0/33", "-bad key", "v", "Bogus", "")
	f.Add("0.0.0.0/0", "1.2.3.4/32", "example.com/app", strings.Repeat("v", 64), "DoesNotExist", "kubernetes.io/metadata.name")
	f.Add("", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, dst, excl, key, value, op, nsKey string) {
		pod := &metav1.LabelSelector{
			MatchLabels: map[string]string{key: value},
			MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: key, Operator: metav1.LabelSelectorOperator(op), Values: []string{value},
			}},
		}
		var ns *metav1.LabelSelector
		if nsKey != "" {
			ns = &metav1.LabelSelector{MatchLabels: map[string]string{nsKey: value}}
		}
		obj := &v1alpha1.EgressGatewayPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"}}
		obj.Spec.EgressGatewayName = "gw"
		obj.Spec.DestinationCIDRs = []v1alpha1.IPv4CIDR{v1alpha1.IPv4CIDR(dst)}
		obj.Spec.ExcludedCIDRs = []v1alpha1.IPv4CIDR{v1alpha1.IPv4CIDR(excl)}
		obj.Spec.Selectors = []v1alpha1.EgressGatewayPolicySelector{{PodSelector: pod, NamespaceSelector: ns}}

		p, err := PolicyFromObject(obj)
		if p.Name != "p" || p.Gateway != "gw" {
			t.Fatalf("policy lost its name or gateway: %+v", p)
		}
		checkPrefixes(t, "destinationCIDRs", p.Destinations, []string{dst})
		checkPrefixes(t, "excludedCIDRs", p.Exclusions, []string{excl})
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if len(p.Destinations) == 0 && !strings.Contains(msg, "destinationCIDRs[0]") {
			t.Fatalf("destination %q rejected without naming destinationCIDRs[0]: %q", dst, msg)
		}
		if len(p.Exclusions) == 0 && !strings.Contains(msg, "excludedCIDRs[0]") {
			t.Fatalf("exclusion %q rejected without naming excludedCIDRs[0]: %q", excl, msg)
		}
		switch len(p.Selectors) {
		case 0:
			if !strings.Contains(msg, "selectors[0]") {
				t.Fatalf("selector rejected without naming selectors[0]: %q", msg)
			}
		case 1:
			if s := p.Selectors[0]; s.Pod == nil || (ns != nil) != (s.Namespace != nil) {
				t.Fatalf("accepted selector lost a part: %+v", s)
			}
			if strings.Contains(msg, "selectors[0]") {
				t.Fatalf("selector accepted and named in the error: %q", msg)
			}
		default:
			t.Fatalf("%d selectors from one", len(p.Selectors))
		}
	})
}
