package selection

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/heartbeat"
)

func TestEvaluate(t *testing.T) {
	const gwName = "gw"
	vip := Gateway{Name: gwName, NodeSelector: egSel, Mode: v1alpha1.SourceIPModeVirtualIP, VirtualIP: "198.51.100.7"}
	basic := basicGW(gwName)
	rep := func(r heartbeat.GatewayReport) func(*Node) {
		return func(n *Node) { n.Heartbeat.Gateways = heartbeat.Report{gwName: r} }
	}
	tests := []struct {
		name    string
		gw      Gateway
		mutate  func(*Node)
		now     time.Time
		reasons []string
		egress  string
	}{
		{name: "eligible basic", gw: basic, egress: egressIPOf("n1")},
		{name: "eligible vip", gw: vip, egress: "198.51.100.7"},
		{name: "node not ready", gw: basic, mutate: func(n *Node) { n.Ready = false },
			reasons: []string{v1alpha1.CandidateNodeNotReady}, egress: egressIPOf("n1")},
		{name: "cordoned", gw: basic, mutate: func(n *Node) { n.Cordoned = true },
			reasons: []string{v1alpha1.CandidateCordoned}, egress: egressIPOf("n1")},
		{name: "agent not ready", gw: basic, mutate: func(n *Node) { n.AgentReady = false },
			reasons: []string{v1alpha1.CandidateCiliumAgentNotReady}, egress: egressIPOf("n1")},
		{name: "heartbeat missing reads no report", gw: basic, mutate: func(n *Node) { n.Heartbeat = nil },
			reasons: []string{heartbeat.ReasonHeartbeatMissing}},
		{name: "heartbeat missing in vip mode keeps the vip", gw: vip, mutate: func(n *Node) { n.Heartbeat = nil },
			reasons: []string{heartbeat.ReasonHeartbeatMissing}, egress: "198.51.100.7"},
		{name: "malformed heartbeat reads no report", gw: basic,
			mutate: func(n *Node) {
				n.Heartbeat.Malformed = "annotation egressha.io/gateways: unexpected end of JSON input"
				n.Heartbeat.Gateways = nil
			},
			reasons: []string{heartbeat.ReasonHeartbeatMalformed}},
		{name: "malformed heartbeat is not eligible even while fresh", gw: vip,
			mutate:  func(n *Node) { n.Heartbeat.Malformed = "held by another node" },
			reasons: []string{heartbeat.ReasonHeartbeatMalformed}, egress: "198.51.100.7"},
		{name: "heartbeat fresh 1ns before expiry", gw: basic, now: t0.Add(hbLife - 1), egress: egressIPOf("n1")},
		{name: "heartbeat expired at the expiry instant", gw: basic, now: t0.Add(hbLife),
			reasons: []string{heartbeat.ReasonHeartbeatExpired}, egress: egressIPOf("n1")},
		{name: "heartbeat never renewed", gw: basic, mutate: func(n *Node) { n.Heartbeat.RenewTime = time.Time{} },
			reasons: []string{heartbeat.ReasonHeartbeatExpired}, egress: egressIPOf("n1")},
		{name: "expired heartbeat still reports its last state", gw: basic, now: t0.Add(time.Minute),
			mutate:  rep(heartbeat.GatewayReport{Reason: heartbeat.ReasonInterfaceDown}),
			reasons: []string{heartbeat.ReasonHeartbeatExpired, heartbeat.ReasonInterfaceDown}},
		{name: "no entry for this gateway", gw: basic, mutate: func(n *Node) { n.Heartbeat.Gateways = report("n1", "other") },
			reasons: []string{heartbeat.ReasonNotReported}},
		{name: "nil report map", gw: basic, mutate: func(n *Node) { n.Heartbeat.Gateways = nil },
			reasons: []string{heartbeat.ReasonNotReported}},
		{name: "reported interface missing", gw: basic, mutate: rep(heartbeat.GatewayReport{Reason: heartbeat.ReasonInterfaceMissing}),
			reasons: []string{heartbeat.ReasonInterfaceMissing}},
		{name: "reported not ready without reason", gw: basic, mutate: rep(heartbeat.GatewayReport{EgressIP: "203.0.113.9"}),
			reasons: []string{heartbeat.ReasonNotReported}},
		{name: "vip not ready", gw: vip, mutate: rep(heartbeat.GatewayReport{Reason: heartbeat.ReasonVirtualIPNotReady}),
			reasons: []string{heartbeat.ReasonVirtualIPNotReady}, egress: "198.51.100.7"},
		{name: "basic ready without egress ip", gw: basic, mutate: rep(heartbeat.GatewayReport{Ready: true}),
			reasons: []string{heartbeat.ReasonNoIPv4Address}},
		{name: "basic ready with garbage egress ip", gw: basic, mutate: rep(heartbeat.GatewayReport{Ready: true, EgressIP: "eth1"}),
			reasons: []string{heartbeat.ReasonNoIPv4Address}},
		{name: "basic ready with ipv6 egress ip", gw: basic, mutate: rep(heartbeat.GatewayReport{Ready: true, EgressIP: "2001:db8::1"}),
			reasons: []string{heartbeat.ReasonNoIPv4Address}},
		{name: "basic ready with 0.0.0.0", gw: basic, mutate: rep(heartbeat.GatewayReport{Ready: true, EgressIP: "0.0.0.0"}),
			reasons: []string{heartbeat.ReasonNoIPv4Address}},
		{name: "vip ready needs no egress ip", gw: vip, mutate: rep(heartbeat.GatewayReport{Ready: true}), egress: "198.51.100.7"},
		{name: "probed up: an expired heartbeat does not matter", gw: basic, now: t0.Add(time.Hour),
			mutate: func(n *Node) { n.Reach = ReachUp }, egress: egressIPOf("n1")},
		{name: "probed up: the last report still counts", gw: basic, now: t0.Add(time.Hour),
			mutate: func(n *Node) {
				n.Reach = ReachUp
				n.Heartbeat.Gateways = heartbeat.Report{gwName: {Reason: heartbeat.ReasonInterfaceDown}}
			},
			reasons: []string{heartbeat.ReasonInterfaceDown}},
		{name: "probed up without any heartbeat reads no report", gw: basic,
			mutate:  func(n *Node) { n.Reach, n.Heartbeat = ReachUp, nil },
			reasons: []string{heartbeat.ReasonHeartbeatMissing}},
		{name: "probed up with a malformed heartbeat", gw: vip,
			mutate:  func(n *Node) { n.Reach, n.Heartbeat.Malformed = ReachUp, "held by another node" },
			reasons: []string{heartbeat.ReasonHeartbeatMalformed}, egress: "198.51.100.7"},
		{name: "probed down while the heartbeat is fresh", gw: basic,
			mutate:  func(n *Node) { n.Reach = ReachDown },
			reasons: []string{v1alpha1.CandidateNodeUnreachable}, egress: egressIPOf("n1")},
		{name: "probed down and expired", gw: vip, now: t0.Add(time.Hour),
			mutate:  func(n *Node) { n.Reach = ReachDown },
			reasons: []string{v1alpha1.CandidateNodeUnreachable}, egress: "198.51.100.7"},
		{name: "all reasons in the fixed order", gw: basic, now: t0.Add(time.Hour),
			mutate: func(n *Node) {
				n.Ready, n.Cordoned, n.AgentReady = false, true, false
				n.Heartbeat.Gateways = heartbeat.Report{gwName: {Reason: heartbeat.ReasonInterfaceMissing}}
			},
			reasons: []string{v1alpha1.CandidateNodeNotReady, v1alpha1.CandidateCordoned, v1alpha1.CandidateCiliumAgentNotReady,
				heartbeat.ReasonHeartbeatExpired, heartbeat.ReasonInterfaceMissing}},
		{name: "all reasons in the fixed order, probed down", gw: basic, now: t0.Add(time.Hour),
			mutate: func(n *Node) {
				n.Ready, n.Cordoned, n.AgentReady, n.Reach = false, true, false, ReachDown
				n.Heartbeat.Gateways = heartbeat.Report{gwName: {Reason: heartbeat.ReasonInterfaceMissing}}
			},
			reasons: []string{v1alpha1.CandidateNodeNotReady, v1alpha1.CandidateCordoned, v1alpha1.CandidateCiliumAgentNotReady,
				v1alpha1.CandidateNodeUnreachable, heartbeat.ReasonInterfaceMissing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := goodNode("n1", gwName)
			if tt.mutate != nil {
				tt.mutate(n)
			}
			now := tt.now
			if now.IsZero() {
				now = t0.Add(time.Second)
			}
			gw := normalize(tt.gw)
			c := Evaluate(n, &gw, now)
			if c.Node != "n1" || c.Eligible != (len(tt.reasons) == 0) || !slices.Equal(c.Reasons, tt.reasons) || c.EgressIP != tt.egress {
				t.Fatalf("got %+v, want eligible=%v reasons=%v egressIP=%q", c, len(tt.reasons) == 0, tt.reasons, tt.egress)
			}
		})
	}
}

