package egresspolicy

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
)

var (
	gwA = Gateway{Name: "gw-a", ActiveNode: "egress-1", GatewayIP: netip.MustParseAddr("192.168.0.21"), EgressIP: netip.MustParseAddr("172.18.18.21")}
	gwB = Gateway{Name: "gw-b", ActiveNode: "egress-2", GatewayIP: netip.MustParseAddr("192.168.0.22"), EgressIP: netip.MustParseAddr("172.18.18.22")}
	gwC = Gateway{Name: "gw-c", ActiveNode: "egress-3", GatewayIP: netip.MustParseAddr("192.168.0.23"), EgressIP: netip.MustParseAddr("172.18.18.23")}
	// gwDown exists but has no active node.
	gwDown   = Gateway{Name: "gw-down"}
	gateways = map[string]Gateway{"gw-a": gwA, "gw-b": gwB, "gw-c": gwC, "gw-down": gwDown}

	valA = gwA.Value()
	valB = gwB.Value()
	valC = gwC.Value()
)

func sel(t testing.TB, pod, ns *metav1.LabelSelector) Selector {
	t.Helper()
	s, err := NewSelector(pod, ns)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func match(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

// all is a selector matching every pod.
func all(t testing.TB) []Selector { return []Selector{sel(t, &metav1.LabelSelector{}, nil)} }

func pod(ip string, kv ...string) Endpoint {
	ep := Endpoint{IP: netip.MustParseAddr(ip), Namespace: "default", Labels: map[string]string{PodNamespaceLabel: "default"}}
	for i := 0; i < len(kv); i += 2 {
		ep.Labels[kv[i]] = kv[i+1]
	}
	return ep
}

func TestSelectorMatching(t *testing.T) {
	nsExpr := func(key string, op metav1.LabelSelectorOperator, vals ...string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: vals}}}
	}
	longKey := "example.com/" + strings.Repeat("k", 60)
	longPlain := strings.Repeat("x", 50) // too long once prefixed, as Cilium would validate it
	tests := []struct {
		name    string
		pod, ns *metav1.LabelSelector
		ep      Endpoint
		want    bool
	}{
		{"empty podSelector matches every pod", &metav1.LabelSelector{}, nil, Endpoint{Labels: map[string]string{"app": "x"}}, true},
		{"empty podSelector matches a pod without labels", &metav1.LabelSelector{}, nil, Endpoint{}, true},
		{"podSelector matchLabels", match("app", "backend"), nil, Endpoint{Labels: map[string]string{"app": "backend"}}, true},
		{"podSelector mismatch", match("app", "backend"), nil, Endpoint{Labels: map[string]string{"app": "frontend"}}, false},
		{"pod namespace via identity label", match(PodNamespaceLabel, "my-ns"), nil,
			Endpoint{Labels: map[string]string{PodNamespaceLabel: "my-ns"}}, true},
		{"pod namespace via Namespace when the label is missing", match(PodNamespaceLabel, "my-ns"), nil,
			Endpoint{Namespace: "my-ns"}, true},
		{"identity label wins over Namespace", match(PodNamespaceLabel, "my-ns"), nil,
			Endpoint{Namespace: "my-ns", Labels: map[string]string{PodNamespaceLabel: "other"}}, false},
		{"namespaceSelector matchLabels", nil, match("team", "x"),
			Endpoint{Labels: map[string]string{NamespaceLabelPrefix + "team": "x"}}, true},
		{"namespaceSelector does not see pod labels", nil, match("team", "x"),
			Endpoint{Labels: map[string]string{"team": "x"}}, false},
		{"namespaceSelector NotIn", nil, nsExpr("env", metav1.LabelSelectorOpNotIn, "prod"),
			Endpoint{Labels: map[string]string{NamespaceLabelPrefix + "env": "dev"}}, true},
		{"namespaceSelector DoesNotExist", nil, nsExpr("env", metav1.LabelSelectorOpDoesNotExist),
			Endpoint{Labels: map[string]string{NamespaceLabelPrefix + "env": "dev"}}, false},
		{"namespaceSelector Exists", nil, nsExpr("env", metav1.LabelSelectorOpExists),
			Endpoint{Labels: map[string]string{NamespaceLabelPrefix + "env": "dev"}}, true},
		{"namespaceSelector with a prefixed key", nil, match("kubernetes.io/metadata.name", "shop"),
			Endpoint{Labels: map[string]string{NamespaceLabelPrefix + "kubernetes.io/metadata.name": "shop"}}, true},
		{"namespaceSelector with a long key", nil, match(longKey, "v"),
			Endpoint{Labels: map[string]string{NamespaceLabelPrefix + longKey: "v"}}, true},
		{"namespaceSelector with a long plain key", nil, match(longPlain, "v"),
			Endpoint{Labels: map[string]string{NamespaceLabelPrefix + longPlain: "v"}}, true},
		{"empty namespaceSelector: any namespace", nil, &metav1.LabelSelector{},
			Endpoint{Labels: map[string]string{PodNamespaceLabel: "a"}}, true},
		{"empty namespaceSelector: Namespace counts", nil, &metav1.LabelSelector{}, Endpoint{Namespace: "a"}, true},
		{"empty namespaceSelector: no namespace, no match", nil, &metav1.LabelSelector{}, Endpoint{Labels: map[string]string{"app": "x"}}, false},
		{"pod AND namespace: both match", match("app", "api"), match("env", "prod"),
			Endpoint{Labels: map[string]string{"app": "api", NamespaceLabelPrefix + "env": "prod"}}, true},
		{"pod AND namespace: pod fails", match("app", "api"), match("env", "prod"),
			Endpoint{Labels: map[string]string{"app": "web", NamespaceLabelPrefix + "env": "prod"}}, false},
		{"pod AND namespace: namespace fails", match("app", "api"), match("env", "prod"),
			Endpoint{Labels: map[string]string{"app": "api", NamespaceLabelPrefix + "env": "dev"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sel(t, tt.pod, tt.ns)
			lv := &labelView{m: tt.ep.Labels, ns: tt.ep.Namespace}
			if got := s.matches(lv); got != tt.want {
				t.Fatalf("matches = %v, want %v", got, tt.want)
			}
		})
	}
	if (&Selector{}).matches(&labelView{}) {
		t.Fatal("a Selector with no field set must match nothing")
	}
	if _, err := NewSelector(nil, nil); err == nil {
		t.Fatal("NewSelector(nil, nil) must fail")
	}
}

