package connterm

import (
	"github.com/spf13/pflag"
)

// Config holds connterm's flags.
type Config struct {
	// EgressGatewayHATerminateConnections turns the termination on (the
	// default); off, a pod's connections through a node that lost the
	// role hang until the server resets them or tcp_retries2 expires.
	EgressGatewayHATerminateConnections bool
	// EgressGatewayHANetnsDir is where the pods' network namespaces are
	// pinned, as the agent sees it: Cilium's chart mounts the host's
	// /var/run/netns there (volume cilium-netns).
	EgressGatewayHANetnsDir string
}

// DefaultConfig are the defaults of the flags.
var DefaultConfig = Config{
	EgressGatewayHATerminateConnections: true,
	EgressGatewayHANetnsDir:             "/var/run/cilium/netns",
}

// Flags registers the flags.
func (def Config) Flags(flags *pflag.FlagSet) {
	flags.Bool("egress-gateway-ha-terminate-connections", def.EgressGatewayHATerminateConnections,
		"When a basic-mode gateway's active node changes, destroy the TCP sockets that this node's pods had through the "+
			"old node (their source address changed, so they cannot survive), so applications reconnect at once")
	flags.String("egress-gateway-ha-netns-dir", def.EgressGatewayHANetnsDir,
		"Directory where the pods' network namespaces are pinned, as the agent sees it (Cilium's chart mounts the "+
			"host's /var/run/netns at /var/run/cilium/netns)")
}
