// Package selection decides, for every EgressGateway, which candidate node is
// active. It owns the eligibility rules (one function, Evaluate), the ranking
// of candidates (Alphabetical or Spread), the failback policy, the reason a
// previous active node lost the role, and the human-readable message of an
// election; and an incremental Engine that keeps those decisions up to date
// as nodes, heartbeats and gateways change.
//
// The package is pure: it never talks to Kubernetes, the datapath or the
// clock. Callers feed it facts (Node, Gateway) and the current time, and get
// decisions (Result) back. Only heartbeat freshness and hold-downs (how long
// a candidate has been eligible, which only the Engine remembers) depend on
// the time passed in; every other decision is a deterministic function of
// the facts.
package selection

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/heartbeat"
)

// Node is what the selection needs to know about one Kubernetes node.
// Values passed to the Engine are copied; the Labels map is copied when it
// changes, but the Heartbeat it points to must not be modified afterwards.
type Node struct {
	Name       string
	Labels     map[string]string
	InternalIP netip.Addr
	// Ready is true when the Node's Ready condition is True.
	Ready bool
	// Cordoned is spec.unschedulable.
	Cordoned bool
	// AgentReady is true when the cilium-agent pod on the node is Ready.
	AgentReady bool
	// Heartbeat is the node's decoded heartbeat Lease; nil = none seen.
	Heartbeat *heartbeat.Heartbeat
	// Reach is what liveness probing over the cluster network says of the
	// node (issue 14; the operator computes it, egressgw/operator
	// liveness.go).
	Reach Reach
	// Restarting: the node's cilium-agent stopped to restart, within the
	// grace it asked for, and the node itself still answers (issue 15;
	// the operator computes it). Its datapath keeps forwarding, so its
	// agent's absence (CiliumAgentNotReady, HeartbeatExpired) does not
	// count.
	Restarting bool
	// Unsteady: the node is not answering probes right now, though it is
	// still judged alive (a VIP node within its fence wait, an agent
	// silent while its node answers echo). It keeps what it has, but its
	// hold-down starts over: a node that blips faster than it can be
	// judged Down is still a flapping node.
	Unsteady bool
}

// Reach is the liveness verdict of probing.
type Reach uint8

const (
	// ReachUnknown: probing has no verdict (not probed, no reply yet, or
	// the verdict is suspect); the heartbeat Lease's freshness decides.
	ReachUnknown Reach = iota
	// ReachUp: the node answers probes. Its heartbeat's freshness does
	// not matter: a Lease that lapsed then only means the node cannot
	// reach the API server, which stops nothing on the data path. What
	// the Lease reported last still counts.
	ReachUp
	// ReachDown: the node stopped answering probes; it is not eligible
	// (NodeUnreachable).
	ReachDown
)

func (r Reach) String() string {
	switch r {
	case ReachUp:
		return "Up"
	case ReachDown:
		return "Down"
	}
	return "Unknown"
}

// Gateway is what the selection needs to know about one EgressGateway.
type Gateway struct {
	Name string
	// NodeSelector has matchLabels semantics: a node is a candidate when it
	// carries every pair. An empty selector selects nothing (the CRD refuses
	// it; this keeps a broken object from making every node a candidate).
	NodeSelector map[string]string
	Mode         v1alpha1.SourceIPMode
	// VirtualIP is the gateway's virtual IP in VirtualIPAddress mode.
	VirtualIP string
	// Order is the ranking; "" (or an unknown value) means Alphabetical.
	Order v1alpha1.SelectionOrder
	// Failback is the failback policy; "" (or an unknown value) means
	// Immediate.
	Failback v1alpha1.FailbackPolicy
	// HoldDown is how long a candidate that becomes eligible (or a new
	// candidate that is eligible) must stay eligible without interruption
	// before it may take the role from another eligible node (keepalived's
	// preempt_delay). It never delays taking over from a node that is not
	// eligible any more, nor a first election: traffic is never dropped to
	// wait out a hold. Zero: no hold. Only the Engine holds (it knows since
	// when a candidate is eligible); Select has no history and never does.
	HoldDown time.Duration
	// PreviousActive is the active node in the gateway's current status. The
	// Engine reads it only when it first learns of the gateway (a new
	// operator leader continues from the status it finds); after its first
	// decision it uses its own.
	PreviousActive string
}

