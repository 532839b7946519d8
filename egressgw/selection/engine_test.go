package selection

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/heartbeat"
)

const (
	nodeA = "lab-egress-a"
	nodeB = "lab-egress-b"
	nodeC = "lab-egress-c"
)

// labWorld is the spec's setup: three labelled egress nodes and one
// gateway, elected once.
func labWorld(t *testing.T, failback v1alpha1.FailbackPolicy, gws ...string) *world {
	t.Helper()
	if len(gws) == 0 {
		gws = []string{"my-egressgw"}
	}
	w := newWorld(t)
	w.addNodes(goodNode(nodeA, gws...), goodNode(nodeB, gws...), goodNode(nodeC, gws...))
	for _, name := range gws {
		g := basicGW(name)
		g.Failback = failback
		w.e.UpsertGateway(g)
	}
	res := w.recompute(gws)
	for _, name := range gws {
		r := wantChange(t, res, name, "", nodeA, ChangeElected)
		if r.ReadyNodes != 3 || !slices.Equal(candidateNames(r), []string{nodeA, nodeB, nodeC}) {
			t.Fatalf("initial %s: ready %d candidates %v", name, r.ReadyNodes, candidateNames(r))
		}
		if r.EgressIP != egressIPOf(nodeA) || r.ActiveInternalIP != internalIPOf(nodeA) {
			t.Fatalf("initial %s: egress IP %q internal IP %v", name, r.EgressIP, r.ActiveInternalIP)
		}
	}
	return w
}

