// Package results is the file format between the lab benchmarks
// (test/e2e, EGRESSHA_BENCH=1) and the report generator (test/benchreport):
// one JSON file per benchmark case in $EGRESSHA_RESULTS_DIR.
package results

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Kinds of case.
const (
	// KindFailover: traffic gap when the active gateway goes away, with
	// egressha failing over by itself.
	KindFailover = "failover"
	// KindStockFailover: the same disruption with stock Cilium's
	// CiliumEgressGatewayPolicy, which does not fail over until someone
	// relabels a node.
	KindStockFailover = "stock-failover"
	// KindNewPods: first-packet coverage and entry latency for new pods.
	KindNewPods = "new-pods"
	// KindAPIOutage: the API server unreachable for some (Trial.Scope)
	// while traffic flows: nothing may fail or move (issue 14).
	KindAPIOutage = "api-outage"
	// KindOperations: a routine operation (Trial.Scope: rolling-restart,
	// link-flap, leader-kill-crash) with egressha and with stock Cilium
	// in the same run (issue 15).
	KindOperations = "operations"
	// KindConnections: long-lived connections of several kinds across
	// a disruption (Trial.Scope: crash, unlabel, cordon,
	// rolling-restart, relabel for stock), Trial.Connections (issue 17).
	KindConnections = "connections"
	// KindAgentMemory: whole-agent RSS of every node's cilium-agent
	// before and after N CiliumEndpoints are programmed, stock Cilium
	// and egressha in the same run (Case.Memory).
	KindAgentMemory = "agent-memory"
)

// Disruptions.
const (
	DisruptionCrash   = "crash"
	DisruptionPlanned = "planned"
)

// Case is one benchmark case's results.
type Case struct {
	Name  string `json:"name"`  // file name too: crash-basic, unlabel, ...
	Title string `json:"title"` // "hard crash, basic mode"
	Kind  string `json:"kind"`
	Mode  string `json:"mode"` // lab mode: egressha or stock
	// Disruption: DisruptionCrash or DisruptionPlanned (failover kinds).
	Disruption string `json:"disruption,omitempty"`
	// Command reproduces these figures.
	Command  string            `json:"command"`
	Started  time.Time         `json:"started"`
	Finished time.Time         `json:"finished"`
	Settings map[string]string `json:"settings,omitempty"`
	// TargetMS is the target for the gap's p99 (0: none).
	TargetMS float64 `json:"targetMS,omitempty"`
	Trials   []Trial `json:"trials,omitempty"`
	Pods     []Pod   `json:"pods,omitempty"`
	// Memory is one row per node and variant (KindAgentMemory).
	Memory []AgentMemory `json:"memory,omitempty"`
	Notes  []string      `json:"notes,omitempty"`
}

// AgentMemory is one cilium-agent's VmRSS before and after the
// endpoints of an agent-memory case were programmed, in MiB.
type AgentMemory struct {
	Node string `json:"node"`
	// Variant is "stock" or "egressha-basic" / "egressha-vip" (the
	// EgressGateway's mode); "-vip" rows are taken after the gateway
	// switched from basic to VIP mode, with the same endpoints.
	Variant string `json:"variant"`
	// BeforeMiB: the agent with the policy and gateway in place and none
	// of the case's endpoints; AfterMiB: with every entry in its map.
	BeforeMiB float64 `json:"beforeMiB"`
	AfterMiB  float64 `json:"afterMiB"`
	// Entries is how many of the case's entries the node's map held.
	Entries int `json:"entries"`
}

