// Package egresspolicy computes the desired contents of Cilium's egress-gateway
// policy map (cilium_egress_gw_policy_v4) from EgressGatewayPolicies,
// EgressGateway statuses and endpoints, and the status conditions those
// inputs imply for each policy.
//
// It owns:
//   - the conversion of the CRD objects into the small value types used here
//     (PolicyFromObject, GatewayFromObject, NewSelector);
//   - endpoint selection, with the semantics of Cilium v1.18's own egress
//     gateway (pkg/egressgateway): a pod is selected when any selector
//     matches its identity labels; namespaceSelector is matched against the
//     io.cilium.k8s.namespace.labels.* identity labels, an empty one selects
//     every namespace, and podSelector and namespaceSelector are ANDed;
//   - the map values: gateway IP = the active node's InternalIP, egress IP =
//     the published egress IP (interface address or virtual IP), 0.0.0.0 for
//     both when the gateway is missing or has no active node (the datapath
//     drops: fail closed), and gateway 0.0.0.1 for excluded CIDRs;
//   - the resolution of overlapping policies: exclusions only remove traffic
//     from their own policy, more specific destinations win as in the LPM
//     lookup, equal destinations with different values go to the policy whose
//     name sorts first and are reported as Conflict (see Resolve);
//   - the Ready and Conflict conditions of every policy (Conditions).
//
// It never talks to Kubernetes, netlink, BPF or the clock, and it keeps no
// state: every function is a deterministic function of its arguments (map
// iteration order never shows in a result). Entries never depend on the node
// that computes them or on the node a pod runs on: every node programs the
// same entries for every selected pod, as the gateway needs them for SNAT and
// the reply path.
//
// Incremental use: ForEndpoint (or Resolve, which also returns the
// endpoint's conflicts) gives the entries of one endpoint; Compute is exactly
// the union of ForEndpoint over all endpoints, sorted, with keys that two
// endpoints share (one IP on two endpoints) merged by a fixed rule. An agent
// that recomputes an endpoint on an endpoint event, and every endpoint the
// old or the new version selects on a policy event (every endpoint of the
// policies naming the gateway on a gateway event), gets the table Compute
// would give.
//
// Cases the map cannot express are reported, not hidden: two policies
// selecting the same pod with the same destination CIDR and different
// values (Conflict, reason OverlappingPolicies), and one IP on two endpoints
// that need different values (Conflict, reason DuplicateSourceIP). Scoped
// exclusions never need a condition: the entries are split per prefix so
// that the longest-prefix lookup gives each address exactly what the
// policies ask.
package egresspolicy
