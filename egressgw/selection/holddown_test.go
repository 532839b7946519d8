package selection

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
)

const holdDown = 10 * time.Second

// TestChooseActiveHoldDown is the hold-down rule as a table: at t0, a node
// "held" became eligible 1 s ago (held until t0+9s), "steady" 1 min ago.
func TestChooseActiveHoldDown(t *testing.T) {
	const (
		held   = "held"
		steady = "steady"
		off    = "off"        // not eligible
		rst    = "restarting" // eligible only because its agent restarts
	)
	since := map[string]time.Time{held: t0.Add(-time.Second), steady: t0.Add(-time.Minute)}
	cands := func(states ...string) []Candidate {
		out := make([]Candidate, len(states))
		for i, s := range states {
			out[i] = Candidate{Node: string(rune('a' + i)), Eligible: s != off, EligibleSince: since[s], Restarting: s == rst}
		}
		return out
	}
	tests := []struct {
		name     string
		failback v1alpha1.FailbackPolicy
		hold     time.Duration
		cands    []Candidate // nodes a, b, c in rank order
		prev     string
		want     string
	}{
		{name: "first election is not delayed", cands: cands(held, held, held), want: "a"},
		{name: "first election prefers a steady node", cands: cands(held, steady, held), want: "b"},
		{name: "Immediate: a held better node waits", cands: cands(held, steady, steady), prev: "b", want: "b"},
		{name: "Immediate: the previous node keeps the role while itself held", cands: cands(held, held, steady), prev: "b", want: "b"},
		{name: "Immediate: a steady better node takes over", cands: cands(held, steady, steady), prev: "c", want: "b"},
		{name: "Immediate: fails back once nothing better is held", cands: cands(steady, steady, steady), prev: "c", want: "a"},
		{name: "Immediate: previous gone, a steady node before a held one", cands: cands(off, held, steady), prev: "a", want: "c"},
		{name: "Immediate: previous gone, every eligible node held: the best anyway", cands: cands(off, held, held), prev: "a", want: "b"},
		{name: "Immediate: previous unknown (a new leader's status names a deleted node)", cands: cands(held, steady, held), prev: "x", want: "b"},
		{name: "Never: the previous node stays while eligible", failback: v1alpha1.FailbackNever, cands: cands(steady, steady, held), prev: "c", want: "c"},
		{name: "Never: previous gone, a steady node before a held one", failback: v1alpha1.FailbackNever, cands: cands(off, held, steady), prev: "a", want: "c"},
		{name: "Never: previous gone, every eligible node held", failback: v1alpha1.FailbackNever, cands: cands(off, held, held), prev: "a", want: "b"},
		{name: "no eligible node", cands: cands(off, off, off), prev: "a", want: ""},
		{name: "a restarting node keeps its role", cands: cands(rst, steady, steady), prev: "a", want: "a"},
		{name: "a restarting node is not given the role", cands: cands(rst, steady, steady), prev: "c", want: "b"},
		{name: "previous gone: a steady node before a restarting one", cands: cands(off, rst, steady), prev: "a", want: "c"},
		{name: "Never: previous gone: a steady node before a restarting one", failback: v1alpha1.FailbackNever, cands: cands(off, rst, steady), prev: "a", want: "c"},
		{name: "previous gone, only restarting nodes: the best anyway", cands: cands(off, rst, rst), prev: "a", want: "b"},
		{name: "HoldDown 0 holds nothing", hold: -1, cands: cands(held, steady, steady), prev: "b", want: "a"},
		{name: "a hold ends at EligibleSince+HoldDown exactly", hold: time.Second, cands: cands(held, steady, steady), prev: "b", want: "a"},
		{name: "no EligibleSince (Select) holds nothing", cands: []Candidate{{Node: "a", Eligible: true}, {Node: "b", Eligible: true}}, prev: "b", want: "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := normalize(Gateway{Name: "gw", Failback: tt.failback, HoldDown: holdDown})
			switch {
			case tt.hold < 0:
				gw.HoldDown = 0
			case tt.hold > 0:
				gw.HoldDown = tt.hold
			}
			if got := chooseActive(&gw, tt.cands, nil, tt.prev, t0); got != tt.want {
				t.Fatalf("chooseActive = %q, want %q", got, tt.want)
			}
			// Spread order walks the same rule over its ranking: give it
			// the alphabetical ranking and it must agree.
			gw.Order = v1alpha1.SelectionOrderSpread
			rank := make([]rankEntry, len(tt.cands))
			for i := range tt.cands {
				rank[i] = rankEntry{score: uint64(len(tt.cands) - i), name: tt.cands[i].Node}
			}
			if got := chooseActive(&gw, tt.cands, rank, tt.prev, t0); got != tt.want {
				t.Fatalf("Spread: chooseActive = %q, want %q", got, tt.want)
			}
		})
	}
}