// Trial is one disruption. Durations are in milliseconds; -1 means the
// event was not observed.
type Trial struct {
	// GapMS: last reply through the old gateway to the first reply
	// through the new one.
	GapMS float64 `json:"gapMS"`
	// ToStatusMS: disruption to the EgressGateway's status naming the new
	// active node (egressha only): the control-plane share of the gap.
	ToStatusMS float64 `json:"toStatusMS"`
	// StatusToTrafficMS: status naming the new node to the first reply
	// through it: the datapath share.
	StatusToTrafficMS float64 `json:"statusToTrafficMS"`
	// FailbackGapMS: the gap when the disruption is undone and traffic
	// goes back to the first node (a planned move), -1 if not measured.
	FailbackGapMS float64 `json:"failbackGapMS"`
	// Stock only: whether any reply came back within WaitMS of the
	// crash, and the time from the human's relabel of the Nodes to the
	// first reply through the other node (-1: it did not help).
	WaitMS             float64 `json:"waitMS,omitempty"`
	ResumedWithinWait  bool    `json:"resumedWithinWait,omitempty"`
	RelabelToTrafficMS float64 `json:"relabelToTrafficMS,omitempty"`
	// Stock only: when the relabel did not help (-1 above), the time from
	// the human editing the policy's nodeSelector to the first reply.
	PolicyEditToTrafficMS float64 `json:"policyEditToTrafficMS,omitempty"`
	// Requests sent by the prober during the trial and how many failed.
	Sent   int `json:"sent"`
	Failed int `json:"failed"`
	// LateOldReplies counts replies through the old node more than
	// 200 ms after the disruption (they shorten the gap; see the log).
	LateOldReplies int `json:"lateOldReplies,omitempty"`
	// WrongSourceReplies counts replies (failover and failback) whose
	// SNAT address and sender MAC name different nodes: one node SNATed
	// to the other's address while the maps were being updated.
	WrongSourceReplies int `json:"wrongSourceReplies,omitempty"`
	// API outages only: who lost the API server (everyone, active-node,
	// operators), for how long, the answered requests that left through
	// another node, the changes of the active node seen, and how long
	// after the outage an operator leader renewed again (-1: not waited).
	Scope           string  `json:"scope,omitempty"`
	HoldMS          float64 `json:"holdMS,omitempty"`
	ViaOther        int     `json:"viaOther,omitempty"`
	ActiveChanges   int     `json:"activeChanges,omitempty"`
	LeaderBackMS    float64 `json:"leaderBackMS,omitempty"`
	LastFailoverNew bool    `json:"lastFailoverNew,omitempty"`
	// Connections: one row per long-lived connection (KindConnections).
	Connections []Connection `json:"connections,omitempty"`
}

// Connection is what one long-lived connection saw across a disruption
// (test/lab/conns.Outcome).
type Connection struct {
	Kind     string `json:"kind"`
	Survived bool   `json:"survived"`
	// StallMS: the longest time without an answer (idle: the resume
	// request's round trip).
	StallMS float64 `json:"stallMS"`
	// Ended: the client saw an error; EndedAfterMoveMS is when, from the
	// first request through the new node (negative: before it).
	Ended            bool    `json:"ended"`
	EndedAfterMoveMS float64 `json:"endedAfterMoveMS,omitempty"`
	Err              string  `json:"err,omitempty"`
	// SourceChanged: the echo server saw another source address (UDP:
	// address:port) after the disruption.
	SourceChanged bool `json:"sourceChanged,omitempty"`
}

// Pod is one new pod of the coverage case.
type Pod struct {
	Name string `json:"name"`
	IP   string `json:"ip"`
	// FirstSource is the source address the echo server saw for the
	// pod's first request ("" if it failed); SNATed says whether it was
	// the egress address.
	FirstSource string `json:"firstSource"`
	FirstError  string `json:"firstError,omitempty"`
	SNATed      bool   `json:"snated"`
	// CNIAddMS is how long the CNI ADD (and the Pod status update) took.
	CNIAddMS float64 `json:"cniAddMS"`
	// EntryNodeMS / EntryGatewayMS: CNI ADD start to the pod's entry in
	// the egress map of its node / of the gateway node; -1 if never seen.
	EntryNodeMS    float64 `json:"entryNodeMS"`
	EntryGatewayMS float64 `json:"entryGatewayMS"`
}

// MS converts a duration to milliseconds.
func MS(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Write stores c as dir/<c.Name>.json.
func Write(dir string, c Case) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, c.Name+".json"), append(data, '\n'), 0o644)
}

// ReadDir loads every case file in dir, sorted by start time.
func ReadDir(dir string) ([]Case, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []Case
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var c Case
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if c.Kind == "" || c.Name == "" {
			continue // not ours
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Case) int { return a.Started.Compare(b.Started) })
	return out, nil
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// v; NaN-free inputs only. It returns -1 for an empty slice.
func Percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return -1
	}
	s := slices.Clone(v)
	slices.Sort(s)
	rank := int(p/100*float64(len(s)) + 0.999999)
	return s[min(max(rank, 1), len(s))-1]
}

// Observed keeps the values >= 0 (-1 marks "not observed").
func Observed(v []float64) []float64 {
	var out []float64
	for _, x := range v {
		if x >= 0 {
			out = append(out, x)
		}
	}
	return out
}

// Series extracts one figure from every trial.
func Series(ts []Trial, f func(Trial) float64) []float64 {
	out := make([]float64, 0, len(ts))
	for _, t := range ts {
		out = append(out, f(t))
	}
	return out
}

// Slug makes a case name safe for a file name.
func Slug(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return '-'
	}, s)
}
