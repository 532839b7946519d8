package cegp

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	slimv1 "github.com/cilium/cilium/pkg/k8s/slim/k8s/apis/meta/v1"

	"github.com/egressha/egressha/egressgw/egresspolicy"
	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/selection"
)

var now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func node(name, ip string, lbls map[string]string, mods ...func(*selection.Node)) *selection.Node {
	n := &selection.Node{Name: name, Labels: lbls, InternalIP: netip.MustParseAddr(ip), Ready: true, AgentReady: true,
		Heartbeat: &heartbeat.Heartbeat{RenewTime: now, Duration: 4 * time.Second}}
	for _, m := range mods {
		m(n)
	}
	return n
}

func sel(kv ...string) *slimv1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &slimv1.LabelSelector{MatchLabels: m}
}

func TestGatewayEntries(t *testing.T) {
	one := ciliumv2.EgressGateway{NodeSelector: sel("egress", "a"), EgressIP: "10.0.0.1"}
	two := ciliumv2.EgressGateway{NodeSelector: sel("egress", "b"), Interface: "eth1"}
	for _, tc := range []struct {
		name    string
		spec    ciliumv2.CiliumEgressGatewayPolicySpec
		want    []string // selector per entry
		wantErr bool
	}{
		{"egressGateway only", ciliumv2.CiliumEgressGatewayPolicySpec{EgressGateway: &one}, []string{"egress=a"}, false},
		// Upstream ignores egressGateway once egressGateways has items.
		{"egressGateways wins", ciliumv2.CiliumEgressGatewayPolicySpec{EgressGateway: &one, EgressGateways: []ciliumv2.EgressGateway{two, one}},
			[]string{"egress=b", "egress=a"}, false},
		{"none", ciliumv2.CiliumEgressGatewayPolicySpec{}, nil, true},
		{"both interface and egressIP", ciliumv2.CiliumEgressGatewayPolicySpec{EgressGateway: &ciliumv2.EgressGateway{
			NodeSelector: sel("a", "b"), Interface: "eth1", EgressIP: "10.0.0.1"}}, nil, true},
		{"bad egressIP", ciliumv2.CiliumEgressGatewayPolicySpec{EgressGateway: &ciliumv2.EgressGateway{
			NodeSelector: sel("a", "b"), EgressIP: "nope"}}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := GatewayEntries(&tc.spec)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			var sels []string
			for i, e := range got {
				if e.Index != i {
					t.Errorf("entry %d has index %d", i, e.Index)
				}
				sels = append(sels, e.Selector)
			}
			if !reflect.DeepEqual(sels, tc.want) {
				t.Errorf("selectors = %v, want %v", sels, tc.want)
			}
		})
	}
}