// longNode is goodNode with a heartbeat that outlives the test, so that
// only hold-downs end.
func longNode(name string, gws ...string) *Node {
	n := goodNode(name, gws...)
	n.Heartbeat.Duration = 24 * time.Hour
	return n
}

func holdGW(name string, failback v1alpha1.FailbackPolicy) Gateway {
	g := basicGW(name)
	g.Failback, g.HoldDown = failback, holdDown
	return g
}

// TestHoldDownFlap: a node that flaps every second never regains the role;
// once it has been eligible for HoldDown without interruption, failback
// Immediate moves the role back at the instant the hold ends, without an
// event, because NextExpiry pointed there.
func TestHoldDownFlap(t *testing.T) {
	const gw = "my-egressgw"
	w := newWorld(t)
	w.addNodes(longNode(nodeA, gw), longNode(nodeB, gw), longNode(nodeC, gw))
	w.e.UpsertGateway(holdGW(gw, ""))
	// A new gateway: every candidate is new, none is waited for.
	r := wantChange(t, w.recompute(nil), gw, "", nodeA, ChangeElected)
	if r.Message != "lab-egress-a is active; 3 of 3 candidate nodes are eligible" || !r.HoldDownUntil.IsZero() {
		t.Fatalf("first election: %+v", r)
	}
	if got := w.e.NextExpiry(w.now); !got.Equal(t0.Add(24 * time.Hour)) {
		t.Fatalf("NextExpiry = %v, want the heartbeat expiry only (no hold moves a role)", got)
	}

	w.now = t0.Add(time.Second)
	wantChange(t, w.change(nodeA, func(n *Node) { n.Cordoned = true }), gw, nodeA, nodeB, v1alpha1.CandidateCordoned)
	// a flaps: eligible at 2 s, 4 s, ..., 20 s, cordoned in between.
	var last time.Time
	for s := 2; s <= 20; s++ {
		w.now = t0.Add(time.Duration(s) * time.Second)
		cordoned := s%2 == 1
		res := w.change(nodeA, func(n *Node) { n.Cordoned = cordoned })
		r, ok := res[gw]
		if !ok || r.Active != nodeB || r.ChangeReason != "" {
			t.Fatalf("at %ds (cordoned %v): %+v", s, cordoned, r)
		}
		if cordoned {
			if !r.HoldDownUntil.IsZero() || strings.Contains(r.Message, "held") {
				t.Fatalf("at %ds: a cordoned node is not held, it is ineligible: %+v", s, r)
			}
			continue
		}
		last = w.now
		want := fmt.Sprintf("lab-egress-b is active; 3 of 3 candidate nodes are eligible; lab-egress-a is held down until %s (eligible since %s)",
			formatTime(last.Add(holdDown)), formatTime(last))
		if r.Message != want || !r.HoldDownUntil.Equal(last.Add(holdDown)) {
			t.Fatalf("at %ds: message %q, hold until %v\nwant %q", s, r.Message, r.HoldDownUntil, want)
		}
		if got := w.e.NextExpiry(w.now); !got.Equal(last.Add(holdDown)) {
			t.Fatalf("at %ds: NextExpiry %v, want the end of a's hold %v", s, got, last.Add(holdDown))
		}
	}
	// Steady since 20 s: nothing moves before 30 s ...
	w.now = last.Add(holdDown - time.Nanosecond)
	if res := w.recompute(nil); len(res) != 0 {
		t.Fatalf("before the hold ends: %+v", res)
	}
	// ... and at 30 s, with no event, it fails back.
	w.now = last.Add(holdDown)
	r = wantChange(t, w.recompute(nil), gw, nodeB, nodeA, ChangeFailback)
	if r.Message != "lab-egress-a is active; 3 of 3 candidate nodes are eligible" || !r.HoldDownUntil.IsZero() {
		t.Fatalf("after the hold: %+v", r)
	}
	if got := w.e.NextExpiry(w.now); !got.Equal(t0.Add(24 * time.Hour)) {
		t.Fatalf("NextExpiry after the failback = %v", got)
	}
}

