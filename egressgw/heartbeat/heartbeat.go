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
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	coordinationv1 "k8s.io/api/coordination/v1"
)

const (
	// LeasePrefix prefixes the node name in the Lease name.
	LeasePrefix = "egressha-"
	// GatewaysAnnotation holds the JSON encoding of a Report.
	GatewaysAnnotation = "egressha.io/gateways"
	// RestartAnnotation, when present, says the agent stopped to restart
	// and asks the operator to keep the node's roles for this many
	// seconds while the node itself answers (issue 15). The next renewal
	// by the restarted agent removes it.
	RestartAnnotation = "egressha.io/restart-grace-seconds"
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

// Bounds of what a node may report (issue 16): whatever a Lease says, the
// decoded report holds no string longer than these, so it fits into the
// EgressGateway status (a condition message is at most 32 KiB), the
// tables and the logs.
const (
	// MaxMessageBytes bounds a report's message and duplicate fields.
	MaxMessageBytes = 256
	// MaxEgressIPBytes bounds a report's egressIP (an IPv4 address is at
	// most 15 bytes; a longer value is unusable anyway).
	MaxEgressIPBytes = 64
	// MaxGatewayNameBytes is the longest EgressGateway name (a DNS
	// subdomain); a longer key names no gateway and is dropped.
	MaxGatewayNameBytes = 253
	// TruncatedMarker ends a string that was cut to its bound.
	TruncatedMarker = "...(truncated)"
)

// Kinds of rejection of what a Lease says: the closed label set of the
// operator's egressha_heartbeat_rejected_total.
const (
	// RejectMalformed: the Lease cannot be decoded (annotation not JSON,
	// held by another node); the node is not eligible (HeartbeatMalformed).
	RejectMalformed = "Malformed"
	// RejectUnknownReason: an entry's reason is not one this version
	// knows; the entry becomes not ready with reason HeartbeatMalformed.
	RejectUnknownReason = "UnknownReason"
	// RejectTooLong: a string was truncated, or an over-long gateway key
	// dropped.
	RejectTooLong = "TooLong"
	// RejectDurationClamped: leaseDurationSeconds exceeds the operator's
	// maximum expiry and was clamped to it.
	RejectDurationClamped = "DurationClamped"
)

// RejectKinds is the closed set of rejection kinds.
var RejectKinds = []string{RejectMalformed, RejectUnknownReason, RejectTooLong, RejectDurationClamped}

// Rejection is one part of a Lease that was not taken as written.
type Rejection struct {
	// Kind is one of the Reject* constants.
	Kind string
	// Detail names the field and what was done, e.g.
	// `gateways["gw"].reason: unknown reason "Foo"`.
	Detail string
}

// ReportedReasons is the closed set of reasons a node may report for a
// gateway it cannot serve (what BuildReport writes, and
// HeartbeatMalformed). Any other reason decodes as HeartbeatMalformed.
var ReportedReasons = []string{
	ReasonInterfaceMissing, ReasonInterfaceDown, ReasonNoIPv4Address, ReasonNotCiliumDevice,
	ReasonVirtualIPNotReady, ReasonUnsupportedMode, ReasonNotReported, ReasonHeartbeatMalformed,
}

// Truncate cuts s to at most max bytes (max > len(TruncatedMarker)), on a
// rune boundary, ending it with TruncatedMarker; it reports whether it
// cut. A string within max is returned as is.
func Truncate(s string, max int) (string, bool) {
	if len(s) <= max {
		return s, false
	}
	cut := max - len(TruncatedMarker)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + TruncatedMarker, true
}

// DecodeReport parses an annotation value and bounds it (Sanitize).
func DecodeReport(s string) (Report, error) {
	r, _, err := DecodeReportChecked(s)
	return r, err
}

// DecodeReportChecked parses an annotation value and bounds it
// (Sanitize), returning what was not taken as written. An error means
// the value is not a report at all.
func DecodeReportChecked(s string) (Report, []Rejection, error) {
	r := Report{}
	if strings.TrimSpace(s) == "" {
		return r, nil, nil
	}
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return nil, nil, fmt.Errorf("annotation %s: %w", GatewaysAnnotation, err)
	}
	if r == nil { // "null"
		r = Report{}
	}
	return r, r.Sanitize(), nil
}