func TestSelect(t *testing.T) {
	entries, err := GatewayEntries(&ciliumv2.CiliumEgressGatewayPolicySpec{EgressGateways: []ciliumv2.EgressGateway{
		{NodeSelector: sel("egress", "x")}, {NodeSelector: sel("egress", "y")}, {NodeSelector: sel("egress", "none")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	x := map[string]string{"egress": "x"}
	y := map[string]string{"egress": "y"}
	expired := func(n *selection.Node) {
		n.Heartbeat = &heartbeat.Heartbeat{RenewTime: now.Add(-time.Minute), Duration: 4 * time.Second}
	}
	cordoned := func(n *selection.Node) { n.Cordoned = true }
	notReady := func(n *selection.Node) { n.Ready = false }
	for _, tc := range []struct {
		name     string
		nodes    []*selection.Node
		upstream bool
		want     []string
	}{
		{"first by name", []*selection.Node{node("b", "10.0.0.2", x), node("a", "10.0.0.1", x), node("c", "10.0.0.3", y)}, false,
			[]string{"0=a", "1=c", "2=<none> (NoMatchingNode)"}},
		{"ineligible skipped", []*selection.Node{node("a", "10.0.0.1", x, expired), node("b", "10.0.0.2", x, cordoned), node("c", "10.0.0.3", x), node("d", "10.0.0.4", y, notReady)}, false,
			[]string{"0=c (skipped a: HeartbeatExpired; b: Cordoned)", "1=<none> (NoEligibleNode) (skipped d: NodeNotReady)", "2=<none> (NoMatchingNode)"}},
		{"upstream keeps the dead node", []*selection.Node{node("a", "10.0.0.1", x, expired, notReady), node("b", "10.0.0.2", x)}, true,
			[]string{"0=a", "1=<none> (NoMatchingNode)", "2=<none> (NoMatchingNode)"}},
		{"no InternalIP", []*selection.Node{{Name: "a", Labels: x, Ready: true, AgentReady: true, Heartbeat: &heartbeat.Heartbeat{RenewTime: now, Duration: time.Second}}, node("b", "10.0.0.2", x)}, true,
			[]string{"0=b (skipped a: NoInternalIPv4)", "1=<none> (NoMatchingNode)", "2=<none> (NoMatchingNode)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, s := range Select(entries, tc.nodes, now, tc.upstream) {
				got = append(got, s.String())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestAnnotationRoundTrip(t *testing.T) {
	in := []EntrySelection{{Index: 0, Node: "a", InternalIP: "10.0.0.1", Skipped: []Skipped{{Node: "0", Reasons: []string{"Cordoned"}}}}, {Index: 1, Reason: ReasonNoEligibleNode}}
	out, err := Decode(Encode(in))
	if err != nil || !SelectionsEqual(in, out) {
		t.Fatalf("round trip: %v %v", out, err)
	}
	if _, err := Decode("{"); err == nil {
		t.Fatal("want error for malformed annotation")
	}
}

// TestDecodeRejects: what Encode never writes is an error that names the
// annotation and the problem, and gives no decision at all.
func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{`, "unexpected end of JSON input"},
		{`null`, "not a list of gateway entry decisions"},
		{`{"index":0}`, "cannot unmarshal object"},
		{`[{"index":-1}]`, "item 0: negative gateway entry index -1"},
		{`[{"index":0},{"index":0,"reason":"NoMatchingNode"}]`, "item 1: gateway entry 0 decided twice"},
		{`[{"index":0,"node":"a"}]`, `item 0: gateway entry 0: node "a" needs an IPv4 internalIP, got ""`},
		{`[{"index":0,"node":"a","internalIP":"fd00::1"}]`, `needs an IPv4 internalIP, got "fd00::1"`},
		{`[{"index":0,"internalIP":"10.0.0.1"}]`, `internalIP "10.0.0.1" without a node`},
		{`[{"index":0,"reason":"NoEligibleNode","skipped":[{"node":"a"}]}]`, "a skipped node needs a name and a reason"},
	} {
		sels, err := Decode(tc.in)
		if err == nil || sels != nil || !strings.HasPrefix(err.Error(), "annotation "+Annotation+": ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%s) = %v, %v; want no decision and an error with %q", tc.in, sels, err, tc.want)
		}
	}
	if sels, err := Decode(`[]`); err != nil || sels == nil {
		t.Errorf("Decode([]) = %v, %v: an empty decision is a decision", sels, err)
	}
	if _, err := Decode(`[{"index":0,"node":"a","internalIP":"10.0.0.1","term":7}]`); err != nil {
		t.Errorf("unknown fields are ignored: %v", err)
	}
}

func TestValuesAndChangeReason(t *testing.T) {
	entries := []GatewayEntry{{Index: 0}, {Index: 1, Interface: "eth1"}, {Index: 2}}
	sels := []EntrySelection{{Index: 0, Node: "b", InternalIP: "10.0.0.2"}, {Index: 1, Node: "a", InternalIP: "10.0.0.1"}, {Index: 2}}
	resolve := func(e GatewayEntry) (netip.Addr, error) {
		if e.Interface != "eth1" {
			t.Errorf("resolved entry %d, want only the local one", e.Index)
		}
		return netip.MustParseAddr("203.0.113.1"), nil
	}
	got, errs := Values(sels, entries, "a", resolve)
	want := []egresspolicy.Value{
		{GatewayIP: netip.MustParseAddr("10.0.0.1"), EgressIP: netip.MustParseAddr("203.0.113.1")},
		{GatewayIP: netip.MustParseAddr("10.0.0.2"), EgressIP: egresspolicy.EgressIPNotFound},
	}
	if !reflect.DeepEqual(got, want) || len(errs) != 0 {
		t.Fatalf("Values = %v %v, want %v", got, errs, want)
	}
	for _, tc := range []struct {
		prev string
		cur  EntrySelection
		want string
	}{
		{"", EntrySelection{Node: "a"}, "Elected"},
		{"a", EntrySelection{Node: "b", Skipped: []Skipped{{Node: "a", Reasons: []string{"HeartbeatExpired", "NodeNotReady"}}}}, "HeartbeatExpired"},
		{"b", EntrySelection{Node: "a"}, "Failback"},
		{"a", EntrySelection{Node: "b"}, "NoLongerCandidate"},
	} {
		if got := ChangeReason(tc.prev, tc.cur); got != tc.want {
			t.Errorf("ChangeReason(%q, %v) = %q, want %q", tc.prev, tc.cur, got, tc.want)
		}
	}
}

// TestNodeSelector: selectors[].nodeSelector restricts the policy to
// endpoints whose node's labels match, as in Cilium's egress gateway
// (pkg/egressgateway/policy.go: ParseCEGP collects the nodeSelectors of all
// selectors into one list; matchesNodeLabels accepts the endpoint when any
// of them matches the labels of its node, and every node when the list is
// empty). Unknown node labels (nil) match no nodeSelector.
func TestNodeSelector(t *testing.T) {
	cegp := func(sels ...ciliumv2.EgressRule) *ciliumv2.CiliumEgressGatewayPolicy {
		o := &ciliumv2.CiliumEgressGatewayPolicy{}
		o.Name = "p"
		o.Spec.DestinationCIDRs = []ciliumv2.CIDR{"0.0.0.0/0"}
		o.Spec.Selectors = sels
		o.Spec.EgressGateway = &ciliumv2.EgressGateway{NodeSelector: sel("egress", "a"), Interface: "eth1"}
		return o
	}
	withNode := cegp(
		ciliumv2.EgressRule{PodSelector: sel("app", "nginx"), NodeSelector: sel("role", "a")},
		ciliumv2.EgressRule{PodSelector: sel("app", "web"), NodeSelector: &slimv1.LabelSelector{
			MatchExpressions: []slimv1.LabelSelectorRequirement{{Key: "zone", Operator: slimv1.LabelSelectorOpIn, Values: []string{"x", "y"}}}}},
	)
	withoutNode := cegp(ciliumv2.EgressRule{PodSelector: sel("app", "nginx")})
	onlyNode := cegp(ciliumv2.EgressRule{NodeSelector: sel("role", "a")})

	for _, tc := range []struct {
		name       string
		obj        *ciliumv2.CiliumEgressGatewayPolicy
		app        string
		nodeLabels map[string]string
		want       bool
	}{
		{"pod and node match", withNode, "nginx", map[string]string{"role": "a", "other": "x"}, true},
		{"node does not match", withNode, "nginx", map[string]string{"role": "b"}, false},
		{"node labels unknown", withNode, "nginx", nil, false},
		{"expression matches", withNode, "nginx", map[string]string{"zone": "y"}, true},
		// Upstream keeps one list of nodeSelectors for the whole policy, not
		// one per selector: web pods on a role=a node are selected too.
		{"other selector's nodeSelector", withNode, "web", map[string]string{"role": "a"}, true},
		{"pod does not match", withNode, "other", map[string]string{"role": "a"}, false},
		{"no nodeSelector, node unknown", withoutNode, "nginx", nil, true},
		{"no nodeSelector, any node", withoutNode, "nginx", map[string]string{"role": "b"}, true},
		// A selector with only a nodeSelector selects no pod (upstream
		// rejects the whole policy; egressha ignores that selector).
		{"nodeSelector only", onlyNode, "nginx", map[string]string{"role": "a"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _, _ := PolicyFromObject(tc.obj)
			p.Spread = []egresspolicy.Value{{GatewayIP: netip.MustParseAddr("10.0.0.1"), EgressIP: netip.MustParseAddr("203.0.113.1")}}
			ep := egresspolicy.Endpoint{IP: netip.MustParseAddr("10.244.0.1"), Namespace: "default", UID: "u",
				Labels:     map[string]string{"app": tc.app, egresspolicy.PodNamespaceLabel: "default"},
				NodeLabels: tc.nodeLabels}
			entries, _ := egresspolicy.Resolve([]egresspolicy.Policy{p}, nil, ep)
			if got := len(entries) > 0; got != tc.want {
				t.Errorf("selected = %v (%v), want %v", got, entries, tc.want)
			}
		})
	}
}
