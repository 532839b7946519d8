package operator

import (
	"context"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"k8s.io/client-go/tools/record"
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
// prints the decisions.
var cegpCells = cell.Group(
	cell.ProvidePrivate(NewCEGPSelectionTable),
	cell.Provide(statedb.RWTable[*CEGPRow].ToTable),
	cell.Invoke(registerCEGPController),
)

type cegpControllerParams struct {
	cell.In
	reconciler.Params

	Enabled   config.OperatorEnabled
	Config    config.OperatorConfig
	JobGroup  job.Group
	Nodes     statedb.Table[*NodeRow]
	Table     statedb.RWTable[*CEGPRow]
	Clientset k8sClient.Clientset
	Clock     clock.WithTicker
}

func registerCEGPController(p cegpControllerParams) error {
	if !p.Enabled {
		return nil
	}
	cegps := p.Clientset.CiliumV2().CiliumEgressGatewayPolicies()
	res := resource.New[*ciliumv2.CiliumEgressGatewayPolicy](p.Lifecycle,
		utils.ListerWatcherFromTyped[*ciliumv2.CiliumEgressGatewayPolicyList](cegps),
		resource.WithName("egressha-cegps"))
	c := NewCEGPController(p.Log, p.DB, p.Nodes, p.Table, cegps, p.Clock, res,
		p.Config.EgressGatewayHACEGPUpstreamSelection)
	// The decisions' annotations are written by a statedb reconciler
	// over egress-cegp-selection, which shows each row's state.
	if err := registerStatusReconciler(p.Params, p.Table,
		(*CEGPRow).Clone, (*CEGPRow).SetStatus, (*CEGPRow).GetStatus, c.AnnotationOps()); err != nil {
		return err
	}
	p.JobGroup.Add(job.OneShot("egress-cegp-selection", func(ctx context.Context, _ cell.Health) error {
		return withEventRecorder(ctx, p.Clientset, func(recorder record.EventRecorder) error { return c.Run(ctx, recorder) })
	}))
	return nil
}