// Sanitize bounds r in place: an entry with a reason outside
// ReportedReasons becomes not ready with reason HeartbeatMalformed and a
// message naming the field; messages, duplicates and egress IPs longer
// than their bounds are truncated; keys longer than a gateway name are
// dropped. It returns the rejections in key order. Sanitize is
// idempotent: a sanitized report has none.
func (r Report) Sanitize() []Rejection {
	var rej []Rejection
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range r {
			if !yield(k) {
				return
			}
		}
	}) {
		g := r[name]
		if len(name) > MaxGatewayNameBytes {
			delete(r, name)
			short, _ := Truncate(name, 64)
			rej = append(rej, Rejection{RejectTooLong, fmt.Sprintf("gateways[%q]: key longer than %d bytes, dropped", short, MaxGatewayNameBytes)})
			continue
		}
		field := fmt.Sprintf("gateways[%q]", name)
		if g.Reason != "" && !slices.Contains(ReportedReasons, g.Reason) {
			reason, _ := Truncate(g.Reason, 64)
			msg := fmt.Sprintf("%s.reason: unknown reason %q", field, reason)
			rej = append(rej, Rejection{RejectUnknownReason, msg})
			g.Ready, g.Reason, g.Message = false, ReasonHeartbeatMalformed, msg
		}
		for _, f := range []struct {
			name string
			v    *string
			max  int
		}{{"message", &g.Message, MaxMessageBytes}, {"duplicate", &g.Duplicate, MaxMessageBytes}, {"egressIP", &g.EgressIP, MaxEgressIPBytes}} {
			if t, cut := Truncate(*f.v, f.max); cut {
				rej = append(rej, Rejection{RejectTooLong, fmt.Sprintf("%s.%s: %d bytes, truncated to %d", field, f.name, len(*f.v), f.max)})
				*f.v = t
			}
		}
		r[name] = g
	}
	return rej
}

// Heartbeat is a decoded heartbeat Lease.
type Heartbeat struct {
	Node      string
	RenewTime time.Time
	Duration  time.Duration
	Gateways  Report
	// Malformed, when set, says why the Lease could not be decoded (its
	// annotation is not a report, or another node holds it): the node is
	// then not eligible, with reason HeartbeatMalformed, and Gateways is
	// empty.
	Malformed string
	// Rejections are the parts of the Lease not taken as written.
	Rejections []Rejection
	// RestartGrace is the grace the agent asked for when it stopped to
	// restart (RestartAnnotation); zero when it did not.
	RestartGrace time.Duration
}

// Fresh reports whether the heartbeat has not expired at now.
func (h Heartbeat) Fresh(now time.Time) bool {
	return !h.RenewTime.IsZero() && now.Before(h.RenewTime.Add(h.Duration))
}

// Expiry is when the heartbeat expires.
func (h Heartbeat) Expiry() time.Time { return h.RenewTime.Add(h.Duration) }

// ClampDuration bounds Duration to max (max > 0): a Lease cannot keep a
// dead node fresh for longer than the reader allows. It records a
// rejection when it clamps.
func (h *Heartbeat) ClampDuration(max time.Duration) {
	if max > 0 && h.Duration > max {
		h.Rejections = append(h.Rejections, Rejection{RejectDurationClamped,
			fmt.Sprintf("spec.leaseDurationSeconds: %s exceeds the maximum expiry %s, clamped", h.Duration, max)})
		h.Duration = max
	}
}

// FromLease decodes a heartbeat Lease. A Lease that is a heartbeat but
// cannot be decoded returns the heartbeat with Malformed set (and its
// renewal and duration) together with the error; a Lease that is not a
// heartbeat returns the zero Heartbeat and an error.
func FromLease(l *coordinationv1.Lease) (Heartbeat, error) {
	if l == nil {
		return Heartbeat{}, errors.New("nil lease")
	}
	node, ok := strings.CutPrefix(l.Name, LeasePrefix)
	if !ok || node == "" {
		return Heartbeat{}, fmt.Errorf("lease %s is not a heartbeat (want %s<node>)", l.Name, LeasePrefix)
	}
	h := Heartbeat{Node: node}
	if l.Spec.RenewTime != nil {
		h.RenewTime = l.Spec.RenewTime.Time
	}
	if l.Spec.LeaseDurationSeconds != nil {
		h.Duration = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	malformed := func(err error) (Heartbeat, error) {
		h.Malformed = err.Error()
		h.Rejections = append(h.Rejections, Rejection{RejectMalformed, h.Malformed})
		return h, err
	}
	if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != node {
		short, _ := Truncate(*l.Spec.HolderIdentity, 64)
		return malformed(fmt.Errorf("spec.holderIdentity: lease %s is held by %q, not by node %s", l.Name, short, node))
	}
	r, rej, err := DecodeReportChecked(l.Annotations[GatewaysAnnotation])
	if err != nil {
		msg, _ := Truncate(err.Error(), MaxMessageBytes)
		return malformed(errors.New(msg))
	}
	h.Gateways, h.Rejections = r, append(h.Rejections, rej...)
	if v, ok := l.Annotations[RestartAnnotation]; ok {
		// A value that is not a number of seconds asks for nothing: the
		// node is judged as if it had not said it restarts.
		sec, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil {
			short, _ := Truncate(v, 64)
			h.Rejections = append(h.Rejections, Rejection{RejectMalformed,
				fmt.Sprintf("annotation %s: %q is not a number of seconds, ignored", RestartAnnotation, short)})
		} else {
			h.RestartGrace = time.Duration(sec) * time.Second
		}
	}
	return h, nil
}

// ClampRestartGrace bounds RestartGrace to max (0: no restart grace at
// all), recording a rejection when it clamps.
func (h *Heartbeat) ClampRestartGrace(max time.Duration) {
	if h.RestartGrace > max {
		h.Rejections = append(h.Rejections, Rejection{RejectDurationClamped,
			fmt.Sprintf("annotation %s: %s exceeds the maximum restart grace %s, clamped", RestartAnnotation, h.RestartGrace, max)})
		h.RestartGrace = max
	}
}
