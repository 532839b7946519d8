package connsync

import "github.com/cilium/cilium/pkg/metrics/metric"

// Metrics of the connection sync.
type Metrics struct {
	// Sent counts the entries sent, per gateway (each entry once per peer).
	Sent metric.Vec[metric.Counter]
	// Received counts the entries received from the announcer, per gateway.
	Received metric.Vec[metric.Counter]
	// Installed is the number of mappings this node installed and tracks,
	// per gateway.
	Installed metric.DeletableVec[metric.Gauge]
	// Rejected counts datagrams and entries not taken, by reason.
	Rejected metric.Vec[metric.Counter]
	// LastSync is, on a standby, the age of the latest datagram of the
	// gateway's announcer (updated every refresh period).
	LastSync metric.DeletableVec[metric.Gauge]
}

// NewMetrics creates the metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		Sent: metric.NewCounterVec(metric.CounterOpts{
			ConfigName: "egressha_conn_sync_sent_entries_total",
			Namespace:  "egressha", Name: "conn_sync_sent_entries_total",
			Help: "SNAT mappings of a VIP sent to the gateway's other candidates (once per peer), per gateway",
		}, []string{"gateway"}),
		Received: metric.NewCounterVec(metric.CounterOpts{
			ConfigName: "egressha_conn_sync_received_entries_total",
			Namespace:  "egressha", Name: "conn_sync_received_entries_total",
			Help: "SNAT mappings received from the VIP's announcer, per gateway",
		}, []string{"gateway"}),
		Installed: metric.NewGaugeVec(metric.GaugeOpts{
			ConfigName: "egressha_conn_sync_installed_entries",
			Namespace:  "egressha", Name: "conn_sync_installed_entries",
			Help: "SNAT mappings this standby installed (forward and reverse entry each) and tracks, per gateway",
		}, []string{"gateway"}),
		Rejected: metric.NewCounterVec(metric.CounterOpts{
			ConfigName: "egressha_conn_sync_rejected_total",
			Namespace:  "egressha", Name: "conn_sync_rejected_total",
			Help: "Connection sync datagrams or entries not taken, by reason (auth, malformed, no-key, replayed, wrong-source, active, invalid, conflict, map-error)",
		}, []string{"reason"}),
		LastSync: metric.NewGaugeVec(metric.GaugeOpts{
			ConfigName: "egressha_conn_sync_last_sync_age_seconds",
			Namespace:  "egressha", Name: "conn_sync_last_sync_age_seconds",
			Help: "On a standby, seconds since the latest connection sync datagram of the gateway's announcer",
		}, []string{"gateway"}),
	}
}
