// Package cells wires egressha into Cilium's hives: Agent goes into our
// cilium-agent, Operator into our cilium-operator-generic. The domain logic
// lives in egressgw/ and vipd/; this package only connects it to Cilium's
// configuration, lifecycle and Kubernetes clients.
package cells

import (
	"fmt"
	"log/slog"

	"github.com/cilium/hive/cell"

	"github.com/cilium/cilium/pkg/kpr"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/egressgw/client"
	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/connsync"
	"github.com/egressha/egressha/egressgw/connterm"
	"github.com/egressha/egressha/egressgw/datapath"
	"github.com/egressha/egressha/egressgw/entries"
	"github.com/egressha/egressha/egressgw/heartbeat/writer"
	"github.com/egressha/egressha/egressgw/localgateways"
	"github.com/egressha/egressha/egressgw/probe"
	"github.com/egressha/egressha/egressgw/reflectors"
	"github.com/egressha/egressha/egressgw/vip"
)

// Agent is egressha's part of cilium-agent.
var Agent = cell.Module(
	"egress-gateway-ha-agent",
	"egressha HA egress gateway on every node",

	agentCells,
	client.Cell,
	datapath.TakeoverCell,
	probe.AgentCell,
	vip.Cell,
	connsync.Cell,
	entries.LocalCell,
	// Destroys local pods' sockets when a basic-mode move changes their
	// egress source; here, not in agentCells, as it touches the host's
	// sockets and network namespaces.
	connterm.Cell,
	// Last, so its stop hook runs first (see LastWordCell).
	writer.LastWordCell,
)

// agentCells are the agent's cells without the API client of our CRDs and
// without the pinned BPF map (datapath.TakeoverCell), so tests can run them
// against fakes.
var agentCells = cell.Group(
	config.AgentCell,
	cell.Invoke(registerAgentChecks),

	reflectors.Cell,
	localgateways.Cell,
	vip.TableCell,
	writer.Cell,
	entries.Cell,
	datapath.Cell,
)

type agentCheckParams struct {
	cell.In

	Log          *slog.Logger
	Lifecycle    cell.Lifecycle
	Config       config.AgentConfig
	DaemonConfig *option.DaemonConfig
	KPRConfig    kpr.KPRConfig
}

// registerAgentChecks refuses to start the agent when egressha is enabled
// on a configuration it cannot work with. The check runs in a start hook,
// not at construction, because `cilium-agent hive` builds the graph
// without parsing the daemon configuration.
func registerAgentChecks(p agentCheckParams) {
	p.Lifecycle.Append(cell.Hook{
		OnStart: func(cell.HookContext) error {
			if !p.Config.EgressGatewayHAEnabled {
				p.Log.Info("egressha is disabled (--egress-gateway-ha-enabled=false); this agent behaves as stock Cilium")
				return nil
			}
			if err := p.Config.Validate(); err != nil {
				return fmt.Errorf("egressha: invalid configuration: %w", err)
			}
			if err := datapath.CheckPreconditions(p.DaemonConfig, p.KPRConfig); err != nil {
				return fmt.Errorf("egressha cannot run on this Cilium configuration "+
					"(fix the settings below or set egress-gateway-ha-enabled=false):\n%w", err)
			}
			p.Log.Info("egressha agent configuration accepted",
				"heartbeatRenewInterval", p.Config.EgressGatewayHAHeartbeatRenewInterval,
				"heartbeatExpiry", p.Config.EgressGatewayHAHeartbeatExpiry)
			return nil
		},
	})
}
