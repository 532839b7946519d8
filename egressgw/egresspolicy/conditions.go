package egresspolicy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// maxConflictsInMessage bounds the Conflict message; the rest is counted.
const maxConflictsInMessage = 8

// Conditions returns, for every policy, its Ready condition and its
// Conflict condition, in that order.
//
// Ready:
//   - True, Ready: the gateway exists and has an active node with a usable
//     InternalIP and a known egress IP;
//   - False, GatewayNotFound: spec.egressGatewayName names no EgressGateway;
//     the policy's destinations are programmed as "Not Found" (dropped);
//   - False, GatewayNotReady: the gateway has no active node (or the active
//     node has no usable InternalIP), also dropped; or it has an active node
//     but no egress IP yet, so the gateway node drops.
//
// Conflict (from conflicts, as Resolve and Compute report them):
//   - True, OverlappingPolicies: on both policies, naming the other policy,
//     its gateway and the CIDR, and which one wins (the name that sorts
//     first);
//   - True, DuplicateSourceIP: on both owners, naming the pod IP, the CIDR
//     and whose entry is programmed (only if there is no overlap, which
//     takes precedence as the reason; the message lists both kinds);
//   - False, NoConflict otherwise.
func Conditions(policies []Policy, gateways map[string]Gateway, conflicts []Conflict) map[string][]Condition {
	gatewayOf := make(map[string]string, len(policies))
	for _, p := range policies {
		gatewayOf[p.Name] = p.Gateway
	}
	perPolicy := map[string][]Conflict{}
	for _, c := range conflicts {
		perPolicy[c.Winner] = append(perPolicy[c.Winner], c)
		if c.Loser != c.Winner {
			perPolicy[c.Loser] = append(perPolicy[c.Loser], c)
		}
	}
	out := make(map[string][]Condition, len(policies))
	for _, p := range policies {
		out[p.Name] = []Condition{
			readyCondition(p, gateways),
			conflictCondition(p.Name, perPolicy[p.Name], gatewayOf),
		}
	}
	return out
}

func readyCondition(p Policy, gateways map[string]Gateway) Condition {
	if p.Spreads {
		if len(p.Spread) == 0 {
			return Condition{ConditionReady, StatusFalse, ReasonGatewayNotReady,
				"no gateway entry has a serving node; traffic of the selected pods to the destination CIDRs is dropped"}
		}
		return Condition{ConditionReady, StatusTrue, ReasonReady,
			fmt.Sprintf("traffic is spread over %d gateway node(s)", len(p.Spread))}
	}
	g, ok := gateways[p.Gateway]
	switch {
	case !ok:
		return Condition{ConditionReady, StatusFalse, ReasonGatewayNotFound,
			fmt.Sprintf("EgressGateway %q does not exist; traffic of the selected pods to the destination CIDRs is dropped", p.Gateway)}
	case g.ActiveNode == "":
		return Condition{ConditionReady, StatusFalse, ReasonGatewayNotReady,
			fmt.Sprintf("EgressGateway %q has no active node; traffic of the selected pods to the destination CIDRs is dropped", p.Gateway)}
	case !g.Active():
		return Condition{ConditionReady, StatusFalse, ReasonGatewayNotReady,
			fmt.Sprintf("active node %q of EgressGateway %q has no usable IPv4 InternalIP; traffic of the selected pods to the destination CIDRs is dropped", g.ActiveNode, p.Gateway)}
	case !usableIPv4(g.EgressIP):
		return Condition{ConditionReady, StatusFalse, ReasonGatewayNotReady,
			fmt.Sprintf("EgressGateway %q has active node %q but no egress IP yet; the gateway drops the traffic of the selected pods", p.Gateway, g.ActiveNode)}
	}
	return Condition{ConditionReady, StatusTrue, ReasonReady,
		fmt.Sprintf("traffic leaves through EgressGateway %q: active node %q (%s), egress IP %s", p.Gateway, g.ActiveNode, g.GatewayIP, g.EgressIP)}
}

func conflictCondition(name string, cs []Conflict, gatewayOf map[string]string) Condition {
	if len(cs) == 0 {
		return Condition{ConditionConflict, StatusFalse, ReasonNoConflict, "no other policy claims the same destination for the same pods"}
	}
	cs = slices.Clone(cs)
	slices.SortFunc(cs, Conflict.compare)
	reason := ReasonDuplicateSourceIP
	msgs := make([]string, 0, min(len(cs), maxConflictsInMessage)+1)
	for i, c := range cs {
		if c.Reason == ReasonOverlappingPolicies {
			reason = ReasonOverlappingPolicies
		}
		if i >= maxConflictsInMessage {
			continue
		}
		msgs = append(msgs, conflictMessage(name, c, gatewayOf))
	}
	if extra := len(cs) - maxConflictsInMessage; extra > 0 {
		msgs = append(msgs, fmt.Sprintf("and %d more", extra))
	}
	return Condition{ConditionConflict, StatusTrue, reason, strings.Join(msgs, "; ")}
}

func conflictMessage(self string, c Conflict, gatewayOf map[string]string) string {
	gatewayOf = maps.Clone(gatewayOf)
	for name, gw := range gatewayOf {
		if gw == "" {
			// A CiliumEgressGatewayPolicy names no EgressGateway.
			gatewayOf[name] = "none: a CiliumEgressGatewayPolicy"
		}
	}
	switch c.Reason {
	case ReasonOverlappingPolicies:
		if self == c.Winner {
			return fmt.Sprintf("policy %q (EgressGateway %q) also sends %s from some of the same pods; this policy wins because its name sorts first",
				c.Loser, gatewayOf[c.Loser], c.CIDR)
		}
		return fmt.Sprintf("policy %q (EgressGateway %q) also sends %s from some of the same pods and wins because its name sorts first; for those pods this policy's gateway is not used for %s",
			c.Winner, gatewayOf[c.Winner], c.CIDR, c.CIDR)
	default:
		return fmt.Sprintf("pod IP %s belongs to more than one endpoint and they need different entries for %s; the entry of policy %q is programmed, not that of policy %q",
			c.Source, c.CIDR, c.Winner, c.Loser)
	}
}
