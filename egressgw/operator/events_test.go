package operator

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/selection"
)

func TestTransitionOf(t *testing.T) {
	ch := func(from, to, reason string) decidedChange { return decidedChange{from: from, to: to, reason: reason} }
	cands := []selection.Candidate{{Node: "a", Reasons: []string{v1alpha1.CandidateCordoned}}, {Node: "b", Eligible: true}}
	tests := []struct {
		name    string
		from    string
		r       selection.Result
		changes []decidedChange
		reason  string
		via     int
	}{
		{name: "first election", r: selection.Result{Active: "a", ChangeReason: selection.ChangeElected},
			changes: []decidedChange{ch("", "a", selection.ChangeElected)}, reason: selection.ChangeElected},
		{name: "first election written after a failback was decided: still Elected",
			r:       selection.Result{Active: "a", PreviousActive: "b", ChangeReason: selection.ChangeFailback},
			changes: []decidedChange{ch("", "a", selection.ChangeElected), ch("a", "b", "Cordoned"), ch("b", "a", selection.ChangeFailback)},
			reason:  selection.ChangeElected, via: 3},
		{name: "one step", from: "a", r: selection.Result{Active: "b", PreviousActive: "a", ChangeReason: "Cordoned"},
			changes: []decidedChange{ch("a", "b", "Cordoned")}, reason: "Cordoned"},
		{name: "several steps: the latest decision's reason", from: "a",
			r:       selection.Result{Active: "c", PreviousActive: "b", ChangeReason: "NodeNotReady"},
			changes: []decidedChange{ch("a", "b", "Cordoned"), ch("b", "c", "NodeNotReady")}, reason: "NodeNotReady", via: 2},
		{name: "the latest decision did not move the role (a new InternalIP)", from: "a",
			r: selection.Result{Active: "b", PreviousActive: "b"}, changes: []decidedChange{ch("a", "b", "Cordoned")}, reason: "Cordoned"},
		{name: "no active node any more", from: "a", r: selection.Result{PreviousActive: "a", ChangeReason: "NodeNotReady"},
			changes: []decidedChange{ch("a", "", "NodeNotReady")}, reason: "NodeNotReady"},
		{name: "nothing written changes", from: "a", r: selection.Result{Active: "a", PreviousActive: "b", ChangeReason: selection.ChangeFailback},
			changes: []decidedChange{ch("a", "b", "Cordoned"), ch("b", "a", selection.ChangeFailback)}},
		{name: "status changed by someone else, its node ineligible", from: "a", r: selection.Result{Active: "b", PreviousActive: "b", Candidates: cands},
			reason: v1alpha1.CandidateCordoned},
		{name: "status changed by someone else, its node eligible", from: "b", r: selection.Result{Active: "a", PreviousActive: "a", Candidates: cands[1:]},
			reason: selection.ChangeFailback},
		{name: "status changed by someone else, its node no candidate", from: "x", r: selection.Result{Active: "b", PreviousActive: "b", Candidates: cands},
			reason: selection.ChangeNoLongerCandidate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := transitionOf(tt.from, tt.r, tt.changes)
			if got.From != tt.from || got.To != tt.r.Active || got.Reason != tt.reason || len(got.Via) != tt.via {
				t.Fatalf("got %+v, want %q -> %q (%s) via %d", got, tt.from, tt.r.Active, tt.reason, tt.via)
			}
		})
	}
}

func TestTransitionDescribe(t *testing.T) {
	tr := writtenTransition{From: "a", To: "c", Reason: "NodeNotReady",
		Via: []decidedChange{{from: "a", to: "b", reason: "Cordoned"}, {from: "b", to: "c", reason: "NodeNotReady"}}}
	want := "active node a -> c (NodeNotReady; 2 decided changes since the status was last written: a -> b (Cordoned), b -> c (NodeNotReady)); c is active"
	if got := tr.describe("c is active"); got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	for range 10 {
		tr.Via = append(tr.Via, decidedChange{from: "c", to: "", reason: "NodeNotReady"})
	}
	if got := tr.describe(""); !strings.HasSuffix(got, ", and 7 more)") || strings.Count(got, "->") != 1+maxViaListed {
		t.Fatalf("not bounded: %q", got)
	}
	if got := (writtenTransition{To: "a", Reason: selection.ChangeElected}).describe(""); got != "active node <none> -> a (Elected)" {
		t.Fatalf("got %q", got)
	}
}

func TestChangeEventsWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := newChangeEvents()
	for i := range changeEventBurst {
		if send, summary, at := e.admit("gw", "x", t0.Add(time.Duration(i)*time.Second)); !send || summary != "" || !at.IsZero() {
			t.Fatalf("change %d: send %v summary %q flush %v", i, send, summary, at)
		}
	}
	// The next ones are summed up; the first of them asks for a flush at
	// the window's end, the others do not.
	send, _, at := e.admit("gw", "a -> b (Cordoned)", t0.Add(10*time.Second))
	if send || !at.Equal(t0.Add(changeEventWindow)) {
		t.Fatalf("6th change: send %v flush %v", send, at)
	}
	if send, _, at := e.admit("gw", "b -> a (Failback)", t0.Add(11*time.Second)); send || !at.IsZero() {
		t.Fatalf("7th change: send %v flush %v", send, at)
	}
	// Another gateway has its own window.
	if send, _, _ := e.admit("other", "x", t0.Add(12*time.Second)); !send {
		t.Fatal("another gateway's change was held back")
	}
	if s := e.flush("gw", t0.Add(changeEventWindow-1)); s != "" {
		t.Fatalf("flushed before the window ended: %q", s)
	}
	want := "active node changed 7 times in 1m0s from 2026-01-01T00:00:00Z, 2 of them without an Event of their own (last: b -> a (Failback))"
	if s := e.flush("gw", t0.Add(changeEventWindow)); s != want {
		t.Fatalf("summary %q\nwant    %q", s, want)
	}
	if s := e.flush("gw", t0.Add(2*changeEventWindow)); s != "" {
		t.Fatalf("flushed twice: %q", s)
	}
	// A window that ended unflushed hands its summary to the next change,
	// which gets its Event.
	for i := range changeEventBurst + 1 {
		e.admit("gw", fmt.Sprint("change ", i), t0.Add(time.Hour))
	}
	send, summary, _ := e.admit("gw", "late", t0.Add(time.Hour+changeEventWindow))
	if !send || !strings.Contains(summary, "(last: change 5)") {
		t.Fatalf("send %v summary %q", send, summary)
	}
}

// fakeRecorderController is a Controller with just what afterGatewayWrite
// needs, a fake clock and a fake Event recorder.
func fakeRecorderController(t *testing.T) (*Controller, *clocktesting.FakeClock, *record.FakeRecorder) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c := NewController(slog.New(slog.DiscardHandler), nil, nil, nil, nil, nil, NewMetrics(), clk, Inputs{})
	rec := record.NewFakeRecorder(100)
	c.recorder = rec
	return c, clk, rec
}

func gatewayWithActive(active, rv string) *v1alpha1.EgressGateway {
	gw := &v1alpha1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "gw", ResourceVersion: rv}}
	gw.Status.ActiveNodeName = active
	return gw
}

func nextEvent(t *testing.T, rec *record.FakeRecorder) string {
	t.Helper()
	select {
	case ev := <-rec.Events:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no Event recorded")
	}
	return ""
}

func noEvent(t *testing.T, rec *record.FakeRecorder) {
	t.Helper()
	select {
	case ev := <-rec.Events:
		t.Fatalf("unexpected Event %q", ev)
	case <-time.After(50 * time.Millisecond):
	}
}