// Candidate is one node matching a gateway's nodeSelector.
type Candidate struct {
	Node     string
	Eligible bool
	// Reasons say why the node is not eligible, in a fixed order (see
	// Evaluate); nil when it is eligible. Shared between Results: read only.
	Reasons []string
	// EgressIP is the source address traffic would get through this node:
	// the virtual IP in VirtualIPAddress mode, otherwise the address the node
	// reported for the gateway (empty when it reported none usable).
	EgressIP string
	// EligibleSince is when the Engine saw the candidate become eligible
	// (or first saw it, eligible) and it has been eligible ever since; zero
	// while it is not eligible, and always zero from Select. The candidate
	// is held down until EligibleSince + Gateway.HoldDown.
	EligibleSince time.Time
	// wasEligible: the candidate has been eligible in this gateway's list
	// before (Engine only). Turning eligible again after that is a flap
	// or a return, which the hold-down holds; turning eligible for the
	// first time is not.
	wasEligible bool
	// Restarting: the node is eligible only because its agent restarts
	// (Node.Restarting). It keeps the role it has, but is not given a new
	// one: until its agent is back nothing programs its datapath for it.
	Restarting bool
	// unsteady: Node.Unsteady (Engine only: its hold-down starts over).
	unsteady bool
}

// heldUntil is when c's hold-down ends; the zero time when c is not held
// at now (not eligible, no HoldDown, no EligibleSince, or the hold is over).
func heldUntil(gw *Gateway, c *Candidate, now time.Time) time.Time {
	if !c.Eligible || gw.HoldDown <= 0 || c.EligibleSince.IsZero() {
		return time.Time{}
	}
	if t := c.EligibleSince.Add(gw.HoldDown); now.Before(t) {
		return t
	}
	return time.Time{}
}

// Result is the decision for one gateway. Its slices are shared with the
// Engine and with other Results: treat them as read only.
type Result struct {
	Gateway string
	// Active is the active node; "" when no candidate is eligible (traffic
	// is then dropped: fail closed).
	Active           string
	ActiveInternalIP netip.Addr
	// EgressIP is the virtual IP in VirtualIPAddress mode (also while no node
	// is active), otherwise the address the active node reported ("" when
	// none is active).
	EgressIP string
	// ReadyNodes is the number of eligible candidates.
	ReadyNodes int
	// Candidates are all nodes matching the nodeSelector, in node-name
	// order (not rank order), so that a status list does not reshuffle when
	// eligibility changes.
	Candidates []Candidate
	// PreviousActive is the active node this decision started from: the
	// previous decision's Active, or Gateway.PreviousActive for the first.
	PreviousActive string
	// ChangeReason is set when Active != PreviousActive: why the previous
	// node lost the role (the first of its Reasons, or one of the Change*
	// constants), or ChangeElected when there was no previous node.
	ChangeReason string
	// Message is a sentence a person can act on, e.g. for the Ready
	// condition's ElectionFailed message.
	Message string
	// HoldDownUntil is, with failback Immediate, the earliest end of the
	// hold-down of an eligible node that ranks before Active: the role
	// moves then although no candidate changes. Zero when there is none.
	HoldDownUntil time.Time
	// HeldDown says which of those nodes are held down and until when,
	// e.g. "lab-egress-a is held down until 2026-01-01T00:00:10Z (eligible
	// since 2026-01-01T00:00:00Z)" (at most five are named); "" when none.
	// Message ends with it.
	HeldDown string
}

// Change reasons that are not candidate reasons. A ChangeReason is one of
// these or the first ineligibility reason of the previous node (NodeNotReady,
// Cordoned, CiliumAgentNotReady, HeartbeatMissing, HeartbeatExpired,
// NotReportedByAgent or a reason the node reported, e.g. InterfaceMissing).
const (
	// ChangeElected: there was no active node and now there is one.
	ChangeElected = "Elected"
	// ChangeNoLongerCandidate: the previous node no longer matches the
	// nodeSelector (its label was removed, or the selector changed).
	ChangeNoLongerCandidate = "NoLongerCandidate"
	// ChangeNodeDeleted: the previous node does not exist any more.
	ChangeNodeDeleted = "NodeDeleted"
	// ChangeFailback: the previous node is still eligible, but with
	// failback Immediate a better-ranked node took the role back.
	ChangeFailback = "Failback"
	// ChangeSelectionChanged: the previous node is still eligible, but the
	// gateway's selection order or failback policy changed and ranks
	// another node first (Engine only).
	ChangeSelectionChanged = "SelectionChanged"
)

