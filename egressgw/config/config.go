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
	// node that cannot renew within it stops announcing (self-fencing)
	// when liveness probing is off.
	EgressGatewayHAHeartbeatExpiry time.Duration
	// EgressGatewayHAProbe turns on the responder to the operators'
	// liveness probes and the probe-based fence of VIP gateways.
	EgressGatewayHAProbe bool
	// EgressGatewayHAProbePort is the UDP port of the probe responder.
	EgressGatewayHAProbePort uint16
	// EgressGatewayHAProbeFence is the fence bound: a node that has not
	// heard the operator leader say "hear you" for this long stops
	// answering ARP for its virtual IPs. The leader hands a VIP role on
	// only after it.
	EgressGatewayHAProbeFence time.Duration
	// EgressGatewayHARestartGrace is what the agent asks for when it stops
	// (SIGTERM, as in every rolling upgrade): the operator keeps the
	// node's roles for up to this long while the node's kernel still
	// answers, so a restart moves nothing. 0: the agent withdraws instead,
	// and its roles move at once.
	EgressGatewayHARestartGrace time.Duration
}

// DefaultAgentConfig are the defaults of the agent flags.
var DefaultAgentConfig = AgentConfig{
	EgressGatewayHAEnabled: true,
	// A hard crash is detected within the expiry (plus up to one renew
	// interval less): 1.5-2 s, so traffic resumes within the 3 s the
	// benchmarks target; three renewals may fail in a row (1.5 s of API
	// latency) before a healthy node loses the role.
	// With liveness probing (issue 14) the Lease is identity, state and
	// slow path: it is written on change and refreshed every 5 s (at most
	// 0.2 writes/s per node, kubelet's node Lease is 0.1/s); it decides
	// liveness only where probing has no verdict, and two refreshes may
	// fail before it expires.
	EgressGatewayHAHeartbeatRenewInterval: 5 * time.Second,
	EgressGatewayHAHeartbeatExpiry:        15 * time.Second,
	EgressGatewayHAProbe:                  true,
	EgressGatewayHAProbePort:              4796,
	// Two and a half probe intervals: one lost probe does not fence.
	EgressGatewayHAProbeFence: 250 * time.Millisecond,
	// A cilium-agent restart takes seconds to a minute (its startup probe
	// allows minutes, but the datapath keeps forwarding throughout).
	EgressGatewayHARestartGrace: 30 * time.Second,
}

// Flags registers the agent flags.
func (def AgentConfig) Flags(flags *pflag.FlagSet) {
	flags.Bool("egress-gateway-ha-enabled", def.EgressGatewayHAEnabled,
		"Enable egressha (HA egress gateway); requires Cilium's own egress gateway to be off")
	flags.Duration("egress-gateway-ha-heartbeat-renew-interval", def.EgressGatewayHAHeartbeatRenewInterval,
		"How often a candidate gateway node renews its heartbeat Lease")
	flags.Duration("egress-gateway-ha-heartbeat-expiry", def.EgressGatewayHAHeartbeatExpiry,
		"How long a heartbeat Lease stays fresh; must be at least twice the renew interval")
	flags.Bool("egress-gateway-ha-probe", def.EgressGatewayHAProbe,
		"Answer the operators' liveness probes over the cluster network and fence virtual IPs by them")
	flags.Uint16("egress-gateway-ha-probe-port", def.EgressGatewayHAProbePort,
		"UDP port of the liveness probe responder (the operators' --egress-gateway-ha-probe-port)")
	flags.Duration("egress-gateway-ha-probe-fence", def.EgressGatewayHAProbeFence,
		"Stop answering ARP for a virtual IP when the operator leader has not said it hears this node for this long")
	flags.Duration("egress-gateway-ha-restart-grace", def.EgressGatewayHARestartGrace,
		"When the agent stops, ask the operator to keep this node's roles for up to this long while the node itself "+
			"answers (a restart moves nothing); 0: withdraw at once")
}

