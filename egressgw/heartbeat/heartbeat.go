// Package heartbeat defines the heartbeat Lease that every agent on a
// candidate gateway node renews, and that the operator reads to decide
// whether the node may be (or stay) active. The Lease replaces the 40-50 s
// Node-Ready grace period as the hard-failure signal: it expires within
// seconds of a node dying.
//
// One coordination.k8s.io/v1 Lease per node, named egressha-<node>, in
// Cilium's namespace: holderIdentity is the node, renewTime the last
// renewal, leaseDurationSeconds the expiry. The annotation
// egressha.io/gateways carries, per EgressGateway the node is a candidate
// of, what the node resolved for it (its egress IP, or why it cannot serve).
package heartbeat

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
)

const (
	// LeasePrefix prefixes the node name in the Lease name.
	LeasePrefix = "egressha-"
	// GatewaysAnnotation holds the JSON encoding of a Report.
	GatewaysAnnotation = "egressha.io/gateways"
	// NodeLabel labels the Lease with its node, for listing.
	NodeLabel = "egressha.io/node"
	// ComponentLabel marks the Leases as egressha heartbeats.
	ComponentLabel = "app.kubernetes.io/component"
	ComponentValue = "egressha-heartbeat"
)

// Reasons a node cannot serve a gateway, as reported in its Lease. They
// become candidate reasons in the EgressGateway status.
const (
	ReasonInterfaceMissing   = "InterfaceMissing"
	ReasonInterfaceDown      = "InterfaceDown"
	ReasonNoIPv4Address      = "InterfaceHasNoIPv4"
	ReasonNotCiliumDevice    = "InterfaceNotCiliumDevice"
	ReasonVirtualIPNotReady  = "VirtualIPNotReady"
	ReasonNotReported        = "NotReportedByAgent"
	ReasonHeartbeatExpired   = "HeartbeatExpired"
	ReasonHeartbeatMissing   = "HeartbeatMissing"
	ReasonHeartbeatMalformed = "HeartbeatMalformed"
)

// LeaseName is the name of a node's heartbeat Lease.
func LeaseName(node string) string { return LeasePrefix + node }

// GatewayReport is what a node resolved for one gateway.
type GatewayReport struct {
	// Ready is true when the node can carry the gateway's traffic now.
	Ready bool `json:"ready"`
	// EgressIP is the source address the node would SNAT to: the primary
	// IPv4 of interfaceName in basic mode.
	EgressIP string `json:"egressIP,omitempty"`
	// Reason (one of the Reason* constants) and Message say why not Ready.
	// In VIP mode Message also says why an active node does not announce.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// Announcing is true while the node answers ARP for the gateway's
	// virtual IP (VirtualIPAddress mode). A node that becomes active claims
	// the VIP only after every other node's Lease stopped saying so (or
	// expired), so two nodes never answer at once.
	Announcing bool `json:"announcing,omitempty"`
	// Duplicate describes another host seen claiming the virtual IP while
	// this node announced or probed for it ("" when none).
	Duplicate string `json:"duplicate,omitempty"`
}

// Report maps gateway names to what the node resolved for them.
type Report map[string]GatewayReport

// Encode returns the annotation value of r (deterministic: map keys sorted).
func (r Report) Encode() (string, error) {
	if r == nil {
		r = Report{}
	}
	b, err := json.Marshal(r)
	return string(b), err
}

// DecodeReport parses an annotation value.
func DecodeReport(s string) (Report, error) {
	r := Report{}
	if strings.TrimSpace(s) == "" {
		return r, nil
	}
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", GatewaysAnnotation, err)
	}
	return r, nil
}

// Heartbeat is a decoded heartbeat Lease.
type Heartbeat struct {
	Node      string
	RenewTime time.Time
	Duration  time.Duration
	Gateways  Report
}

// Fresh reports whether the heartbeat has not expired at now.
func (h Heartbeat) Fresh(now time.Time) bool {
	return !h.RenewTime.IsZero() && now.Before(h.RenewTime.Add(h.Duration))
}

// Expiry is when the heartbeat expires.
func (h Heartbeat) Expiry() time.Time { return h.RenewTime.Add(h.Duration) }

// FromLease decodes a heartbeat Lease.
func FromLease(l *coordinationv1.Lease) (Heartbeat, error) {
	if l == nil {
		return Heartbeat{}, errors.New("nil lease")
	}
	node, ok := strings.CutPrefix(l.Name, LeasePrefix)
	if !ok || node == "" {
		return Heartbeat{}, fmt.Errorf("lease %s is not a heartbeat (want %s<node>)", l.Name, LeasePrefix)
	}
	h := Heartbeat{Node: node}
	if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != node {
		return h, fmt.Errorf("lease %s is held by %q, not by node %s", l.Name, *l.Spec.HolderIdentity, node)
	}
	if l.Spec.RenewTime != nil {
		h.RenewTime = l.Spec.RenewTime.Time
	}
	if l.Spec.LeaseDurationSeconds != nil {
		h.Duration = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	r, err := DecodeReport(l.Annotations[GatewaysAnnotation])
	if err != nil {
		return h, err
	}
	h.Gateways = r
	return h, nil
}