// TestMaintenance walks the spec's node maintenance section and the other
// ways the active node can lose its role.
func TestMaintenance(t *testing.T) {
	const gw = "my-egressgw"
	unlabel := func(n *Node) { delete(n.Labels, egressLabel) }
	relabel := func(n *Node) { n.Labels[egressLabel] = "" }
	cordon := func(n *Node) { n.Cordoned = true }
	uncordon := func(n *Node) { n.Cordoned = false }

	type step struct {
		node   string
		f      func(*Node)
		want   string // active after the step
		reason string // ChangeReason if the active node changed
		quiet  bool   // no result at all: nothing the gateway sees changed
	}
	tests := []struct {
		name     string
		failback v1alpha1.FailbackPolicy
		steps    []step
	}{
		{name: "documented procedure, failback Immediate", steps: []step{
			{node: nodeA, f: unlabel, want: nodeB, reason: ChangeNoLongerCandidate},
			{node: nodeA, f: cordon, want: nodeB, quiet: true},
			{node: nodeA, f: uncordon, want: nodeB, quiet: true},
			{node: nodeA, f: relabel, want: nodeA, reason: ChangeFailback},
		}},
		{name: "documented procedure, failback Never", failback: v1alpha1.FailbackNever, steps: []step{
			{node: nodeA, f: unlabel, want: nodeB, reason: ChangeNoLongerCandidate},
			{node: nodeA, f: cordon, want: nodeB, quiet: true},
			{node: nodeA, f: uncordon, want: nodeB, quiet: true},
			{node: nodeA, f: relabel, want: nodeB},
		}},
		{name: "cordon and uncordon, Immediate", steps: []step{
			{node: nodeA, f: cordon, want: nodeB, reason: v1alpha1.CandidateCordoned},
			{node: nodeA, f: uncordon, want: nodeA, reason: ChangeFailback},
		}},
		{name: "cordon and uncordon, Never", failback: v1alpha1.FailbackNever, steps: []step{
			{node: nodeA, f: cordon, want: nodeB, reason: v1alpha1.CandidateCordoned},
			{node: nodeA, f: uncordon, want: nodeB},
			// Never still moves when the active node goes: to the best-ranked.
			{node: nodeB, f: cordon, want: nodeA, reason: v1alpha1.CandidateCordoned},
		}},
		{name: "cordoning a standby does not move the role", steps: []step{
			{node: nodeB, f: cordon, want: nodeA},
			{node: nodeC, f: unlabel, want: nodeA},
		}},
		{name: "cilium-agent pod not ready", steps: []step{
			{node: nodeA, f: func(n *Node) { n.AgentReady = false }, want: nodeB, reason: v1alpha1.CandidateCiliumAgentNotReady},
			{node: nodeA, f: func(n *Node) { n.AgentReady = true }, want: nodeA, reason: ChangeFailback},
		}},
		{name: "node not ready", steps: []step{
			{node: nodeA, f: func(n *Node) { n.Ready = false }, want: nodeB, reason: v1alpha1.CandidateNodeNotReady},
		}},
		{name: "interface goes down", steps: []step{
			{node: nodeA, f: func(n *Node) {
				n.Heartbeat.Gateways[gw] = heartbeat.GatewayReport{Reason: heartbeat.ReasonInterfaceDown}
			}, want: nodeB, reason: heartbeat.ReasonInterfaceDown},
		}},
		{name: "agent stops reporting the gateway", steps: []step{
			{node: nodeA, f: func(n *Node) { delete(n.Heartbeat.Gateways, gw) }, want: nodeB, reason: heartbeat.ReasonNotReported},
		}},
		{name: "heartbeat lease deleted", steps: []step{
			{node: nodeA, f: func(n *Node) { n.Heartbeat = nil }, want: nodeB, reason: heartbeat.ReasonHeartbeatMissing},
		}},
		{name: "all candidates go: fail closed", steps: []step{
			{node: nodeA, f: cordon, want: nodeB, reason: v1alpha1.CandidateCordoned},
			{node: nodeB, f: unlabel, want: nodeC, reason: ChangeNoLongerCandidate},
			{node: nodeC, f: func(n *Node) { n.Ready = false }, want: "", reason: v1alpha1.CandidateNodeNotReady},
			{node: nodeC, f: func(n *Node) { n.Ready = true }, want: nodeC, reason: ChangeElected},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := labWorld(t, tt.failback)
			for i, s := range tt.steps {
				prev := w.result(gw).Active
				res := w.change(s.node, s.f)
				r, ok := res[gw]
				switch {
				case s.quiet && ok:
					t.Fatalf("step %d: unexpected result %+v", i, r)
				case s.quiet:
				case !ok:
					t.Fatalf("step %d: no result", i)
				case r.Active != s.want || r.ChangeReason != s.reason || r.PreviousActive != prev:
					t.Fatalf("step %d: got %q -> %q (%q), want %q -> %q (%q)", i, r.PreviousActive, r.Active, r.ChangeReason, prev, s.want, s.reason)
				}
				if got := w.result(gw).Active; got != s.want {
					t.Fatalf("step %d: Result().Active = %q, want %q", i, got, s.want)
				}
				// Every step agrees with the from-scratch decision.
				g := basicGW(gw)
				g.Failback, g.PreviousActive = tt.failback, prev
				want := Select(g, slices.Collect(maps.Values(w.nodes)), w.now)
				got := w.result(gw)
				if got.Active != want.Active || got.ReadyNodes != want.ReadyNodes || !sameFacts(got.Candidates, want.Candidates) || got.Message != want.Message {
					t.Fatalf("step %d: engine %+v\nselect %+v", i, got, want)
				}
			}
		})
	}
}

func TestFailClosedMessage(t *testing.T) {
	const gw = "my-egressgw"
	w := newWorld(t)
	w.addNodes(goodNode(nodeA, gw), goodNode(nodeB, gw))
	w.e.UpsertGateway(basicGW(gw))
	wantChange(t, w.recompute(nil), gw, "", nodeA, ChangeElected)
	w.change(nodeB, func(n *Node) { n.Cordoned = true })
	w.now = t0.Add(hbLife)
	r := wantChange(t, w.recompute(nil), gw, nodeA, "", heartbeat.ReasonHeartbeatExpired)
	want := "no eligible node among 2 candidates (lab-egress-a: HeartbeatExpired; lab-egress-b: Cordoned, HeartbeatExpired)"
	if r.Message != want || r.ReadyNodes != 0 || r.EgressIP != "" || r.ActiveInternalIP.IsValid() {
		t.Fatalf("got %+v, want message %q", r, want)
	}
	if got := w.e.NextExpiry(w.now); !got.IsZero() {
		t.Fatalf("NextExpiry with no eligible node = %v, want zero", got)
	}

	// A gateway whose selector matches no node says which selector.
	g := basicGW("other")
	g.NodeSelector = map[string]string{"pool": "blue"}
	w.e.UpsertGateway(g)
	res := w.recompute([]string{"other"})
	if r := res["other"]; r.Active != "" || !strings.HasPrefix(r.Message, "no node matches nodeSelector pool=blue") {
		t.Fatalf("got %+v", r)
	}
}