// Validate reports flag values that cannot work together.
func (c AgentConfig) Validate() error {
	if c.EgressGatewayHAProbe {
		if c.EgressGatewayHAProbePort == 0 {
			return fmt.Errorf("--egress-gateway-ha-probe-port must not be 0")
		}
		if c.EgressGatewayHAProbeFence < 20*time.Millisecond || c.EgressGatewayHAProbeFence > time.Minute {
			return fmt.Errorf("--egress-gateway-ha-probe-fence must be within 20ms..1m, got %s", c.EgressGatewayHAProbeFence)
		}
	}
	if c.EgressGatewayHARestartGrace < 0 || c.EgressGatewayHARestartGrace > 10*time.Minute {
		return fmt.Errorf("--egress-gateway-ha-restart-grace must be within 0..10m, got %s", c.EgressGatewayHARestartGrace)
	}
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
	// EgressGatewayHAHoldDown is the hold-down of EgressGateways that do
	// not set spec.selection.holdDown: how long a node that becomes
	// eligible must stay eligible before it may take the role from another
	// eligible node (selection.Gateway.HoldDown).
	EgressGatewayHAHoldDown time.Duration
	// EgressGatewayHAProbe turns on liveness probing of the candidate
	// nodes (on every replica, so a new leader already knows).
	EgressGatewayHAProbe bool
	// EgressGatewayHAProbeInterval and EgressGatewayHAProbeDetectMultiplier:
	// a probe every interval, a node Down after multiplier intervals
	// without a reply.
	EgressGatewayHAProbeInterval         time.Duration
	EgressGatewayHAProbeDetectMultiplier int
	// EgressGatewayHAProbePort is the agents' responder port.
	EgressGatewayHAProbePort uint16
	// EgressGatewayHAMaxRestartGrace bounds the restart grace an agent
	// may ask for in its Lease.
	EgressGatewayHAMaxRestartGrace time.Duration
}

// DefaultOperatorConfig are the defaults of the operator flags.
var DefaultOperatorConfig = OperatorConfig{
	EgressGatewayHAEnabled:          true,
	EgressGatewayHAAgentPodSelector: "k8s-app=cilium",
	// Twice the agents' default expiry (15 s): room for agents
	// configured slower, while a dead node that probing cannot judge is
	// still failed over within half a minute whatever its Lease claims.
	EgressGatewayHAHeartbeatMaxExpiry: 30 * time.Second,
	// Longer than a heartbeat Lease's default expiry (15 s) is not needed:
	// a node flapping faster than every 10 s never regains the role, and
	// failback after maintenance waits only 10 s.
	EgressGatewayHAHoldDown:              10 * time.Second,
	EgressGatewayHAProbe:                 true,
	EgressGatewayHAProbeInterval:         100 * time.Millisecond,
	EgressGatewayHAProbeDetectMultiplier: 3,
	EgressGatewayHAProbePort:             4796,
	EgressGatewayHAMaxRestartGrace:       2 * time.Minute,
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
	flags.Duration("egress-gateway-ha-hold-down", def.EgressGatewayHAHoldDown,
		"How long a node that becomes eligible must stay eligible before it may take an EgressGateway's role from another "+
			"eligible node (failback); 0s..1h, for EgressGateways without spec.selection.holdDown")
	flags.Bool("egress-gateway-ha-probe", def.EgressGatewayHAProbe,
		"Probe the candidate gateway nodes over the cluster network (liveness without the API server)")
	flags.Duration("egress-gateway-ha-probe-interval", def.EgressGatewayHAProbeInterval,
		"Interval between two liveness probes of a candidate node")
	flags.Int("egress-gateway-ha-probe-detect-multiplier", def.EgressGatewayHAProbeDetectMultiplier,
		"A candidate node is Down after this many probe intervals without a reply")
	flags.Uint16("egress-gateway-ha-probe-port", def.EgressGatewayHAProbePort,
		"UDP port of the agents' liveness probe responders")
	flags.Duration("egress-gateway-ha-max-restart-grace", def.EgressGatewayHAMaxRestartGrace,
		"The longest an agent's restart keeps its node's roles whatever its --egress-gateway-ha-restart-grace says; 0: "+
			"no restart grace (a restart moves the roles)")
}

// OperatorEnabled is whether egressha's operator cells act: the flag is on
// and there is a Kubernetes API server. Every operator cell asks it.
type OperatorEnabled bool

// NewOperatorEnabled computes OperatorEnabled.
func NewOperatorEnabled(cfg OperatorConfig, cs k8sClient.Clientset) OperatorEnabled {
	return OperatorEnabled(cfg.EgressGatewayHAEnabled && cs.IsEnabled())
}