func TestPolicyFromObject(t *testing.T) {
	obj := &v1alpha1.EgressGatewayPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: v1alpha1.EgressGatewayPolicySpec{
			EgressGatewayName: "gw-a",
			DestinationCIDRs:  []v1alpha1.IPv4CIDR{"10.1.2.3/8", "0.0.0.0/0", "2001:db8::/32", "bogus"},
			ExcludedCIDRs:     []v1alpha1.IPv4CIDR{"192.168.1.0/24", "fd00::/8"},
			Selectors: []v1alpha1.EgressGatewayPolicySelector{
				{PodSelector: match("app", "a")},
				{},
				{PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Bad"}}}},
				{NamespaceSelector: &metav1.LabelSelector{}},
			},
		},
	}
	p, err := PolicyFromObject(obj)
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{
		`destinationCIDRs[3] "bogus" is not a CIDR`,
		"IPv6 is not supported, ignored: destinationCIDRs[2] 2001:db8::/32, excludedCIDRs[1] fd00::/8",
		"selectors[1] ignored: neither podSelector nor namespaceSelector is set",
		`selectors[2] ignored: podSelector: "Bad" is not a valid label selector operator`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if p.Name != "p" || p.Gateway != "gw-a" {
		t.Errorf("name/gateway = %q/%q", p.Name, p.Gateway)
	}
	if want := mustPrefixes("10.0.0.0/8", "0.0.0.0/0"); !slices.Equal(p.Destinations, want) {
		t.Errorf("destinations = %v, want %v (masked, IPv6 and junk left out)", p.Destinations, want)
	}
	if want := mustPrefixes("192.168.1.0/24"); !slices.Equal(p.Exclusions, want) {
		t.Errorf("exclusions = %v, want %v", p.Exclusions, want)
	}
	if len(p.Selectors) != 2 || !p.Selectors[1].AnyNamespace {
		t.Errorf("selectors = %+v, want the two valid ones", p.Selectors)
	}

	// A valid object converts without error.
	obj.Spec.DestinationCIDRs = []v1alpha1.IPv4CIDR{"0.0.0.0/0"}
	obj.Spec.ExcludedCIDRs = nil
	obj.Spec.Selectors = obj.Spec.Selectors[:1]
	if _, err := PolicyFromObject(obj); err != nil {
		t.Fatalf("valid policy: %v", err)
	}
	// Only IPv6 destinations: nothing left to send.
	obj.Spec.DestinationCIDRs = []v1alpha1.IPv4CIDR{"2001:db8::/32"}
	if _, err := PolicyFromObject(obj); err == nil || !strings.Contains(err.Error(), "no usable IPv4 destinationCIDRs") {
		t.Fatalf("IPv6-only policy: %v", err)
	}
}

func TestGatewayFromObject(t *testing.T) {
	vip := func(ip string) v1alpha1.EgressGatewaySpec {
		return v1alpha1.EgressGatewaySpec{SourceIP: v1alpha1.SourceIP{Mode: v1alpha1.SourceIPModeVirtualIP,
			VirtualIPAddress: &v1alpha1.VirtualIPAddress{IP: v1alpha1.IPv4Address(ip)}}}
	}
	tests := []struct {
		name      string
		spec      v1alpha1.EgressGatewaySpec
		status    v1alpha1.EgressGatewayStatus
		want      Value
		active    bool
		errSubstr string
	}{
		{"basic mode", v1alpha1.EgressGatewaySpec{},
			v1alpha1.EgressGatewayStatus{ActiveNodeName: "n1", ActiveNodeInternalIP: "192.168.0.21", EgressIP: "172.18.18.21"},
			Value{netip.MustParseAddr("172.18.18.21"), netip.MustParseAddr("192.168.0.21")}, true, ""},
		{"no active node", v1alpha1.EgressGatewaySpec{}, v1alpha1.EgressGatewayStatus{EgressIP: "172.18.18.21"}, DropValue, false, ""},
		{"internal IP but no active node name", v1alpha1.EgressGatewaySpec{},
			v1alpha1.EgressGatewayStatus{ActiveNodeInternalIP: "192.168.0.21", EgressIP: "172.18.18.21"}, DropValue, false, ""},
		{"active node without InternalIP", v1alpha1.EgressGatewaySpec{},
			v1alpha1.EgressGatewayStatus{ActiveNodeName: "n1", EgressIP: "172.18.18.21"}, DropValue, false, "activeNodeInternalIP is empty"},
		{"InternalIP 0.0.0.1 would fail open: refused", v1alpha1.EgressGatewaySpec{},
			v1alpha1.EgressGatewayStatus{ActiveNodeName: "n1", ActiveNodeInternalIP: "0.0.0.1", EgressIP: "172.18.18.21"}, DropValue, false, "not a usable IPv4"},
		{"IPv6 InternalIP refused", v1alpha1.EgressGatewaySpec{},
			v1alpha1.EgressGatewayStatus{ActiveNodeName: "n1", ActiveNodeInternalIP: "fd00::1", EgressIP: "172.18.18.21"}, DropValue, false, "not a usable IPv4"},
		{"no egress IP yet", v1alpha1.EgressGatewaySpec{},
			v1alpha1.EgressGatewayStatus{ActiveNodeName: "n1", ActiveNodeInternalIP: "192.168.0.21"},
			Value{EgressIPNotFound, netip.MustParseAddr("192.168.0.21")}, true, ""},
		{"bad egress IP", v1alpha1.EgressGatewaySpec{},
			v1alpha1.EgressGatewayStatus{ActiveNodeName: "n1", ActiveNodeInternalIP: "192.168.0.21", EgressIP: "nope"},
			Value{EgressIPNotFound, netip.MustParseAddr("192.168.0.21")}, true, `status.egressIP "nope"`},
		{"VIP from status", vip("172.18.18.242"),
			v1alpha1.EgressGatewayStatus{ActiveNodeName: "n2", ActiveNodeInternalIP: "192.168.0.22", EgressIP: "172.18.18.242"},
			Value{netip.MustParseAddr("172.18.18.242"), netip.MustParseAddr("192.168.0.22")}, true, ""},
		{"VIP from spec while status has none", vip("172.18.18.243"),
			v1alpha1.EgressGatewayStatus{ActiveNodeName: "n2", ActiveNodeInternalIP: "192.168.0.22"},
			Value{netip.MustParseAddr("172.18.18.243"), netip.MustParseAddr("192.168.0.22")}, true, ""},
		{"status wins over spec VIP", vip("172.18.18.243"),
			v1alpha1.EgressGatewayStatus{ActiveNodeName: "n2", ActiveNodeInternalIP: "192.168.0.22", EgressIP: "172.18.18.242"},
			Value{netip.MustParseAddr("172.18.18.242"), netip.MustParseAddr("192.168.0.22")}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := GatewayFromObject(&v1alpha1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "gw"}, Spec: tt.spec, Status: tt.status})
			if (err != nil) != (tt.errSubstr != "") || (err != nil && !strings.Contains(err.Error(), tt.errSubstr)) {
				t.Fatalf("err = %v, want %q", err, tt.errSubstr)
			}
			if g.Name != "gw" || g.Active() != tt.active || g.Value() != tt.want {
				t.Fatalf("gateway %+v: active %v value %v, want %v %v", g, g.Active(), g.Value(), tt.active, tt.want)
			}
		})
	}
	// A Gateway built by hand with a special value as gateway IP fails closed.
	if v := (Gateway{ActiveNode: "n", GatewayIP: ExcludedCIDR}).Value(); v != DropValue {
		t.Fatalf("gateway IP 0.0.0.1 gives %v, want drop", v)
	}
}

