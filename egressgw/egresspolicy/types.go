package egresspolicy

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
)

// Identity label keys, as Cilium's k8s identity labels carry them once the
// "k8s:" source prefix is stripped (pkg/k8s/apis/cilium.io/const.go).
const (
	// PodNamespaceLabel holds the pod's namespace name.
	PodNamespaceLabel = "io.kubernetes.pod.namespace"
	// NamespaceLabelPrefix prefixes the labels of the pod's namespace.
	NamespaceLabelPrefix = "io.cilium.k8s.namespace.labels."
)

// Special map values (bpf/lib/egress_gateway.h, pkg/egressgateway).
var (
	// GatewayNotFound as gateway IP makes the source node drop the packet
	// ("No egress gateway found").
	GatewayNotFound = netip.IPv4Unspecified()
	// ExcludedCIDR as gateway IP makes the datapath skip the egress gateway
	// for the destination.
	ExcludedCIDR = netip.AddrFrom4([4]byte{0, 0, 0, 1})
	// EgressIPNotFound as egress IP makes a gateway node drop the packet
	// ("No Egress IP configured").
	EgressIPNotFound = netip.IPv4Unspecified()

	// DropValue is the value of a destination whose gateway is missing or
	// has no active node: fail closed.
	DropValue = Value{EgressIP: EgressIPNotFound, GatewayIP: GatewayNotFound}
	// ExcludedValue is the value of an excluded CIDR.
	ExcludedValue = Value{EgressIP: EgressIPNotFound, GatewayIP: ExcludedCIDR}
)

// Condition types and reasons of EgressGatewayPolicy status.
const (
	ConditionReady    = v1alpha1.ConditionReady
	ConditionConflict = v1alpha1.ConditionConflict

	StatusTrue  = "True"
	StatusFalse = "False"

	// Ready reasons.
	ReasonReady           = v1alpha1.ReasonPolicyReady
	ReasonGatewayNotFound = v1alpha1.ReasonGatewayNotFound
	ReasonGatewayNotReady = v1alpha1.ReasonGatewayNotReady

	// Conflict reasons.
	ReasonNoConflict = "NoConflict"
	// ReasonOverlappingPolicies: two policies select the same pod and list
	// the same destination CIDR with different gateways.
	ReasonOverlappingPolicies = "OverlappingPolicies"
	// ReasonDuplicateSourceIP: two endpoints hold the same IP (an IP reused
	// while a stale endpoint still exists) and need different values for the
	// same destination; the map is keyed by source IP and holds one.
	ReasonDuplicateSourceIP = "DuplicateSourceIP"
)

// Endpoint is one pod endpoint as the egress map sees it.
type Endpoint struct {
	// IP is the pod IP; only IPv4 endpoints get entries.
	IP netip.Addr
	// Namespace is the pod's namespace. When Labels lacks
	// io.kubernetes.pod.namespace, it stands in for that label.
	Namespace string
	// Labels are the endpoint's security identity labels of source k8s with
	// the "k8s:" prefix stripped, e.g. app=backend,
	// io.kubernetes.pod.namespace=my-ns,
	// io.cilium.k8s.namespace.labels.team=x. Only identity-relevant labels
	// can be matched, as in Cilium.
	Labels map[string]string
	// Node is the node the pod runs on. Entries never depend on it; it is
	// carried for the caller's bookkeeping.
	Node string
	// UID is the endpoint's CiliumEndpoint UID, the key of upstream's
	// endpoint hash that spreads the endpoints of a policy with several
	// gateways (Policy.Spread); "" while not known.
	UID string
	// NodeLabels are the labels of the node the pod runs on, for a
	// policy's NodeSelectors; nil when not known.
	NodeLabels map[string]string
}

// Gateway is what the map needs of one EgressGateway's status.
type Gateway struct {
	Name string
	// ActiveNode is status.activeNodeName; empty = no active node.
	ActiveNode string
	// GatewayIP is the active node's InternalIP (status.activeNodeInternalIP),
	// the tunnel endpoint; invalid = none.
	GatewayIP netip.Addr
	// EgressIP is the SNAT address (status.egressIP: the active node's
	// interface address, or the virtual IP); invalid = not known yet.
	EgressIP netip.Addr
}

// Active reports whether the gateway has an active node with a usable
// IPv4 InternalIP, i.e. whether traffic can be tunnelled to it.
func (g Gateway) Active() bool {
	return g.ActiveNode != "" && usableIPv4(g.GatewayIP)
}

// Value is the map value the gateway gives its policies' destinations:
// DropValue when it is not Active, otherwise its gateway IP with its egress
// IP (EgressIPNotFound when the egress IP is not known yet, which makes the
// gateway node drop).
func (g Gateway) Value() Value {
	if !g.Active() {
		return DropValue
	}
	v := Value{EgressIP: EgressIPNotFound, GatewayIP: g.GatewayIP}
	if usableIPv4(g.EgressIP) {
		v.EgressIP = g.EgressIP
	}
	return v
}

