package datapath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"github.com/spf13/pflag"

	"github.com/cilium/cilium/pkg/bpf"
	"github.com/cilium/cilium/pkg/datapath/linux/config/defines"
	"github.com/cilium/cilium/pkg/datapath/linux/sysctl"
	datapathtables "github.com/cilium/cilium/pkg/datapath/tables"
	"github.com/cilium/cilium/pkg/datapath/tunnel"
	"github.com/cilium/cilium/pkg/kpr"
	"github.com/cilium/cilium/pkg/maps/egressmap"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/egresspolicy"
	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/policymap"
	"github.com/egressha/egressha/egressgw/tables"
)

// Config holds the agent flags of the map reconciler.
type Config struct {
	// EgressGatewayHAMapResyncInterval is how often the whole policy map is
	// compared with egress-policy-entries and drift repaired.
	EgressGatewayHAMapResyncInterval time.Duration
}

// DefaultConfig are the defaults of the datapath flags.
var DefaultConfig = Config{
	EgressGatewayHAMapResyncInterval: time.Minute,
}

// Flags registers the datapath flags.
func (def Config) Flags(flags *pflag.FlagSet) {
	flags.Duration("egress-gateway-ha-map-resync-interval", def.EgressGatewayHAMapResyncInterval,
		"How often egressha compares the whole cilium_egress_gw_policy_v4 map with its desired entries "+
			"and repairs drift (entries changed or added behind its back)")
}

type takeoverParams struct {
	cell.In

	Log          *slog.Logger
	Lifecycle    cell.Lifecycle
	Enabled      config.Enabled
	DaemonConfig *option.DaemonConfig
	KPRConfig    kpr.KPRConfig
	// PolicyConfig is registered by Cilium's egressmap.Cell (flag
	// egress-gateway-policy-map-max), which also writes the same value
	// as the EGRESS_POLICY_MAP_SIZE node define the C map is sized with.
	PolicyConfig egressmap.PolicyConfig
}

type takeoverOut struct {
	cell.Out

	defines.NodeOut
	tunnel.EnablerOut
	// PolicyMap is nil when egressha does not own the datapath. Through
	// bpf.MapOut it also joins the "bpf-maps" group, so the loader's
	// constructor, and so its start, comes after our start hook.
	PolicyMap bpf.MapOut[policymap.PolicyMap]
}

// ownsDatapath reports whether egressha takes over the egress gateway
// datapath on this agent: enabled, with Kubernetes, and on a configuration
// the start check accepts. Otherwise nothing is provided and stock Cilium
// is unchanged; on a configuration the start check refuses, nothing is
// created on the node before the agent stops.
func ownsDatapath(enabled config.Enabled, dc *option.DaemonConfig, kprCfg kpr.KPRConfig) bool {
	return bool(enabled) && CheckPreconditions(dc, kprCfg) == nil
}

func newDatapathTakeover(p takeoverParams) takeoverOut {
	if !ownsDatapath(p.Enabled, p.DaemonConfig, p.KPRConfig) {
		return takeoverOut{}
	}
	m := policymap.NewPolicyMap(p.PolicyConfig.EgressGatewayPolicyMapMax)
	p.Lifecycle.Append(cell.Hook{
		OnStart: func(cell.HookContext) error {
			if err := m.OpenOrCreate(p.Log); err != nil {
				return err
			}
			// Entries from before a restart stay in the map and in use;
			// the reconciler changes them only once the desired state is
			// complete.
			n := 0
			if err := m.IterateWithCallback(func(egresspolicy.Key, egresspolicy.Value) { n++ }); err != nil {
				return err
			}
			p.Log.Info("egressha owns the egress gateway datapath: opened "+policymap.PolicyMapName,
				"maxEntries", m.MaxEntries(), "entriesFound", n)
			return nil
		},
		OnStop: func(cell.HookContext) error { return m.Close() },
	})
	return takeoverOut{
		NodeOut:    defines.NodeOut{NodeDefines: defines.Map{"ENABLE_EGRESS_GATEWAY": "1"}},
		EnablerOut: tunnel.NewEnabler(true),
		PolicyMap:  bpf.NewMapOut[policymap.PolicyMap](m),
	}
}

type policyMapReconcilerParams struct {
	cell.In

	reconciler.Params
	Config  Config
	Table   statedb.RWTable[*tables.SourceEntries]
	Map     policymap.PolicyMap
	Metrics *policymap.Metrics
}