// TestHoldDownNever: with failback Never a hold changes nothing once the
// active node is eligible; nothing waits for a hold, so no timer is armed.
func TestHoldDownNever(t *testing.T) {
	const gw = "my-egressgw"
	w := newWorld(t)
	w.addNodes(longNode(nodeA, gw), longNode(nodeB, gw), longNode(nodeC, gw))
	w.e.UpsertGateway(holdGW(gw, v1alpha1.FailbackNever))
	wantChange(t, w.recompute(nil), gw, "", nodeA, ChangeElected)
	// b and c turn eligible again at 1 s; a fails at 2 s: both are held,
	// the best of them takes over at once.
	w.now = t0.Add(time.Second)
	w.change(nodeB, func(n *Node) { n.Ready = false })
	w.change(nodeB, func(n *Node) { n.Ready = true })
	w.change(nodeC, func(n *Node) { n.Ready = false })
	w.change(nodeC, func(n *Node) { n.Ready = true })
	w.now = t0.Add(2 * time.Second)
	r := wantChange(t, w.change(nodeA, func(n *Node) { n.Ready = false }), gw, nodeA, nodeB, v1alpha1.CandidateNodeNotReady)
	if strings.Contains(r.Message, "held") || !r.HoldDownUntil.IsZero() {
		t.Fatalf("Never waits for nothing: %+v", r)
	}
	// a comes back: Never keeps b, now and after a's hold.
	w.now = t0.Add(3 * time.Second)
	if r := w.change(nodeA, func(n *Node) { n.Ready = true })[gw]; r.Active != nodeB || !r.HoldDownUntil.IsZero() {
		t.Fatalf("a back: %+v", r)
	}
	if got := w.e.NextExpiry(w.now); !got.Equal(t0.Add(24 * time.Hour)) {
		t.Fatalf("NextExpiry = %v, want the heartbeat expiry", got)
	}
	w.now = t0.Add(time.Minute)
	if res := w.recompute(nil); len(res) != 0 {
		t.Fatalf("after the hold: %+v", res)
	}
	// c flaps; then b fails: a, steady by now, takes over.
	w.change(nodeC, func(n *Node) { n.Ready = false })
	w.change(nodeC, func(n *Node) { n.Ready = true })
	wantChange(t, w.change(nodeB, func(n *Node) { n.Ready = false }), gw, nodeB, nodeA, v1alpha1.CandidateNodeNotReady)
}

// TestHoldDownNeverPrefersSteady: with failback Never a node that just
// came back does not take over from a failed node when a steady one is
// there, even if it ranks first.
func TestHoldDownNeverPrefersSteady(t *testing.T) {
	const gw = "my-egressgw"
	w := newWorld(t)
	w.addNodes(longNode(nodeA, gw), longNode(nodeB, gw), longNode(nodeC, gw))
	w.e.UpsertGateway(holdGW(gw, v1alpha1.FailbackNever))
	w.recompute(nil)
	w.now = t0.Add(time.Minute)
	wantChange(t, w.change(nodeA, func(n *Node) { n.Ready = false }), gw, nodeA, nodeB, v1alpha1.CandidateNodeNotReady)
	w.now = t0.Add(2 * time.Minute)
	w.change(nodeA, func(n *Node) { n.Ready = true })
	w.now = t0.Add(2*time.Minute + time.Second)
	// a (held until 2m10s) ranks first, c is steady: c.
	wantChange(t, w.change(nodeB, func(n *Node) { n.Ready = false }), gw, nodeB, nodeC, v1alpha1.CandidateNodeNotReady)
}

