package localgateways

import (
	"net"
	"net/netip"

	datapathtables "github.com/cilium/cilium/pkg/datapath/tables"

	"github.com/egressha/egressha/egressgw/heartbeat"
)

// reportDevices converts Cilium's devices for heartbeat.LocalFacts.
func reportDevices(devs []*datapathtables.Device) []heartbeat.Device {
	out := make([]heartbeat.Device, 0, len(devs))
	for _, d := range devs {
		if d.Name == "" {
			continue // addresses seen before the link; not a device yet
		}
		out = append(out, reportDevice(d))
	}
	return out
}

// reportDevice converts one of Cilium's devices. Up: administratively up
// and operationally up, or "unknown" as virtual devices such as dummy
// report. IPv4: global-scope unicast addresses, primary ones first.
func reportDevice(d *datapathtables.Device) heartbeat.Device {
	up := d.Flags&net.FlagUp != 0
	switch d.OperStatus {
	case "", "up", "unknown":
	default:
		up = false
	}
	var primary, secondary []netip.Addr
	for _, a := range d.Addrs {
		if !a.Addr.Is4() || a.Scope != datapathtables.RT_SCOPE_UNIVERSE || !a.Addr.IsGlobalUnicast() {
			continue
		}
		if a.Secondary {
			secondary = append(secondary, a.Addr)
		} else {
			primary = append(primary, a.Addr)
		}
	}
	return heartbeat.Device{
		Name:              d.Name,
		Up:                up,
		OperStatus:        d.OperStatus,
		Selected:          d.Selected,
		NotSelectedReason: d.NotSelectedReason,
		IPv4:              append(primary, secondary...),
	}
}
