package cells

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/hive/cell"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cilium/cilium/pkg/egressgateway"
	"github.com/cilium/cilium/pkg/identity"
	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	slimv1 "github.com/cilium/cilium/pkg/k8s/slim/k8s/apis/meta/v1"
	k8sTypes "github.com/cilium/cilium/pkg/k8s/types"
	"github.com/cilium/cilium/pkg/labels"
	"github.com/cilium/cilium/pkg/maps/egressmap"
	"github.com/cilium/cilium/pkg/node/addressing"
	nodeTypes "github.com/cilium/cilium/pkg/node/types"
	"github.com/cilium/cilium/pkg/option"
	testidentity "github.com/cilium/cilium/pkg/testutils/identity"

	"github.com/egressha/egressha/internal/testcells"
)

// ciliumScale runs Cilium v1.18's egress gateway manager as the agent
// builds it (egressgateway.NewEgressGatewayManager with
// --enable-egress-gateway), fed as Cilium's own privileged tests feed it:
// resource stand-ins for policies, CiliumNodes and CiliumEndpoints, a mock
// identity allocator, and a private (unpinned) egressmap.PolicyMap4. IPv6
// is off, as in egressha's required configuration, so there is no v6 map.
type ciliumScale struct {
	in  *scaleInput
	log *slog.Logger
	ids *testidentity.MockIdentityAllocator

	lc       *cell.DefaultLifecycle
	pm       *egressmap.PolicyMap4
	mgr      *egressgateway.Manager
	runs     *atomic.Uint64
	policies *fakeResource[*egressgateway.Policy]
	nodes    *fakeResource[*ciliumv2.CiliumNode]
	ceps     *fakeResource[*k8sTypes.CiliumEndpoint]
}

func newCiliumScaleSide(in *scaleInput) scaleSide {
	return &ciliumScale{in: in, log: scaleLogger()}
}

// newScaleIdentities allocates the input's identities in a mock allocator
// (what the agent's identity cache would hold) and checks their numbers
// match the CiliumEndpoints'.
func newScaleIdentities(in *scaleInput) (*testidentity.MockIdentityAllocator, error) {
	ids := testidentity.NewMockIdentityAllocator(nil)
	for _, want := range in.identities {
		id, _, err := ids.AllocateIdentity(context.Background(), labels.NewLabelsFromModel(want.labels), false, identity.InvalidIdentity)
		if err != nil {
			return nil, err
		}
		if int64(id.ID) != want.id {
			return nil, fmt.Errorf("mock allocator gave identity %d to %v, the CiliumEndpoints use %d", id.ID, want.labels, want.id)
		}
	}
	return ids, nil
}

// reconciliationRuns returns the manager's count of finished
// reconciliations. Cilium's own tests wait on this unexported counter
// (waitForReconciliationRun); nothing else tells from outside that a
// reconciliation finished, so it is read through reflection, read-only.
func reconciliationRuns(m *egressgateway.Manager) (*atomic.Uint64, error) {
	f := reflect.ValueOf(m).Elem().FieldByName("reconciliationEventsCount")
	if !f.IsValid() || f.Type() != reflect.TypeFor[atomic.Uint64]() {
		return nil, errors.New("egressgateway.Manager has no reconciliationEventsCount atomic.Uint64 any more: update the benchmark")
	}
	return (*atomic.Uint64)(unsafe.Pointer(f.UnsafeAddr())), nil
}

// ensureBPFFS makes sure a bpffs is mounted somewhere. Cilium's pkg/bpf.Map
// derives a pin path even for an unpinned map, from the first bpffs in
// /proc/self/mountinfo, once per process, and exits the process when there
// is none (Cilium's own tests mount /sys/fs/bpf for that). Nothing is ever
// pinned there. When no bpffs is mounted, one is mounted on a temporary
// directory for the duration of tb; Cilium keeps the path it derived.
func ensureBPFFS(tb testing.TB) {
	tb.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		// "... - <fstype> <source> <options>"
		if _, after, ok := strings.Cut(line, " - "); ok && strings.HasPrefix(after, "bpf ") {
			return
		}
	}
	dir, err := os.MkdirTemp("", "egressha-bench-bpffs-")
	if err != nil {
		tb.Fatal(err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		os.Remove(dir)
		tb.Fatalf("mounting a bpffs for Cilium's map code: %v", err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			tb.Errorf("unmounting %s: %v", dir, err)
		}
		os.Remove(dir)
	})
}