func TestResolve(t *testing.T) {
	ep := pod("10.244.1.10", "app", "backend")
	P := func(name, gw string, dests, excls []string) Policy {
		return Policy{Name: name, Gateway: gw, Destinations: mustPrefixes(dests...), Exclusions: mustPrefixes(excls...), Selectors: all(t)}
	}
	type want struct {
		dest  string
		val   Value
		owner string
	}
	type wantConflict struct{ winner, loser, cidr string }
	tests := []struct {
		name      string
		policies  []Policy
		ep        Endpoint
		want      []want
		conflicts []wantConflict
	}{
		{
			name:     "one policy, one destination",
			policies: []Policy{P("p", "gw-a", []string{"0.0.0.0/0"}, nil)},
			want:     []want{{"0.0.0.0/0", valA, "p"}},
		},
		{
			name:     "not selected",
			policies: []Policy{{Name: "p", Gateway: "gw-a", Destinations: mustPrefixes("0.0.0.0/0"), Selectors: []Selector{sel(t, match("app", "x"), nil)}}},
		},
		{
			name:     "IPv6 endpoint",
			policies: []Policy{P("p", "gw-a", []string{"0.0.0.0/0"}, nil)},
			ep:       pod("fd00::10", "app", "backend"),
		},
		{
			name:     "gateway missing and gateway down fail closed; exclusions stay",
			policies: []Policy{P("p", "gw-missing", []string{"10.0.0.0/8"}, nil), P("q", "gw-down", []string{"0.0.0.0/0"}, []string{"192.168.0.0/16"})},
			want:     []want{{"0.0.0.0/0", DropValue, "q"}, {"10.0.0.0/8", DropValue, "p"}, {"192.168.0.0/16", ExcludedValue, "q"}},
		},
		{
			name:     "a destination equal to an exclusion of the same policy is excluded",
			policies: []Policy{P("p", "gw-a", []string{"0.0.0.0/0", "10.0.0.0/8"}, []string{"10.0.0.0/8"})},
			want:     []want{{"0.0.0.0/0", valA, "p"}, {"10.0.0.0/8", ExcludedValue, "p"}},
		},
		{
			name:     "duplicates, host bits and IPv6 in a hand-built policy",
			policies: []Policy{{Name: "p", Gateway: "gw-a", Destinations: mustPrefixes("10.1.2.3/8", "10.0.0.0/8", "2001:db8::/32"), Selectors: all(t)}},
			want:     []want{{"10.0.0.0/8", valA, "p"}},
		},
		{
			name: "exclusion takes the most specific covering destination among other policies",
			policies: []Policy{
				P("p", "gw-a", []string{"0.0.0.0/0"}, []string{"203.0.113.0/24"}),
				P("q1", "gw-b", []string{"0.0.0.0/0"}, nil),
				P("q2", "gw-c", []string{"203.0.0.0/16"}, nil),
			},
			want: []want{
				{"0.0.0.0/0", valA, "p"},
				{"203.0.0.0/16", valC, "q2"},
				{"203.0.113.0/24", valC, "q2"},
			},
			conflicts: []wantConflict{{"p", "q1", "0.0.0.0/0"}},
		},
		{
			name: "exclusion falls back to the other policy on the same key",
			policies: []Policy{
				P("p", "gw-a", []string{"0.0.0.0/0"}, []string{"0.0.0.0/0"}),
				P("q", "gw-b", []string{"0.0.0.0/0"}, nil),
			},
			want: []want{{"0.0.0.0/0", valB, "q"}},
		},
		{
			name: "an exclusion of the other policy that is wider still excludes",
			policies: []Policy{
				P("p", "gw-a", []string{"0.0.0.0/0"}, []string{"10.1.0.0/16"}),
				P("q", "gw-a", []string{"0.0.0.0/0"}, []string{"10.0.0.0/8"}),
			},
			want: []want{{"0.0.0.0/0", valA, "p"}, {"10.0.0.0/8", valA, "p"}, {"10.1.0.0/16", ExcludedValue, "p"}},
		},
		{
			name: "excluded by two policies: owner is the first by name",
			policies: []Policy{
				P("z", "gw-a", []string{"0.0.0.0/0"}, []string{"10.0.0.0/8"}),
				P("m", "gw-a", []string{"0.0.0.0/0"}, []string{"10.0.0.0/8"}),
			},
			want: []want{{"0.0.0.0/0", valA, "m"}, {"10.0.0.0/8", ExcludedValue, "m"}},
		},
		{
			name: "a destination narrower than the other policy's exclusion wins by LPM",
			policies: []Policy{
				P("p", "gw-a", []string{"0.0.0.0/0"}, []string{"10.0.0.0/8"}),
				P("q", "gw-b", []string{"10.1.0.0/16"}, nil),
			},
			want: []want{{"0.0.0.0/0", valA, "p"}, {"10.0.0.0/8", ExcludedValue, "p"}, {"10.1.0.0/16", valB, "q"}},
		},
		{
			name: "equal destination, different gateways: first name wins, conflict; third with the winner's value is fine",
			policies: []Policy{
				P("b", "gw-b", []string{"0.0.0.0/0"}, nil),
				P("c", "gw-a", []string{"0.0.0.0/0"}, nil),
				P("a", "gw-a", []string{"0.0.0.0/0"}, nil),
			},
			want:      []want{{"0.0.0.0/0", valA, "a"}},
			conflicts: []wantConflict{{"a", "b", "0.0.0.0/0"}},
		},
		{
			name: "the name order holds even when the winner's gateway is down",
			policies: []Policy{
				P("a", "gw-down", []string{"0.0.0.0/0"}, nil),
				P("b", "gw-b", []string{"0.0.0.0/0"}, nil),
			},
			want:      []want{{"0.0.0.0/0", DropValue, "a"}},
			conflicts: []wantConflict{{"a", "b", "0.0.0.0/0"}},
		},
		{
			name: "a tie no address reaches is no conflict",
			policies: []Policy{
				P("a", "gw-a", []string{"0.0.0.0/0"}, []string{"0.0.0.0/0"}), // sends nothing
				P("b", "gw-b", []string{"10.0.0.0/8"}, []string{"10.0.0.0/9"}),
				P("c", "gw-c", []string{"10.0.0.0/8"}, []string{"10.128.0.0/9"}),
			},
			// 10.0.0.0/8 is split into the two /9s: c gets one half, b the
			// other, each as it asks; the /8 entry is never the longest match.
			want: []want{
				{"0.0.0.0/0", ExcludedValue, "a"},
				{"10.0.0.0/8", valB, "b"},
				{"10.0.0.0/9", valC, "c"},
				{"10.128.0.0/9", valB, "b"},
			},
		},
		{
			name: "a tie that only shows under another policy's exclusions",
			policies: []Policy{
				P("a", "gw-a", []string{"10.0.0.0/8"}, nil),
				P("b", "gw-b", []string{"10.0.0.0/8"}, nil),
				P("c", "gw-c", []string{"1.0.0.0/8"}, []string{"10.0.0.0/9", "10.128.0.0/9"}),
			},
			want: []want{
				{"1.0.0.0/8", valC, "c"},
				{"10.0.0.0/8", valA, "a"},
				{"10.0.0.0/9", valA, "a"},
				{"10.128.0.0/9", valA, "a"},
			},
			conflicts: []wantConflict{{"a", "b", "10.0.0.0/8"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.ep
			if !e.IP.IsValid() {
				e = ep
			}
			entries, conflicts := Resolve(tt.policies, gateways, e)
			var got []want
			for _, en := range entries {
				if en.Source != e.IP {
					t.Fatalf("entry %v has another source", en)
				}
				got = append(got, want{en.Dest.String(), en.Value, en.Policy})
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("entries:\n got %v\nwant %v", got, tt.want)
			}
			var gotC []wantConflict
			for _, c := range conflicts {
				if c.Reason != ReasonOverlappingPolicies {
					t.Errorf("conflict reason %q", c.Reason)
				}
				gotC = append(gotC, wantConflict{c.Winner, c.Loser, c.CIDR.String()})
			}
			if !slices.Equal(gotC, tt.conflicts) {
				t.Errorf("conflicts:\n got %v\nwant %v", gotC, tt.conflicts)
			}
			checkInvariants(t, tt.policies, gateways, []Endpoint{e})
		})
	}
}

func TestComputeSharedIP(t *testing.T) {
	policies := []Policy{
		{Name: "a", Gateway: "gw-a", Destinations: mustPrefixes("0.0.0.0/0"), Selectors: []Selector{sel(t, match("app", "a"), nil)}},
		{Name: "b", Gateway: "gw-b", Destinations: mustPrefixes("0.0.0.0/0"), Selectors: []Selector{sel(t, match("app", "b"), nil)}},
	}
	// The same endpoint twice: identical entries, no conflict.
	e := pod("10.244.1.10", "app", "a")
	entries, conds := Compute(policies, gateways, []Endpoint{e, e})
	if len(entries) != 1 || conds["a"][1].Status != StatusFalse {
		t.Fatalf("duplicate identical endpoint: %v %v", entries, conds)
	}
	// Two endpoints on one IP needing different values: one entry, both
	// policies report it.
	entries, conds = Compute(policies, gateways, []Endpoint{pod("10.244.1.10", "app", "b"), pod("10.244.1.10", "app", "a"), pod("10.244.1.9", "app", "b")})
	if len(entries) != 2 || entries[1].Policy != "a" || entries[1].Value != valA || entries[0].Value != valB {
		t.Fatalf("entries:\n%s", FormatTable(entries))
	}
	for _, p := range []string{"a", "b"} {
		if c := conds[p][1]; c.Status != StatusTrue || c.Reason != ReasonDuplicateSourceIP || !strings.Contains(c.Message, "10.244.1.10") {
			t.Fatalf("%s: %+v", p, c)
		}
	}
}

func TestConditions(t *testing.T) {
	policies := []Policy{
		{Name: "a", Gateway: "gw-a"}, {Name: "b", Gateway: "gw-b"}, {Name: "down", Gateway: "gw-down"},
		{Name: "missing", Gateway: "gw-x"}, {Name: "noip", Gateway: "gw-noip"}, {Name: "badip", Gateway: "gw-badip"},
	}
	gws := map[string]Gateway{
		"gw-a": gwA, "gw-b": gwB, "gw-down": gwDown,
		"gw-noip":  {Name: "gw-noip", ActiveNode: "n", GatewayIP: netip.MustParseAddr("192.168.0.30")},
		"gw-badip": {Name: "gw-badip", ActiveNode: "n"},
	}
	var conflicts []Conflict
	for i := range 10 {
		conflicts = append(conflicts, Conflict{Reason: ReasonOverlappingPolicies, Winner: "a", Loser: "b",
			CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)})
	}
	conflicts = append(conflicts, Conflict{Reason: ReasonDuplicateSourceIP, Winner: "a", Loser: "down",
		CIDR: netip.MustParsePrefix("0.0.0.0/0"), Source: netip.MustParseAddr("10.244.0.1")})
	conds := Conditions(policies, gws, conflicts)

	check := func(p string, i int, typ, status, reason string, substr ...string) {
		t.Helper()
		c := conds[p][i]
		if c.Type != typ || c.Status != status || c.Reason != reason {
			t.Errorf("%s: %+v, want %s=%s %s", p, c, typ, status, reason)
		}
		for _, s := range substr {
			if !strings.Contains(c.Message, s) {
				t.Errorf("%s %s message %q lacks %q", p, typ, c.Message, s)
			}
		}
	}
	check("a", 0, ConditionReady, StatusTrue, ReasonReady, `"gw-a"`, `"egress-1"`, "192.168.0.21", "172.18.18.21")
	check("down", 0, ConditionReady, StatusFalse, ReasonGatewayNotReady, `"gw-down" has no active node`, "dropped")
	check("missing", 0, ConditionReady, StatusFalse, ReasonGatewayNotFound, `"gw-x" does not exist`)
	check("noip", 0, ConditionReady, StatusFalse, ReasonGatewayNotReady, "no egress IP")
	check("badip", 0, ConditionReady, StatusFalse, ReasonGatewayNotReady, "no usable IPv4 InternalIP")

	// a: 10 overlaps (message capped) and one duplicate IP; overlap is the reason.
	check("a", 1, ConditionConflict, StatusTrue, ReasonOverlappingPolicies, `policy "b"`, "this policy wins", "and 3 more")
	check("b", 1, ConditionConflict, StatusTrue, ReasonOverlappingPolicies, `policy "a" (EgressGateway "gw-a")`, "10.0.0.0/16", "is not used")
	check("down", 1, ConditionConflict, StatusTrue, ReasonDuplicateSourceIP, "10.244.0.1")
	check("missing", 1, ConditionConflict, StatusFalse, ReasonNoConflict)
	if m := conds["a"][1].Message; strings.Count(m, "also sends") != 7 || !strings.HasPrefix(m, "pod IP 10.244.0.1") {
		t.Errorf("a's message should list the duplicate IP and 7 overlaps, then the count: %q", m)
	}
}

