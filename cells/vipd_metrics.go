package cells

import (
	"net/netip"

	"github.com/cilium/cilium/pkg/metrics/metric"

	"github.com/egressha/egressha/vipd"
)

// vipMetrics are the VIP responder's counters, per VIP and interface; it
// is the responders' vipd.Observer.
type vipMetrics struct {
	Requests   metric.Vec[metric.Counter]
	Replies    metric.Vec[metric.Counter]
	GARPs      metric.Vec[metric.Counter]
	Duplicates metric.Vec[metric.Counter]
}

func newVIPMetrics() *vipMetrics {
	labels := []string{"vip", "interface"}
	counter := func(name, help string) metric.Vec[metric.Counter] {
		return metric.NewCounterVec(metric.CounterOpts{
			ConfigName: "egressha_vip_" + name, Namespace: "egressha", Subsystem: "vip", Name: name, Help: help,
		}, labels)
	}
	return &vipMetrics{
		Requests:   counter("arp_requests_total", "ARP requests received for a virtual IP this node announces or claims"),
		Replies:    counter("arp_replies_total", "ARP replies sent for a virtual IP"),
		GARPs:      counter("garps_sent_total", "Gratuitous ARP frames (request and reply form) sent for a virtual IP"),
		Duplicates: counter("duplicates_total", "ARP frames from another MAC claiming a virtual IP this node announces or probes for"),
	}
}

var _ vipd.Observer = (*vipMetrics)(nil)

func (m *vipMetrics) RequestReceived(vip netip.Addr, iface string) {
	m.Requests.WithLabelValues(vip.String(), iface).Inc()
}

func (m *vipMetrics) ReplySent(vip netip.Addr, iface string) {
	m.Replies.WithLabelValues(vip.String(), iface).Inc()
}

func (m *vipMetrics) GARPSent(vip netip.Addr, iface string) {
	m.GARPs.WithLabelValues(vip.String(), iface).Inc()
}

func (m *vipMetrics) DuplicateSeen(d vipd.Duplicate) {
	m.Duplicates.WithLabelValues(d.VIP.String(), d.Interface).Inc()
}