// TestHoldDownNewEngineKeepsPrevious: a new operator leader starts with a
// fresh Engine, to which every candidate is new. It keeps the active node
// of the status it finds, and fails back only when the hold ends.
func TestHoldDownNewEngineKeepsPrevious(t *testing.T) {
	const gw = "my-egressgw"
	w := newWorld(t)
	g := holdGW(gw, "")
	g.PreviousActive = nodeB
	w.e.UpsertGateway(g)
	w.addNodes(longNode(nodeA, gw), longNode(nodeB, gw), longNode(nodeC, gw))
	r := wantChange(t, w.recompute(nil), gw, nodeB, nodeB, "")
	if !strings.HasSuffix(r.Message, "; lab-egress-a is held down until 2025-06-01T12:00:10Z (eligible since 2025-06-01T12:00:00Z)") {
		t.Fatalf("message %q", r.Message)
	}
	if got := w.e.NextExpiry(w.now); !got.Equal(t0.Add(holdDown)) {
		t.Fatalf("NextExpiry %v, want %v", got, t0.Add(holdDown))
	}
	w.now = t0.Add(holdDown)
	wantChange(t, w.recompute(nil), gw, nodeB, nodeA, ChangeFailback)

	// The previous node is not eligible any more: the new leader moves
	// the role at once, to the best held node.
	w = newWorld(t)
	w.e.UpsertGateway(g)
	b := longNode(nodeB, gw)
	b.Cordoned = true
	w.addNodes(longNode(nodeA, gw), b, longNode(nodeC, gw))
	wantChange(t, w.recompute(nil), gw, nodeB, nodeA, v1alpha1.CandidateCordoned)
}

// TestHoldDownNewCandidate: a node that becomes a candidate and is eligible
// for the first time is not held: it takes the role its rank gives it at
// once (a hold is for nodes that fail and come back). One that fails and
// returns is held.
func TestHoldDownNewCandidate(t *testing.T) {
	const gw = "my-egressgw"
	w := newWorld(t)
	a := longNode(nodeA, gw)
	delete(a.Labels, egressLabel)
	w.addNodes(a, longNode(nodeB, gw))
	w.e.UpsertGateway(holdGW(gw, ""))
	wantChange(t, w.recompute(nil), gw, "", nodeB, ChangeElected)
	w.now = t0.Add(time.Minute)
	wantChange(t, w.change(nodeA, func(n *Node) { n.Labels[egressLabel] = "" }), gw, nodeB, nodeA, ChangeFailback)
	// It fails and comes back at 1m5s: held until 1m5s + the hold-down.
	w.now = t0.Add(time.Minute + 5*time.Second)
	wantChange(t, w.change(nodeA, func(n *Node) { n.Ready = false }), gw, nodeA, nodeB, v1alpha1.CandidateNodeNotReady)
	if r := w.change(nodeA, func(n *Node) { n.Ready = true })[gw]; r.Active != nodeB || !r.HoldDownUntil.Equal(w.now.Add(holdDown)) {
		t.Fatalf("back: %+v", r)
	}
	w.now = t0.Add(time.Minute + 5*time.Second + holdDown)
	wantChange(t, w.recompute(nil), gw, nodeB, nodeA, ChangeFailback)
}

// TestHoldDownSettingChanges: a shorter HoldDown ends holds at once; the
// Engine re-decides though no candidate changed.
func TestHoldDownSettingChanges(t *testing.T) {
	const gw = "my-egressgw"
	w := newWorld(t)
	w.addNodes(longNode(nodeA, gw), longNode(nodeB, gw))
	g := holdGW(gw, "")
	w.e.UpsertGateway(g)
	w.recompute(nil)
	w.now = t0.Add(time.Minute)
	w.change(nodeA, func(n *Node) { n.Ready = false })
	w.now = t0.Add(2 * time.Minute)
	if r := w.change(nodeA, func(n *Node) { n.Ready = true })[gw]; r.Active != nodeB {
		t.Fatalf("%+v", r)
	}
	g.HoldDown = time.Hour
	w.e.UpsertGateway(g)
	r := w.recompute(nil)[gw]
	if r.Active != nodeB || !r.HoldDownUntil.Equal(w.now.Add(time.Hour)) {
		t.Fatalf("longer hold: %+v", r)
	}
	g.HoldDown = 0
	w.e.UpsertGateway(g)
	wantChange(t, w.recompute(nil), gw, nodeB, nodeA, ChangeFailback)
	if got := w.e.NextExpiry(w.now); !got.Equal(t0.Add(24 * time.Hour)) {
		t.Fatalf("NextExpiry %v: the ended hold is still armed", got)
	}
}