func scaleCiliumNode() *ciliumv2.CiliumNode {
	n := nodeTypes.Node{
		Name:        scaleGatewayNode,
		Labels:      map[string]string{"egress": "true"},
		IPAddresses: []nodeTypes.Address{{Type: addressing.NodeInternalIP, IP: netip.MustParseAddr(scaleGatewayNodeIP).AsSlice()}},
	}
	return n.ToCiliumNode()
}

func scaleCEGP() *egressgateway.Policy {
	var dests []ciliumv2.CIDR
	for _, d := range scaleDestinations {
		dests = append(dests, ciliumv2.CIDR(d))
	}
	return &egressgateway.Policy{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-policy"},
		Spec: ciliumv2.CiliumEgressGatewayPolicySpec{
			Selectors: []ciliumv2.EgressRule{{
				PodSelector: &slimv1.LabelSelector{MatchLabels: map[string]string{scaleSelectorKey: scaleSelectorValue}},
			}},
			DestinationCIDRs: dests,
			EgressGateway: &ciliumv2.EgressGateway{
				NodeSelector: &slimv1.LabelSelector{MatchLabels: map[string]string{"egress": "true"}},
				Interface:    scaleInterface,
			},
		},
	}
}

// start builds and starts the manager and its map, and sends the policy
// and the gateway node with their Sync events; no CiliumEndpoint yet.
func (s *ciliumScale) start(ctx context.Context, b testing.TB) {
	if s.ids == nil {
		ids, err := newScaleIdentities(s.in)
		if err != nil {
			b.Fatal(err)
		}
		s.ids = ids
	}
	ensureBPFFS(b)
	s.lc = cell.NewDefaultLifecycle(nil, 0, time.Minute)
	s.pm = egressmap.CreatePrivatePolicyMap4(s.lc, nil, egressmap.PolicyConfig{EgressGatewayPolicyMapMax: scaleMapMaxEntries})
	s.policies = newFakeResource[*egressgateway.Policy]()
	s.nodes = newFakeResource[*ciliumv2.CiliumNode]()
	s.ceps = newFakeResource[*k8sTypes.CiliumEndpoint]()
	out, err := egressgateway.NewEgressGatewayManager(egressgateway.Params{
		Logger: s.log,
		// Cilium's tests use 1ms; the default (1s) would add its batching
		// delay to every operation.
		Config: egressgateway.Config{EgressGatewayReconciliationTriggerInterval: time.Millisecond},
		DaemonConfig: &option.DaemonConfig{
			EnableEgressGateway:    true,
			IdentityAllocationMode: option.IdentityAllocationModeCRD,
			EnableIPv4:             true,
			EnableIPv4Masquerade:   true,
			EnableBPFMasquerade:    true,
		},
		IdentityAllocator: s.ids,
		PolicyMap4:        s.pm,
		Policies:          s.policies,
		Nodes:             s.nodes,
		Endpoints:         s.ceps,
		Sysctl:            testcells.NewFakeSysctl(),
		Lifecycle:         s.lc,
	})
	if err != nil {
		b.Fatal(err)
	}
	if out.Manager == nil {
		b.Fatal("egressgateway.NewEgressGatewayManager returned no manager")
	}
	s.mgr = out.Manager
	if s.runs, err = reconciliationRuns(s.mgr); err != nil {
		b.Fatal(err)
	}
	if err := s.lc.Start(s.log, ctx); err != nil {
		b.Fatal(err)
	}
	if err := errors.Join(
		s.policies.upsert(ctx, scaleCEGP()), s.policies.sync(ctx),
		s.nodes.upsert(ctx, scaleCiliumNode()), s.nodes.sync(ctx),
	); err != nil {
		b.Fatal(err)
	}
}

// sendAll sends every input endpoint and the Sync event, after which the
// manager runs its first reconciliation.
func (s *ciliumScale) sendAll(ctx context.Context) error {
	for _, cep := range s.in.endpoints {
		if err := s.ceps.upsert(ctx, cep); err != nil {
			return err
		}
	}
	return s.ceps.sync(ctx)
}

// waitRun waits for a reconciliation that finished after the count was
// `after` and, if done is not nil, after which done holds (checked once per
// finished reconciliation, so checking does not compete with the
// reconciliation for the CPU).
func (s *ciliumScale) waitRun(ctx context.Context, after uint64, done func() bool) error {
	for {
		if err := waitUntil(ctx, "a reconciliation of Cilium's egress gateway manager", func() bool {
			return s.runs.Load() > after
		}); err != nil {
			return err
		}
		if done == nil || done() {
			return nil
		}
		after = s.runs.Load()
	}
}