// maxMessageNodes bounds how many nodes a message lists, so that a gateway
// with thousands of candidates does not produce a condition message of
// hundreds of kilobytes.
const maxMessageNodes = 5

// normalize applies the documented defaults so that "" and the default value
// compare equal.
func normalize(gw Gateway) Gateway {
	if gw.Order != v1alpha1.SelectionOrderSpread {
		gw.Order = v1alpha1.SelectionOrderAlphabetical
	}
	if gw.Failback != v1alpha1.FailbackNever {
		gw.Failback = v1alpha1.FailbackImmediate
	}
	return gw
}

// Evaluate decides whether n may be the active node of gw at now. It is the
// only place the eligibility rules live. Reasons come in this fixed order:
//
//	NodeNotReady, Cordoned, CiliumAgentNotReady,
//	HeartbeatMissing (no Lease; nothing further is read), HeartbeatMalformed
//	(a Lease that cannot be decoded; nothing further is read) or
//	HeartbeatExpired,
//	then the node's report for this gateway: NotReportedByAgent when the
//	Lease has no entry for it, the reported reason when the entry is not
//	Ready (NotReportedByAgent if it gave none), and in basic mode
//	InterfaceHasNoIPv4 when a Ready entry has no usable IPv4 egress address.
//
// An expired heartbeat's report is still read: it is the last thing the node
// said, and it tells the operator what to fix once the node is back. Only the
// heartbeat expiry depends on now.
func Evaluate(n *Node, gw *Gateway, now time.Time) Candidate {
	c := Candidate{Node: n.Name}
	vip := gw.Mode == v1alpha1.SourceIPModeVirtualIP
	if vip {
		c.EgressIP = gw.VirtualIP
	}
	// At most seven reasons; collect on the stack and allocate once.
	var buf [7]string
	r := appendNodeReasons(buf[:0], n, now)
	if hb := n.Heartbeat; hb != nil && hb.Malformed == "" {
		rep, ok := hb.Gateways[gw.Name]
		switch {
		case !ok:
			r = append(r, heartbeat.ReasonNotReported)
		case !rep.Ready:
			if rep.Reason == "" {
				r = append(r, heartbeat.ReasonNotReported)
			} else {
				r = append(r, rep.Reason)
			}
		case !vip:
			if usableEgressIP(rep.EgressIP) {
				c.EgressIP = rep.EgressIP
			} else {
				r = append(r, heartbeat.ReasonNoIPv4Address)
			}
		}
	}
	c.Eligible = len(r) == 0
	if !c.Eligible {
		c.Reasons = slices.Clone(r)
	} else {
		c.Restarting, c.unsteady = n.Restarting, n.Unsteady
	}
	return c
}

// appendNodeReasons appends the reasons that keep n from serving any
// gateway, whatever the gateway: NodeNotReady, Cordoned,
// CiliumAgentNotReady, NodeUnreachable (probing says Down), then
// HeartbeatMissing, HeartbeatMalformed or HeartbeatExpired (the last only
// when probing has no verdict).
func appendNodeReasons(r []string, n *Node, now time.Time) []string {
	if !n.Ready {
		r = append(r, v1alpha1.CandidateNodeNotReady)
	}
	if n.Cordoned {
		r = append(r, v1alpha1.CandidateCordoned)
	}
	if !n.AgentReady && !n.Restarting {
		r = append(r, v1alpha1.CandidateCiliumAgentNotReady)
	}
	if n.Reach == ReachDown {
		r = append(r, v1alpha1.CandidateNodeUnreachable)
	}
	if hb := n.Heartbeat; hb == nil {
		r = append(r, heartbeat.ReasonHeartbeatMissing)
	} else if hb.Malformed != "" {
		r = append(r, heartbeat.ReasonHeartbeatMalformed)
	} else if n.Reach == ReachUnknown && !n.Restarting && !hb.Fresh(now) {
		r = append(r, heartbeat.ReasonHeartbeatExpired)
	}
	return r
}