func TestMatches(t *testing.T) {
	labels := map[string]string{egressLabel: "", "pool": "a", "zone": "z1"}
	tests := []struct {
		sel  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{}, false},
		{map[string]string{egressLabel: ""}, true},
		{map[string]string{egressLabel: "", "pool": "a"}, true},
		{map[string]string{"pool": "b"}, false},
		{map[string]string{"pool": ""}, false},
		{map[string]string{"missing": ""}, false},
		{map[string]string{egressLabel: "", "zone": "z2"}, false},
	}
	for _, tt := range tests {
		if got := Matches(tt.sel, labels); got != tt.want {
			t.Errorf("Matches(%v) = %v, want %v", tt.sel, got, tt.want)
		}
	}
}

func TestSelect(t *testing.T) {
	const gw = "gw"
	a, b, c := "lab-egress-a", "lab-egress-b", "lab-egress-c"
	three := func() []*Node { return []*Node{goodNode(c, gw), goodNode(a, gw), goodNode(b, gw)} }
	now := t0.Add(time.Second)
	tests := []struct {
		name      string
		failback  v1alpha1.FailbackPolicy
		prev      string
		nodes     func() []*Node
		active    string
		reason    string
		ready     int
		msgPrefix string
	}{
		{name: "alphabetical first, elected", nodes: three, active: a, reason: ChangeElected, ready: 3},
		{name: "same active, no change reason", prev: a, nodes: three, active: a, ready: 3},
		{name: "immediate fails back", prev: b, nodes: three, active: a, reason: ChangeFailback, ready: 3},
		{name: "never keeps eligible previous", failback: v1alpha1.FailbackNever, prev: b, nodes: three, active: b, ready: 3},
		{name: "never moves off ineligible previous", failback: v1alpha1.FailbackNever, prev: b,
			nodes: func() []*Node { ns := three(); ns[2].Cordoned = true; return ns }, active: a, reason: v1alpha1.CandidateCordoned, ready: 2},
		{name: "first reason of previous", prev: a,
			nodes:  func() []*Node { ns := three(); ns[1].AgentReady = false; ns[1].Cordoned = true; return ns },
			active: b, reason: v1alpha1.CandidateCordoned, ready: 2},
		{name: "previous unlabelled", prev: a,
			nodes: func() []*Node { ns := three(); delete(ns[1].Labels, egressLabel); return ns }, active: b, reason: ChangeNoLongerCandidate, ready: 2},
		{name: "previous deleted", prev: "lab-egress-0", nodes: three, active: a, reason: ChangeNodeDeleted, ready: 3},
		{name: "none eligible: fail closed", prev: a,
			nodes: func() []*Node {
				ns := three()
				for _, n := range ns {
					n.Ready = false
				}
				return ns
			}, active: "", reason: v1alpha1.CandidateNodeNotReady, msgPrefix: "no eligible node among 3 candidates ("},
		{name: "no candidates", nodes: func() []*Node { return nil }, msgPrefix: `no node matches nodeSelector node-role.deckhouse.io/egress=""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := basicGW(gw)
			g.Failback, g.PreviousActive = tt.failback, tt.prev
			r := Select(g, tt.nodes(), now)
			if r.Active != tt.active || r.ChangeReason != tt.reason || r.ReadyNodes != tt.ready || r.PreviousActive != tt.prev {
				t.Fatalf("got active %q reason %q ready %d prev %q, want %q %q %d %q", r.Active, r.ChangeReason, r.ReadyNodes, r.PreviousActive,
					tt.active, tt.reason, tt.ready, tt.prev)
			}
			if tt.msgPrefix != "" && !strings.HasPrefix(r.Message, tt.msgPrefix) {
				t.Fatalf("message %q, want prefix %q", r.Message, tt.msgPrefix)
			}
			if !slices.IsSortedFunc(r.Candidates, func(x, y Candidate) int { return strings.Compare(x.Node, y.Node) }) {
				t.Fatalf("candidates not in name order: %v", candidateNames(r))
			}
			if tt.active != "" {
				if r.ActiveInternalIP != internalIPOf(tt.active) || r.EgressIP != egressIPOf(tt.active) {
					t.Fatalf("active %s: internal IP %v egress IP %q", tt.active, r.ActiveInternalIP, r.EgressIP)
				}
			} else if r.EgressIP != "" || r.ActiveInternalIP.IsValid() {
				t.Fatalf("no active node but egress IP %q internal IP %v", r.EgressIP, r.ActiveInternalIP)
			}
		})
	}
}

func TestMessages(t *testing.T) {
	now := t0.Add(time.Second)
	a, b := goodNode("lab-egress-a", "gw"), goodNode("lab-egress-b", "gw")
	b.Cordoned = true
	r := Select(basicGW("gw"), []*Node{a, b}, t0.Add(hbLife+time.Second))
	// a's heartbeat expired; b is cordoned and expired as well.
	want := "no eligible node among 2 candidates (lab-egress-a: HeartbeatExpired; lab-egress-b: Cordoned, HeartbeatExpired)"
	if r.Active != "" || r.Message != want {
		t.Fatalf("got active %q message %q, want %q", r.Active, r.Message, want)
	}
	b.Heartbeat.RenewTime = t0.Add(hbLife)
	r = Select(basicGW("gw"), []*Node{a, b}, t0.Add(hbLife+time.Second))
	want = "no eligible node among 2 candidates (lab-egress-a: HeartbeatExpired; lab-egress-b: Cordoned)"
	if r.Message != want {
		t.Fatalf("message %q, want %q", r.Message, want)
	}

	r = Select(basicGW("gw"), nil, now)
	want = `no node matches nodeSelector node-role.deckhouse.io/egress=""; label the intended nodes with it`
	if r.Message != want {
		t.Fatalf("message %q, want %q", r.Message, want)
	}
	g := basicGW("gw")
	g.NodeSelector = map[string]string{"zone": "z1", "pool": "egress"}
	if r = Select(g, nil, now); !strings.Contains(r.Message, "nodeSelector pool=egress,zone=z1;") {
		t.Fatalf("message %q does not name the selector", r.Message)
	}
	g.NodeSelector = nil
	if r = Select(g, []*Node{a}, now); r.Active != "" || len(r.Candidates) != 0 || !strings.HasPrefix(r.Message, "nodeSelector is empty") {
		t.Fatalf("empty selector: active %q candidates %v message %q", r.Active, candidateNames(r), r.Message)
	}

	// Many candidates: the message stays short and says how many it left out.
	var many []*Node
	for i := range 40 {
		n := goodNode(fmt.Sprintf("node-%02d", i), "gw")
		n.Ready = false
		many = append(many, n)
	}
	r = Select(basicGW("gw"), many, now)
	if !strings.HasPrefix(r.Message, "no eligible node among 40 candidates (node-00: NodeNotReady; ") ||
		!strings.HasSuffix(r.Message, "node-04: NodeNotReady; and 35 more)") {
		t.Fatalf("message %q", r.Message)
	}

	if r = Select(basicGW("gw"), []*Node{a}, now); r.Message != "lab-egress-a is active; 1 of 1 candidate nodes are eligible" {
		t.Fatalf("message %q", r.Message)
	}
}

func TestVirtualIPModeEgressIP(t *testing.T) {
	g := Gateway{Name: "gw", NodeSelector: egSel, Mode: v1alpha1.SourceIPModeVirtualIP, VirtualIP: "198.51.100.7"}
	n := goodNode("lab-egress-a", "gw")
	r := Select(g, []*Node{n}, t0)
	if r.Active != "lab-egress-a" || r.EgressIP != "198.51.100.7" || r.ActiveInternalIP != internalIPOf("lab-egress-a") {
		t.Fatalf("got %+v", r)
	}
	n.Ready = false
	if r = Select(g, []*Node{n}, t0); r.Active != "" || r.EgressIP != "198.51.100.7" {
		t.Fatalf("without an active node the VIP is still the configured egress IP: got %+v", r)
	}
}

// TestSpreadScoreIsPinned pins the Spread hash: changing it would move the
// active node of every Spread gateway. If this fails, the change is wrong.
func TestSpreadScoreIsPinned(t *testing.T) {
	for _, tt := range []struct {
		gw, node string
		want     uint64
	}{
		{"my-egressgw", "lab-egress-a", 0x5b7df1911ec21363},
		{"my-egressgw", "lab-egress-b", 0x3094fe69fc99eb78},
		{"gw-1", "node-1", 0xc7960fecfc47e208},
	} {
		if got := SpreadScore(tt.gw, tt.node); got != tt.want {
			t.Errorf("SpreadScore(%q, %q) = %#x, want %#x", tt.gw, tt.node, got, tt.want)
		}
	}
	// It is plain xxhash64 of gateway + NUL + node.
	if got, want := SpreadScore("my-egressgw", "lab-egress-a"), xxhash.Sum64String("my-egressgw\x00lab-egress-a"); got != want {
		t.Errorf("SpreadScore is not xxhash64(gateway NUL node): %#x != %#x", got, want)
	}
	// The separator matters: ("ab", "c") and ("a", "bc") are different pairs.
	if SpreadScore("ab", "c") == SpreadScore("a", "bc") {
		t.Fatal("gateway/node boundary is not part of the hash")
	}
	long := strings.Repeat("x", 253)
	if SpreadScore(long, long) == SpreadScore(long, long[:252]) {
		t.Fatal("long names are not hashed in full")
	}
}

func TestSpreadDistributesGateways(t *testing.T) {
	nodes := []string{"lab-egress-a", "lab-egress-b", "lab-egress-c"}
	for _, names := range [][]string{
		seq("gw-%d", 1, 10),
		seq("egress-%d", 0, 9),
		{"backend", "billing", "crm", "frontend", "mail", "monitoring", "payments", "reports", "search", "sso"},
	} {
		count := map[string]int{}
		for _, gw := range names {
			count[Rank(Gateway{Name: gw, Order: v1alpha1.SelectionOrderSpread}, nodes)[0]]++
		}
		for _, n := range nodes {
			if count[n] < 2 {
				t.Errorf("gateways %v: %s is first for only %d of 10 (%v)", names, n, count[n], count)
			}
		}
	}
	// And at scale the share of each node is close to a third.
	count := map[string]int{}
	names := seq("gateway-%d", 0, 2999)
	for _, gw := range names {
		count[Rank(Gateway{Name: gw, Order: v1alpha1.SelectionOrderSpread}, nodes)[0]]++
	}
	for _, n := range nodes {
		if count[n] < 900 || count[n] > 1100 {
			t.Errorf("3000 gateways: %s is first for %d (%v)", n, count[n], count)
		}
	}
}

func seq(format string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf(format, i))
	}
	return out
}

func TestRank(t *testing.T) {
	nodes := []string{"c", "a", "b", "d"}
	if got := Rank(Gateway{Name: "gw"}, nodes); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Fatalf("alphabetical rank %v", got)
	}
	if !slices.Equal(nodes, []string{"c", "a", "b", "d"}) {
		t.Fatal("Rank modified its input")
	}
	spread := Gateway{Name: "gw", Order: v1alpha1.SelectionOrderSpread}
	got := Rank(spread, nodes)
	for i := 1; i < len(got); i++ {
		if SpreadScore("gw", got[i-1]) < SpreadScore("gw", got[i]) {
			t.Fatalf("spread rank %v not by descending score", got)
		}
	}
	// The rank does not depend on the order the nodes come in.
	if again := Rank(spread, []string{"d", "b", "a", "c"}); !slices.Equal(got, again) {
		t.Fatalf("rank depends on input order: %v vs %v", got, again)
	}
	// Spread follows the rank among eligible nodes.
	var ns []*Node
	for _, n := range nodes {
		ns = append(ns, goodNode(n, "gw"))
	}
	g := basicGW("gw")
	g.Order = v1alpha1.SelectionOrderSpread
	if r := Select(g, ns, t0); r.Active != got[0] {
		t.Fatalf("spread active %q, want %q", r.Active, got[0])
	}
	for _, n := range ns {
		if n.Name == got[0] {
			n.Cordoned = true
		}
	}
	if r := Select(g, ns, t0); r.Active != got[1] {
		t.Fatalf("spread active %q after cordoning the first, want %q", r.Active, got[1])
	}
}
