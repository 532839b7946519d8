package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	k8sClient "github.com/cilium/cilium/pkg/k8s/client"
	"github.com/cilium/cilium/pkg/k8s/resource"
	"github.com/cilium/cilium/pkg/k8s/utils"
	"github.com/cilium/cilium/pkg/metrics"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/client"
	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/leader"
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
	Probes statedb.Table[*probe.SessionRow]
	Leader *probe.Leader
	// Leadership hands out the terms in which this replica leads
	// (leader.Cell); the controllers run only inside one.
	Leadership *leader.Leadership
	CEGP       *cegpWork
}

// registerSelectionController runs, in every term of this replica's
// leadership, a fresh selection controller and CiliumEgressGatewayPolicy
// controller (selectionWork.term), and registers the statedb reconcilers that
// write their decisions while a term runs. The informers run whether this
// replica leads or not (warmInputs), so a new term starts from a full
// view at once.
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
	w := &selectionWork{p: p}
	// The decisions reach the API through two statedb reconcilers, one
	// over egress-gateway-selection (EgressGateway status) and one over
	// egress-policy-status (EgressGatewayPolicy status). They retry
	// failures 50 ms doubling to 10 s, as the work queue they replace.
	// They live as long as the process; their operations write for the
	// current term's controller, and nothing while there is none.
	if err := registerStatusReconciler(p.Params, p.Selection,
		(*SelectionRow).Clone, (*SelectionRow).SetStatus, (*SelectionRow).GetStatus,
		leaderOps[*SelectionRow]{cur: &w.gatewayWriter}); err != nil {
		return err
	}
	if err := registerStatusReconciler(p.Params, p.PolicyStatus,
		(*PolicyStatusRow).Clone, (*PolicyStatusRow).SetStatus, (*PolicyStatusRow).GetStatus,
		leaderOps[*PolicyStatusRow]{cur: &w.policyWriter}); err != nil {
		return err
	}
	p.JobGroup.Add(job.OneShot("egress-gateway-informers", func(ctx context.Context, _ cell.Health) error {
		warmInputs(ctx, p.Log, p.Inputs, p.CEGP.policies)
		return nil
	}))
	p.JobGroup.Add(job.OneShot("egress-gateway-selection", func(ctx context.Context, _ cell.Health) error {
		p.Leadership.Run(ctx, "egress-gateway-selection", w.term)
		return nil
	}))
	return nil
}

// selectionWork is what the leader does in each term.
type selectionWork struct {
	p selectionParams
	// The writers of the current term for the status reconcilers.
	gatewayWriter atomic.Pointer[termWriter[*SelectionRow]]
	policyWriter  atomic.Pointer[termWriter[*PolicyStatusRow]]
}

// term is one term of leadership: it starts from empty tables and fresh
// controllers, so every decision comes from the objects as the API has
// them now (a gateway's status.activeNodeName is its previous active
// node), not from an earlier term's memory; and at its end it removes
// every row it published, so nothing of it is written afterwards.
func (w *selectionWork) term(ctx context.Context, _ uint64) error {
	p := w.p
	tables := []statedb.TableMeta{p.Nodes, p.Selection, p.PolicyStatus}
	if p.CEGP.table != nil {
		tables = append(tables, p.CEGP.table)
	}
	clearAll := func(txn statedb.WriteTxn) {
		deleteAll(txn, p.Nodes)
		deleteAll(txn, p.Selection)
		deleteAll(txn, p.PolicyStatus)
		if p.CEGP.table != nil {
			deleteAll(txn, p.CEGP.table)
		}
	}
	// egress-gateway-nodes is initialized once Nodes, agent Pods and
	// Leases have synced in this term; the CEGP controller waits for it.
	txn := p.DB.WriteTxn(tables[0], tables[1:]...)
	clearAll(txn)
	nodesSynced := p.Nodes.RegisterInitializer(txn, "egressha-node-facts")
	txn.Commit()
	defer func() {
		txn := p.DB.WriteTxn(tables[0], tables[1:]...)
		clearAll(txn)
		nodesSynced(txn) // so that the next term can register it again
		txn.Commit()
		p.Metrics.EligibleCandidates.Reset()
		p.Metrics.LivenessSuspect.WithLabelValues("probe").Set(0)
		p.Metrics.LivenessSuspect.WithLabelValues("lease").Set(0)
	}()

	c := NewController(p.Log, p.DB, p.Nodes, p.Selection, p.PolicyStatus, p.CRDs, p.Metrics, p.Clock, p.Inputs)
	c.NodesSynced = nodesSynced
	c.MaxExpiry = p.Config.EgressGatewayHAHeartbeatMaxExpiry
	c.MaxRestartGrace = max(p.Config.EgressGatewayHAMaxRestartGrace, 0)
	c.HoldDown = p.Config.EgressGatewayHAHoldDown
	if p.Config.EgressGatewayHAProbe {
		c.Probes = p.Probes
	}
	w.gatewayWriter.Store(&termWriter[*SelectionRow]{ctx: ctx, ops: c.GatewayStatusOps()})
	w.policyWriter.Store(&termWriter[*PolicyStatusRow]{ctx: ctx, ops: c.PolicyStatusOps()})
	defer w.gatewayWriter.Store(nil)
	defer w.policyWriter.Store(nil)
	var cc *CEGPController
	if p.CEGP.policies != nil {
		cc = p.CEGP.newController()
		p.CEGP.writer.Store(&termWriter[*CEGPRow]{ctx: ctx, ops: cc.AnnotationOps()})
		defer p.CEGP.writer.Store(nil)
	}
	// Probes say "leader" from the moment this term starts until it ends
	// (the controllers return as soon as ctx ends).
	p.Leader.Store(true)
	defer p.Leader.Store(false)

	return withEventRecorder(ctx, p.Clientset, func(recorder record.EventRecorder) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		cegpDone := make(chan error, 1)
		if cc != nil {
			go func() { cegpDone <- cc.Run(ctx, recorder) }()
		} else {
			cegpDone <- nil
		}
		err := c.Run(ctx, recorder)
		cancel()
		return errors.Join(err, <-cegpDone)
	})
}

// warmInputs keeps the informers of the inputs running on every replica,
// leader or not: a resource starts its informer on first use, and a new
// leader must find its view complete.
func warmInputs(ctx context.Context, log *slog.Logger, in Inputs, cegps resource.Resource[*ciliumv2.CiliumEgressGatewayPolicy]) {
	var wg sync.WaitGroup
	warm := func(store func(context.Context) error) {
		wg.Add(1)
		go func() { defer wg.Done(); _ = store(ctx) }()
	}
	warm(func(ctx context.Context) error { _, err := in.Nodes.Store(ctx); return err })
	warm(func(ctx context.Context) error { _, err := in.AgentPods.Store(ctx); return err })
	warm(func(ctx context.Context) error { _, err := in.Leases.Store(ctx); return err })
	warm(func(ctx context.Context) error { _, err := in.Gateways.Store(ctx); return err })
	warm(func(ctx context.Context) error { _, err := in.Policies.Store(ctx); return err })
	if cegps != nil {
		warm(func(ctx context.Context) error { _, err := cegps.Store(ctx); return err })
	}
	wg.Wait()
	if ctx.Err() == nil {
		log.Info("egressha informers synced (on every replica, leader or not)")
	}
}