// EvaluateNode applies the node-level part of Evaluate: whether n may
// serve traffic at all at now (Node Ready, not cordoned, cilium-agent Ready,
// heartbeat fresh), and if not, why, in Evaluate's order. It ignores what
// the node reported per EgressGateway; CiliumEgressGatewayPolicy gateway
// entries, which have no such report, use it.
func EvaluateNode(n *Node, now time.Time) (eligible bool, reasons []string) {
	var buf [5]string
	r := appendNodeReasons(buf[:0], n, now)
	if len(r) == 0 {
		return true, nil
	}
	return false, slices.Clone(r)
}

// usableEgressIP reports whether s is an IPv4 address traffic can be SNATed
// to. 0.0.0.0 is refused: in the datapath it means "no gateway".
func usableEgressIP(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is4() && !a.IsUnspecified()
}

// SpreadScore is the rendezvous score of node for gateway in Spread order:
// the node with the highest score ranks first. It is xxhash64 of
// gateway + "\x00" + node. It must never change: changing it moves the
// active node of every Spread gateway, and with it the traffic.
func SpreadScore(gateway, node string) uint64 {
	// Kubernetes names are at most 253 bytes, so this stays on the stack.
	var buf [512]byte
	b := append(buf[:0], gateway...)
	b = append(b, 0)
	b = append(b, node...)
	return xxhash.Sum64(b)
}

// rankEntry is one candidate in Spread order.
type rankEntry struct {
	score uint64
	name  string
}

// rankCmp orders by score descending, then by name ascending.
func rankCmp(a, b rankEntry) int {
	switch {
	case a.score > b.score:
		return -1
	case a.score < b.score:
		return 1
	}
	return strings.Compare(a.name, b.name)
}

// spreadRank returns the Spread ranking of the candidates.
func spreadRank(gateway string, cands []Candidate) []rankEntry {
	rank := make([]rankEntry, len(cands))
	for i := range cands {
		rank[i] = rankEntry{score: SpreadScore(gateway, cands[i].Node), name: cands[i].Node}
	}
	slices.SortFunc(rank, rankCmp)
	return rank
}

// Rank returns the names of the nodes in gw's rank order (best first),
// whatever their eligibility.
func Rank(gw Gateway, nodes []string) []string {
	gw = normalize(gw)
	out := slices.Clone(nodes)
	if gw.Order != v1alpha1.SelectionOrderSpread {
		slices.Sort(out)
		return out
	}
	cands := make([]Candidate, len(nodes))
	for i, n := range nodes {
		cands[i].Node = n
	}
	for i, e := range spreadRank(gw.Name, cands) {
		out[i] = e.name
	}
	return out
}

// Matches reports whether labels satisfy selector with matchLabels
// semantics; an empty selector matches nothing.
func Matches(selector, labels map[string]string) bool {
	return v1alpha1.NodeSelectorMatches(selector, labels)
}

// findCandidate finds name in cands, which are sorted by node name.
func findCandidate(cands []Candidate, name string) (int, bool) {
	return sort.Find(len(cands), func(i int) int { return strings.Compare(name, cands[i].Node) })
}

// nodeLookup tells whether a node exists and its InternalIP.
type nodeLookup interface {
	lookupNode(name string) (*Node, bool)
}

type nodeMap map[string]*Node

func (m nodeMap) lookupNode(name string) (*Node, bool) {
	n, ok := m[name]
	return n, ok
}

// chooseActive applies the failback policy and the hold-down (see
// Gateway.HoldDown) to the ranked candidates at now:
//
//   - Immediate: the best-ranked of the eligible candidates not held down
//     and prev if it is eligible (held down or not);
//   - Never: prev if it is eligible, else the best-ranked eligible
//     candidate not held down;
//
// and in both, when that finds no node, the best-ranked eligible candidate
// even if held down: a hold never leaves a gateway without an active node.
// A Restarting candidate counts as held down (without an end) unless it
// is prev: it keeps its role but is given none. rank is used in Spread
// order only.
func chooseActive(gw *Gateway, cands []Candidate, rank []rankEntry, prev string, now time.Time) string {
	if gw.Failback == v1alpha1.FailbackNever && prev != "" {
		if i, ok := findCandidate(cands, prev); ok && cands[i].Eligible {
			return prev
		}
	}
	pick, firstHeld := "", ""
	forRanked(gw, cands, rank, func(c *Candidate) bool {
		if !c.Eligible {
			return true
		}
		if c.Node == prev || (heldUntil(gw, c, now).IsZero() && !c.Restarting) {
			pick = c.Node
			return false
		}
		if firstHeld == "" {
			firstHeld = c.Node
		}
		return true
	})
	if pick == "" {
		pick = firstHeld
	}
	return pick
}

