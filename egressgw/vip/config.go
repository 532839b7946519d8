package vip

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/vipd"
)

// Config holds the VIP controller's flags.
type Config struct {
	EgressGatewayHAVIPProbeCount         int
	EgressGatewayHAVIPProbeInterval      time.Duration
	EgressGatewayHAVIPGARPCount          int
	EgressGatewayHAVIPGARPInterval       time.Duration
	EgressGatewayHAVIPReannounceInterval time.Duration
	// EgressGatewayHAVIPFenceMargin: the responder stops this long before
	// its heartbeat Lease could expire, so a late timer or a descheduled
	// process cannot answer after the operator may have moved the role.
	EgressGatewayHAVIPFenceMargin time.Duration
	// EgressGatewayHAVIPAssignAddress adds the VIP (/32, no prefix route) to
	// the first interface while announcing. Off by default: on a Cilium node
	// a local address becomes a node address and can become the masquerade
	// source of other traffic.
	EgressGatewayHAVIPAssignAddress bool
}

// DefaultConfig are the defaults of the VIP flags.
var DefaultConfig = Config{
	EgressGatewayHAVIPProbeCount:         vipd.DefaultConfig.ProbeCount,
	EgressGatewayHAVIPProbeInterval:      vipd.DefaultConfig.ProbeInterval,
	EgressGatewayHAVIPGARPCount:          vipd.DefaultConfig.GARPCount,
	EgressGatewayHAVIPGARPInterval:       vipd.DefaultConfig.GARPInterval,
	EgressGatewayHAVIPReannounceInterval: vipd.DefaultConfig.ReannounceInterval,
	EgressGatewayHAVIPFenceMargin:        500 * time.Millisecond,
}

// Flags registers the VIP flags.
func (def Config) Flags(flags *pflag.FlagSet) {
	flags.Int("egress-gateway-ha-vip-probe-count", def.EgressGatewayHAVIPProbeCount,
		"ARP probes sent (RFC 5227 style) before a node claims a virtual IP; 0 claims without probing")
	flags.Duration("egress-gateway-ha-vip-probe-interval", def.EgressGatewayHAVIPProbeInterval,
		"Time between ARP probes, and the wait for answers after the last one")
	flags.Int("egress-gateway-ha-vip-garp-count", def.EgressGatewayHAVIPGARPCount,
		"Gratuitous ARP rounds (request and reply form) sent when a node claims a virtual IP")
	flags.Duration("egress-gateway-ha-vip-garp-interval", def.EgressGatewayHAVIPGARPInterval,
		"Time between the gratuitous ARP rounds of a claim")
	flags.Duration("egress-gateway-ha-vip-reannounce-interval", def.EgressGatewayHAVIPReannounceInterval,
		"How often the active node re-announces its virtual IPs (GARP) and probes for duplicates; 0 disables")
	flags.Duration("egress-gateway-ha-vip-fence-margin", def.EgressGatewayHAVIPFenceMargin,
		"The VIP responder stops answering this long before the node's heartbeat Lease could expire")
	flags.Bool("egress-gateway-ha-vip-assign-address", def.EgressGatewayHAVIPAssignAddress,
		"Also add the virtual IP (/32) to the first interface while announcing (off: a local address becomes a Cilium node address)")
}

func (c Config) vipd() vipd.Config {
	return vipd.Config{
		ProbeCount:         c.EgressGatewayHAVIPProbeCount,
		ProbeInterval:      c.EgressGatewayHAVIPProbeInterval,
		GARPCount:          c.EgressGatewayHAVIPGARPCount,
		GARPInterval:       c.EgressGatewayHAVIPGARPInterval,
		ReannounceInterval: c.EgressGatewayHAVIPReannounceInterval,
	}
}

// Validate reports flag values that cannot work.
func (c Config) Validate(hb config.AgentConfig) error {
	errs := []error{c.vipd().Validate()}
	if c.EgressGatewayHAVIPFenceMargin < 0 || c.EgressGatewayHAVIPFenceMargin >= hb.EgressGatewayHAHeartbeatExpiry-hb.EgressGatewayHAHeartbeatRenewInterval {
		errs = append(errs, fmt.Errorf("--egress-gateway-ha-vip-fence-margin (%s) must be >= 0 and below the heartbeat expiry minus the renew interval (%s)",
			c.EgressGatewayHAVIPFenceMargin, hb.EgressGatewayHAHeartbeatExpiry-hb.EgressGatewayHAHeartbeatRenewInterval))
	}
	return errors.Join(errs...)
}
