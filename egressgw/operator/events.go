package operator

import (
	"fmt"
	"strings"
	"time"

	"github.com/egressha/egressha/egressgw/selection"
)

// decidedChange is one change of a gateway's active node that the
// selection decided (Result.ChangeReason set). The status write that
// follows may sum up several of them when decisions came faster than the
// writes.
type decidedChange struct {
	seq              uint64 // the decision's number (Controller.seq)
	from, to, reason string
}

func (d decidedChange) String() string {
	return fmt.Sprintf("%s -> %s (%s)", orNone(d.from), orNone(d.to), d.reason)
}

// maxDecidedChanges bounds the changes kept per gateway between two status
// writes (a write that keeps failing must not let them grow without end).
const maxDecidedChanges = 32

// writtenTransition is the change of active node a status write makes
// visible: from the active node in the status it replaces to the written
// one. Events, the active_node_changes metric and status.lastFailover
// record it, not the latest decision, which may start elsewhere.
type writtenTransition struct {
	From, To string
	// Reason: Elected when the status had no active node; otherwise the
	// reason of the latest decided change that made To active.
	Reason string
	// Via are the decided changes it sums up, when there were several.
	Via []decidedChange
}

// transitionOf derives the written transition from the status's active
// node from, the decision r being written and the decided changes since
// the status was last written (oldest first).
func transitionOf(from string, r selection.Result, changes []decidedChange) writtenTransition {
	t := writtenTransition{From: from, To: r.Active}
	if from == r.Active {
		return t
	}
	if len(changes) > 1 {
		t.Via = changes
	}
	if from == "" {
		t.Reason = selection.ChangeElected
		return t
	}
	for i := len(changes) - 1; i >= 0; i-- {
		if changes[i].to == r.Active {
			t.Reason = changes[i].reason
			return t
		}
	}
	if r.PreviousActive == from && r.ChangeReason != "" {
		t.Reason = r.ChangeReason
		return t
	}
	// No decision explains it (the status was changed by someone else):
	// why from does not have the role in the decision written.
	t.Reason = selection.ChangeNoLongerCandidate
	for _, c := range r.Candidates {
		if c.Node == from {
			t.Reason = selection.ChangeFailback
			if !c.Eligible && len(c.Reasons) > 0 {
				t.Reason = c.Reasons[0]
			}
		}
	}
	return t
}

// maxViaListed bounds how many decided changes an Event lists.
const maxViaListed = 5

// describe is the Event message of the transition, e.g. "active node
// lab-egress-a -> lab-egress-c (NodeNotReady; 2 decided changes since the
// status was last written: lab-egress-a -> lab-egress-b (Cordoned),
// lab-egress-b -> lab-egress-c (NodeNotReady)); <message>".
func (t writtenTransition) describe(message string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "active node %s -> %s (%s", orNone(t.From), orNone(t.To), t.Reason)
	if len(t.Via) > 1 {
		fmt.Fprintf(&b, "; %d decided changes since the status was last written: ", len(t.Via))
		for i, c := range t.Via {
			if i == maxViaListed {
				fmt.Fprintf(&b, ", and %d more", len(t.Via)-i)
				break
			}
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(c.String())
		}
	}
	b.WriteString(")")
	if message != "" {
		b.WriteString("; ")
		b.WriteString(message)
	}
	return b.String()
}

// Per gateway, at most changeEventBurst ActiveNodeChanged Events per
// changeEventWindow; further changes in the window are summed up in one
// ActiveNodeFlapping Event when it ends. At most six Events a minute per
// gateway stays under the rate the event recorder lets through
// (eventSpamQPS), so client-go's spam filter never silently drops one.
const (
	changeEventWindow = time.Minute
	changeEventBurst  = 5
)

// changeEvents decides which active-node changes of each gateway get an
// Event of their own and which are summed up (a flapping node must not use
// up the Events a later real failover needs). Not safe for concurrent use.
type changeEvents struct {
	window time.Duration
	burst  int
	gws    map[string]*changeWindow
}

// changeWindow is one gateway's current window.
type changeWindow struct {
	start  time.Time
	sent   int    // changes with an Event of their own
	summed int    // changes left to the summary
	last   string // the latest of those, "a -> b (Reason)"
}

func newChangeEvents() *changeEvents {
	return &changeEvents{window: changeEventWindow, burst: changeEventBurst, gws: map[string]*changeWindow{}}
}

// admit is called for each written change of gw at now, described by what.
// send says whether it gets an Event of its own. summary, when not empty,
// is the summary of the previous window, which ended without being flushed:
// record it first. flushAt, when set, is when the caller must call flush:
// this change is the first one of the window left to the summary.
func (e *changeEvents) admit(gw, what string, now time.Time) (send bool, summary string, flushAt time.Time) {
	w := e.gws[gw]
	if w != nil && !now.Before(w.start.Add(e.window)) {
		summary = e.summary(w)
		w = nil
	}
	if w == nil {
		w = &changeWindow{start: now}
		e.gws[gw] = w
	}
	if w.sent < e.burst {
		w.sent++
		return true, summary, time.Time{}
	}
	w.summed++
	w.last = what
	if w.summed == 1 {
		flushAt = w.start.Add(e.window)
	}
	return false, summary, flushAt
}

// flush returns the summary of gw's window if it ended by now with changes
// left to it, and starts afresh; "" otherwise.
func (e *changeEvents) flush(gw string, now time.Time) string {
	w := e.gws[gw]
	if w == nil || now.Before(w.start.Add(e.window)) {
		return ""
	}
	delete(e.gws, gw)
	return e.summary(w)
}

func (e *changeEvents) summary(w *changeWindow) string {
	if w.summed == 0 {
		return ""
	}
	return fmt.Sprintf("active node changed %d times in %s from %s, %d of them without an Event of their own (last: %s)",
		w.sent+w.summed, e.window, w.start.UTC().Format(time.RFC3339), w.summed, w.last)
}

// forget drops gw's window (the gateway was deleted).
func (e *changeEvents) forget(gw string) { delete(e.gws, gw) }