// usableIPv4 refuses what must never be written as a real address: anything
// not IPv4, 0.0.0.0/8 (which holds both special gateway values: writing
// 0.0.0.1 would turn a gateway into an exclusion, i.e. fail open), loopback,
// multicast and broadcast.
func usableIPv4(a netip.Addr) bool {
	return a.Is4() && a.As4()[0] != 0 && !a.IsLoopback() && !a.IsMulticast() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// Selector is one entry of spec.selectors. A nil field is unset. An
// endpoint matches when every set field matches; a Selector with neither
// field set matches nothing.
type Selector struct {
	// Pod is matched against the endpoint's identity labels (including
	// io.kubernetes.pod.namespace).
	Pod labels.Selector
	// Namespace is the namespaceSelector as the user wrote it (keys without
	// prefix); it is matched against the endpoint's
	// io.cilium.k8s.namespace.labels.<key> labels.
	Namespace labels.Selector
	// AnyNamespace is set for an empty namespaceSelector ({}), which, as in
	// Cilium, selects every endpoint that has a namespace.
	AnyNamespace bool
}

// Policy is an EgressGatewayPolicy reduced to what the map needs.
type Policy struct {
	// Name is the object name. Names are unique (cluster-scoped objects);
	// they order policies when two claim the same destination.
	Name string
	// Gateway is spec.egressGatewayName.
	Gateway string
	// Destinations and Exclusions are IPv4 prefixes; anything else is
	// ignored, and host bits are masked.
	Destinations []netip.Prefix
	Exclusions   []netip.Prefix
	Selectors    []Selector

	// The fields below serve CiliumEgressGatewayPolicies (egressgw/cegp).

	// NodeSelectors, when not empty, restrict the policy to endpoints on
	// nodes whose labels match at least one of them (upstream: the
	// nodeSelector of spec.selectors, ORed over the selectors and ANDed
	// with the endpoint selectors).
	NodeSelectors []labels.Selector
	// Spreads says Gateway is not used: the policy's value comes from
	// Spread instead.
	Spreads bool
	// Spread are the values of the policy's gateway entries that have a
	// serving node, in upstream's order (by gateway IP). An endpoint gets
	// Spread[SpreadIndex(UID, len(Spread))]; with none the policy drops.
	Spread []Value
}

// SpreadIndex is upstream's assignment of an endpoint to one of n gateways
// (pkg/egressgateway computeEndpointHash): FNV-1a 32 of the CiliumEndpoint
// UID, modulo n.
func SpreadIndex(uid string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(uid))
	return int(h.Sum32() % uint32(n))
}

// Key is a map key: the pod IP, matched exactly, and a destination CIDR.
// Both are IPv4.
type Key struct {
	Source netip.Addr
	Dest   netip.Prefix
}

// Compare orders keys by source IP, then destination address, then prefix
// length (so a prefix comes before the prefixes it contains).
func (k Key) Compare(o Key) int {
	if c := k.Source.Compare(o.Source); c != 0 {
		return c
	}
	return comparePrefix(k.Dest, o.Dest)
}

func (k Key) String() string { return k.Source.String() + " " + k.Dest.String() }

// ComparePrefix orders prefixes by address, then length: the order of
// Key.Compare for one source, in which targets are sorted.
func ComparePrefix(a, b netip.Prefix) int { return comparePrefix(a, b) }

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// Value is a map value.
type Value struct {
	EgressIP  netip.Addr
	GatewayIP netip.Addr
}

// IsExcluded reports whether v is the excluded-CIDR value.
func (v Value) IsExcluded() bool { return v.GatewayIP == ExcludedCIDR }

// IsDrop reports whether v makes the source node drop (no gateway).
func (v Value) IsDrop() bool { return v.GatewayIP == GatewayNotFound }

// String prints the value as cilium-dbg bpf egress list does.
func (v Value) String() string { return v.EgressIP.String() + " " + gatewayString(v.GatewayIP) }

func (v Value) compare(o Value) int {
	if c := v.GatewayIP.Compare(o.GatewayIP); c != 0 {
		return c
	}
	return v.EgressIP.Compare(o.EgressIP)
}

// gatewayString is cilium-dbg's mapGatewayIP.
func gatewayString(a netip.Addr) string {
	switch a {
	case GatewayNotFound:
		return "Not Found"
	case ExcludedCIDR:
		return "Excluded CIDR"
	}
	return a.String()
}

// Entry is one desired map entry and the policy that owns it: the policy
// whose gateway the value comes from, or for an excluded CIDR the
// excluding policy (the first by name if several).
type Entry struct {
	Key
	Value
	Policy string
}

func (e Entry) String() string {
	return fmt.Sprintf("%s -> %s (%s)", e.Key, e.Value, e.Policy)
}

// Condition mirrors the fields of metav1.Condition that this package
// decides; the caller adds generation and transition time.
type Condition struct {
	Type    string
	Status  string
	Reason  string
	Message string
}

// Conflict is one case the map cannot express as the policies ask.
type Conflict struct {
	// Reason is ReasonOverlappingPolicies or ReasonDuplicateSourceIP.
	Reason string
	// Winner is the policy whose value is programmed, Loser the other one.
	Winner, Loser string
	// CIDR is the destination both policies list (overlap) or the key's
	// destination (duplicate source IP).
	CIDR netip.Prefix
	// Source is the shared pod IP for ReasonDuplicateSourceIP; invalid for
	// overlaps, which do not depend on the pod.
	Source netip.Addr
}

func (c Conflict) compare(o Conflict) int {
	switch {
	case c.Reason != o.Reason:
		return strings.Compare(c.Reason, o.Reason)
	case c.CIDR != o.CIDR:
		return comparePrefix(c.CIDR, o.CIDR)
	case c.Winner != o.Winner:
		return strings.Compare(c.Winner, o.Winner)
	case c.Loser != o.Loser:
		return strings.Compare(c.Loser, o.Loser)
	}
	return c.Source.Compare(o.Source)
}