func TestHeartbeatExpiry(t *testing.T) {
	const gw = "my-egressgw"
	w := newWorld(t)
	a, b, c := goodNode(nodeA, gw), goodNode(nodeB, gw), goodNode(nodeC, gw)
	b.Heartbeat.RenewTime = t0.Add(2 * time.Second)
	c.Heartbeat.RenewTime = t0.Add(3 * time.Second)
	w.addNodes(a, b, c)
	w.e.UpsertGateway(basicGW(gw))
	wantChange(t, w.recompute(nil), gw, "", nodeA, ChangeElected)

	expiryA := t0.Add(hbLife)
	if got := w.e.NextExpiry(w.now); !got.Equal(expiryA) {
		t.Fatalf("NextExpiry = %v, want %v (a's renew time + duration)", got, expiryA)
	}
	// One nanosecond before: nothing changes.
	w.now = expiryA.Add(-1)
	if res := w.recompute(nil); len(res) != 0 {
		t.Fatalf("before expiry: %+v", res)
	}
	// At the expiry instant, without any event, the role moves.
	w.now = expiryA
	r := wantChange(t, w.recompute(nil), gw, nodeA, nodeB, heartbeat.ReasonHeartbeatExpired)
	if r.ReadyNodes != 2 || !slices.Equal(r.Candidates[0].Reasons, []string{heartbeat.ReasonHeartbeatExpired}) {
		t.Fatalf("after expiry: %+v", r)
	}
	if got, want := w.e.NextExpiry(w.now), t0.Add(2*time.Second+hbLife); !got.Equal(want) {
		t.Fatalf("NextExpiry = %v, want %v (b's)", got, want)
	}
	// b renews: the next expiry is now c's, and nothing is published.
	w.now = t0.Add(5 * time.Second)
	res := w.change(nodeB, func(n *Node) { n.Heartbeat.RenewTime = w.now })
	if len(res) != 0 {
		t.Fatalf("a renewal published %+v", res)
	}
	if got, want := w.e.NextExpiry(w.now), t0.Add(3*time.Second+hbLife); !got.Equal(want) {
		t.Fatalf("NextExpiry = %v, want %v (c's)", got, want)
	}
	// NextExpiry never points into the past: if a lapse is due, it is now.
	late := t0.Add(time.Hour)
	if got := w.e.NextExpiry(late); !got.Equal(late) {
		t.Fatalf("NextExpiry(late) = %v, want %v", got, late)
	}
	// a comes back with a fresh heartbeat: failback.
	w.now = t0.Add(6 * time.Second)
	wantChange(t, w.change(nodeA, func(n *Node) { n.Heartbeat.RenewTime = w.now }), gw, nodeB, nodeA, ChangeFailback)
	// Time never runs backwards: an older now is clamped.
	if res := w.e.Recompute(nil, t0); len(res) != 0 {
		t.Fatalf("older now changed %+v", res)
	}
}

