package connterm

import (
	"github.com/cilium/cilium/pkg/metrics/metric"
)

// Metrics are connterm's counters.
type Metrics struct {
	// Terminated counts the TCP sockets destroyed.
	Terminated metric.Counter
	// Failures counts failures by reason (FailureList, FailureDestroy,
	// FailureUnsupported).
	Failures metric.Vec[metric.Counter]
}

func newMetrics() *Metrics {
	return &Metrics{
		Terminated: metric.NewCounter(metric.CounterOpts{
			ConfigName: "egressha_connections_terminated_total", Namespace: "egressha", Subsystem: "connections",
			Name: "terminated_total",
			Help: "TCP connections of local pods destroyed because their egress source address changed (basic-mode failover)",
		}),
		Failures: metric.NewCounterVec(metric.CounterOpts{
			ConfigName: "egressha_connections_termination_failures_total", Namespace: "egressha", Subsystem: "connections",
			Name: "termination_failures_total",
			Help: "Failures to terminate pod connections, by reason (list, destroy, unsupported)",
		}, []string{"reason"}),
	}
}
