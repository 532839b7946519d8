package cells

import (
	"fmt"
	"log/slog"

	"github.com/cilium/hive/cell"

	"github.com/cilium/cilium/pkg/k8s/apis"
	k8sClient "github.com/cilium/cilium/pkg/k8s/client"

	"github.com/egressha/egressha/crds"
	"github.com/egressha/egressha/egressgw/client"
	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/leader"
	"github.com/egressha/egressha/egressgw/operator"
	"github.com/egressha/egressha/egressgw/probe"
)

// Operator is egressha's part of cilium-operator. It runs on every
// operator replica, on the outer lifecycle, not under Cilium's leader
// election: the informers are warm everywhere, and egressha's own election
// (leader.Cell: its own Lease, timings of seconds) decides which replica
// decides and writes, so there is exactly one authority on which node is
// active, and a dead leader is replaced within seconds.
var Operator = cell.Module(
	"egress-gateway-ha-operator",
	"egressha active-node selection and status on the egressha leader",

	operatorCells,
	leader.Cell,
	client.Cell,
	operator.RealClockCell,
)

// operatorCells are the operator's cells without the API client of our
// CRDs and without the leader election, so tests can run them against a
// fake API server and decide who leads.
var operatorCells = cell.Group(
	config.OperatorCell,
	cell.Provide(newRegisterCRDs),
	probe.OperatorTableCell,
	operator.Cell,
)

// OperatorProber runs on every operator replica, leader or not: the
// liveness probing of the candidate nodes, so that a new leader starts
// with a warm view.
var OperatorProber = probe.OperatorCell

type registerCRDsOut struct {
	cell.Out

	Func apis.RegisterCRDsFunc `group:"register-crd-funcs"`
}

// newRegisterCRDs hands our CRDs to Cilium's CRD registration, which runs
// first after the operator wins Cilium's own election and honours
// --skip-crd-creation, exactly as for Cilium's own CRDs.
func newRegisterCRDs(enabled config.OperatorEnabled) registerCRDsOut {
	return registerCRDsOut{Func: func(log *slog.Logger, cs k8sClient.Clientset) error {
		if !enabled {
			return nil
		}
		if err := crds.Register(log, cs); err != nil {
			return fmt.Errorf("egressha: %w", err)
		}
		// Cilium installs the CiliumEgressGatewayPolicy CRD only with its
		// own egress gateway on, which must be off beside egressha; we
		// serve those policies, so we install it, from the same
		// pregenerated manifest Cilium would use.
		if err := crds.RegisterCEGP(log, cs); err != nil {
			return fmt.Errorf("egressha: %w", err)
		}
		return nil
	}}
}
