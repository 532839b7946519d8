package operator

import (
	"context"
	"fmt"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	k8sClient "github.com/cilium/cilium/pkg/k8s/client"
	"github.com/cilium/cilium/pkg/k8s/resource"
	"github.com/cilium/cilium/pkg/k8s/utils"
	"github.com/cilium/cilium/pkg/metrics"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/client"
	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/probe"
)

// Cell selects each EgressGateway's active node and writes its status, and
// chooses the serving node of every CiliumEgressGatewayPolicy gateway entry
// (CEGPCell). It needs the clientset of our CRDs (client.Cell) and a clock.
var Cell = cell.Group(
	cell.ProvidePrivate(
		NewNodesTable,
		NewSelectionTable,
		NewPolicyStatusTable,
		newInputs,
	),
	cell.Provide(
		statedb.RWTable[*NodeRow].ToTable,
		statedb.RWTable[*SelectionRow].ToTable,
		statedb.RWTable[*PolicyStatusRow].ToTable,
	),
	metrics.Metric(NewMetrics),
	cell.Invoke(registerSelectionController),
	cegpCells,
)

// RealClockCell is the clock outside tests.
var RealClockCell = cell.Provide(func() clock.WithTicker { return clock.RealClock{} })

type inputParams struct {
	cell.In

	Lifecycle    cell.Lifecycle
	Clientset    k8sClient.Clientset
	CRDs         *client.Clientset
	Config       config.OperatorConfig
	DaemonConfig *option.DaemonConfig
}

func newInputs(p inputParams) Inputs {
	cs := p.Clientset
	if !cs.IsEnabled() {
		return Inputs{}
	}
	// The namespace is read when the lists start, after the daemon
	// configuration was populated from flags.
	inNamespace := func(f func(ns string) cacheLW) cacheLW { return lazyNamespace(p.DaemonConfig, f) }
	return Inputs{
		Nodes: resource.New[*corev1.Node](p.Lifecycle,
			utils.ListerWatcherFromTyped[*corev1.NodeList](cs.CoreV1().Nodes()), resource.WithName("egressha-nodes")),
		AgentPods: resource.New[*corev1.Pod](p.Lifecycle, inNamespace(func(ns string) cacheLW {
			return utils.ListerWatcherWithModifiers(utils.ListerWatcherFromTyped[*corev1.PodList](cs.CoreV1().Pods(ns)),
				func(o *metav1.ListOptions) { o.LabelSelector = p.Config.EgressGatewayHAAgentPodSelector })
		}), resource.WithName("egressha-agent-pods")),
		Leases: resource.New[*coordinationv1.Lease](p.Lifecycle, inNamespace(func(ns string) cacheLW {
			return utils.ListerWatcherWithModifiers(utils.ListerWatcherFromTyped[*coordinationv1.LeaseList](cs.CoordinationV1().Leases(ns)),
				func(o *metav1.ListOptions) {
					o.LabelSelector = heartbeat.ComponentLabel + "=" + heartbeat.ComponentValue
				})
		}), resource.WithName("egressha-heartbeats")),
		Gateways: resource.New[*v1alpha1.EgressGateway](p.Lifecycle, p.CRDs.Gateways.ListerWatcher(), resource.WithName("egressha-gateways")),
		Policies: resource.New[*v1alpha1.EgressGatewayPolicy](p.Lifecycle, p.CRDs.Policies.ListerWatcher(), resource.WithName("egressha-policies")),
	}
}

type selectionParams struct {
	cell.In
	reconciler.Params

	Enabled      config.OperatorEnabled
	JobGroup     job.Group
	Nodes        statedb.RWTable[*NodeRow]
	Selection    statedb.RWTable[*SelectionRow]
	PolicyStatus statedb.RWTable[*PolicyStatusRow]
	Clientset    k8sClient.Clientset
	CRDs         *client.Clientset
	Metrics      *Metrics
	Clock        clock.WithTicker
	Inputs       Inputs
	Config       config.OperatorConfig
	// Probes and Leader come from probe.OperatorTableCell; the prober
	// itself runs on every replica (probe.OperatorCell).
	Probes    statedb.Table[*probe.SessionRow]
	Leader    *probe.Leader
	Lifecycle cell.Lifecycle
}

func registerSelectionController(p selectionParams) error {
	if !p.Enabled {
		return nil
	}
	if d := p.Config.EgressGatewayHAHeartbeatMaxExpiry; d <= 0 {
		return fmt.Errorf("--egress-gateway-ha-heartbeat-max-expiry must be positive, got %s", d)
	}
	if d := p.Config.EgressGatewayHAHoldDown; d < 0 || d > MaxHoldDown {
		return fmt.Errorf("--egress-gateway-ha-hold-down must be within 0s..%s, got %s", MaxHoldDown, d)
	}
	// egress-gateway-nodes is initialized once Nodes, agent Pods and
	// Leases have synced; the CEGP controller waits for it.
	wtxn := p.DB.WriteTxn(p.Nodes)
	nodesSynced := p.Nodes.RegisterInitializer(wtxn, "egressha-node-facts")
	wtxn.Commit()
	c := NewController(p.Log, p.DB, p.Nodes, p.Selection, p.PolicyStatus, p.CRDs, p.Metrics, p.Clock, p.Inputs)
	c.NodesSynced = nodesSynced
	c.MaxExpiry = p.Config.EgressGatewayHAHeartbeatMaxExpiry
	c.MaxRestartGrace = max(p.Config.EgressGatewayHAMaxRestartGrace, 0)
	c.HoldDown = p.Config.EgressGatewayHAHoldDown
	if p.Config.EgressGatewayHAProbe {
		c.Probes = p.Probes
	}
	// This cell runs under the leader lifecycle: probes say "leader" from
	// the moment this replica leads until it stops.
	p.Lifecycle.Append(cell.Hook{
		OnStart: func(cell.HookContext) error { p.Leader.Store(true); return nil },
		OnStop:  func(cell.HookContext) error { p.Leader.Store(false); return nil },
	})
	// The decisions reach the API through two statedb reconcilers, one
	// over egress-gateway-selection (EgressGateway status) and one over
	// egress-policy-status (EgressGatewayPolicy status). They retry
	// failures 50 ms doubling to 10 s, as the work queue they replace.
	if err := registerStatusReconciler(p.Params, p.Selection,
		(*SelectionRow).Clone, (*SelectionRow).SetStatus, (*SelectionRow).GetStatus, c.GatewayStatusOps()); err != nil {
		return err
	}
	if err := registerStatusReconciler(p.Params, p.PolicyStatus,
		(*PolicyStatusRow).Clone, (*PolicyStatusRow).SetStatus, (*PolicyStatusRow).GetStatus, c.PolicyStatusOps()); err != nil {
		return err
	}
	p.JobGroup.Add(job.OneShot("egress-gateway-selection", func(ctx context.Context, _ cell.Health) error {
		return withEventRecorder(ctx, p.Clientset, func(recorder record.EventRecorder) error { return c.Run(ctx, recorder) })
	}))
	return nil
}
