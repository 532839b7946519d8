package probe

import (
	"errors"

	"github.com/cilium/cilium/pkg/metrics/metric"
)

// Metrics of liveness probing, on the operator replicas (sessions) and on
// the agents (responder, fence).
type Metrics struct {
	// SessionState is, per probed node, 0 Init, 1 Up, 2 Down.
	SessionState metric.DeletableVec[metric.Gauge]
	// Transitions counts session state changes by node and new state.
	Transitions metric.Vec[metric.Counter]
	// RTT observes the round-trip time of every valid reply.
	RTT metric.Vec[metric.Observer]
	// Rejected counts datagrams not taken, by reason (closed set:
	// RejectReason).
	Rejected metric.Vec[metric.Counter]
	// Heard is, on an agent, 1 while the node is heard (the fence rule of
	// Hearing.Verdict), 0 while it is fenced, absent while not probed.
	Heard metric.DeletableVec[metric.Gauge]
}

// NewMetrics creates the metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		SessionState: metric.NewGaugeVec(metric.GaugeOpts{
			ConfigName: "egressha_probe_session_state",
			Namespace:  "egressha", Name: "probe_session_state",
			Help: "Liveness probe session state per candidate node: 0 Init (no reply yet), 1 Up, 2 Down",
		}, []string{"node"}),
		Transitions: metric.NewCounterVec(metric.CounterOpts{
			ConfigName: "egressha_probe_transitions_total",
			Namespace:  "egressha", Name: "probe_transitions_total",
			Help: "Liveness probe session state changes, by node and new state",
		}, []string{"node", "state"}),
		RTT: metric.NewHistogramVec(metric.HistogramOpts{
			ConfigName: "egressha_probe_rtt_seconds",
			Namespace:  "egressha", Name: "probe_rtt_seconds",
			Help:    "Round-trip time of liveness probes",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}, []string{}),
		Rejected: metric.NewCounterVec(metric.CounterOpts{
			ConfigName: "egressha_probe_rejected_total",
			Namespace:  "egressha", Name: "probe_rejected_total",
			Help: "Liveness probe datagrams not taken, by reason (auth, malformed, stale, wrong-source, wrong-peer, replayed, not-for-me, no-key, unknown-node, overflow, kernel-forged)",
		}, []string{"reason"}),
		Heard: metric.NewGaugeVec(metric.GaugeOpts{
			ConfigName: "egressha_probe_heard",
			Namespace:  "egressha", Name: "probe_heard",
			Help: "1 while this node is heard by the operator leader (or, without a leader, by a replica or peer); 0 while its virtual IPs are fenced",
		}, []string{}),
	}
}

// RejectReason is the metric label of a rejection error.
func RejectReason(err error) string {
	switch {
	case errors.Is(err, ErrAuth):
		return "auth"
	case errors.Is(err, ErrShortKey):
		return "no-key"
	case errors.Is(err, ErrStale):
		return "stale"
	case errors.Is(err, ErrWrongSource):
		return "wrong-source"
	case errors.Is(err, ErrWrongPeer), errors.Is(err, ErrNotReply), errors.Is(err, ErrNotProbe):
		return "wrong-peer"
	case errors.Is(err, ErrReplayed):
		return "replayed"
	case errors.Is(err, ErrNotForMe):
		return "not-for-me"
	}
	return "malformed"
}
