package operator

import (
	"net/netip"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/probe"
)

func parseAddr(s string) netip.Addr {
	a, _ := netip.ParseAddr(s)
	return a
}

// nodeFacts are the facts taken from a Node object.
type nodeFacts struct {
	labels     map[string]string
	internalIP string
	ready      bool
	cordoned   bool
}

func factsFromNode(n *corev1.Node) nodeFacts {
	f := nodeFacts{labels: n.Labels, cordoned: n.Spec.Unschedulable}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			f.ready = c.Status == corev1.ConditionTrue
		}
	}
	// The tunnel endpoint Cilium uses, the same address the prober
	// accepts replies from.
	if addr := probe.NodeAddress(n); addr.IsValid() {
		f.internalIP = addr.String()
	}
	return f
}

// agentPodReady is the readiness the operator's node taint logic uses:
// not being deleted and the Ready condition True.
//
// A terminating pod counts by its Ready condition too: its agent still
// runs until it exits, and as it stops it says itself, in its heartbeat
// Lease, whether it restarts (keep the roles for its grace) or withdraws.
// Counting deletion as not ready would move every role at the start of
// each rolling upgrade, before the agent could say anything.
func agentPodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// heartbeatFromLease decodes a lease into the row fields, its duration
// clamped to maxExpiry. A heartbeat Lease that cannot be decoded gives a
// heartbeat with Malformed set (the node shows HeartbeatMalformed, not
// HeartbeatMissing) and the error text.
func heartbeatFromLease(l *coordinationv1.Lease, maxExpiry, maxRestartGrace time.Duration) (*heartbeat.Heartbeat, string) {
	hb, err := heartbeat.FromLease(l)
	if hb.Node == "" {
		return nil, err.Error()
	}
	hb.ClampDuration(maxExpiry)
	hb.ClampRestartGrace(maxRestartGrace)
	if err != nil {
		return &hb, err.Error()
	}
	return &hb, ""
}

// leaseNode is the node a heartbeat Lease belongs to.
func leaseNode(leaseName string) (string, bool) {
	node, ok := strings.CutPrefix(leaseName, heartbeat.LeasePrefix)
	return node, ok && node != ""
}