// TestNextExpiryOnlyEligible: an ineligible node's heartbeat does not arm
// the timer, and a node eligible for any gateway does.
func TestNextExpiryOnlyEligible(t *testing.T) {
	w := newWorld(t)
	a, b := goodNode(nodeA, "g1"), goodNode(nodeB, "g2")
	a.Cordoned = true
	b.Heartbeat.RenewTime = t0.Add(time.Second)
	w.addNodes(a, b)
	w.e.UpsertGateway(basicGW("g1"))
	if got := w.e.NextExpiry(w.now); !got.IsZero() {
		t.Fatalf("before Recompute: %v", got)
	}
	w.recompute(nil)
	// b is a candidate of g1 but has no report for it; a is cordoned.
	if got := w.e.NextExpiry(w.now); !got.IsZero() {
		t.Fatalf("no eligible node, NextExpiry = %v", got)
	}
	w.e.UpsertGateway(basicGW("g2"))
	w.recompute(nil)
	if got, want := w.e.NextExpiry(w.now), t0.Add(time.Second+hbLife); !got.Equal(want) {
		t.Fatalf("NextExpiry = %v, want %v", got, want)
	}
	w.e.DeleteGateway("g2")
	if got := w.e.NextExpiry(w.now); !got.IsZero() {
		t.Fatalf("after deleting g2, NextExpiry = %v", got)
	}
	if _, ok := w.e.Result("g2"); ok {
		t.Fatal("deleted gateway still has a result")
	}
}

func TestGatewaysSharingNodesAreIndependent(t *testing.T) {
	w := labWorld(t, "", "g1", "g2")
	// a cannot serve g2 (its interface is missing); g1 is not affected.
	res := w.change(nodeA, func(n *Node) {
		n.Heartbeat.Gateways["g2"] = heartbeat.GatewayReport{Reason: heartbeat.ReasonInterfaceMissing}
	})
	wantChange(t, res, "g2", nodeA, nodeB, heartbeat.ReasonInterfaceMissing)
	if _, ok := res["g1"]; ok {
		t.Fatalf("g1 changed: %+v", res["g1"])
	}
	// Cordoning b moves g2 only; g1 reports b's new reason but keeps a.
	res = w.change(nodeB, func(n *Node) { n.Cordoned = true })
	wantChange(t, res, "g2", nodeB, nodeC, v1alpha1.CandidateCordoned)
	if r := res["g1"]; r.Active != nodeA || r.ChangeReason != "" || r.ReadyNodes != 2 {
		t.Fatalf("g1: %+v", r)
	}

	// Gateways on disjoint pools: an event in one pool touches only its gateway.
	w2 := newWorld(t)
	x, y := goodNode("x1", "gx"), goodNode("y1", "gy")
	x.Labels["pool"], y.Labels["pool"] = "x", "y"
	w2.addNodes(x, y)
	gx, gy := basicGW("gx"), basicGW("gy")
	gx.NodeSelector, gy.NodeSelector = map[string]string{"pool": "x"}, map[string]string{"pool": "y"}
	w2.e.UpsertGateway(gx)
	w2.e.UpsertGateway(gy)
	w2.recompute(nil)
	n := clone(x)
	n.Ready = false
	if affected := w2.e.UpsertNode(n); !slices.Equal(affected, []string{"gx"}) {
		t.Fatalf("affected %v, want [gx]", affected)
	}
	w2.nodes["x1"] = n
	res = w2.recompute([]string{"gx"})
	if len(res) != 1 || res["gx"].Active != "" {
		t.Fatalf("got %+v", res)
	}
	// Moving a node between pools affects both gateways.
	n = clone(y)
	n.Labels["pool"] = "x"
	n.Heartbeat.Gateways = report("y1", "gx", "gy")
	if affected := w2.e.UpsertNode(n); !slices.Equal(affected, []string{"gx", "gy"}) {
		t.Fatalf("affected %v, want [gx gy]", affected)
	}
	res = w2.recompute(nil)
	wantChange(t, res, "gx", "", "y1", ChangeElected)
	wantChange(t, res, "gy", "y1", "", ChangeNoLongerCandidate)
	// A node no gateway selects affects none.
	if affected := w2.e.UpsertNode(&Node{Name: "z1", Labels: map[string]string{"pool": "z"}}); len(affected) != 0 {
		t.Fatalf("affected %v", affected)
	}
}

