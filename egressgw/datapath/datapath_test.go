package datapath

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/cilium/cilium/pkg/datapath/linux/sysctl"
	datapathtables "github.com/cilium/cilium/pkg/datapath/tables"
	"github.com/cilium/cilium/pkg/datapath/tunnel"
	"github.com/cilium/cilium/pkg/hive"
	k8sFake "github.com/cilium/cilium/pkg/k8s/client/testutils"
	"github.com/cilium/cilium/pkg/maps/egressmap"
	"github.com/cilium/cilium/pkg/node"
	nodeTypes "github.com/cilium/cilium/pkg/node/types"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/egresspolicy"
	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/localgateways"
	"github.com/egressha/egressha/egressgw/policymap"
	"github.com/egressha/egressha/egressgw/policymap/mapstest"
	"github.com/egressha/egressha/egressgw/reflectors"
	"github.com/egressha/egressha/egressgw/tables"
	"github.com/egressha/egressha/internal/testcells"
)

func TestRPFilterInterfaces(t *testing.T) {
	labels := map[string]string{"egress": "true", "zone": "a"}
	gws := []*tables.EgressGateway{
		testcells.BasicGateway("a", "eth1", map[string]string{"egress": "true"}),
		testcells.BasicGateway("b", "eth1", map[string]string{"zone": "a"}),                         // same interface twice
		testcells.BasicGateway("c", "eth2", map[string]string{"zone": "b"}),                         // not a candidate
		testcells.BasicGateway("d", "eth3", map[string]string{"egress": "true"}),                    // interface missing
		testcells.BasicGateway("e", "eth0", map[string]string{"zone": "a"}),                         // candidate
		testcells.VIPGateway("f", []v1alpha1.InterfaceName{"eth4"}, map[string]string{"zone": "a"}), // VIP mode
	}
	devices := []heartbeat.Device{{Name: "eth0"}, {Name: "eth1"}, {Name: "eth2"}, {Name: "eth4"}}
	got := rpFilterInterfaces(heartbeat.LocalFacts(labels, tables.Objects(gws), devices))
	if want := []string{"eth0", "eth1"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// stubLifecycle records hooks without running them: nothing here may
// open the host's pinned map.
type stubLifecycle struct{ hooks []cell.HookInterface }

func (l *stubLifecycle) Append(h cell.HookInterface)               { l.hooks = append(l.hooks, h) }
func (l *stubLifecycle) Start(*slog.Logger, context.Context) error { return nil }
func (l *stubLifecycle) Stop(*slog.Logger, context.Context) error  { return nil }
func (l *stubLifecycle) PrintHooks(io.Writer)                      {}

func TestDatapathTakeover(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*takeoverParams, *config.AgentConfig, *k8sFake.FakeClientset)
		owns   bool
	}{
		{"enabled", func(*takeoverParams, *config.AgentConfig, *k8sFake.FakeClientset) {}, true},
		{"disabled", func(_ *takeoverParams, c *config.AgentConfig, _ *k8sFake.FakeClientset) {
			c.EgressGatewayHAEnabled = false
		}, false},
		{"cilium egress gateway on", func(p *takeoverParams, _ *config.AgentConfig, _ *k8sFake.FakeClientset) {
			p.DaemonConfig.EnableEgressGateway = true
		}, false},
		{"no bpf masquerade", func(p *takeoverParams, _ *config.AgentConfig, _ *k8sFake.FakeClientset) {
			p.DaemonConfig.EnableBPFMasquerade = false
		}, false},
		{"no kubernetes", func(_ *takeoverParams, _ *config.AgentConfig, fc *k8sFake.FakeClientset) { fc.Disable() }, false},
		{"invalid heartbeat flags", func(_ *takeoverParams, c *config.AgentConfig, _ *k8sFake.FakeClientset) {
			c.EgressGatewayHAHeartbeatExpiry = c.EgressGatewayHAHeartbeatRenewInterval
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := hivetest.Logger(t)
			fc, cs := k8sFake.NewFakeClientset(log)
			dc, k := testcells.GoodDaemonConfig()
			lc := &stubLifecycle{}
			cfg := config.DefaultAgentConfig
			p := takeoverParams{
				Log: log, Lifecycle: lc, DaemonConfig: dc, KPRConfig: k,
				PolicyConfig: egressmap.PolicyConfig{EgressGatewayPolicyMapMax: 1234},
			}
			tc.mutate(&p, &cfg, fc)
			// The Enabled value the agent computes from the flags and the
			// clientset (config.AgentCell).
			p.Enabled = config.NewEnabled(cfg, cs)
			out := newDatapathTakeover(p)
			if !tc.owns {
				if out.NodeDefines != nil || out.PolicyMap.Map != nil || out.PolicyMap.BpfMap != nil || len(lc.hooks) != 0 {
					t.Fatalf("stock Cilium must be unchanged, got %+v and %d hooks", out, len(lc.hooks))
				}
				return
			}
			if !maps.Equal(out.NodeDefines, map[string]string{"ENABLE_EGRESS_GATEWAY": "1"}) {
				t.Fatalf("node defines %v", out.NodeDefines)
			}
			if !reflect.DeepEqual(out.EnablerOut, tunnel.NewEnabler(true)) {
				t.Fatal("no tunnel enabler")
			}
			if out.PolicyMap.Map == nil || out.PolicyMap.BpfMap == nil || out.PolicyMap.Map.MaxEntries() != 1234 {
				t.Fatalf("policy map %+v", out.PolicyMap)
			}
			if len(lc.hooks) != 1 {
				t.Fatalf("want the map opened in one start hook, got %d hooks", len(lc.hooks))
			}
		})
	}
}

