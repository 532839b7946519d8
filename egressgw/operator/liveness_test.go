package operator

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/probe"
	"github.com/egressha/egressha/egressgw/selection"
)

func TestJudgeLiveness(t *testing.T) {
	now := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	fresh := &heartbeat.Heartbeat{RenewTime: now.Add(-time.Second), Duration: 15 * time.Second}
	lapsed := &heartbeat.Heartbeat{RenewTime: now.Add(-time.Minute), Duration: 15 * time.Second}
	malformed := &heartbeat.Heartbeat{RenewTime: now.Add(-time.Minute), Duration: 15 * time.Second, Malformed: "bad"}
	up := probe.Status{State: probe.StateUp}
	downFor := func(d, fence time.Duration) probe.Status {
		return probe.Status{State: probe.StateDown, Since: now.Add(-d), Fence: fence}
	}
	const U, R, D = selection.ReachUnknown, selection.ReachUp, selection.ReachDown
	type node struct {
		probe probe.Status
		hb    *heartbeat.Heartbeat
	}
	grace := now.Add(20 * time.Second)
	// The agent is gone (its probes Down), the kernel answers or not.
	agentGone := func(kernel probe.State, kernelFor time.Duration) probe.Status {
		st := downFor(agentSilence+time.Second, 0)
		st.Kernel, st.KernelSince = kernel, now.Add(-kernelFor)
		return st
	}
	for _, tc := range []struct {
		name         string
		nodes        map[string]node
		want         map[string]selection.Reach
		probeSuspect bool
		leaseSuspect bool
		held         []string
		restart      map[string]time.Time
		restarting   []string
		wake         time.Time
		why          string
	}{
		{name: "a restarting node whose kernel answers keeps its roles until the grace ends",
			nodes: map[string]node{"a": {agentGone(probe.StateUp, 0), lapsed}, "b": {up, fresh}},
			want:  map[string]selection.Reach{"a": R, "b": R}, restart: map[string]time.Time{"a": grace},
			restarting: []string{"a"}, wake: grace},
		{name: "an agent silent for a moment while its node answers echo: alive for agentSilence",
			nodes: map[string]node{"a": {func() probe.Status {
				st := downFor(time.Second, 0)
				st.Kernel = probe.StateUp
				return st
			}(), fresh}, "b": {up, fresh}},
			want: map[string]selection.Reach{"a": R, "b": R}, wake: now.Add(-time.Second + agentSilence)},
		{name: "an agent silent for longer: Down although the node answers echo",
			nodes: map[string]node{"a": {agentGone(probe.StateUp, 0), fresh}, "b": {up, fresh}},
			want:  map[string]selection.Reach{"a": D, "b": R}},
		{name: "a restarting node whose kernel is Down is gone (crash, power off)",
			nodes: map[string]node{"a": {agentGone(probe.StateDown, time.Second), fresh}, "b": {up, fresh}},
			want:  map[string]selection.Reach{"a": D, "b": R}, restart: map[string]time.Time{"a": grace}},
		{name: "no kernel echo verdict: the usual rules, the agent's probes are Down",
			nodes: map[string]node{"a": {agentGone(probe.StateInit, 0), fresh}, "b": {up, fresh}},
			want:  map[string]selection.Reach{"a": D, "b": R}, restart: map[string]time.Time{"a": grace}},
		{name: "the grace is over: the usual rules",
			nodes: map[string]node{"a": {agentGone(probe.StateUp, 0), fresh}, "b": {up, fresh}},
			want:  map[string]selection.Reach{"a": D, "b": R}, restart: map[string]time.Time{"a": now}},
		{name: "both egress nodes restart together: neither is a suspect observer's Down",
			nodes: map[string]node{"a": {agentGone(probe.StateUp, 0), fresh}, "b": {agentGone(probe.StateUp, 0), fresh},
				"c": {up, fresh}},
			want: map[string]selection.Reach{"a": R, "b": R, "c": R}, restart: map[string]time.Time{"a": grace, "b": grace},
			restarting: []string{"a", "b"}, wake: grace},
		{name: "a kernel Down while restarting waits for the fence of a VIP node like a probe Down",
			nodes: map[string]node{"a": {func() probe.Status {
				st := agentGone(probe.StateDown, 100*time.Millisecond)
				st.Fence = 250 * time.Millisecond
				return st
			}(), fresh}, "b": {up, fresh}},
			want: map[string]selection.Reach{"a": R, "b": R}, restart: map[string]time.Time{"a": grace},
			wake: now.Add(-100*time.Millisecond + 250*time.Millisecond + fenceMargin)},
		{name: "up nodes are alive whatever their Lease",
			nodes: map[string]node{"a": {up, lapsed}, "b": {up, fresh}, "c": {up, nil}},
			want:  map[string]selection.Reach{"a": R, "b": R, "c": R}},
		{name: "one of two down is a failure, not a suspect observer",
			nodes: map[string]node{"a": {downFor(time.Second, 0), fresh}, "b": {up, fresh}},
			want:  map[string]selection.Reach{"a": D, "b": R}},
		{name: "a VIP node is held up until its fence bound and the margin passed",
			nodes: map[string]node{"a": {downFor(100*time.Millisecond, 250*time.Millisecond), fresh}, "b": {up, fresh}},
			want:  map[string]selection.Reach{"a": R, "b": R},
			wake:  now.Add(-100*time.Millisecond + 250*time.Millisecond + fenceMargin)},
		{name: "and down once it passed",
			nodes: map[string]node{"a": {downFor(300*time.Millisecond, 250*time.Millisecond), fresh}, "b": {up, fresh}},
			want:  map[string]selection.Reach{"a": D, "b": R}},
		{name: "two of two down: suspect this observer, Leases decide",
			nodes: map[string]node{"a": {downFor(time.Second, 0), fresh}, "b": {downFor(time.Second, 0), lapsed}},
			want:  map[string]selection.Reach{"a": U, "b": U}, probeSuspect: true, held: []string{"a", "b"},
			why: "2 of 2 probed candidates stopped answering together"},
		{name: "two of three down: suspect; the third stays up",
			nodes: map[string]node{"a": {downFor(time.Second, 0), fresh}, "b": {downFor(time.Second, 0), fresh}, "c": {up, fresh}},
			want:  map[string]selection.Reach{"a": U, "b": U, "c": R}, probeSuspect: true, held: []string{"a", "b"},
			why: "2 of 3 probed"},
		{name: "one of three down is acted on",
			nodes: map[string]node{"a": {downFor(time.Second, 0), fresh}, "b": {up, fresh}, "c": {up, fresh}},
			want:  map[string]selection.Reach{"a": D, "b": R, "c": R}},
		{name: "unprobed nodes go by their Lease",
			nodes: map[string]node{"a": {probe.Status{}, fresh}, "b": {probe.Status{}, lapsed}, "c": {probe.Status{}, fresh}},
			want:  map[string]selection.Reach{"a": U, "b": U, "c": U}},
		{name: "most Leases lapsed together: held alive",
			nodes: map[string]node{"a": {probe.Status{}, lapsed}, "b": {probe.Status{}, lapsed}, "c": {probe.Status{}, fresh}},
			want:  map[string]selection.Reach{"a": R, "b": R, "c": U}, leaseSuspect: true, held: []string{"a", "b"},
			why: "2 of 3 heartbeat Leases lapsed together"},
		{name: "a malformed Lease is neither counted nor held",
			nodes: map[string]node{"a": {probe.Status{}, lapsed}, "b": {probe.Status{}, malformed}, "c": {probe.Status{}, fresh}},
			want:  map[string]selection.Reach{"a": U, "b": U, "c": U}},
		{name: "probed-up nodes do not count in the Lease rule",
			nodes: map[string]node{"a": {probe.Status{}, lapsed}, "b": {up, lapsed}, "c": {up, lapsed}},
			want:  map[string]selection.Reach{"a": U, "b": R, "c": R}},
		{name: "nothing at all", nodes: map[string]node{}, want: map[string]selection.Reach{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in []livenessInput
			for _, name := range slices.Sorted(maps.Keys(tc.nodes)) {
				n := tc.nodes[name]
				in = append(in, livenessInput{Node: name, Probe: n.probe, Heartbeat: n.hb, RestartUntil: tc.restart[name]})
			}
			v := judgeLiveness(in, now)
			if !maps.Equal(v.Reach, tc.want) {
				t.Errorf("reach %v, want %v", v.Reach, tc.want)
			}
			if v.ProbeSuspect != tc.probeSuspect || v.LeaseSuspect != tc.leaseSuspect || !slices.Equal(v.Held, tc.held) {
				t.Errorf("suspect probe=%v lease=%v held=%v, want %v %v %v", v.ProbeSuspect, v.LeaseSuspect, v.Held,
					tc.probeSuspect, tc.leaseSuspect, tc.held)
			}
			if got := slices.Sorted(maps.Keys(v.Restarting)); !slices.Equal(got, tc.restarting) {
				t.Errorf("restarting %v, want %v", got, tc.restarting)
			}
			if !v.Wake.Equal(tc.wake) {
				t.Errorf("wake %v, want %v", v.Wake, tc.wake)
			}
			if !strings.Contains(v.Why, tc.why) || (tc.why == "" && v.Why != "") {
				t.Errorf("why %q, want %q", v.Why, tc.why)
			}
		})
	}
}