func TestWriteTable(t *testing.T) {
	entries := []Entry{
		{Key{netip.MustParseAddr("10.244.1.10"), netip.MustParsePrefix("0.0.0.0/0")}, valA, "a"},
		{Key{netip.MustParseAddr("10.244.1.10"), netip.MustParsePrefix("10.0.0.0/8")}, ExcludedValue, "a"},
		{Key{netip.MustParseAddr("10.244.1.100"), netip.MustParsePrefix("0.0.0.0/0")}, DropValue, "b"},
	}
	want := "" +
		"Source IP      Destination CIDR   Egress IP      Gateway IP\n" +
		"10.244.1.10    0.0.0.0/0          172.18.18.21   192.168.0.21\n" +
		"10.244.1.10    10.0.0.0/8         0.0.0.0        Excluded CIDR\n" +
		"10.244.1.100   0.0.0.0/0          0.0.0.0        Not Found\n"
	if got := FormatTable(entries); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if got := FormatTable(nil); got != "No entries found.\n" {
		t.Fatalf("empty: %q", got)
	}
}

// TestRandom checks the invariants (see checkInvariants), in particular
// that the map's longest-prefix lookup gives what the policies ask, on
// random overlapping policies.
func TestRandom(t *testing.T) {
	pool := mustPrefixes("0.0.0.0/0", "0.0.0.0/1", "10.0.0.0/8", "10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16",
		"10.1.2.0/24", "10.1.2.128/25", "10.1.2.7/32", "192.168.0.0/16", "192.168.1.0/24", "203.0.113.0/24",
		"128.0.0.0/1", "10.0.0.0/16")
	gwNames := []string{"gw-a", "gw-b", "gw-c", "gw-down", "gw-missing"}
	apps := []string{"a", "b", "c"}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(n int) []netip.Prefix {
		var out []netip.Prefix
		for range n {
			out = append(out, pool[rng.IntN(len(pool))])
		}
		return out
	}
	for iter := range 400 {
		var policies []Policy
		for i := range 1 + rng.IntN(5) {
			policies = append(policies, Policy{
				Name:         string(rune('a'+i)) + "-pol",
				Gateway:      gwNames[rng.IntN(len(gwNames))],
				Destinations: pick(1 + rng.IntN(4)),
				Exclusions:   pick(rng.IntN(3)),
				Selectors:    []Selector{sel(t, match("app-"+apps[rng.IntN(len(apps))], "true"), nil)},
			})
		}
		var endpoints []Endpoint
		for i := range 1 + rng.IntN(6) {
			ep := pod(netip.AddrFrom4([4]byte{10, 244, 0, byte(i + 1)}).String())
			for _, a := range apps {
				if rng.IntN(2) == 0 {
					ep.Labels["app-"+a] = "true"
				}
			}
			endpoints = append(endpoints, ep)
		}
		if rng.IntN(4) == 0 { // an IP held by two endpoints
			dup := endpoints[0]
			dup.Labels = map[string]string{"app-" + apps[rng.IntN(len(apps))]: "true"}
			endpoints = append(endpoints, dup)
		}
		if t.Failed() {
			t.Fatalf("iteration %d failed", iter)
		}
		checkInvariants(t, policies, gateways, endpoints)
	}
}
