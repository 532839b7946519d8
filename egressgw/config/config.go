// Package config holds egressha's flags that more than one package reads
// (whether egressha is on, the heartbeat timing) and the one value every
// agent cell asks to know whether it acts: Enabled. Flags that only one
// package reads live in that package (vip.Config, datapath.Config).
package config

import (
	"fmt"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/spf13/pflag"

	k8sClient "github.com/cilium/cilium/pkg/k8s/client"
)

// AgentCell registers the agent flags and provides Enabled.
var AgentCell = cell.Group(
	cell.Config(DefaultAgentConfig),
	cell.Provide(NewEnabled),
)

// OperatorCell registers the operator flags and provides OperatorEnabled.
var OperatorCell = cell.Group(
	cell.Config(DefaultOperatorConfig),
	cell.Provide(NewOperatorEnabled),
)

// AgentConfig holds the agent flags of egressha that several packages read.
type AgentConfig struct {
	// EgressGatewayHAEnabled turns egressha's agent cells on. Off, the
	// binary behaves exactly like stock cilium-agent.
	EgressGatewayHAEnabled bool
	// EgressGatewayHAHeartbeatRenewInterval is how often the agent renews
	// its node's heartbeat Lease.
	EgressGatewayHAHeartbeatRenewInterval time.Duration
	// EgressGatewayHAHeartbeatExpiry is how long a heartbeat stays fresh; a
	// node that cannot renew within it stops announcing (self-fencing).
	EgressGatewayHAHeartbeatExpiry time.Duration
}

// DefaultAgentConfig are the defaults of the agent flags.
var DefaultAgentConfig = AgentConfig{
	EgressGatewayHAEnabled: true,
	// A hard crash is detected within the expiry (plus up to one renew
	// interval less): 1.5-2 s, so traffic resumes within the 3 s the
	// benchmarks target; three renewals may fail in a row (1.5 s of API
	// latency) before a healthy node loses the role.
	EgressGatewayHAHeartbeatRenewInterval: 500 * time.Millisecond,
	EgressGatewayHAHeartbeatExpiry:        2 * time.Second,
}

// Flags registers the agent flags.
func (def AgentConfig) Flags(flags *pflag.FlagSet) {
	flags.Bool("egress-gateway-ha-enabled", def.EgressGatewayHAEnabled,
		"Enable egressha (HA egress gateway); requires Cilium's own egress gateway to be off")
	flags.Duration("egress-gateway-ha-heartbeat-renew-interval", def.EgressGatewayHAHeartbeatRenewInterval,
		"How often a candidate gateway node renews its heartbeat Lease")
	flags.Duration("egress-gateway-ha-heartbeat-expiry", def.EgressGatewayHAHeartbeatExpiry,
		"How long a heartbeat Lease stays fresh; must be at least twice the renew interval")
}

// Validate reports flag values that cannot work together.
func (c AgentConfig) Validate() error {
	return ValidateHeartbeat(c.EgressGatewayHAHeartbeatRenewInterval, c.EgressGatewayHAHeartbeatExpiry)
}

// ValidateHeartbeat checks a renew interval against an expiry: a lease
// must survive at least one missed renewal, or a single slow API call
// would fail the active node over.
func ValidateHeartbeat(renew, expiry time.Duration) error {
	if renew <= 0 {
		return fmt.Errorf("--egress-gateway-ha-heartbeat-renew-interval must be positive, got %s", renew)
	}
	if expiry < 2*renew {
		return fmt.Errorf("--egress-gateway-ha-heartbeat-expiry (%s) must be at least twice "+
			"--egress-gateway-ha-heartbeat-renew-interval (%s) so one missed renewal does not expire the lease",
			expiry, renew)
	}
	return nil
}

// Enabled is whether egressha's agent cells act on this agent: the flag is
// on, there is a Kubernetes API server, and the flags are valid (otherwise
// the start check refuses to start the agent, and nothing may have been
// created before). It is worked out once, here; every agent cell asks it.
// Whether egressha also owns the datapath adds Cilium's configuration
// (datapath.OwnsDatapath).
type Enabled bool

// NewEnabled computes Enabled.
func NewEnabled(cfg AgentConfig, cs k8sClient.Clientset) Enabled {
	return Enabled(cfg.EgressGatewayHAEnabled && cs.IsEnabled() && cfg.Validate() == nil)
}

// OperatorConfig holds the operator flags of egressha.
type OperatorConfig struct {
	// EgressGatewayHAEnabled turns egressha's operator cells on.
	EgressGatewayHAEnabled bool
	// EgressGatewayHAAgentPodSelector selects the cilium-agent pods in
	// Cilium's namespace whose readiness makes a node eligible.
	EgressGatewayHAAgentPodSelector string
	// EgressGatewayHACEGPUpstreamSelection restores Cilium's own choice of
	// a CiliumEgressGatewayPolicy's gateway node: the first matching node
	// whatever its state.
	EgressGatewayHACEGPUpstreamSelection bool
	// EgressGatewayHAHeartbeatMaxExpiry bounds the expiry a heartbeat
	// Lease may claim (leaseDurationSeconds): the operator honours
	// min(leaseDurationSeconds, this), so a Lease written with a huge
	// duration cannot keep a dead node active.
	EgressGatewayHAHeartbeatMaxExpiry time.Duration
}

// DefaultOperatorConfig are the defaults of the operator flags.
var DefaultOperatorConfig = OperatorConfig{
	EgressGatewayHAEnabled:          true,
	EgressGatewayHAAgentPodSelector: "k8s-app=cilium",
	// Five times the agents' default expiry (2 s): room for agents
	// configured slower, while a dead node is still failed over within
	// seconds whatever its Lease claims.
	EgressGatewayHAHeartbeatMaxExpiry: 10 * time.Second,
}

// Flags registers the operator flags.
func (def OperatorConfig) Flags(flags *pflag.FlagSet) {
	flags.Bool("egress-gateway-ha-enabled", def.EgressGatewayHAEnabled,
		"Enable egressha (HA egress gateway): install its CRDs, select active nodes and write EgressGateway status")
	flags.String("egress-gateway-ha-agent-pod-selector", def.EgressGatewayHAAgentPodSelector,
		"Label selector of the cilium-agent pods (in Cilium's namespace) whose readiness makes a node eligible")
	flags.Bool("egress-gateway-ha-cegp-upstream-selection", def.EgressGatewayHACEGPUpstreamSelection,
		"CiliumEgressGatewayPolicy: serve each gateway entry from the first matching node whatever its state, "+
			"exactly as Cilium's own egress gateway (no failover)")
	flags.Duration("egress-gateway-ha-heartbeat-max-expiry", def.EgressGatewayHAHeartbeatMaxExpiry,
		"The longest a heartbeat Lease stays fresh whatever its leaseDurationSeconds says; must be at least the agents' "+
			"--egress-gateway-ha-heartbeat-expiry")
}

// OperatorEnabled is whether egressha's operator cells act: the flag is on
// and there is a Kubernetes API server. Every operator cell asks it.
type OperatorEnabled bool

// NewOperatorEnabled computes OperatorEnabled.
func NewOperatorEnabled(cfg OperatorConfig, cs k8sClient.Clientset) OperatorEnabled {
	return OperatorEnabled(cfg.EgressGatewayHAEnabled && cs.IsEnabled())
}
