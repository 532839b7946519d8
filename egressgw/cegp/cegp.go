// Package cegp serves Cilium's own CiliumEgressGatewayPolicy (cilium.io/v2)
// with egressha's failover. It owns, purely:
//
//   - the parsing of a policy's gateway entries (GatewayEntries), with
//     upstream's rule that a non-empty egressGateways replaces egressGateway;
//   - the choice of the serving node of every entry (Select): the nodes
//     matching the entry's nodeSelector in name order, the first one that is
//     eligible (selection.EvaluateNode: Node Ready, not cordoned,
//     cilium-agent Ready, heartbeat fresh); with upstream semantics the first
//     matching node whatever its state, exactly as Cilium v1.18 does;
//   - the annotation (Annotation) through which the operator, the single
//     authority on serving nodes, tells every agent its decision;
//   - the map values an agent derives from that decision (Values), spread
//     over the entries by upstream's endpoint hash in egressgw/egresspolicy.
//
// It never talks to Kubernetes, netlink or the clock: the local egress IP
// is resolved by the caller and passed in.
package cegp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	slimv1 "github.com/cilium/cilium/pkg/k8s/slim/k8s/apis/meta/v1"

	"github.com/egressha/egressha/egressgw/selection"
)

// Annotation is the annotation the operator writes on every
// CiliumEgressGatewayPolicy: the JSON encoding of []EntrySelection.
const Annotation = "egressha.io/gateway-nodes"

// PolicyPrefix prefixes a CiliumEgressGatewayPolicy's name wherever it
// shares a namespace of names with EgressGatewayPolicies (the entries'
// owner, conflict messages); "/" never occurs in an object name.
const PolicyPrefix = "cegp/"

// Reasons of an entry's decision that are not node reasons.
const (
	// ReasonNoMatchingNode: no node matches the entry's nodeSelector.
	ReasonNoMatchingNode = "NoMatchingNode"
	// ReasonNoEligibleNode: nodes match, none is eligible.
	ReasonNoEligibleNode = "NoEligibleNode"
	// ReasonNoInternalIP: the serving node has no IPv4 InternalIP, so no
	// tunnel can reach it (upstream skips such a node as well).
	ReasonNoInternalIP = "NoInternalIPv4"
)

// GatewayEntry is one gateway entry of a policy: spec.egressGateway, or one
// item of spec.egressGateways.
type GatewayEntry struct {
	// Index is the entry's position in egressGateways (0 for egressGateway).
	Index int
	// NodeSelector selects the entry's candidate nodes; Selector is it as
	// text for messages.
	NodeSelector labels.Selector
	Selector     string
	// Interface and EgressIP are the entry's interface and egressIP (at most
	// one is set; neither = the interface of the IPv4 default route).
	Interface string
	EgressIP  netip.Addr
}

// ToMetaSelector converts Cilium's slim LabelSelector into the upstream
// apimachinery type (same fields, same JSON).
func ToMetaSelector(s *slimv1.LabelSelector) *metav1.LabelSelector {
	if s == nil {
		return nil
	}
	out := &metav1.LabelSelector{MatchLabels: s.MatchLabels}
	for _, e := range s.MatchExpressions {
		out.MatchExpressions = append(out.MatchExpressions, metav1.LabelSelectorRequirement{
			Key: e.Key, Operator: metav1.LabelSelectorOperator(e.Operator), Values: e.Values,
		})
	}
	return out
}

