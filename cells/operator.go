package cells

import (
	"fmt"
	"log/slog"

	"github.com/cilium/hive/cell"
	"github.com/spf13/pflag"

	"github.com/cilium/cilium/pkg/k8s/apis"
	k8sClient "github.com/cilium/cilium/pkg/k8s/client"

	"github.com/egressha/egressha/crds"
)

// Operator is egressha's part of cilium-operator. The operator main places it
// under Cilium's leader lifecycle, so it runs only on the elected leader:
// there is exactly one authority deciding which node is active.
var Operator = cell.Module(
	"egress-gateway-ha-operator",
	"egressha active-node selection and status on the operator leader",

	operatorCells,
	crdClientCell,
	realClockCell,
)

// operatorCells are the operator's cells without the API client of our
// CRDs, so tests can run them against a fake.
var operatorCells = cell.Group(
	cell.Config(DefaultOperatorConfig),
	cell.Provide(newRegisterCRDs),
	selectionCells,
)

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
}

// DefaultOperatorConfig are the defaults of the operator flags.
var DefaultOperatorConfig = OperatorConfig{
	EgressGatewayHAEnabled:          true,
	EgressGatewayHAAgentPodSelector: "k8s-app=cilium",
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
}

type registerCRDsOut struct {
	cell.Out

	Func apis.RegisterCRDsFunc `group:"register-crd-funcs"`
}

// newRegisterCRDs hands our CRDs to Cilium's CRD registration, which runs
// first after the operator wins the election and honours
// --skip-crd-creation, exactly as for Cilium's own CRDs.
func newRegisterCRDs(cfg OperatorConfig) registerCRDsOut {
	return registerCRDsOut{Func: func(log *slog.Logger, cs k8sClient.Clientset) error {
		if !cfg.EgressGatewayHAEnabled {
			return nil
		}
		if err := crds.Register(log, cs); err != nil {
			return fmt.Errorf("egressha: %w", err)
		}
		// Cilium installs the CiliumEgressGatewayPolicy CRD only with its
		// own egress gateway on, which must be off beside egressha; we
		// serve those policies, so we install it, from the same
		// pregenerated manifest Cilium would use.
		if err := registerCEGPCRD(log, cs); err != nil {
			return fmt.Errorf("egressha: %w", err)
		}
		return nil
	}}
}