// settle waits until the manager has no reconciliation running or pending.
// Its trigger can run one more full reconciliation after the one a
// benchmark waited for (events that arrived while the trigger function
// waited for the manager's lock fold into another run: at start-up Cilium
// reconciles in full twice); that run must not overlap the next timed
// operation, nor be mistaken for its result. A run holds the manager's
// lock, and a pending trigger starts within the 1ms trigger interval, so
// the manager is idle once its count stays the same across a 10ms pause
// and a pass through its lock.
func (s *ciliumScale) settle(ctx context.Context, tb testing.TB) {
	if err := s.settleErr(ctx); err != nil {
		tb.Fatal(err)
	}
}

func (s *ciliumScale) settleErr(ctx context.Context) error {
	for {
		before := s.runs.Load()
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for Cilium's egress gateway manager to settle: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
		s.mgr.Lock()
		after := s.runs.Load()
		s.mgr.Unlock()
		if after == before {
			return nil
		}
	}
}

// fullResync times the start-up reconciliation up to the end of the first
// one, which writes every entry; the second, verifying one Cilium's
// trigger usually runs next (see settle) is not counted.
func (s *ciliumScale) fullResync(ctx context.Context, b *testing.B, m *scaleMeter) {
	s.start(ctx, b)
	if n := s.runs.Load(); n != 0 {
		b.Fatalf("%d reconciliations before the endpoints synced", n)
	}
	m.start()
	err := s.programAll(ctx)
	m.stop()
	if err != nil {
		b.Fatal(err)
	}
	if got := s.mapEntries(b); got != scaleEntries(len(s.in.endpoints)) {
		b.Fatalf("%d entries in the map after a full resync, want %d", got, scaleEntries(len(s.in.endpoints)))
	}
	s.settle(ctx, b)
	s.close(b)
}

func (s *ciliumScale) programAll(ctx context.Context) error {
	return errors.Join(s.sendAll(ctx), s.waitRun(ctx, 0, nil))
}

func (s *ciliumScale) prepare(ctx context.Context, b testing.TB) {
	s.start(ctx, b)
	if err := errors.Join(s.programAll(ctx), s.settleErr(ctx)); err != nil {
		b.Fatal(err)
	}
	if got := s.mapEntries(b); got != scaleEntries(len(s.in.endpoints)) {
		b.Fatalf("%d entries in the map, want %d", got, scaleEntries(len(s.in.endpoints)))
	}
}

// steadyResync sends the gateway's CiliumNode again, unchanged: Cilium
// then recomputes every policy's endpoints and gateway and compares the
// whole map, as on any CiliumNode or CiliumEndpoint event.
func (s *ciliumScale) steadyResync(ctx context.Context, b testing.TB) {
	before := s.runs.Load()
	if err := errors.Join(s.nodes.upsert(ctx, scaleCiliumNode()), s.waitRun(ctx, before, nil)); err != nil {
		b.Fatal(err)
	}
}

func (s *ciliumScale) endpointAdded(ctx context.Context, b testing.TB, i int) {
	before := s.runs.Load()
	ip := scaleEndpointIP(i)
	programmed := func() bool {
		for _, d := range s.in.dests {
			if _, err := s.pm.Lookup(ip, d); err != nil {
				return false
			}
		}
		return true
	}
	if err := errors.Join(s.ceps.upsert(ctx, s.in.endpoint(i)), s.waitRun(ctx, before, programmed)); err != nil {
		b.Fatal(err)
	}

}

// mapEntries counts the entries; each must send to the gateway node with
// no egress IP, what Cilium writes on every node but the gateway.
func (s *ciliumScale) mapEntries(b testing.TB) int {
	gateway := netip.MustParseAddr(scaleGatewayNodeIP)
	n, wrong := 0, 0
	if err := s.pm.IterateWithCallback(func(_ *egressmap.EgressPolicyKey4, v *egressmap.EgressPolicyVal4) {
		n++
		if !v.Match(egressgateway.EgressIPNotFoundIPv4, gateway) {
			wrong++
		}
	}); err != nil {
		b.Fatal(err)
	}
	if wrong > 0 {
		b.Fatalf("%d of %d map entries do not send to %s", wrong, n, gateway)
	}
	return n
}

func (s *ciliumScale) close(b testing.TB) {
	if s.lc != nil {
		if err := s.lc.Stop(s.log, context.Background()); err != nil {
			b.Error(err)
		}
		s.lc = nil
	}
}