// GatewayEntries parses the gateway entries of a policy as Cilium v1.18's
// ParseCEGP does: egressGateways when it has items, else egressGateway; an
// entry may not set both interface and egressIP. Any error makes the whole
// policy unusable, as upstream ignores such a policy.
func GatewayEntries(spec *ciliumv2.CiliumEgressGatewayPolicySpec) ([]GatewayEntry, error) {
	var raw []ciliumv2.EgressGateway
	switch {
	case len(spec.EgressGateways) > 0:
		raw = spec.EgressGateways
	case spec.EgressGateway != nil:
		raw = []ciliumv2.EgressGateway{*spec.EgressGateway}
	default:
		return nil, errors.New("egressGateway can't be empty")
	}
	out := make([]GatewayEntry, 0, len(raw))
	for i, g := range raw {
		if g.Interface != "" && g.EgressIP != "" {
			return nil, fmt.Errorf("gateway entry %d: gateway configuration can't specify both an interface and an egress IP", i)
		}
		e := GatewayEntry{Index: i, Interface: g.Interface}
		ms := ToMetaSelector(g.NodeSelector)
		sel, err := metav1.LabelSelectorAsSelector(ms)
		if err != nil {
			return nil, fmt.Errorf("gateway entry %d: nodeSelector: %w", i, err)
		}
		e.NodeSelector, e.Selector = sel, sel.String()
		if g.EgressIP != "" {
			a, err := netip.ParseAddr(g.EgressIP)
			if err != nil {
				return nil, fmt.Errorf("gateway entry %d: failed to parse egress IP %s: %w", i, g.EgressIP, err)
			}
			e.EgressIP = a
		}
		out = append(out, e)
	}
	return out, nil
}

// Skipped is a node matching an entry's nodeSelector that sorts before the
// serving node but was passed over, and why.
type Skipped struct {
	Node    string   `json:"node"`
	Reasons []string `json:"reasons"`
}

// EntrySelection is the decision for one gateway entry.
type EntrySelection struct {
	Index int `json:"index"`
	// Node is the serving node; empty when there is none.
	Node string `json:"node,omitempty"`
	// InternalIP is the serving node's InternalIP: the gateway IP agents
	// program (the tunnel endpoint).
	InternalIP string `json:"internalIP,omitempty"`
	// Reason explains an empty Node (NoMatchingNode, NoEligibleNode,
	// NoInternalIPv4).
	Reason string `json:"reason,omitempty"`
	// Skipped are the nodes passed over before Node (all matching nodes
	// when Node is empty).
	Skipped []Skipped `json:"skipped,omitempty"`
}

// Equal compares two decisions.
func (e EntrySelection) Equal(o EntrySelection) bool {
	return e.Index == o.Index && e.Node == o.Node && e.InternalIP == o.InternalIP && e.Reason == o.Reason &&
		slices.EqualFunc(e.Skipped, o.Skipped, func(a, b Skipped) bool {
			return a.Node == b.Node && slices.Equal(a.Reasons, b.Reasons)
		})
}

// String is the decision in a few words: "0=lab-egress-b (skipped
// lab-egress-a: HeartbeatExpired)".
func (e EntrySelection) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d=", e.Index)
	if e.Node == "" {
		b.WriteString("<none>")
		if e.Reason != "" {
			fmt.Fprintf(&b, " (%s)", e.Reason)
		}
	} else {
		b.WriteString(e.Node)
	}
	if len(e.Skipped) > 0 {
		parts := make([]string, len(e.Skipped))
		for i, s := range e.Skipped {
			parts[i] = s.Node + ": " + strings.Join(s.Reasons, ",")
		}
		fmt.Fprintf(&b, " (skipped %s)", strings.Join(parts, "; "))
	}
	return b.String()
}

// SelectionsEqual compares two decisions of a policy.
func SelectionsEqual(a, b []EntrySelection) bool {
	return slices.EqualFunc(a, b, EntrySelection.Equal)
}

// Encode is the annotation value of a policy's decisions.
func Encode(sel []EntrySelection) string {
	if sel == nil {
		sel = []EntrySelection{}
	}
	b, _ := json.Marshal(sel)
	return string(b)
}

