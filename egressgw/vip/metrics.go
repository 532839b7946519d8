package vip

import (
	"net/netip"

	"github.com/cilium/cilium/pkg/metrics/metric"

	"github.com/egressha/egressha/vipd"
)

// Metrics are the VIP controller's counters, per VIP and interface; it
// is the responders' vipd.Observer.
type Metrics struct {
	Requests   metric.Vec[metric.Counter]
	Replies    metric.Vec[metric.Counter]
	GARPs      metric.Vec[metric.Counter]
	Duplicates metric.Vec[metric.Counter]
}

func newMetrics() *Metrics {
	labels := []string{"vip", "interface"}
	counter := func(name, help string) metric.Vec[metric.Counter] {
		return metric.NewCounterVec(metric.CounterOpts{
			ConfigName: "egressha_vip_" + name, Namespace: "egressha", Subsystem: "vip", Name: name, Help: help,
		}, labels)
	}
	return &Metrics{
		Requests:   counter("arp_requests_total", "ARP requests received for a virtual IP this node announces or claims"),
		Replies:    counter("arp_replies_total", "ARP replies sent for a virtual IP"),
		GARPs:      counter("garps_sent_total", "Gratuitous ARP frames (request and reply form) sent for a virtual IP"),
		Duplicates: counter("duplicates_total", "ARP frames from another MAC claiming a virtual IP this node announces or probes for"),
	}
}

var _ vipd.Observer = (*Metrics)(nil)

func (m *Metrics) RequestReceived(vip netip.Addr, iface string) {
	m.Requests.WithLabelValues(vip.String(), iface).Inc()
}

func (m *Metrics) ReplySent(vip netip.Addr, iface string) {
	m.Replies.WithLabelValues(vip.String(), iface).Inc()
}

func (m *Metrics) GARPSent(vip netip.Addr, iface string) {
	m.GARPs.WithLabelValues(vip.String(), iface).Inc()
}

func (m *Metrics) DuplicateSeen(d vipd.Duplicate) {
	m.Duplicates.WithLabelValues(d.VIP.String(), d.Interface).Inc()
}
