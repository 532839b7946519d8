package entries

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/cilium/cilium/pkg/datapath/linux/netdevice"
	"github.com/cilium/cilium/pkg/datapath/linux/route"
	nodeTypes "github.com/cilium/cilium/pkg/node/types"

	"github.com/egressha/egressha/egressgw/cegp"
)

// CEGPLocal is what the agent needs of its own node to program a
// CiliumEgressGatewayPolicy: its name (is it an entry's serving node?) and
// the egress IP of an entry it serves.
type CEGPLocal struct {
	NodeName func() string
	Resolve  cegp.Resolver
}

// newCEGPLocal resolves on the real node, with Cilium's own helpers.
func newCEGPLocal(log *slog.Logger) *CEGPLocal {
	return &CEGPLocal{NodeName: nodeTypes.GetName, Resolve: func(e cegp.GatewayEntry) (netip.Addr, error) {
		return resolveEgressIP(log, e)
	}}
}

// resolveEgressIP is Cilium v1.18's deriveFromPolicyGatewayConfig for
// IPv4: interface -> its first IPv4 address; egressIP -> it must be
// assigned to some interface; neither -> the first IPv4 address of the
// interface of the IPv4 default route.
func resolveEgressIP(log *slog.Logger, e cegp.GatewayEntry) (netip.Addr, error) {
	switch {
	case e.Interface != "":
		ip, err := netdevice.GetIfaceFirstIPv4Address(e.Interface)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("failed to retrieve IPv4 address for egress interface: %w", err)
		}
		return ip, nil
	case e.EgressIP.IsValid():
		if _, err := netdevice.GetIfaceWithIPv4Address(e.EgressIP); err != nil {
			return netip.Addr{}, fmt.Errorf("failed to retrieve interface with egress IP: %w", err)
		}
		return e.EgressIP, nil
	default:
		link, err := route.NodeDeviceWithDefaultRoute(log, true, false)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("failed to find interface with IPv4 default route: %w", err)
		}
		ip, err := netdevice.GetIfaceFirstIPv4Address(link.Attrs().Name)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("failed to retrieve IPv4 address for egress interface: %w", err)
		}
		return ip, nil
	}
}
