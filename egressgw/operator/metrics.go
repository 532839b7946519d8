package operator

import (
	"github.com/cilium/cilium/pkg/metrics/metric"
)

// Metrics of the operator side of egressha.
type Metrics struct {
	// ActiveChanges counts changes of active node by gateway and reason.
	ActiveChanges metric.Vec[metric.Counter]
	// StatusWriteSeconds is the time from detecting a change (the event or
	// heartbeat expiry that caused it) to the EgressGateway status written.
	StatusWriteSeconds metric.Vec[metric.Observer]
	// EligibleCandidates is the number of eligible candidates per gateway.
	EligibleCandidates metric.DeletableVec[metric.Gauge]
	// StatusWriteErrors counts failed status writes (retried).
	StatusWriteErrors metric.Vec[metric.Counter]
	// HeartbeatRejected counts parts of heartbeat Leases not taken as
	// written, by kind (heartbeat.RejectKinds, a closed set), once per
	// Lease resourceVersion.
	HeartbeatRejected metric.Vec[metric.Counter]
	// LivenessSuspect is 1 while the operator suspects its own view
	// (signal "probe": most probed candidates Down together) or the
	// control plane (signal "lease": most Leases lapsed together) and
	// holds the nodes concerned.
	LivenessSuspect metric.Vec[metric.Gauge]
}

// NewMetrics creates the metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		ActiveChanges: metric.NewCounterVec(metric.CounterOpts{
			ConfigName: "egressha_active_node_changes_total",
			Namespace:  "egressha", Name: "active_node_changes_total",
			Help: "Changes of an EgressGateway's active node, by reason (Elected, HeartbeatExpired, Cordoned, Failback, ...)",
		}, []string{"gateway", "reason"}),
		StatusWriteSeconds: metric.NewHistogramVec(metric.HistogramOpts{
			ConfigName: "egressha_status_write_seconds",
			Namespace:  "egressha", Name: "status_write_seconds",
			Help:    "Time from detecting a change of eligibility to the EgressGateway status written",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"gateway"}),
		EligibleCandidates: metric.NewGaugeVec(metric.GaugeOpts{
			ConfigName: "egressha_eligible_candidates",
			Namespace:  "egressha", Name: "eligible_candidates",
			Help: "Eligible candidate nodes per EgressGateway",
		}, []string{"gateway"}),
		StatusWriteErrors: metric.NewCounterVec(metric.CounterOpts{
			ConfigName: "egressha_status_write_errors_total",
			Namespace:  "egressha", Name: "status_write_errors_total",
			Help: "Failed EgressGateway/EgressGatewayPolicy status writes (they are retried)",
		}, []string{"kind"}),
		HeartbeatRejected: metric.NewCounterVec(metric.CounterOpts{
			ConfigName: "egressha_heartbeat_rejected_total",
			Namespace:  "egressha", Name: "heartbeat_rejected_total",
			Help: "Parts of heartbeat Leases not taken as written, by reason (Malformed, UnknownReason, TooLong, DurationClamped)",
		}, []string{"reason"}),
		LivenessSuspect: metric.NewGaugeVec(metric.GaugeOpts{
			ConfigName: "egressha_liveness_suspect",
			Namespace:  "egressha", Name: "liveness_suspect",
			Help: "1 while most candidates failed together by one signal (probe or lease) and the operator holds them instead of moving their roles",
		}, []string{"signal"}),
	}
}