func TestSpreadOverSharedNodes(t *testing.T) {
	names := seq("gw-%d", 1, 10)
	w := newWorld(t)
	w.addNodes(goodNode(nodeA, names...), goodNode(nodeB, names...), goodNode(nodeC, names...))
	for _, name := range names {
		g := basicGW(name)
		g.Order = v1alpha1.SelectionOrderSpread
		w.e.UpsertGateway(g)
	}
	res := w.recompute(nil)
	count := map[string]int{}
	for _, name := range names {
		r := res[name]
		count[r.Active]++
		if want := Rank(Gateway{Name: name, Order: v1alpha1.SelectionOrderSpread}, []string{nodeA, nodeB, nodeC})[0]; r.Active != want {
			t.Fatalf("%s: active %q, want %q", name, r.Active, want)
		}
	}
	for _, n := range []string{nodeA, nodeB, nodeC} {
		if count[n] < 2 {
			t.Fatalf("%s active for %d of 10 gateways: %v", n, count[n], count)
		}
	}
	// Losing a node moves only the gateways it served, each to its own next.
	res = w.change(nodeB, func(n *Node) { n.Ready = false })
	moved := 0
	for _, name := range names {
		r, ok := res[name]
		if !ok {
			t.Fatalf("%s: no result (b's reasons changed)", name)
		}
		if r.PreviousActive == nodeB {
			moved++
			rank := Rank(Gateway{Name: name, Order: v1alpha1.SelectionOrderSpread}, []string{nodeA, nodeC})
			if r.Active != rank[0] || r.ChangeReason != v1alpha1.CandidateNodeNotReady {
				t.Fatalf("%s: %+v, want %s", name, r, rank[0])
			}
		} else if r.Active != r.PreviousActive || r.ChangeReason != "" {
			t.Fatalf("%s moved though its active node stayed: %+v", name, r)
		}
	}
	if moved != count[nodeB] {
		t.Fatalf("moved %d, b served %d", moved, count[nodeB])
	}
}

func TestLeaderRestart(t *testing.T) {
	const gw = "my-egressgw"
	tests := []struct {
		name     string
		failback v1alpha1.FailbackPolicy
		prev     string
		active   string
		reason   string
	}{
		{name: "Never keeps a still-eligible active node", failback: v1alpha1.FailbackNever, prev: nodeB, active: nodeB},
		{name: "Immediate keeps the previous when it is the best", prev: nodeA, active: nodeA},
		{name: "Immediate fails back to the best", prev: nodeC, active: nodeA, reason: ChangeFailback},
		{name: "previous node gone", failback: v1alpha1.FailbackNever, prev: "lab-egress-0", active: nodeA, reason: ChangeNodeDeleted},
		{name: "no previous", active: nodeA, reason: ChangeElected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			g := basicGW(gw)
			g.Failback, g.PreviousActive = tt.failback, tt.prev
			// The gateway may be seen before or after the nodes.
			w.e.UpsertGateway(g)
			w.addNodes(goodNode(nodeA, gw), goodNode(nodeB, gw), goodNode(nodeC, gw))
			r := wantChange(t, w.recompute(nil), gw, tt.prev, tt.active, tt.reason)
			if r.ReadyNodes != 3 {
				t.Fatalf("ready %d", r.ReadyNodes)
			}
			// Nothing further to publish.
			if res := w.recompute([]string{gw}); len(res) != 0 {
				t.Fatalf("second Recompute: %+v", res)
			}
			// Our own status write comes back with the decided node: ignored
			// either way, and a stale one must not pull the role back.
			g.PreviousActive = nodeC
			w.e.UpsertGateway(g)
			if res := w.recompute([]string{gw}); len(res) != 0 || w.result(gw).Active != tt.active {
				t.Fatalf("status echo changed the decision: %+v", res)
			}
		})
	}
}