// registerPolicyMapReconciler reconciles egress-policy-entries into the
// policy map. It starts once the table is initialized (see
// policymap.RegisterReconciler): whoever fills the table must register its
// initializer on it while being constructed and mark it done once every
// input synced and the complete desired state is committed.
func registerPolicyMapReconciler(p policyMapReconcilerParams) error {
	if p.Map == nil {
		return nil
	}
	cfg := policymap.DefaultReconcilerConfig
	cfg.ResyncInterval = p.Config.EgressGatewayHAMapResyncInterval
	if _, err := policymap.RegisterReconciler(p.Params, p.Table, policymap.NewOps(p.Log, p.Map, p.Metrics), cfg); err != nil {
		return fmt.Errorf("--egress-gateway-ha-map-resync-interval: %w", err)
	}
	return nil
}

// rpFilterRetryInterval is how soon a failed rp_filter write is retried
// when nothing else changes.
const rpFilterRetryInterval = 10 * time.Second

type rpFilterParams struct {
	cell.In

	Log      *slog.Logger
	JobGroup job.Group
	DB       *statedb.DB
	// LocalGateways say which gateways this node is a candidate of, and
	// whether their interface exists.
	LocalGateways statedb.Table[*tables.LocalGateway]
	Sysctl        sysctl.Sysctl
	Map           policymap.PolicyMap
}

// registerRPFilter relaxes rp_filter to 2 (loose) on the egress interface
// of every basic-mode EgressGateway this node is a candidate of, as
// Cilium's manager does for the gateway it selected: replies to SNATed
// traffic arrive on that interface for pod addresses that are not routed
// through it. Candidates get it ahead of time so a failover needs no
// sysctl write. The setting is never reverted, as in Cilium.
func registerRPFilter(p rpFilterParams) {
	if p.Map == nil {
		return
	}
	r := &rpFilter{p: p, applied: map[string]bool{}}
	p.JobGroup.Add(job.OneShot("egress-gateway-ha-rp-filter", r.run))
}

type rpFilter struct {
	p       rpFilterParams
	applied map[string]bool
}

func (r *rpFilter) run(ctx context.Context, health cell.Health) error {
	for {
		txn := r.p.DB.ReadTxn()
		facts, factsChanged := r.p.LocalGateways.AllWatch(txn)
		var retry <-chan time.Time
		want := rpFilterInterfaces(tables.LocalFacts(statedb.Collect(facts)))
		if err := r.apply(want); err != nil {
			health.Degraded("Cannot relax rp_filter on egress interfaces; "+
				"replies forwarded through this gateway may be dropped", err)
			retry = time.After(rpFilterRetryInterval)
		} else if len(want) == 0 {
			health.OK("No egress interface of a candidate gateway on this node")
		} else {
			health.OK("rp_filter=2 on " + strings.Join(want, ", "))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-factsChanged:
		case <-retry:
		}
	}
}

// apply sets rp_filter=2 on the interfaces not done yet. The setting is
// read back: it is applied with IgnoreErr so that Cilium's sysctl
// reconciler does not report errors forever once an interface is deleted.
func (r *rpFilter) apply(ifaces []string) error {
	var errs []error
	for _, iface := range ifaces {
		if r.applied[iface] {
			continue
		}
		name := []string{"net", "ipv4", "conf", iface, "rp_filter"}
		err := r.p.Sysctl.ApplySettings([]datapathtables.Sysctl{{
			Name: name, Val: "2", IgnoreErr: true,
			Warn: "Cannot relax rp_filter on an egress gateway interface",
		}})
		if err == nil {
			var got string
			if got, err = r.p.Sysctl.Read(name); err == nil && got != "2" {
				err = fmt.Errorf("net.ipv4.conf.%s.rp_filter is %s after writing 2", iface, got)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", iface, err))
			continue
		}
		r.applied[iface] = true
		r.p.Log.Info("Relaxed rp_filter on an egress gateway interface", "interface", iface, "rp_filter", 2)
	}
	return errors.Join(errs...)
}

// rpFilterInterfaces returns, sorted and unique, the interfaces of the
// basic-mode (PrimaryIPFromEgressGatewayNodeInterface) gateways this node
// is a candidate of, among the devices that exist.
func rpFilterInterfaces(facts []heartbeat.LocalFact) []string {
	var out []string
	for _, f := range facts {
		if f.Mode != v1alpha1.SourceIPModePrimaryIP || !f.Candidate || f.Interface == "" ||
			f.Basic.Reason == heartbeat.ReasonInterfaceMissing {
			continue
		}
		out = append(out, f.Interface)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