// TestHoldDownMessageBounded: many held nodes are counted, not listed.
func TestHoldDownMessageBounded(t *testing.T) {
	const gw = "my-egressgw"
	names := seq("node-%02d", 0, 20)
	w := newWorld(t)
	for _, n := range names {
		w.addNodes(longNode(n, gw))
	}
	g := holdGW(gw, "")
	g.PreviousActive = names[len(names)-1]
	w.e.UpsertGateway(g)
	r := w.recompute(nil)[gw]
	if r.Active != names[len(names)-1] {
		t.Fatalf("active %q", r.Active)
	}
	if n := strings.Count(r.Message, "is held down until"); n != maxMessageNodes {
		t.Fatalf("%d held nodes listed, want %d: %q", n, maxMessageNodes, r.Message)
	}
	if !strings.HasSuffix(r.Message, fmt.Sprintf("; and %d more held down", len(names)-1-maxMessageNodes)) {
		t.Fatalf("message %q", r.Message)
	}
}

// TestHoldDownSharedLists: gateways that share candidate lists keep
// sharing them with a hold-down (EligibleSince is part of the list and is
// the same for the same change at the same instant).
func TestHoldDownSharedLists(t *testing.T) {
	w := newWorld(t)
	w.addNodes(longNode(nodeA, "g1", "g2"), longNode(nodeB, "g1", "g2"))
	w.e.UpsertGateway(holdGW("g1", ""))
	w.e.UpsertGateway(holdGW("g2", v1alpha1.FailbackNever))
	w.recompute(nil)
	w.now = t0.Add(time.Minute)
	w.change(nodeA, func(n *Node) { n.Ready = false })
	w.now = t0.Add(2 * time.Minute)
	res := w.change(nodeA, func(n *Node) { n.Ready = true })
	if &res["g1"].Candidates[0] != &res["g2"].Candidates[0] {
		t.Fatal("the same change at the same instant did not share the list")
	}
	if got := res["g1"].Candidates[0].EligibleSince; !got.Equal(w.now) {
		t.Fatalf("EligibleSince %v, want %v", got, w.now)
	}
}

// TestHoldDownUnsteady: a node that blips faster than it can be judged
// Down (Unsteady while its probes go unanswered) stays eligible, but its
// hold-down starts over when it answers again.
func TestHoldDownUnsteady(t *testing.T) {
	const gw = "my-egressgw"
	w := newWorld(t)
	w.addNodes(longNode(nodeA, gw), longNode(nodeB, gw))
	w.e.UpsertGateway(holdGW(gw, ""))
	wantChange(t, w.recompute(nil), gw, "", nodeA, ChangeElected)
	w.now = t0.Add(time.Minute)
	wantChange(t, w.change(nodeA, func(n *Node) { n.Ready = false }), gw, nodeA, nodeB, v1alpha1.CandidateNodeNotReady)
	w.change(nodeA, func(n *Node) { n.Ready = true })
	// 5 s into its hold it blips: unsteady, then steady again at 5.5 s.
	w.now = t0.Add(time.Minute + 5*time.Second)
	w.change(nodeA, func(n *Node) { n.Unsteady = true })
	w.now = t0.Add(time.Minute + 5500*time.Millisecond)
	r := w.change(nodeA, func(n *Node) { n.Unsteady = false })[gw]
	if r.Active != nodeB || !r.HoldDownUntil.Equal(w.now.Add(holdDown)) {
		t.Fatalf("after the blip: active %s, hold until %s; want %s until %s", r.Active, r.HoldDownUntil, nodeB, w.now.Add(holdDown))
	}
	// The first hold's end passes: nothing moves.
	w.now = t0.Add(time.Minute + holdDown)
	if res := w.recompute(nil); len(res) != 0 {
		t.Fatalf("the hold ended although the node blipped: %+v", res)
	}
	w.now = t0.Add(time.Minute + 5500*time.Millisecond + holdDown)
	wantChange(t, w.recompute(nil), gw, nodeB, nodeA, ChangeFailback)
}
