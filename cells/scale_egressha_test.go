package cells

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"

	"github.com/cilium/cilium/pkg/datapath/linux/sysctl"
	datapathtables "github.com/cilium/cilium/pkg/datapath/tables"
	"github.com/cilium/cilium/pkg/hive"
	k8sFake "github.com/cilium/cilium/pkg/k8s/client/testutils"
	"github.com/cilium/cilium/pkg/k8s/resource"
	k8sTypes "github.com/cilium/cilium/pkg/k8s/types"
	"github.com/cilium/cilium/pkg/node"
	nodeTypes "github.com/cilium/cilium/pkg/node/types"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/client"
	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/datapath"
	"github.com/egressha/egressha/egressgw/egresspolicy"
	"github.com/egressha/egressha/egressgw/entries"
	"github.com/egressha/egressha/egressgw/localgateways"
	"github.com/egressha/egressha/egressgw/policymap"
	"github.com/egressha/egressha/egressgw/reflectors"
	"github.com/egressha/egressha/egressgw/tables"
	"github.com/egressha/egressha/internal/testcells"
)

// egresshaScale runs egressha's agent path: the cells of cells.Agent that
// turn EgressGateways, EgressGatewayPolicies and CiliumEndpoints into
// egress-policy-entries and reconcile it into the map (reflectors.Cell,
// entries.Cell, datapath.Cell), on a real unpinned policy map. Left out:
// writer.Cell (the Lease) and the pinned-map takeover (the map is
// provided instead).
type egresshaScale struct {
	in  *scaleInput
	log *slog.Logger

	h       *hive.Hive
	db      *statedb.DB
	entries statedb.RWTable[*tables.SourceEntries]
	inputs  []statedb.TableMeta // egress-policies, egress-gateways
	pm      *policymap.BPFPolicyMap
	ceps    *fakeResource[*k8sTypes.CiliumEndpoint]
}

func newEgresshaScaleSide(in *scaleInput) scaleSide {
	return &egresshaScale{in: in, log: scaleLogger()}
}

// entriesStatus queries egress-policy-entries by reconciliation status
// (the table has this index: tables.NewPolicyEntriesTable).
var entriesStatus = reconciler.NewStatusIndex((*tables.SourceEntries).GetStatus)

// start builds and starts the hive with the gateway and the policy in the
// fake API server and an empty map; no CiliumEndpoint is sent yet.
func (s *egresshaScale) start(ctx context.Context, b testing.TB) {
	registerHeartbeatTestScheme()
	s.pm = policymap.NewPolicyMap(scaleMapMaxEntries)
	if err := s.pm.CreateUnpinned(); err != nil {
		b.Fatal(err)
	}
	s.ceps = newFakeResource[*k8sTypes.CiliumEndpoint]()
	s.h = hive.New(
		k8sFake.FakeClientCell(),
		provideCiliumNodeResource(),
		cell.Provide(
			func(fc *k8sFake.FakeClientset) *client.Clientset {
				return client.NewForFake(&fc.CiliumFakeClientset.Fake)
			},
			func() resource.Resource[*k8sTypes.CiliumEndpoint] { return s.ceps },
			func() policymap.PolicyMap { return s.pm },
			func() *node.LocalNodeStore {
				return node.NewTestLocalNodeStore(node.LocalNode{Node: nodeTypes.Node{Name: "bench-node"}})
			},
			func() sysctl.Sysctl { return testcells.NewFakeSysctl() },
			datapathtables.NewDeviceTable,
			statedb.RWTable[*datapathtables.Device].ToTable,
		),
		cell.Invoke(statedb.RegisterTable[*datapathtables.Device]),
		cell.Invoke(func(fc *k8sFake.FakeClientset) error {
			for _, obj := range []k8sruntime.Object{scaleGateway(), s.scalePolicy()} {
				if err := fc.CiliumFakeClientset.Tracker().Add(obj); err != nil {
					return fmt.Errorf("adding %T: %w", obj, err)
				}
			}
			return nil
		}),
		// As in cells.Agent: one module, so entries.Cell sees the
		// RWTable datapath.Cell provide privately.
		cell.Module("egress-gateway-ha-agent", "egressha agent cells under benchmark",
			config.AgentCell,
			reflectors.Cell,
			localgateways.Cell,
			entries.Cell,
			datapath.Cell,
			cell.Invoke(func(db *statedb.DB, entries statedb.RWTable[*tables.SourceEntries],
				pols statedb.Table[*tables.Policy], gws statedb.Table[*tables.EgressGateway]) {
				s.db, s.entries, s.inputs = db, entries, []statedb.TableMeta{pols, gws}
			}),
		),
	)
	// The periodic full resync (maps.Ops.Prune, every minute by default)
	// is measured on its own (steady-resync); it must not run in the
	// middle of another measurement.
	flags := pflag.NewFlagSet("", pflag.ContinueOnError)
	s.h.RegisterFlags(flags)
	if err := flags.Parse([]string{"--egress-gateway-ha-map-resync-interval=24h"}); err != nil {
		b.Fatal(err)
	}
	if err := s.h.Start(s.log, ctx); err != nil {
		b.Fatal(err)
	}
	// The policy and the gateway are known before the endpoints come, as
	// on Cilium's side; the reflectors' buffering is not timed.
	for _, t := range s.inputs {
		_, initialized := t.Initialized(s.db.ReadTxn())
		select {
		case <-ctx.Done():
			b.Fatalf("waiting for %s: %v", t.Name(), ctx.Err())
		case <-initialized:
		}
		if t.NumObjects(s.db.ReadTxn()) != 1 {
			b.Fatalf("%s does not hold the benchmark's object", t.Name())
		}
	}
}

