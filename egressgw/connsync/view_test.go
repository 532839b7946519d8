package connsync

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/tables"
)

func TestBuildViewAndAdmit(t *testing.T) {
	sel := map[string]string{"egress": ""}
	gws := []*tables.EgressGateway{
		{Name: "vip", Mode: v1alpha1.SourceIPModeVirtualIP, VirtualIP: netip.AddrFrom4(vip), NodeSelector: sel},
		{Name: "vip2", Mode: v1alpha1.SourceIPModeVirtualIP, VirtualIP: netip.MustParseAddr("203.0.113.51"), NodeSelector: sel},
		{Name: "basic", Mode: v1alpha1.SourceIPModePrimaryIP, InterfaceName: "eth1", NodeSelector: sel},
		{Name: "elsewhere", Mode: v1alpha1.SourceIPModeVirtualIP, VirtualIP: netip.MustParseAddr("203.0.113.52"), NodeSelector: sel},
	}
	vips := []*tables.VirtualIP{{Gateway: "vip", State: tables.VIPStandby}, {Gateway: "vip2", State: tables.VIPAnnouncing}}
	candidate := map[string]bool{"vip": true, "vip2": true, "basic": true}
	nodes := map[string]netip.Addr{"me": netip.MustParseAddr("198.18.0.12"), "a": netip.MustParseAddr("198.18.0.11")}
	v := BuildView(gws, vips, candidate, "me", func(map[string]string) map[string]netip.Addr {
		out := map[string]netip.Addr{}
		for k, a := range nodes {
			out[k] = a
		}
		return out
	})
	if len(v.Gateways) != 2 || v.Gateways[0].Name != "vip" || v.Gateways[1].Name != "vip2" {
		t.Fatalf("view %+v, want the two VIP gateways this node is a candidate of", v.Gateways)
	}
	if _, ok := v.Gateways[0].Peers["me"]; ok || len(v.Gateways[0].Peers) != 1 {
		t.Fatalf("peers %v, want the other candidate only", v.Gateways[0].Peers)
	}
	if got := v.Announced(); len(got) != 1 || !got[[4]byte{203, 0, 113, 51}] {
		t.Fatalf("announced %v", got)
	}
	a := netip.MustParseAddr("198.18.0.11")
	for _, tc := range []struct {
		name string
		src  netip.Addr
		from string
		vip  [4]byte
		want error
	}{
		{"the peer at its address", a, "a", vip, nil},
		{"the peer as a mapped address", netip.AddrFrom16(a.As16()), "a", vip, nil},
		{"the peer from another address", netip.MustParseAddr("198.18.0.13"), "a", vip, ErrWrongSource},
		{"a node that is no candidate", a, "x", vip, ErrWrongSource},
		{"a VIP this node announces", a, "a", [4]byte{203, 0, 113, 51}, ErrActive},
		{"a VIP of a gateway this node is no candidate of", a, "a", [4]byte{203, 0, 113, 52}, ErrWrongSource},
	} {
		g, err := v.Admit(tc.src, tc.from, tc.vip)
		if !errors.Is(err, tc.want) || (err == nil && g.Name != "vip") {
			t.Errorf("%s: %v %v, want %v", tc.name, g.Name, err, tc.want)
		}
	}
}
