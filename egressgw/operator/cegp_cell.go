package operator

import (
	"log/slog"
	"sync/atomic"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"k8s.io/utils/clock"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	k8sClient "github.com/cilium/cilium/pkg/k8s/client"
	"github.com/cilium/cilium/pkg/k8s/resource"
	"github.com/cilium/cilium/pkg/k8s/utils"

	"github.com/egressha/egressha/egressgw/config"
)

// cegpCells choose the serving node of every gateway entry of every
// CiliumEgressGatewayPolicy and publish it in the policy's
// egressha.io/gateway-nodes annotation; `db/show egress-cegp-selection`
// prints the decisions. The controller runs in each term of leadership,
// beside the selection controller (selectionWork.term).
var cegpCells = cell.Group(
	cell.ProvidePrivate(NewCEGPSelectionTable, newCEGPWork),
	cell.Provide(statedb.RWTable[*CEGPRow].ToTable),
	cell.Invoke(registerCEGPReconciler),
)

type cegpControllerParams struct {
	cell.In

	Log       *slog.Logger
	Lifecycle cell.Lifecycle
	DB        *statedb.DB
	Enabled   config.OperatorEnabled
	Config    config.OperatorConfig
	Nodes     statedb.Table[*NodeRow]
	Table     statedb.RWTable[*CEGPRow]
	Clientset k8sClient.Clientset
	Clock     clock.WithTicker
}

// cegpWork is what the CiliumEgressGatewayPolicy controller needs in each
// term: its informer (running on every replica), a fresh controller, and
// the annotation reconciler's writer of the current term.
type cegpWork struct {
	table         statedb.RWTable[*CEGPRow]
	policies      resource.Resource[*ciliumv2.CiliumEgressGatewayPolicy]
	newController func() *CEGPController
	writer        atomic.Pointer[termWriter[*CEGPRow]]
}

func newCEGPWork(p cegpControllerParams) *cegpWork {
	if !p.Enabled {
		return &cegpWork{}
	}
	cegps := p.Clientset.CiliumV2().CiliumEgressGatewayPolicies()
	res := resource.New[*ciliumv2.CiliumEgressGatewayPolicy](p.Lifecycle,
		utils.ListerWatcherFromTyped[*ciliumv2.CiliumEgressGatewayPolicyList](cegps),
		resource.WithName("egressha-cegps"))
	return &cegpWork{
		table:    p.Table,
		policies: res,
		newController: func() *CEGPController {
			return NewCEGPController(p.Log, p.DB, p.Nodes, p.Table, cegps, p.Clock, res,
				p.Config.EgressGatewayHACEGPUpstreamSelection)
		},
	}
}

type cegpReconcilerParams struct {
	cell.In
	reconciler.Params

	Enabled config.OperatorEnabled
	Table   statedb.RWTable[*CEGPRow]
	Work    *cegpWork
}

// registerCEGPReconciler registers the statedb reconciler over
// egress-cegp-selection that writes each row's decision into its policy's
// annotation, for the current term's controller.
func registerCEGPReconciler(p cegpReconcilerParams) error {
	if !p.Enabled {
		return nil
	}
	return registerStatusReconciler(p.Params, p.Table,
		(*CEGPRow).Clone, (*CEGPRow).SetStatus, (*CEGPRow).GetStatus, leaderOps[*CEGPRow]{cur: &p.Work.writer})
}
