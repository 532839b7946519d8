package policymap

import (
	"github.com/cilium/cilium/pkg/metrics/metric"
)

// Metrics of the policy map reconciler. Register with
// metrics.Metric(NewMetrics).
type Metrics struct {
	// MapFull is 1 while at least one desired entry is not in the map
	// because the map is full.
	MapFull metric.Gauge
	// RejectedEntries is the number of desired entries the map has no room
	// for.
	RejectedEntries metric.Gauge
	// Entries is the number of entries the last full resync found in the
	// map (after repairing it).
	Entries metric.Gauge
	// ResyncRepairs counts entries a full resync had to fix, by action:
	// "deleted" (in the map but not desired: stale or foreign) and
	// "written" (desired but missing or with another value).
	ResyncRepairs metric.Vec[metric.Counter]
	// PinChanges counts, by cause, the times a full resync found that the
	// pin of the map was not the map held: "replaced" (another compatible
	// map: reopened and reprogrammed), "removed" (the held map was pinned
	// again), "incompatible" (another map egressha cannot use; counted
	// once per map).
	PinChanges metric.Vec[metric.Counter]
}

// NewMetrics creates the metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		MapFull: metric.NewGauge(metric.GaugeOpts{
			ConfigName: "egressha_policy_map_full",
			Namespace:  "egressha", Name: "policy_map_full",
			Help: "1 while desired egress entries are missing from cilium_egress_gw_policy_v4 because it is full " +
				"(raise egress-gateway-policy-map-max)",
		}),
		RejectedEntries: metric.NewGauge(metric.GaugeOpts{
			ConfigName: "egressha_policy_map_rejected_entries",
			Namespace:  "egressha", Name: "policy_map_rejected_entries",
			Help: "Desired egress entries cilium_egress_gw_policy_v4 has no room for",
		}),
		Entries: metric.NewGauge(metric.GaugeOpts{
			ConfigName: "egressha_policy_map_entries",
			Namespace:  "egressha", Name: "policy_map_entries",
			Help: "Entries in cilium_egress_gw_policy_v4 at the last full resync",
		}),
		ResyncRepairs: metric.NewCounterVec(metric.CounterOpts{
			ConfigName: "egressha_policy_map_resync_repairs_total",
			Namespace:  "egressha", Name: "policy_map_resync_repairs_total",
			Help: "Entries of cilium_egress_gw_policy_v4 a full resync repaired, by action (deleted, written)",
		}, []string{"action"}),
		PinChanges: metric.NewCounterVec(metric.CounterOpts{
			ConfigName: "egressha_policy_map_replaced_total",
			Namespace:  "egressha", Name: "policy_map_replaced_total",
			Help: "Times the pin of cilium_egress_gw_policy_v4 was found not to be the map egressha writes, " +
				"by cause (replaced: reopened and reprogrammed; removed: re-pinned; incompatible: another spec, not used)",
		}, []string{"cause"}),
	}
}