// The Events of a gateway say what was written; a flap is summed up, and
// the change after it is recorded.
func TestActiveNodeEvents(t *testing.T) {
	c, clk, rec := fakeRecorderController(t)
	write := func(from, to string, r selection.Result, changes ...decidedChange) {
		t.Helper()
		old, written := gatewayWithActive(from, "1"), gatewayWithActive(to, "2")
		c.mu.Lock()
		c.gateways["gw"], c.results["gw"] = written, r
		c.mu.Unlock()
		c.afterGatewayWrite(old, written, r, transitionOf(from, r, changes), clk.Now())
	}
	// The first write after "" -> a, a -> b, b -> a were decided.
	r := selection.Result{Gateway: "gw", Active: "a", PreviousActive: "b", ChangeReason: selection.ChangeFailback, Message: "a is active"}
	write("", "a", r, decidedChange{to: "a", reason: selection.ChangeElected},
		decidedChange{from: "a", to: "b", reason: "Cordoned"}, decidedChange{from: "b", to: "a", reason: selection.ChangeFailback})
	want := "Normal ActiveNodeChanged active node <none> -> a (Elected; 3 decided changes since the status was last written: " +
		"<none> -> a (Elected), a -> b (Cordoned), b -> a (Failback)); a is active"
	if ev := nextEvent(t, rec); ev != want {
		t.Fatalf("first election: %q\nwant %q", ev, want)
	}
	if n := c.metrics.ActiveChanges.WithLabelValues("gw", selection.ChangeElected).Get(); n != 1 {
		t.Fatalf("Elected counted %v times", n)
	}
	if n := c.metrics.ActiveChanges.WithLabelValues("gw", selection.ChangeFailback).Get(); n != 0 {
		t.Fatalf("Failback counted %v times", n)
	}

	// b flaps: 20 more changes in the first minute.
	from, to := "a", "b"
	for i := range 20 {
		clk.Step(2 * time.Second)
		reason := "Cordoned"
		if to == "a" {
			reason = selection.ChangeFailback
		}
		write(from, to, selection.Result{Gateway: "gw", Active: to, PreviousActive: from, ChangeReason: reason},
			decidedChange{from: from, to: to, reason: reason})
		if i < changeEventBurst-1 {
			if ev := nextEvent(t, rec); !strings.HasPrefix(ev, "Normal ActiveNodeChanged active node "+from+" -> "+to) {
				t.Fatalf("change %d: %q", i, ev)
			}
		}
		from, to = to, from
	}
	noEvent(t, rec)
	if n := c.metrics.ActiveChanges.WithLabelValues("gw", "Cordoned").Get(); n != 10 {
		t.Fatalf("the metric counts every change: Cordoned %v, want 10", n)
	}
	// The window ends at 00:01:00: one summary.
	clk.Step(time.Minute - 40*time.Second - time.Millisecond)
	noEvent(t, rec)
	clk.Step(time.Millisecond)
	want = "Warning ActiveNodeFlapping active node changed 21 times in 1m0s from 2026-01-01T00:00:00Z, 16 of them without an Event of their own (last: b -> a (Failback))"
	if ev := nextEvent(t, rec); ev != want {
		t.Fatalf("summary %q\nwant    %q", ev, want)
	}
	// The flap is over; a real failover later is recorded.
	clk.Step(10 * time.Minute)
	write("a", "b", selection.Result{Gateway: "gw", Active: "b", PreviousActive: "a", ChangeReason: "NodeNotReady", Message: "b is active"},
		decidedChange{from: "a", to: "b", reason: "NodeNotReady"})
	if ev := nextEvent(t, rec); ev != "Normal ActiveNodeChanged active node a -> b (NodeNotReady); b is active" {
		t.Fatalf("after the flap: %q", ev)
	}
	// Losing every node is a Warning.
	write("b", "", selection.Result{Gateway: "gw", PreviousActive: "b", ChangeReason: "NodeNotReady"},
		decidedChange{from: "b", reason: "NodeNotReady"})
	if ev := nextEvent(t, rec); !strings.HasPrefix(ev, "Warning ActiveNodeChanged active node b -> <none> (NodeNotReady)") {
		t.Fatalf("fail closed: %q", ev)
	}
}

// status.lastFailover records the written transition, with its reason.
func TestLastFailoverReason(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC)
	r := selection.Result{Gateway: "gw", Active: "a", PreviousActive: "b", ChangeReason: selection.ChangeFailback}
	changes := []decidedChange{{to: "a", reason: selection.ChangeElected}, {from: "a", to: "b", reason: "Cordoned"},
		{from: "b", to: "a", reason: selection.ChangeFailback}}
	gw := gatewayWithActive("", "1")
	tr := transitionOf(gw.Status.ActiveNodeName, r, changes)
	w := r
	w.ChangeReason = tr.Reason
	st := DesiredStatus(gw, w, heartbeat.GatewayReport{}, nil, now.Add(-time.Second), now)
	if lf := st.LastFailover; lf == nil || lf.From != "" || lf.To != "a" || lf.Reason != selection.ChangeElected || lf.Duration.Duration != time.Second {
		t.Fatalf("lastFailover %+v", lf)
	}
	// A later write records the latest change.
	gw.Status = st
	r = selection.Result{Gateway: "gw", Active: "b", PreviousActive: "a", ChangeReason: "Cordoned"}
	tr = transitionOf("a", r, []decidedChange{{from: "a", to: "b", reason: "Cordoned"}})
	w = r
	w.ChangeReason = tr.Reason
	st = DesiredStatus(gw, w, heartbeat.GatewayReport{}, nil, now, now.Add(time.Second))
	if lf := st.LastFailover; lf == nil || lf.From != "a" || lf.To != "b" || lf.Reason != "Cordoned" || !lf.Time.Time.Equal(now.Add(time.Second)) {
		t.Fatalf("lastFailover %+v", lf)
	}
}
