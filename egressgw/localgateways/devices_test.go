package localgateways

import (
	"net"
	"net/netip"
	"reflect"
	"testing"

	datapathtables "github.com/cilium/cilium/pkg/datapath/tables"
)

func TestReportDevice(t *testing.T) {
	addr := func(s string, secondary bool, scope datapathtables.RouteScope) datapathtables.DeviceAddress {
		return datapathtables.DeviceAddress{Addr: netip.MustParseAddr(s), Secondary: secondary, Scope: scope}
	}
	for _, tc := range []struct {
		name   string
		dev    datapathtables.Device
		wantUp bool
		wantV4 []string
	}{
		{
			name: "primary first, then secondary; link scope, IPv6 and link-local skipped",
			dev: datapathtables.Device{Name: "eth1", Flags: net.FlagUp, OperStatus: "up", Addrs: []datapathtables.DeviceAddress{
				addr("203.0.113.99", true, datapathtables.RT_SCOPE_UNIVERSE),
				addr("169.254.1.1", false, datapathtables.RT_SCOPE_UNIVERSE),
				addr("10.1.1.1", false, datapathtables.RT_SCOPE_LINK),
				addr("2001:db8::1", false, datapathtables.RT_SCOPE_UNIVERSE),
				addr("203.0.113.11", false, datapathtables.RT_SCOPE_UNIVERSE),
				addr("203.0.113.12", false, datapathtables.RT_SCOPE_UNIVERSE),
			}},
			wantUp: true,
			wantV4: []string{"203.0.113.11", "203.0.113.12", "203.0.113.99"},
		},
		{name: "dummy devices report unknown", dev: datapathtables.Device{Name: "d", Flags: net.FlagUp, OperStatus: "unknown"}, wantUp: true},
		{name: "admin down", dev: datapathtables.Device{Name: "d", OperStatus: "up"}, wantUp: false},
		{name: "no carrier", dev: datapathtables.Device{Name: "d", Flags: net.FlagUp, OperStatus: "lower-layer-down"}, wantUp: false},
		{name: "dormant", dev: datapathtables.Device{Name: "d", Flags: net.FlagUp, OperStatus: "dormant"}, wantUp: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := reportDevice(&tc.dev)
			if got.Up != tc.wantUp {
				t.Errorf("Up = %v, want %v", got.Up, tc.wantUp)
			}
			var v4 []string
			for _, a := range got.IPv4 {
				v4 = append(v4, a.String())
			}
			if !reflect.DeepEqual(v4, tc.wantV4) {
				t.Errorf("IPv4 = %v, want %v", v4, tc.wantV4)
			}
		})
	}

	devs := reportDevices([]*datapathtables.Device{{Index: 7}, {Name: "eth0", Selected: true, NotSelectedReason: ""}})
	if len(devs) != 1 || devs[0].Name != "eth0" || !devs[0].Selected {
		t.Fatalf("reportDevices = %+v; want only eth0 (a device without a name is not a device yet)", devs)
	}
}
