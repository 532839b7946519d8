package vip

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	datapathtables "github.com/cilium/cilium/pkg/datapath/tables"

	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/heartbeat"
)

func TestAutoVIPInterfaces(t *testing.T) {
	mac := datapathtables.HardwareAddr{2, 0, 0, 0, 0, 1}
	up := net.FlagUp | net.FlagBroadcast
	devs := []*datapathtables.Device{
		{Name: "eth1", Flags: up, HardwareAddr: mac},
		{Name: "eth0", Flags: up, HardwareAddr: mac},
		{Name: "lo", Flags: net.FlagUp | net.FlagLoopback},
		{Name: "eth2", Flags: net.FlagBroadcast, HardwareAddr: mac}, // down
		{Name: "cilium_host", Flags: up, HardwareAddr: mac},
		{Name: "lxc12345", Flags: up, HardwareAddr: mac},
		{Name: "cilium_vxlan", Flags: up, HardwareAddr: mac, Type: "vxlan"},
		{Name: "tun0", Flags: net.FlagUp | net.FlagPointToPoint}, // no Ethernet, no broadcast
		{Name: "", Flags: up, HardwareAddr: mac},                 // addresses seen before the link
	}
	if got, want := autoVIPInterfaces(devs), []string{"eth0", "eth1"}; !slices.Equal(got, want) {
		t.Fatalf("autoVIPInterfaces = %v, want %v", got, want)
	}
}

func TestVIPNotReady(t *testing.T) {
	if why := notReady(nil, nil); !strings.Contains(why, "no interface to announce on") {
		t.Errorf("no interfaces: %q", why)
	}
	errs := map[string]error{"eth7": &net.OpError{Op: "route", Err: net.UnknownNetworkError("no such network interface")}}
	if why := notReady([]string{"eth1", "eth7"}, errs); !strings.Contains(why, "no such network interface") {
		t.Errorf("missing eth7: %q", why)
	}
	if why := notReady([]string{"eth1"}, errs); why != "" {
		t.Errorf("eth1 fine: %q", why)
	}
}

func TestVIPConfigValidate(t *testing.T) {
	hb := config.DefaultAgentConfig
	if err := DefaultConfig.Validate(hb); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c := DefaultConfig
	c.EgressGatewayHAVIPFenceMargin = hb.EgressGatewayHAHeartbeatExpiry
	if err := c.Validate(hb); err == nil || !strings.Contains(err.Error(), "fence-margin") {
		t.Errorf("a fence margin as long as the expiry must be refused: %v", err)
	}
	c = DefaultConfig
	c.EgressGatewayHAVIPGARPCount = 0
	c.EgressGatewayHAVIPProbeInterval = -time.Second
	if err := c.Validate(hb); err == nil {
		t.Error("GARP count 0 and a negative probe interval must be refused")
	}
}

// Another node's Lease blocks claiming the VIP for its duration, but a
// Lease claiming years blocks only up to the larger of this agent's expiry
// and the operator's default maximum (30 s).
func TestPeerExpiryIsBounded(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		lease, own, want time.Duration
	}{
		{2 * time.Second, 2 * time.Second, 2 * time.Second},
		{8 * time.Second, 2 * time.Second, 8 * time.Second},
		{(1<<31 - 1) * time.Second, 2 * time.Second, 30 * time.Second},
		{(1<<31 - 1) * time.Second, 45 * time.Second, 45 * time.Second},
	} {
		hb := heartbeat.Heartbeat{Node: "peer", RenewTime: t0, Duration: tc.lease}
		if got := peerExpiry(hb, t0, tc.own); !got.Equal(t0.Add(tc.want)) {
			t.Errorf("lease %s, own expiry %s: blocks until %s, want %s", tc.lease, tc.own, got.Sub(t0), tc.want)
		}
	}
}
