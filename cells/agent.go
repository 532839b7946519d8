// Package cells wires egressha into Cilium's hives: Agent goes into our
// cilium-agent, Operator into our cilium-operator-generic. The domain logic
// lives in egressgw/ and vipd/; this package only connects it to Cilium's
// configuration, lifecycle and Kubernetes clients.
package cells

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/cilium/hive/cell"

	"github.com/cilium/cilium/pkg/kpr"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/entries"
	"github.com/egressha/egressha/egressgw/reflectors"
)

// Agent is egressha's part of cilium-agent.
var Agent = cell.Module(
	"egress-gateway-ha-agent",
	"egressha HA egress gateway on every node",

	agentCells,
	crdClientCell,
	datapathTakeoverCell,
	vipResponderCell,
	entries.LocalCell,
)

// agentCells are the agent's cells without the API client of our CRDs and
// without the pinned BPF map (datapathTakeoverCell), so tests can run them
// against fakes.
var agentCells = cell.Group(
	config.AgentCell,
	cell.Invoke(registerAgentChecks),

	reflectors.Cell,
	vipTableCells,
	heartbeatCell,
	entries.Cell,
	datapathCells,
)

// CheckDatapathPreconditions returns every reason Cilium's configuration
// cannot carry egressha's datapath, each with the setting that fixes it.
// The egress gateway BPF code SNATs only with BPF masquerade, which needs
// NodePort; Cilium's own egress gateway manager deletes every map entry it
// did not write; endpoint identities must be CRD-backed CiliumEndpoints.
func CheckDatapathPreconditions(dc *option.DaemonConfig, kprCfg kpr.KPRConfig) error {
	var errs []error
	if dc.EnableEgressGateway {
		errs = append(errs, errors.New("enable-egress-gateway=true (Helm egressGateway.enabled): Cilium's own egress gateway "+
			"deletes every egress map entry it did not write, so it cannot run beside egressha; set it to false"))
	}
	if !dc.EnableIPv4Masquerade {
		errs = append(errs, errors.New("IPv4 masquerading is off; set enable-ipv4-masquerade=true (Helm enableIPv4Masquerade)"))
	}
	if !dc.EnableBPFMasquerade {
		errs = append(errs, errors.New("BPF masquerading is off; set enable-bpf-masquerade=true (Helm bpf.masquerade)"))
	}
	if kprCfg.KubeProxyReplacement != option.KubeProxyReplacementTrue || !kprCfg.EnableNodePort {
		errs = append(errs, errors.New("kube-proxy replacement is off; set kube-proxy-replacement=true (Helm kubeProxyReplacement)"))
	}
	if dc.IdentityAllocationMode != option.IdentityAllocationModeCRD {
		errs = append(errs, fmt.Errorf("identity allocation mode is %q; egressha needs identity-allocation-mode=crd", dc.IdentityAllocationMode))
	}
	if dc.EnableCiliumEndpointSlice {
		errs = append(errs, errors.New("CiliumEndpointSlice is enabled; egressha reads CiliumEndpoints, set enable-cilium-endpoint-slice=false"))
	}
	if !dc.EnableIPv4 {
		errs = append(errs, errors.New("IPv4 is disabled; egressha programs IPv4 egress only, set enable-ipv4=true"))
	}
	return errors.Join(errs...)
}

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
			if err := CheckDatapathPreconditions(p.DaemonConfig, p.KPRConfig); err != nil {
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
