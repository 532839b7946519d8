package selection

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/heartbeat"
)

const egressLabel = "node-role.deckhouse.io/egress"

var (
	t0     = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	hbLife = 4 * time.Second
	egSel  = map[string]string{egressLabel: ""}
)

// egressIPOf is the interface address a test node reports: 203.0.113.<i>
// for the i-th letter of its name's last character.
func egressIPOf(node string) string {
	return fmt.Sprintf("203.0.113.%d", int(node[len(node)-1])%250+1)
}

func internalIPOf(node string) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 0, 0, byte(int(node[len(node)-1])%250 + 1)})
}

// report is a Ready report for each gateway, with the node's egress IP.
func report(node string, gws ...string) heartbeat.Report {
	r := heartbeat.Report{}
	for _, g := range gws {
		r[g] = heartbeat.GatewayReport{Ready: true, EgressIP: egressIPOf(node)}
	}
	return r
}

// goodNode is an eligible egress node for the given gateways: labelled,
// Ready, not cordoned, agent Ready, heartbeat renewed at t0.
func goodNode(name string, gws ...string) *Node {
	return &Node{
		Name:       name,
		Labels:     map[string]string{egressLabel: "", "kubernetes.io/hostname": name},
		InternalIP: internalIPOf(name),
		Ready:      true,
		AgentReady: true,
		Heartbeat: &heartbeat.Heartbeat{
			Node: name, RenewTime: t0, Duration: hbLife, Gateways: report(name, gws...),
		},
	}
}

func basicGW(name string) Gateway {
	return Gateway{Name: name, NodeSelector: maps.Clone(egSel), Mode: v1alpha1.SourceIPModePrimaryIP}
}

// clone deep-copies the parts of a node a test mutates.
func clone(n *Node) *Node {
	c := *n
	c.Labels = maps.Clone(n.Labels)
	if n.Heartbeat != nil {
		h := *n.Heartbeat
		h.Gateways = maps.Clone(n.Heartbeat.Gateways)
		c.Heartbeat = &h
	}
	return &c
}

// world drives an Engine like the operator does and remembers the nodes.
type world struct {
	t     *testing.T
	e     *Engine
	nodes map[string]*Node
	now   time.Time
}

func newWorld(t *testing.T) *world {
	return &world{t: t, e: NewEngine(), nodes: map[string]*Node{}, now: t0}
}

func (w *world) addNodes(ns ...*Node) {
	for _, n := range ns {
		w.nodes[n.Name] = n
		w.e.UpsertNode(n)
	}
}

// change applies f to a copy of the node, upserts it and recomputes the
// affected gateways; it returns the changed results by gateway.
func (w *world) change(name string, f func(n *Node)) map[string]Result {
	w.t.Helper()
	n := clone(w.nodes[name])
	f(n)
	w.nodes[name] = n
	return w.recompute(w.e.UpsertNode(n))
}

func (w *world) recompute(gws []string) map[string]Result {
	w.t.Helper()
	out := map[string]Result{}
	for _, r := range w.e.Recompute(gws, w.now) {
		if _, dup := out[r.Gateway]; dup {
			w.t.Fatalf("Recompute returned %s twice", r.Gateway)
		}
		out[r.Gateway] = r
	}
	return out
}

func (w *world) result(gw string) Result {
	w.t.Helper()
	r, ok := w.e.Result(gw)
	if !ok {
		w.t.Fatalf("no result for %s", gw)
	}
	return r
}

// wantChange checks that res holds a change of gw's active node.
func wantChange(t *testing.T, res map[string]Result, gw, from, to, reason string) Result {
	t.Helper()
	r, ok := res[gw]
	if !ok {
		t.Fatalf("%s: no result returned, want %s -> %s (%s); got results for %v", gw, from, to, reason, slices.Collect(maps.Keys(res)))
	}
	if r.PreviousActive != from || r.Active != to || r.ChangeReason != reason {
		t.Fatalf("%s: got %q -> %q (%q), want %q -> %q (%q); message %q", gw, r.PreviousActive, r.Active, r.ChangeReason, from, to, reason, r.Message)
	}
	return r
}

func candidateNames(r Result) []string {
	var out []string
	for _, c := range r.Candidates {
		out = append(out, c.Node)
	}
	return out
}

// sameFacts compares candidate lists but not EligibleSince and
// wasEligible, which only the Engine keeps (Select has no history).
func sameFacts(a, b []Candidate) bool {
	return slices.EqualFunc(a, b, func(x, y Candidate) bool {
		x.EligibleSince, y.EligibleSince = time.Time{}, time.Time{}
		x.wasEligible, y.wasEligible = false, false
		return candidateEqual(&x, &y)
	})
}