func TestNodeDeleted(t *testing.T) {
	const gw = "my-egressgw"
	w := labWorld(t, "")
	if affected := w.e.DeleteNode(nodeA); !slices.Equal(affected, []string{gw}) {
		t.Fatalf("affected %v", affected)
	}
	delete(w.nodes, nodeA)
	r := wantChange(t, w.recompute(nil), gw, nodeA, nodeB, ChangeNodeDeleted)
	if !slices.Equal(candidateNames(r), []string{nodeB, nodeC}) || r.ReadyNodes != 2 {
		t.Fatalf("got %+v", r)
	}
	if affected := w.e.DeleteNode("unknown"); affected != nil {
		t.Fatalf("deleting an unknown node affected %v", affected)
	}
	// Delete and re-create between two recomputes keeps the counts right.
	w.e.DeleteNode(nodeC)
	w.e.UpsertNode(goodNode(nodeC, gw))
	if res := w.recompute(nil); len(res) != 0 {
		t.Fatalf("delete+recreate of an unchanged node published %+v", res)
	}
	w.change(nodeB, func(n *Node) { n.Ready = false })
	if got, want := w.e.NextExpiry(w.now), t0.Add(hbLife); !got.Equal(want) {
		t.Fatalf("NextExpiry %v, want %v", got, want)
	}
	w.change(nodeC, func(n *Node) { n.Ready = false })
	if got := w.e.NextExpiry(w.now); !got.IsZero() {
		t.Fatalf("NextExpiry %v with no eligible node", got)
	}
}

func TestGatewayChanges(t *testing.T) {
	const gw = "my-egressgw"
	w := labWorld(t, "")
	g := basicGW(gw)

	// Unchanged spec: nothing to publish.
	w.e.UpsertGateway(g)
	if res := w.recompute([]string{gw}); len(res) != 0 {
		t.Fatalf("no-op upsert published %+v", res)
	}
	// A selector that drops the active node.
	w.change(nodeB, func(n *Node) { n.Labels["tier"] = "gold" })
	w.change(nodeC, func(n *Node) { n.Labels["tier"] = "gold" })
	g.NodeSelector = map[string]string{egressLabel: "", "tier": "gold"}
	w.e.UpsertGateway(g)
	r := wantChange(t, w.recompute(nil), gw, nodeA, nodeB, ChangeNoLongerCandidate)
	if !slices.Equal(candidateNames(r), []string{nodeB, nodeC}) {
		t.Fatalf("candidates %v", candidateNames(r))
	}
	// Switching to VirtualIPAddress: same node (the agents report Ready for
	// the gateway), the egress IP becomes the VIP.
	g.Mode, g.VirtualIP = v1alpha1.SourceIPModeVirtualIP, "198.51.100.7"
	w.e.UpsertGateway(g)
	r = w.recompute(nil)[gw]
	if r.Active != nodeB || r.ChangeReason != "" || r.EgressIP != "198.51.100.7" || r.Candidates[1].EgressIP != "198.51.100.7" {
		t.Fatalf("after switching to VIP mode: %+v", r)
	}
	wantChange(t, w.change(nodeB, func(n *Node) {
		n.Heartbeat.Gateways[gw] = heartbeat.GatewayReport{Reason: heartbeat.ReasonVirtualIPNotReady}
	}), gw, nodeB, nodeC, heartbeat.ReasonVirtualIPNotReady)
}

func TestSelectionSettingsChange(t *testing.T) {
	// A gateway name for which Spread ranks another node than a first.
	var name string
	for _, n := range seq("gw-%d", 1, 100) {
		if Rank(Gateway{Name: n, Order: v1alpha1.SelectionOrderSpread}, []string{nodeA, nodeB, nodeC})[0] != nodeA {
			name = n
			break
		}
	}
	if name == "" {
		t.Fatal("no gateway name among 100 ranks a node other than a first")
	}
	spreadFirst := Rank(Gateway{Name: name, Order: v1alpha1.SelectionOrderSpread}, []string{nodeA, nodeB, nodeC})[0]
	w := labWorld(t, "", name)
	g := basicGW(name)
	g.Order = v1alpha1.SelectionOrderSpread
	w.e.UpsertGateway(g)
	wantChange(t, w.recompute(nil), name, nodeA, spreadFirst, ChangeSelectionChanged)
	// The reason is used once: a later failback is a failback.
	w.change(spreadFirst, func(n *Node) { n.Cordoned = true })
	wantChange(t, w.change(spreadFirst, func(n *Node) { n.Cordoned = false }), name, w.result(name).PreviousActive, spreadFirst, ChangeFailback)

	// Never -> Immediate with a non-best active node moves it.
	g.Order, g.Failback = v1alpha1.SelectionOrderAlphabetical, v1alpha1.FailbackNever
	w.e.UpsertGateway(g)
	if res := w.recompute(nil); len(res) != 0 {
		t.Fatalf("Alphabetical+Never keeps the active node: %+v", res)
	}
	g.Failback = v1alpha1.FailbackImmediate
	w.e.UpsertGateway(g)
	wantChange(t, w.recompute(nil), name, spreadFirst, nodeA, ChangeSelectionChanged)
}

