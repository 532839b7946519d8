package probe

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"

	k8sClient "github.com/cilium/cilium/pkg/k8s/client"
	"github.com/cilium/cilium/pkg/metrics"
	nodeTypes "github.com/cilium/cilium/pkg/node/types"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/egressgw/config"
)

// OperatorTableCell provides egress-probe-sessions, the Leader flag and the
// metrics; the leader's selection controller reads the table. It goes
// with the operator's cells (tests run it without a prober: the
// table stays empty and every node is judged by its Lease).
var OperatorTableCell = cell.Group(
	cell.Provide(
		NewSessionsTable,
		statedb.RWTable[*SessionRow].ToTable,
		NewLeader,
	),
	metrics.Metric(NewMetrics),
)

// OperatorCell runs the prober on every operator replica, leader or not,
// so that a new leader starts with a warm view. It must hang off the
// operator's outer lifecycle.
var OperatorCell = cell.Module(
	"egress-gateway-ha-prober",
	"Liveness probing of the candidate gateway nodes",

	cell.Invoke(registerProber),
)

type proberParams struct {
	cell.In

	Log          *slog.Logger
	JobGroup     job.Group
	Enabled      config.OperatorEnabled
	Config       config.OperatorConfig
	Clientset    k8sClient.Clientset
	DaemonConfig *option.DaemonConfig
	DB           *statedb.DB
	Table        statedb.RWTable[*SessionRow]
	Leader       *Leader
	Metrics      *Metrics
}

func registerProber(p proberParams) error {
	if !bool(p.Enabled) || !p.Config.EgressGatewayHAProbe {
		return nil
	}
	t := Timing{Interval: p.Config.EgressGatewayHAProbeInterval, Multiplier: p.Config.EgressGatewayHAProbeDetectMultiplier}
	if err := t.Validate(); err != nil {
		return fmt.Errorf("--egress-gateway-ha-probe-interval / --egress-gateway-ha-probe-detect-multiplier: %w", err)
	}
	if p.Config.EgressGatewayHAProbePort == 0 {
		return fmt.Errorf("--egress-gateway-ha-probe-port must not be 0")
	}
	p.JobGroup.Add(job.OneShot("egress-probe-prober", func(ctx context.Context, health cell.Health) error {
		ns := p.DaemonConfig.CiliumNamespaceName()
		key := &Key{}
		go watchKey(ctx, p.Log, p.Clientset, ns, true, key)
		tg := &targets{nodes: map[string]*target{}, changed: make(chan struct{}, 1)}
		watchTargets(ctx, p.Clientset, ns, tg)
		pr := &Prober{
			Log: p.Log, DB: p.DB, Table: p.Table, Metrics: p.Metrics, Leader: p.Leader, Key: key,
			Timing: t, Port: p.Config.EgressGatewayHAProbePort, Self: replicaName(),
			Targets: tg.snapshot, Changed: tg.changed, Kernel: true,
		}
		return pr.Run(ctx, health)
	}))
	return nil
}

// AgentCell provides the Responder and runs it.
var AgentCell = cell.Module(
	"egress-gateway-ha-responder",
	"Answers the operators liveness probes and fences VIP gateways",

	cell.Provide(newResponder),
	metrics.Metric(NewMetrics),
	cell.Invoke(registerResponder),
)

func newResponder(cfg config.AgentConfig) *Responder {
	return &Responder{
		Node:         nodeTypes.GetName(),
		Port:         cfg.EgressGatewayHAProbePort,
		Fence:        cfg.EgressGatewayHAProbeFence,
		PeerInterval: DefaultTiming.Interval,
		Key:          &Key{},
	}
}

type responderParams struct {
	cell.In

	Log          *slog.Logger
	JobGroup     job.Group
	Enabled      config.Enabled
	Config       config.AgentConfig
	Clientset    k8sClient.Clientset
	DaemonConfig *option.DaemonConfig
	Responder    *Responder
	Metrics      *Metrics
}

func registerResponder(p responderParams) {
	if !bool(p.Enabled) || !p.Config.EgressGatewayHAProbe {
		return
	}
	r := p.Responder
	r.Metrics, r.Log = p.Metrics, p.Log
	r.Node = nodeTypes.GetName()
	r.Init()
	p.JobGroup.Add(job.OneShot("egress-probe-responder", func(ctx context.Context, health cell.Health) error {
		go watchKey(ctx, r.Log, p.Clientset, p.DaemonConfig.CiliumNamespaceName(), false, r.Key)
		return r.Run(ctx, health)
	}))
}
