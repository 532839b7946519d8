package operator

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/probe"
	"github.com/egressha/egressha/egressgw/selection"
)

// fenceMargin is added to a node's reported fence bound before a role it
// may hold as a VIP announcer is handed on: the last probe that told it
// "hear you" may still have been in flight when its session went Down.
const fenceMargin = 50 * time.Millisecond

// livenessInput is what the operator knows of one node's liveness.
type livenessInput struct {
	Node string
	// Probe is this replica's probe session to the node (State Init when
	// there is none).
	Probe probe.Status
	// Heartbeat is the node's decoded Lease (nil: none).
	Heartbeat *heartbeat.Heartbeat
	// RestartUntil is the end of the restart grace the node's agent asked
	// for as it stopped (zero: none in progress).
	RestartUntil time.Time
}

// livenessVerdict is the liveness of every node, and why.
type livenessVerdict struct {
	Reach map[string]selection.Reach
	// ProbeSuspect: most probed candidates went Down together; this
	// replica's own view is suspect, so they are judged by their Leases.
	ProbeSuspect bool
	// LeaseSuspect: most Lease-judged nodes' heartbeats lapsed together
	// (a control-plane fault); those nodes are held alive.
	LeaseSuspect bool
	// Held are the nodes kept alive (or judged by Lease) by either rule.
	Held []string
	// Why explains the suspicion ("" when none).
	Why string
	// Restarting are the nodes whose agent restarts within its grace
	// while the node itself answers kernel echo: their agent's absence
	// (probes, Pod readiness, Lease) does not count.
	Restarting map[string]bool
	// Unsteady are the nodes judged alive while their probes go
	// unanswered (fence wait, agent silence): their hold-down starts over.
	Unsteady map[string]bool
	// Wake is the earliest instant the verdict changes without an input
	// changing (a pending fence wait or a restart grace ends); zero: none.
	Wake time.Time
}

// agentSilence is how long a node whose agent stopped answering probes,
// while the node's kernel still answers echo, stays alive: its datapath
// keeps forwarding (basic mode SNATs in BPF; a VIP stays in the
// neighbours' ARP caches), so nothing is lost by waiting, and an agent
// starved of CPU for a moment (a datapath regeneration on a busy node)
// does not move the role. A crashed agent is Down after it, or as soon as
// its Pod is not Ready; a node that is gone stops answering echo too and
// is Down at once.
const agentSilence = 3 * time.Second

// majority is the suspicion threshold: at least two nodes, and more than
// half of them, failed together. One node of two failing is a failure,
// not a suspect observer.
func majority(failed, of int) bool { return of >= 2 && 2*failed > of }

// judgeLiveness decides each node's Reach (issue 14):
//
//   - probe Up: ReachUp (alive, whatever its Lease says: a lapsed Lease
//     only means the node cannot reach the API server);
//   - probe Down while kernel echo is Up (the agent is silent, the node
//     lives): ReachUp for agentSilence, then as below;
//   - probe Down: ReachDown, once the node's fence bound (plus a margin)
//     has passed since it went Down: a VIP announcer has stopped
//     answering by then, so the role may move and the successor may claim
//     at once. Until then ReachUp. A node that reports no fence bound (no
//     VIP) is Down at once;
//   - but when most probed nodes are Down together (majority), this
//     replica's network is the likelier fault: the Down nodes are judged
//     by their Leases instead (ReachUnknown), the second vantage point,
//     through the API server. A real multi-node failure is then handled
//     when their Leases expire; an observer fault moves nothing;
//   - probe Init (no reply since this replica started probing, or probing
//     off): the Lease decides (ReachUnknown), except that when most of
//     these nodes' Leases lapsed together, the lapsed ones are held alive
//     (ReachUp): all heartbeats expiring at once is a control-plane
//     fault, not a cluster-wide crash.
//
// A node whose agent stopped to restart (RestartUntil ahead) is judged
// by kernel echo instead, the node's own answer whatever its agent does:
// Up, it keeps its roles (Restarting; its agent's probes, Pod and Lease
// do not count until the grace ends); Down, the node is gone (crash,
// power off, reboot) and is Down as above; no echo verdict (echo off or
// filtered), the usual rules apply and its roles move.
func judgeLiveness(in []livenessInput, now time.Time) livenessVerdict {
	v := livenessVerdict{Reach: make(map[string]selection.Reach, len(in)), Restarting: map[string]bool{}, Unsteady: map[string]bool{}}
	wake := func(at time.Time) {
		if v.Wake.IsZero() || at.Before(v.Wake) {
			v.Wake = at
		}
	}
	// A restarting node's kernel echo stands in for its agent's probes
	// (on a copy: the caller's inputs stay as it built them).
	in = slices.Clone(in)
	for i, n := range in {
		if n.RestartUntil.IsZero() || !now.Before(n.RestartUntil) {
			continue
		}
		switch n.Probe.Kernel {
		case probe.StateUp:
			v.Restarting[n.Node] = true
			in[i].Probe.State = probe.StateUp
			wake(n.RestartUntil)
		case probe.StateDown:
			in[i].Probe.State, in[i].Probe.Since = probe.StateDown, n.Probe.KernelSince
		}
	}
	var probed, down, leased, lapsed int
	for _, n := range in {
		switch n.Probe.State {
		case probe.StateUp:
			probed++
		case probe.StateDown:
			probed++
			down++
		default:
			if hb := n.Heartbeat; hb != nil && hb.Malformed == "" {
				leased++
				if !hb.Fresh(now) {
					lapsed++
				}
			}
		}
	}
	v.ProbeSuspect = majority(down, probed)
	v.LeaseSuspect = majority(lapsed, leased)
	for _, n := range in {
		r := selection.ReachUnknown
		switch n.Probe.State {
		case probe.StateUp:
			r = selection.ReachUp
		case probe.StateDown:
			switch {
			case v.ProbeSuspect:
				v.Held = append(v.Held, n.Node)
			case n.Probe.Kernel == probe.StateUp && now.Before(n.Probe.Since.Add(agentSilence)):
				// The agent is silent, the node answers: wait.
				r = selection.ReachUp
				v.Unsteady[n.Node] = true
				wake(n.Probe.Since.Add(agentSilence))
			case n.Probe.Fence > 0 && now.Before(n.Probe.Since.Add(n.Probe.Fence+fenceMargin)):
				r = selection.ReachUp
				v.Unsteady[n.Node] = true
				wake(n.Probe.Since.Add(n.Probe.Fence + fenceMargin))
			default:
				r = selection.ReachDown
			}
		default:
			if hb := n.Heartbeat; v.LeaseSuspect && hb != nil && hb.Malformed == "" && !hb.Fresh(now) {
				r = selection.ReachUp
				v.Held = append(v.Held, n.Node)
			}
		}
		v.Reach[n.Node] = r
	}
	slices.Sort(v.Held)
	var why []string
	if v.ProbeSuspect {
		why = append(why, fmt.Sprintf("%d of %d probed candidates stopped answering together: this operator's view is suspect, judging them by their heartbeat Leases", down, probed))
	}
	if v.LeaseSuspect {
		why = append(why, fmt.Sprintf("%d of %d heartbeat Leases lapsed together: suspecting the control plane, keeping those nodes", lapsed, leased))
	}
	v.Why = strings.Join(why, "; ")
	return v
}
