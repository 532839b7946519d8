package connsync

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/spf13/pflag"

	"github.com/cilium/cilium/pkg/bpf"
	k8sClient "github.com/cilium/cilium/pkg/k8s/client"
	"github.com/cilium/cilium/pkg/loadbalancer"
	"github.com/cilium/cilium/pkg/maps/timestamp"
	"github.com/cilium/cilium/pkg/metrics"
	nodeTypes "github.com/cilium/cilium/pkg/node/types"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/probe"
	"github.com/egressha/egressha/egressgw/reflectors"
	"github.com/egressha/egressha/egressgw/tables"
)

// Cell syncs the SNAT mappings of VirtualIPAddress gateways from the node
// that announces the VIP to the gateway's other candidates.
var Cell = cell.Module(
	"egress-gateway-ha-conn-sync",
	"Syncs the SNAT mappings of VIP gateways to their standby nodes",

	cell.Config(DefaultConfig),
	cell.Provide(NewTable, statedb.RWTable[*Row].ToTable),
	metrics.Metric(NewMetrics),
	cell.Invoke(register),
)

// Config holds the flags of the connection sync.
type Config struct {
	// EgressGatewayHAConnSyncInterval is how often the announcing node
	// reads its SNAT map and sends what changed; 0 turns the sync off.
	EgressGatewayHAConnSyncInterval time.Duration
	// EgressGatewayHAConnSyncRefresh is how often it sends every mapping;
	// a standby deletes a mapping not reported for 3 of these.
	EgressGatewayHAConnSyncRefresh time.Duration
	// EgressGatewayHAConnSyncPort is the UDP port of the sync.
	EgressGatewayHAConnSyncPort uint16
}

// DefaultConfig are the defaults.
var DefaultConfig = Config{
	EgressGatewayHAConnSyncInterval: 250 * time.Millisecond,
	EgressGatewayHAConnSyncRefresh:  5 * time.Second,
	EgressGatewayHAConnSyncPort:     Port,
}

// Flags registers the flags.
func (def Config) Flags(flags *pflag.FlagSet) {
	flags.Duration("egress-gateway-ha-conn-sync-interval", def.EgressGatewayHAConnSyncInterval,
		"How often the node announcing a virtual IP sends its new SNAT mappings for it to the gateway's other candidates; 0 turns the sync off")
	flags.Duration("egress-gateway-ha-conn-sync-refresh", def.EgressGatewayHAConnSyncRefresh,
		"How often the node announcing a virtual IP sends all its SNAT mappings for it; a standby removes a mapping not reported for 3 of these")
	flags.Uint16("egress-gateway-ha-conn-sync-port", def.EgressGatewayHAConnSyncPort,
		"UDP port of the connection sync between the candidates of a VirtualIPAddress gateway")
}

// Validate reports values that cannot work.
func (c Config) Validate() error {
	if c.EgressGatewayHAConnSyncInterval == 0 {
		return nil
	}
	if c.EgressGatewayHAConnSyncInterval < 10*time.Millisecond || c.EgressGatewayHAConnSyncInterval > time.Minute {
		return fmt.Errorf("--egress-gateway-ha-conn-sync-interval must be 0 (off) or within 10ms..1m, got %s", c.EgressGatewayHAConnSyncInterval)
	}
	if c.EgressGatewayHAConnSyncRefresh < c.EgressGatewayHAConnSyncInterval || c.EgressGatewayHAConnSyncRefresh > 10*time.Minute {
		return fmt.Errorf("--egress-gateway-ha-conn-sync-refresh (%s) must be at least the interval (%s) and at most 10m",
			c.EgressGatewayHAConnSyncRefresh, c.EgressGatewayHAConnSyncInterval)
	}
	if c.EgressGatewayHAConnSyncPort == 0 {
		return fmt.Errorf("--egress-gateway-ha-conn-sync-port must not be 0")
	}
	return nil
}

