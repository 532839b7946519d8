package connsync

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/tables"
)

// Gateway is what the syncer needs of one VirtualIPAddress gateway this
// node is a candidate of.
type Gateway struct {
	Name string
	VIP  [4]byte
	// Announcing: this node answers for the VIP (egress-virtual-ips state
	// Announcing): it sends, it never installs.
	Announcing bool
	// Peers are the gateway's other candidates, by node name, at their
	// cluster address (InternalIP).
	Peers map[string]netip.Addr
}

// View is the syncer's picture of this node's VIP gateways.
type View struct {
	Gateways []Gateway
}

// BuildView derives the View from the agent's tables: the VirtualIPAddress
// gateways this node is a candidate of (candidate, from
// egress-local-gateways), whether the VIP controller announces each
// (vips), and the other candidates' addresses (matching: the nodes whose
// labels match a selector, reflectors.NodeLabels.Matching, as the VIP
// controller finds its peers), without self.
func BuildView(gws []*tables.EgressGateway, vips []*tables.VirtualIP, candidate map[string]bool, self string,
	matching func(selector map[string]string) map[string]netip.Addr) View {
	announcing := map[string]bool{}
	for _, v := range vips {
		announcing[v.Gateway] = v.State == tables.VIPAnnouncing
	}
	var out View
	for _, gw := range gws {
		if gw.Mode != v1alpha1.SourceIPModeVirtualIP || !gw.VirtualIP.Is4() || !candidate[gw.Name] {
			continue
		}
		g := Gateway{Name: gw.Name, VIP: gw.VirtualIP.As4(), Announcing: announcing[gw.Name]}
		if matching != nil {
			g.Peers = matching(gw.NodeSelector)
			delete(g.Peers, self)
		}
		out.Gateways = append(out.Gateways, g)
	}
	sort.Slice(out.Gateways, func(i, j int) bool { return out.Gateways[i].Name < out.Gateways[j].Name })
	return out
}

// Announced returns the VIPs this node announces.
func (v View) Announced() map[[4]byte]bool {
	out := map[[4]byte]bool{}
	for _, g := range v.Gateways {
		if g.Announcing {
			out[g.VIP] = true
		}
	}
	return out
}

// Admit decides whether a datagram of node from, arriving from src, for
// vip, may be installed here: vip must be the VIP of a gateway this node is
// a candidate of and does not announce, and from one of that gateway's
// other candidates at its own cluster address. It returns the gateway.
func (v View) Admit(src netip.Addr, from string, vip [4]byte) (Gateway, error) {
	var found bool
	for _, g := range v.Gateways {
		if g.VIP != vip {
			continue
		}
		found = true
		if g.Announcing {
			return g, fmt.Errorf("%w (gateway %s, VIP %s)", ErrActive, g.Name, netip.AddrFrom4(vip))
		}
		if a, ok := g.Peers[from]; ok && a == src.Unmap() {
			return g, nil
		}
	}
	if !found {
		return Gateway{}, fmt.Errorf("%w: no gateway of VIP %s has this node as a candidate", ErrWrongSource, netip.AddrFrom4(vip))
	}
	return Gateway{}, fmt.Errorf("%w: %s from %s is not a candidate of VIP %s's gateway at that address", ErrWrongSource, from, src, netip.AddrFrom4(vip))
}