// TestSharedCandidateLists: gateways with equal candidate lists share one
// slice, and a change that differs between them never leaks from one to
// the other.
func TestSharedCandidateLists(t *testing.T) {
	setup := func() *world {
		w := newWorld(t)
		for _, name := range []string{nodeA, nodeB, nodeC} {
			n := goodNode(name, "g1", "g2")
			n.Labels["zone"] = "z1"
			w.addNodes(n)
		}
		g1, g2 := basicGW("g1"), basicGW("g2")
		g2.NodeSelector = map[string]string{"zone": "z1"}
		w.e.UpsertGateway(g1)
		w.e.UpsertGateway(g2)
		res := w.recompute(nil)
		if &res["g1"].Candidates[0] != &res["g2"].Candidates[0] {
			t.Fatal("equal candidate lists are not shared")
		}
		return w
	}
	sameList := func(w *world) bool { return &w.result("g1").Candidates[0] == &w.result("g2").Candidates[0] }

	// The same change keeps them shared.
	w := setup()
	w.change(nodeB, func(n *Node) { n.Ready = false })
	if !sameList(w) || w.result("g1").Candidates[1].Eligible {
		t.Fatal("after the same change the lists are not shared or not updated")
	}

	// Removals at different positions in one Recompute.
	w = setup()
	b := clone(w.nodes[nodeB])
	delete(b.Labels, "zone")
	c := clone(w.nodes[nodeC])
	delete(c.Labels, egressLabel)
	w.e.UpsertNode(b)
	w.e.UpsertNode(c)
	w.recompute(nil)
	if got := candidateNames(w.result("g1")); !slices.Equal(got, []string{nodeA, nodeB}) {
		t.Fatalf("g1 candidates %v", got)
	}
	if got := candidateNames(w.result("g2")); !slices.Equal(got, []string{nodeA, nodeC}) {
		t.Fatalf("g2 candidates %v", got)
	}

	// Different patches at the same position.
	w = setup()
	res := w.change(nodeA, func(n *Node) {
		n.Heartbeat.Gateways["g1"] = heartbeat.GatewayReport{Reason: heartbeat.ReasonInterfaceDown}
		n.Heartbeat.Gateways["g2"] = heartbeat.GatewayReport{Reason: heartbeat.ReasonInterfaceMissing}
	})
	wantChange(t, res, "g1", nodeA, nodeB, heartbeat.ReasonInterfaceDown)
	wantChange(t, res, "g2", nodeA, nodeB, heartbeat.ReasonInterfaceMissing)
	if sameList(w) {
		t.Fatal("different lists are shared")
	}
}

func TestActiveInternalIPChange(t *testing.T) {
	const gw = "my-egressgw"
	w := labWorld(t, "")
	ip := netip.MustParseAddr("10.9.9.9")
	res := w.change(nodeA, func(n *Node) { n.InternalIP = ip })
	r, ok := res[gw]
	if !ok || r.Active != nodeA || r.ActiveInternalIP != ip || r.ChangeReason != "" || r.PreviousActive != nodeA {
		t.Fatalf("got %+v", r)
	}
	// A standby's InternalIP is not part of the decision.
	if res := w.change(nodeB, func(n *Node) { n.InternalIP = ip }); len(res) != 0 {
		t.Fatalf("standby IP change published %+v", res)
	}
}