// Decode parses an annotation value: a JSON list (never null) of entry
// decisions as Encode writes them, each with its own index (>= 0), a
// serving node always with its IPv4 InternalIP and an InternalIP only with
// a node, and every skipped node with a name and at least one reason.
// Anything else is an error naming the annotation and what is wrong, and
// no decision: the caller keeps the last good one (tables.KeepDecision)
// rather than acting on part of a broken one. Unknown fields are ignored
// (a newer operator may add some).
func Decode(s string) ([]EntrySelection, error) {
	var out []EntrySelection
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", Annotation, err)
	}
	if out == nil {
		return nil, fmt.Errorf("annotation %s: not a list of gateway entry decisions", Annotation)
	}
	seen := make(map[int]bool, len(out))
	for i, e := range out {
		if err := e.validate(); err != nil {
			return nil, fmt.Errorf("annotation %s: item %d: %w", Annotation, i, err)
		}
		if seen[e.Index] {
			return nil, fmt.Errorf("annotation %s: item %d: gateway entry %d decided twice", Annotation, i, e.Index)
		}
		seen[e.Index] = true
	}
	return out, nil
}

// validate checks one decoded entry decision.
func (e EntrySelection) validate() error {
	if e.Index < 0 {
		return fmt.Errorf("negative gateway entry index %d", e.Index)
	}
	if e.Node == "" && e.InternalIP != "" {
		return fmt.Errorf("gateway entry %d: internalIP %q without a node", e.Index, e.InternalIP)
	}
	if e.Node != "" {
		if a, err := netip.ParseAddr(e.InternalIP); err != nil || !a.Is4() || a.Zone() != "" {
			return fmt.Errorf("gateway entry %d: node %q needs an IPv4 internalIP, got %q", e.Index, e.Node, e.InternalIP)
		}
	}
	for _, sk := range e.Skipped {
		if sk.Node == "" || len(sk.Reasons) == 0 {
			return fmt.Errorf("gateway entry %d: a skipped node needs a name and a reason", e.Index)
		}
	}
	return nil
}

// maxSkipped bounds the skipped nodes recorded per entry, so that a
// selector matching thousands of dead nodes does not make a huge
// annotation.
const maxSkipped = 8

// Select decides the serving node of every entry. nodes need not be sorted;
// nodes without a Node object (Ready false because unknown) still count as
// matching only if their labels match. With upstream set the first matching
// node with an IPv4 InternalIP serves, whatever its state (Cilium v1.18:
// the first node by name that the nodeSelector matches and that has a node
// IP); otherwise the first such node that selection.EvaluateNode finds
// eligible, the ones before it being reported as Skipped.
func Select(entries []GatewayEntry, nodes []*selection.Node, now time.Time, upstream bool) []EntrySelection {
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b *selection.Node) int { return strings.Compare(a.Name, b.Name) })
	out := make([]EntrySelection, 0, len(entries))
	for _, e := range entries {
		r := EntrySelection{Index: e.Index}
		matched := 0
		for _, n := range sorted {
			if e.NodeSelector == nil || !e.NodeSelector.Matches(labels.Set(n.Labels)) {
				continue
			}
			matched++
			var reasons []string
			if !n.InternalIP.Is4() {
				reasons = []string{ReasonNoInternalIP}
			}
			if !upstream {
				if ok, why := selection.EvaluateNode(n, now); !ok {
					reasons = append(why, reasons...)
				}
			}
			if len(reasons) == 0 {
				r.Node, r.InternalIP = n.Name, n.InternalIP.String()
				break
			}
			if len(r.Skipped) < maxSkipped {
				r.Skipped = append(r.Skipped, Skipped{Node: n.Name, Reasons: reasons})
			}
		}
		switch {
		case r.Node != "":
		case matched == 0:
			r.Reason = ReasonNoMatchingNode
		default:
			r.Reason = ReasonNoEligibleNode
		}
		out = append(out, r)
	}
	return out
}

// ChangeReason says why an entry's serving node changed from prev to cur:
// the first reason prev was skipped for, NoLongerCandidate when prev does
// not match any more (or was deleted), Elected when there was none, and
// Failback when prev is still fine but a node sorting before it is back.
func ChangeReason(prev string, cur EntrySelection) string {
	if prev == "" {
		return "Elected"
	}
	for _, s := range cur.Skipped {
		if s.Node == prev {
			return s.Reasons[0]
		}
	}
	if cur.Node != "" && strings.Compare(cur.Node, prev) < 0 {
		return "Failback"
	}
	return "NoLongerCandidate"
}