// datapathHive runs Cell with a fake policy map and sysctl, the
// gateways and devices tables filled by the test, and a stand-in for the
// producer of egress-policy-entries.
type datapathHive struct {
	db       *statedb.DB
	entries  statedb.RWTable[*tables.SourceEntries]
	gateways statedb.RWTable[*tables.EgressGateway]
	devices  statedb.RWTable[*datapathtables.Device]
	initDone func(statedb.WriteTxn)
	pm       *mapstest.Map
	sysctl   *testcells.FakeSysctl
}

func newDatapathHive(t *testing.T, nodeLabels map[string]string) *datapathHive {
	d := &datapathHive{pm: mapstest.New(1 << 14), sysctl: testcells.NewFakeSysctl()}
	h := hive.New(
		cell.Provide(
			func() policymap.PolicyMap { return d.pm },
			func() *node.LocalNodeStore {
				return node.NewTestLocalNodeStore(node.LocalNode{Node: nodeTypes.Node{Name: "node1", Labels: nodeLabels}})
			},
			func() config.Enabled { return true },
			func() sysctl.Sysctl { return d.sysctl },
			datapathtables.NewDeviceTable,
			statedb.RWTable[*datapathtables.Device].ToTable,
			tables.NewEgressGatewaysTable,
			statedb.RWTable[*tables.EgressGateway].ToTable,
		),
		cell.Invoke(statedb.RegisterTable[*datapathtables.Device]),
		cell.Module("egressha-datapath-test", "datapath cells under test",
			reflectors.LocalNodeCell,
			localgateways.Cell,
			Cell,
			cell.Invoke(func(db *statedb.DB, entries statedb.RWTable[*tables.SourceEntries],
				gws statedb.RWTable[*tables.EgressGateway], devs statedb.RWTable[*datapathtables.Device]) {
				d.db, d.entries, d.gateways, d.devices = db, entries, gws, devs
				wtxn := db.WriteTxn(entries)
				d.initDone = entries.RegisterInitializer(wtxn, "test-producer")
				wtxn.Commit()
			}),
		),
	)
	log := hivetest.Logger(t)
	if err := h.Start(log, context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Stop(log, context.Background()); err != nil {
			t.Error(err)
		}
	})
	return d
}

// TestDatapathCellsReconcile checks the wiring: the producer's rows reach
// the policy map once its initializer is done, and not before.
func TestDatapathCellsReconcile(t *testing.T) {
	d := newDatapathHive(t, nil)
	k := egresspolicy.Key{Source: netip.MustParseAddr("10.244.1.10"), Dest: netip.MustParsePrefix("0.0.0.0/0")}
	v := egresspolicy.Value{EgressIP: netip.MustParseAddr("203.0.113.1"), GatewayIP: netip.MustParseAddr("172.18.0.2")}
	wtxn := d.db.WriteTxn(d.entries)
	d.entries.Insert(wtxn, &tables.SourceEntries{Source: k.Source,
		Targets: []egresspolicy.Target{{Dest: k.Dest, Value: v, Policy: "p"}}, Status: reconciler.StatusPending()})
	wtxn.Commit()
	time.Sleep(200 * time.Millisecond)
	if len(d.pm.Snapshot()) != 0 {
		t.Fatal("the map was written before egress-policy-entries was initialized")
	}
	wtxn = d.db.WriteTxn(d.entries)
	d.initDone(wtxn)
	wtxn.Commit()
	testcells.Eventually(t, "the entry in the map", func() bool { return maps.Equal(d.pm.Snapshot(), map[egresspolicy.Key]egresspolicy.Value{k: v}) })
}

// TestDatapathCellsRPFilter: rp_filter=2 on the existing interfaces of the
// basic-mode gateways the node is a candidate of, as they appear.
func TestDatapathCellsRPFilter(t *testing.T) {
	d := newDatapathHive(t, map[string]string{"egress": "true"})
	wtxn := d.db.WriteTxn(d.gateways, d.devices)
	d.gateways.Insert(wtxn, testcells.BasicGateway("a", "eth1", map[string]string{"egress": "true"}))
	d.gateways.Insert(wtxn, testcells.BasicGateway("b", "eth2", map[string]string{"egress": "false"}))
	d.gateways.Insert(wtxn, testcells.BasicGateway("c", "eth3", map[string]string{"egress": "true"}))
	d.devices.Insert(wtxn, &datapathtables.Device{Index: 2, Name: "eth1"})
	d.devices.Insert(wtxn, &datapathtables.Device{Index: 3, Name: "eth2"})
	wtxn.Commit()
	testcells.Eventually(t, "rp_filter on eth1", func() bool {
		return maps.Equal(d.sysctl.Snapshot(), map[string]string{"net.ipv4.conf.eth1.rp_filter": "2"})
	})
	// eth3 appears later.
	wtxn = d.db.WriteTxn(d.devices)
	d.devices.Insert(wtxn, &datapathtables.Device{Index: 4, Name: "eth3"})
	wtxn.Commit()
	testcells.Eventually(t, "rp_filter on eth3", func() bool {
		return d.sysctl.Snapshot()["net.ipv4.conf.eth3.rp_filter"] == "2"
	})
}