type params struct {
	cell.In

	Log           *slog.Logger
	JobGroup      job.Group
	Enabled       config.Enabled
	AgentConfig   config.AgentConfig
	Config        Config
	DaemonConfig  *option.DaemonConfig
	Clientset     k8sClient.Clientset
	DB            *statedb.DB
	Gateways      statedb.Table[*tables.EgressGateway]
	VIPs          statedb.Table[*tables.VirtualIP]
	LocalGateways statedb.Table[*tables.LocalGateway]
	Metrics       *Metrics
	Table         statedb.RWTable[*Row]
	NodeLabels    *reflectors.NodeLabels `optional:"true"`
	// Probes: with the responder on, its key is used (it watches the
	// Secret); otherwise this cell watches the Secret itself.
	Probes *probe.Responder `optional:"true"`
	// LBConfig gives the node-port range, above which the datapath picks
	// egress gateway NAT ports.
	LBConfig loadbalancer.Config `optional:"true"`
}

func register(p params) error {
	if !p.Enabled || p.Config.EgressGatewayHAConnSyncInterval == 0 {
		return nil
	}
	if err := p.Config.Validate(); err != nil {
		return fmt.Errorf("egressha connection sync: %w", err)
	}
	nodePortMax := p.LBConfig.NodePortMax
	if nodePortMax == 0 {
		nodePortMax = loadbalancer.NodePortMaxDefault
	}
	s := &Syncer{
		Log: p.Log, Metrics: p.Metrics,
		Port:     p.Config.EgressGatewayHAConnSyncPort,
		Interval: p.Config.EgressGatewayHAConnSyncInterval,
		Refresh:  p.Config.EgressGatewayHAConnSyncRefresh,
		// NODEPORT_PORT_MIN_NAT..NODEPORT_PORT_MAX_NAT (config.go of
		// Cilium's datapath: NodePortMax+1..65535).
		Range: NATPortRange{Min: uint16(min(int(nodePortMax)+1, 65535)), Max: 65535},
		OpenMap: func() (*SNATMap, error) {
			clock := timestamp.GetClockSourceFromOptions()
			return OpenSNATMap(bpf.MapPath(p.Log, SNATMapName), func() (uint64, error) { return timestamp.GetCTCurTime(clock) })
		},
		View: func() View { return view(p) },
		DB:   p.DB, Table: p.Table,
	}
	p.JobGroup.Add(job.OneShot("egress-gateway-ha-conn-sync", func(ctx context.Context, health cell.Health) error {
		s.Node = nodeTypes.GetName()
		if p.Probes != nil && p.AgentConfig.EgressGatewayHAProbe {
			s.Key = p.Probes.Key
		} else {
			s.Key = &probe.Key{}
			go probe.WatchKey(ctx, p.Log, p.Clientset, p.DaemonConfig.CiliumNamespaceName(), s.Key)
		}
		var running string
		s.Degraded = func(err error) {
			if err != nil {
				health.Degraded("cannot open Cilium's SNAT map: VIP connections will not survive a failover", err)
				return
			}
			health.OK(running)
		}
		err := s.Run(ctx, func(msg string) { running = msg; health.OK(msg) })
		if err != nil {
			health.Degraded("connection sync stopped", err)
		}
		return err
	}))
	return nil
}

// view reads the tables once.
func view(p params) View {
	txn := p.DB.ReadTxn()
	candidate := map[string]bool{}
	for f := range p.LocalGateways.All(txn) {
		candidate[f.Gateway] = f.Candidate
	}
	var matching func(map[string]string) map[string]netip.Addr
	if p.NodeLabels != nil {
		matching = func(sel map[string]string) map[string]netip.Addr {
			return p.NodeLabels.Matching(func(l map[string]string) bool { return v1alpha1.NodeSelectorMatches(sel, l) })
		}
	}
	return BuildView(statedb.Collect(p.Gateways.All(txn)), statedb.Collect(p.VIPs.All(txn)), candidate, nodeTypes.GetName(), matching)
}