func scaleGateway() *v1alpha1.EgressGateway {
	gw := testcells.BasicGateway("bench-gw", scaleInterface, map[string]string{"egress": "true"}).Object
	gw = gw.DeepCopy()
	gw.Status = v1alpha1.EgressGatewayStatus{
		ActiveNodeName: scaleGatewayNode, ActiveNodeInternalIP: scaleGatewayNodeIP,
		EgressIP: scaleEgressIP, ReadyNodes: 1,
	}
	return gw
}

func (s *egresshaScale) scalePolicy() *v1alpha1.EgressGatewayPolicy {
	var dests []v1alpha1.IPv4CIDR
	for _, d := range scaleDestinations {
		dests = append(dests, v1alpha1.IPv4CIDR(d))
	}
	return &v1alpha1.EgressGatewayPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-policy"},
		Spec: v1alpha1.EgressGatewayPolicySpec{
			EgressGatewayName: "bench-gw",
			DestinationCIDRs:  dests,
			Selectors: []v1alpha1.EgressGatewayPolicySelector{{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{scaleSelectorKey: scaleSelectorValue}},
			}},
		},
	}
}

// sendAll sends every input endpoint and the Sync event.
func (s *egresshaScale) sendAll(ctx context.Context) error {
	for _, cep := range s.in.endpoints {
		if err := s.ceps.upsert(ctx, cep); err != nil {
			return err
		}
	}
	return s.ceps.sync(ctx)
}

// waitProgrammed waits until egress-policy-entries holds want rows (one
// per endpoint), none of them waiting for (or failed in) the reconciler:
// then every entry is in the map (the reconciler sets Done after the map
// write).
func (s *egresshaScale) waitProgrammed(ctx context.Context, want int) error {
	for {
		txn := s.db.ReadTxn()
		_, changed := s.entries.AllWatch(txn)
		if n := s.entries.NumObjects(txn); n == want {
			if e, _, ok := s.entries.Get(txn, entriesStatus.Query(reconciler.StatusKindError)); ok {
				return fmt.Errorf("entries of %s failed: %s", e.Source, e.Status.Error)
			}
			if _, _, ok := s.entries.Get(txn, entriesStatus.Query(reconciler.StatusKindPending)); !ok {
				return nil
			}
		} else if n > want {
			return fmt.Errorf("%d rows in egress-policy-entries, want %d", n, want)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d programmed entries: %w", want, ctx.Err())
		case <-changed:
		}
	}
}

func (s *egresshaScale) fullResync(ctx context.Context, b *testing.B, m *scaleMeter) {
	s.start(ctx, b)
	m.start()
	err := s.programAll(ctx)
	m.stop()
	if err != nil {
		b.Fatal(err)
	}
	if got := s.mapEntries(b); got != scaleEntries(len(s.in.endpoints)) {
		b.Fatalf("%d entries in the map after a full resync, want %d", got, scaleEntries(len(s.in.endpoints)))
	}
	s.close(b)
}

func (s *egresshaScale) programAll(ctx context.Context) error {
	return errors.Join(s.sendAll(ctx), s.waitProgrammed(ctx, len(s.in.endpoints)))
}

func (s *egresshaScale) prepare(ctx context.Context, b testing.TB) {
	s.start(ctx, b)
	if err := s.programAll(ctx); err != nil {
		b.Fatal(err)
	}
}

// steadyResync runs the reconciler's full resync (maps.Ops.Prune over the
// whole table), with operations of its own on the same map: the hive's
// reconciler does not expose a trigger. The map is right, so Prune only
// reads and compares; a write would show as a repair in the metrics.
func (s *egresshaScale) steadyResync(ctx context.Context, b testing.TB) {
	metrics := policymap.NewMetrics()
	ops := policymap.NewOps(s.log, s.pm, metrics)
	txn := s.db.ReadTxn()
	if err := ops.Prune(ctx, txn, s.entries.All(txn)); err != nil {
		b.Fatal(err)
	}
}

func (s *egresshaScale) endpointAdded(ctx context.Context, b testing.TB, i int) {
	ip := scaleEndpointIP(i)
	if err := s.ceps.upsert(ctx, s.in.endpoint(i)); err != nil {
		b.Fatal(err)
	}
	for {
		txn := s.db.ReadTxn()
		row, _, changed, found := s.entries.GetWatch(txn, tables.SourceEntriesByIP(ip))
		if found && row.Status.Kind == reconciler.StatusKindDone && len(row.Targets) == len(scaleDestinations) {
			return
		}
		select {
		case <-ctx.Done():
			b.Fatalf("waiting for the entries of %s: %v", ip, ctx.Err())
		case <-changed:
		}
	}
}

// settle has nothing to wait for: an operation ends when every row it
// wrote is Done, and nothing runs after that.
func (s *egresshaScale) settle(context.Context, testing.TB) {}

func (s *egresshaScale) mapEntries(b testing.TB) int {
	want := egresspolicy.Value{EgressIP: netip.MustParseAddr(scaleEgressIP), GatewayIP: netip.MustParseAddr(scaleGatewayNodeIP)}
	n, wrong := 0, 0
	if err := s.pm.IterateWithCallback(func(_ egresspolicy.Key, v egresspolicy.Value) {
		n++
		if v != want {
			wrong++
		}
	}); err != nil {
		b.Fatal(err)
	}
	if wrong > 0 {
		b.Fatalf("%d of %d map entries do not hold %s", wrong, n, want)
	}
	return n
}

func (s *egresshaScale) close(b testing.TB) {
	if s.h != nil {
		if err := s.h.Stop(s.log, context.Background()); err != nil {
			b.Error(err)
		}
		s.h = nil
	}
	if err := s.pm.Close(); err != nil {
		b.Error(err)
	}
}