// forRanked calls f with the candidates in rank order, best first, until f
// returns false. Usually f stops at the first or second entry, so the
// binary searches of Spread order stay cheap even for thousands of
// candidates.
func forRanked(gw *Gateway, cands []Candidate, rank []rankEntry, f func(c *Candidate) bool) {
	if gw.Order != v1alpha1.SelectionOrderSpread {
		for i := range cands {
			if !f(&cands[i]) {
				return
			}
		}
		return
	}
	for _, e := range rank {
		if i, ok := findCandidate(cands, e.name); ok && !f(&cands[i]) {
			return
		}
	}
}

// heldBefore returns the eligible candidates held down at now that rank
// before active, in rank order, at most limit of them, with their count
// and the earliest end of their holds. With failback Immediate these take
// the role when their hold ends; with Never they never do (nil, 0, zero).
func heldBefore(gw *Gateway, cands []Candidate, rank []rankEntry, active string, now time.Time, limit int) (held []*Candidate, n int, until time.Time) {
	if active == "" || gw.Failback == v1alpha1.FailbackNever || gw.HoldDown <= 0 {
		return nil, 0, time.Time{}
	}
	forRanked(gw, cands, rank, func(c *Candidate) bool {
		if c.Node == active {
			return false
		}
		if t := heldUntil(gw, c, now); !t.IsZero() {
			if n < limit {
				held = append(held, c)
			}
			n++
			if until.IsZero() || t.Before(until) {
				until = t
			}
		}
		return true
	})
	return held, n, until
}

// changeReason says why prev lost the role to active (prev != active).
func changeReason(prev string, cands []Candidate, nodes nodeLookup, selectionChanged bool) string {
	if prev == "" {
		return ChangeElected
	}
	if _, ok := nodes.lookupNode(prev); !ok {
		return ChangeNodeDeleted
	}
	i, ok := findCandidate(cands, prev)
	switch {
	case !ok:
		return ChangeNoLongerCandidate
	case !cands[i].Eligible:
		return cands[i].Reasons[0]
	case selectionChanged:
		return ChangeSelectionChanged
	}
	return ChangeFailback
}

// decide builds the Result of gw at now from its candidates (sorted by
// name), their Spread rank (Spread order only) and eligible count, starting
// from prev.
func decide(gw *Gateway, cands []Candidate, rank []rankEntry, ready int, prev string, nodes nodeLookup, selectionChanged bool, now time.Time) Result {
	r := Result{
		Gateway:        gw.Name,
		ReadyNodes:     ready,
		Candidates:     cands,
		PreviousActive: prev,
	}
	r.Active = chooseActive(gw, cands, rank, prev, now)
	if r.Active != "" {
		if n, ok := nodes.lookupNode(r.Active); ok {
			r.ActiveInternalIP = n.InternalIP
		}
		if i, ok := findCandidate(cands, r.Active); ok {
			r.EgressIP = cands[i].EgressIP
		}
	}
	if gw.Mode == v1alpha1.SourceIPModeVirtualIP {
		r.EgressIP = gw.VirtualIP
	}
	if r.Active != prev {
		r.ChangeReason = changeReason(prev, cands, nodes, selectionChanged)
	}
	held, nHeld, until := heldBefore(gw, cands, rank, r.Active, now, maxMessageNodes)
	r.HoldDownUntil = until
	r.Message = message(gw, cands, r.Active, ready)
	if nHeld > 0 {
		r.HeldDown = heldMessage(gw, held, nHeld)
		r.Message += "; " + r.HeldDown
	}
	return r
}

// heldMessage says which better-ranked nodes wait out their hold-down and
// until when (Result.HeldDown).
func heldMessage(gw *Gateway, held []*Candidate, n int) string {
	var b strings.Builder
	for i, c := range held {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s is held down until %s (eligible since %s)", c.Node,
			formatTime(c.EligibleSince.Add(gw.HoldDown)), formatTime(c.EligibleSince))
	}
	if n > len(held) {
		fmt.Fprintf(&b, "; and %d more held down", n-len(held))
	}
	return b.String()
}

// formatTime is RFC 3339 in UTC with milliseconds when there are any.
func formatTime(t time.Time) string {
	return t.UTC().Truncate(time.Millisecond).Format("2006-01-02T15:04:05.999Z07:00")
}

// message explains the decision in one sentence.
func message(gw *Gateway, cands []Candidate, active string, ready int) string {
	switch {
	case len(gw.NodeSelector) == 0:
		return "nodeSelector is empty and selects no node; set at least one label, e.g. node-role.deckhouse.io/egress: \"\""
	case len(cands) == 0:
		sel := FormatSelector(gw.NodeSelector)
		return fmt.Sprintf("no node matches nodeSelector %s; label the intended nodes with it", sel)
	case active != "":
		return fmt.Sprintf("%s is active; %d of %d candidate nodes are eligible", active, ready, len(cands))
	}
	var b strings.Builder
	noun := "candidates"
	if len(cands) == 1 {
		noun = "candidate"
	}
	fmt.Fprintf(&b, "no eligible node among %d %s (", len(cands), noun)
	for i := range cands {
		if i == maxMessageNodes {
			fmt.Fprintf(&b, "; and %d more", len(cands)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(cands[i].Node)
		b.WriteString(": ")
		b.WriteString(strings.Join(cands[i].Reasons, ", "))
	}
	b.WriteString(")")
	return b.String()
}

// FormatSelector renders a nodeSelector as sorted k=v pairs, an empty value
// as k="" so that it stays visible: node-role.deckhouse.io/egress="".
func FormatSelector(sel map[string]string) string {
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		if v := sel[k]; v == "" {
			b.WriteString(`""`)
		} else {
			b.WriteString(v)
		}
	}
	return b.String()
}

// Select is the whole decision for one gateway, computed from scratch: the
// reference the Engine must agree with, and a convenience for callers that
// do not need incremental updates. It starts from gw.PreviousActive; a node
// counts as deleted when it is not in nodes. It has no history, so it never
// holds a node down: it is the Engine's decision with HoldDown 0.
func Select(gw Gateway, nodes []*Node, now time.Time) Result {
	return selectWith(gw, nodes, now, nil)
}

// selectWith is Select with a history: history, when set, says for each
// candidate since when it has been eligible (read only for an eligible
// one; zero: not held) and whether it has been eligible in the list
// before (Candidate.wasEligible). The Engine's decisions with hold-downs
// are checked against it (random_test.go).
func selectWith(gw Gateway, nodes []*Node, now time.Time, history func(node string, eligible bool) (since time.Time, was bool)) Result {
	gw = normalize(gw)
	known := make(nodeMap, len(nodes))
	var cands []Candidate
	ready := 0
	for _, n := range nodes {
		known[n.Name] = n
		if Matches(gw.NodeSelector, n.Labels) {
			c := Evaluate(n, &gw, now)
			if c.Eligible {
				ready++
			}
			if history != nil {
				since, was := history(n.Name, c.Eligible)
				if c.Eligible {
					c.EligibleSince = since
				}
				c.wasEligible = was
			}
			cands = append(cands, c)
		}
	}
	slices.SortFunc(cands, func(a, b Candidate) int { return strings.Compare(a.Node, b.Node) })
	var rank []rankEntry
	if gw.Order == v1alpha1.SelectionOrderSpread {
		rank = spreadRank(gw.Name, cands)
	}
	return decide(&gw, cands, rank, ready, gw.PreviousActive, known, false, now)
}

// candidateEqual compares two candidates field by field (the Engine
// shares equal lists between gateways, so the history counts too).
func candidateEqual(a, b *Candidate) bool {
	return a.Node == b.Node && a.Eligible == b.Eligible && a.EgressIP == b.EgressIP && a.EligibleSince.Equal(b.EligibleSince) &&
		a.Restarting == b.Restarting && a.wasEligible == b.wasEligible && a.unsteady == b.unsteady && slices.Equal(a.Reasons, b.Reasons)
}

// candidatesEqual compares two candidate lists.
func candidatesEqual(a, b []Candidate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !candidateEqual(&a[i], &b[i]) {
			return false
		}
	}
	return true
}
