package cells

// Agent scale benchmarks (issue 8, item 4): egressha's agent path against
// Cilium v1.18's own egress gateway manager, on the same input, in the same
// process, each writing a real private LPM trie with the spec of
// cilium_egress_gw_policy_v4 (max entries raised to scaleMapMaxEntries).
//
// Input (scaleInput): N CiliumEndpoints (default 100,000; EGRESSHA_SCALE_ENDPOINTS
// overrides, -short uses 10,000) over 1,000 security identities (50
// namespaces × 20 apps, every one labelled role=egress-client), one IPv4 each,
// and ONE policy with FOUR destination CIDRs selecting role=egress-client,
// i.e. every endpoint: N × 4 map entries. The gateway is a remote node, so
// neither side derives an egress IP from a local interface.
//
//   - egressha: the agent's real cells (reflectors.Cell, entries.Cell,
//     datapath.Cell, as in cells.Agent) in a hive: EgressGateway and
//     EgressGatewayPolicy come from the fake API server through our
//     reflectors, CiliumEndpoints from a resource.Resource stand-in (the
//     agent shares Cilium's informer-backed one), the map is a real unpinned
//     maps.BPFPolicyMap reconciled by maps.RegisterReconciler + maps.Ops.
//   - cilium: egressgateway.NewEgressGatewayManager (the constructor the agent
//     calls) with the same kind of CiliumEndpoint stand-in, a CiliumNode
//     for the gateway, a CiliumEgressGatewayPolicy with the same CIDRs, a
//     mock identity allocator holding the same identities, and
//     egressmap.CreatePrivatePolicyMap4. Its reconciliation trigger interval
//     is 1ms (as in Cilium's own tests) instead of the default 1s, so its
//     batching delay is not counted against it.
//
// Operations, for each side (sub-benchmarks <side>/<op>):
//
//   - full-resync: fresh agent state and an empty map; from the first
//     CiliumEndpoint event to every entry in the map. Setup (building and
//     starting the hive or manager, policy and gateway) is not timed.
//   - steady-resync: the periodic full comparison when the map is already
//     right. egressha: maps.Ops.Prune over the whole table, what the
//     reconciler runs every --egress-gateway-ha-map-resync-interval.
//     Cilium: the reconciliation an unchanged CiliumNode update triggers
//     (Cilium reconciles in full on every CiliumEndpoint or CiliumNode event).
//   - endpoint-added: one CiliumEndpoint more, from its event to its four
//     entries in the map.
//
// Each side reports ns/op (wall), cpu-ns/op (user+sys of the whole process,
// so including the bpf syscalls and GC), B/op and allocs/op (whole process),
// and entries/s (entries written, or for steady-resync checked, per second).
// ratio/<op> reports egressha / Cilium for each of those (below 1: egressha
// is cheaper); it reads the results of the two side benchmarks of the same
// run and is skipped when a -bench filter left one out.
//
// Privileged: the maps are real BPF maps, so as root every benchmark runs
// and fails if something is missing; not root, they fail unless
// EGRESSHA_SKIP_PRIVILEGED=1 asks to skip them (as the privileged tests).

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/rlimit"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/k8s/resource"
	slimv1 "github.com/cilium/cilium/pkg/k8s/slim/k8s/apis/meta/v1"
	k8sTypes "github.com/cilium/cilium/pkg/k8s/types"

	"github.com/egressha/egressha/internal/privileged"
)

const (
	// scaleDefaultEndpoints is the size of issue 8 item 4.
	scaleDefaultEndpoints = 100_000
	// scaleShortEndpoints is the size under -short.
	scaleShortEndpoints = 10_000
	// scaleIdentities is the number of distinct label sets (identities).
	scaleIdentities = 1000
	// scaleMapMaxEntries holds 100k × 4 entries and the endpoints the
	// endpoint-added benchmark adds (a power of two, like Cilium's sizes).
	scaleMapMaxEntries = 1 << 19
	// scaleMaxEndpoints leaves room in the map for 8,192 added endpoints.
	scaleMaxEndpoints = (scaleMapMaxEntries - 8192*4) / 4
	// scaleTimeout bounds the wait for one operation.
	scaleTimeout = 5 * time.Minute

	scaleGatewayNode   = "bench-gateway"
	scaleGatewayNodeIP = "192.168.255.1"
	scaleEgressIP      = "203.0.113.1"
	scaleInterface     = "eth1"
	scaleSelectorKey   = "role"
	scaleSelectorValue = "egress-client"
)

// scaleDestinations are the four destination CIDRs of the one policy.
var scaleDestinations = []string{"198.51.100.0/24", "192.0.2.0/24", "100.64.0.0/10", "172.16.0.0/12"}

// scaleEndpoints is the benchmark size: EGRESSHA_SCALE_ENDPOINTS, else
// 10,000 under -short, else 100,000.
func scaleEndpoints(tb testing.TB) int {
	if s := os.Getenv("EGRESSHA_SCALE_ENDPOINTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > scaleMaxEndpoints {
			tb.Fatalf("EGRESSHA_SCALE_ENDPOINTS=%q: want a positive number up to %d", s, scaleMaxEndpoints)
		}
		return n
	}
	if testing.Short() {
		return scaleShortEndpoints
	}
	return scaleDefaultEndpoints
}

// requirePrivilegedBench applies privileged.Require and lifts the memlock
// limit (older kernels charge maps to it).
func requirePrivilegedBench(tb testing.TB) {
	tb.Helper()
	privileged.Require(tb, "creates BPF maps")
	if err := rlimit.RemoveMemlock(); err != nil {
		tb.Fatalf("removing the memlock limit: %v", err)
	}
}

// scaleLogger logs warnings and errors of both sides to stderr: a
// benchmark that hits errors (a full map, a rejected policy) shows why.
func scaleLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// scaleIdentity is one label set of the input.
type scaleIdentity struct {
	id     int64
	labels []string // Cilium's model ("k8s:app=app-3")
}

// scaleInput is the input both sides get.
type scaleInput struct {
	identities []scaleIdentity
	endpoints  []*k8sTypes.CiliumEndpoint
	dests      []netip.Prefix
}

// newScaleInput builds n CiliumEndpoints. Identity IDs start at 1000 as
// the mock identity allocator Cilium's side uses numbers them; the
// Cilium side checks it allocated the same numbers.
func newScaleInput(n int) *scaleInput {
	in := &scaleInput{}
	for i := range scaleIdentities {
		ns := fmt.Sprintf("ns-%02d", i/20)
		in.identities = append(in.identities, scaleIdentity{
			id: int64(1000 + i),
			labels: []string{
				"k8s:app=app-" + strconv.Itoa(i%20),
				"k8s:" + scaleSelectorKey + "=" + scaleSelectorValue,
				"k8s:io.cilium.k8s.policy.cluster=default",
				"k8s:io.cilium.k8s.policy.serviceaccount=default",
				"k8s:io.kubernetes.pod.namespace=" + ns,
			},
		})
	}
	for _, d := range scaleDestinations {
		in.dests = append(in.dests, netip.MustParsePrefix(d))
	}
	in.endpoints = make([]*k8sTypes.CiliumEndpoint, n)
	for i := range n {
		in.endpoints[i] = in.endpoint(i)
	}
	return in
}

// endpoint is the i-th CiliumEndpoint: IP 10.<i>, identity i % 1000; the
// endpoint-added benchmark uses indexes from len(endpoints) on.
func (in *scaleInput) endpoint(i int) *k8sTypes.CiliumEndpoint {
	id := in.identities[i%scaleIdentities]
	ns := fmt.Sprintf("ns-%02d", (i%scaleIdentities)/20)
	return &k8sTypes.CiliumEndpoint{
		ObjectMeta: slimv1.ObjectMeta{
			Name:      "pod-" + strconv.Itoa(i),
			Namespace: ns,
			UID:       types.UID("uid-" + strconv.Itoa(i)),
		},
		Identity: &ciliumv2.EndpointIdentity{ID: id.id, Labels: id.labels},
		Networking: &ciliumv2.EndpointNetworking{
			Addressing: ciliumv2.AddressPairList{{IPV4: scaleEndpointIP(i).String()}},
			NodeIP:     fmt.Sprintf("192.168.%d.%d", 1+i/250%250, 1+i%250),
		},
	}
}

func scaleEndpointIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// scaleEntries is the number of map entries of n endpoints.
func scaleEntries(n int) int { return n * len(scaleDestinations) }

// fakeResource stands in for a resource.Resource (Cilium's informer-backed
// CiliumEndpoint resource, and the CiliumNode and policy resources of
// Cilium's manager): Events returns one channel the benchmark feeds. As the
// real resource, it sends an event without waiting for the Done of the
// previous one (Done only matters for retrying the same key); a Done with
// an error fails the benchmark.
type fakeResource[T k8sruntime.Object] struct {
	ch   chan resource.Event[T]
	errs chan error
}

func newFakeResource[T k8sruntime.Object]() *fakeResource[T] {
	return &fakeResource[T]{ch: make(chan resource.Event[T]), errs: make(chan error, 1)}
}

func (f *fakeResource[T]) done(err error) {
	if err != nil {
		select {
		case f.errs <- err:
		default:
		}
	}
}

// upsert sends an Upsert of obj.
func (f *fakeResource[T]) upsert(ctx context.Context, obj T) error {
	return f.send(ctx, resource.Event[T]{Kind: resource.Upsert, Key: resource.NewKey(obj), Object: obj, Done: f.done})
}

// sync sends the Sync event.
func (f *fakeResource[T]) sync(ctx context.Context) error {
	return f.send(ctx, resource.Event[T]{Kind: resource.Sync, Done: f.done})
}

func (f *fakeResource[T]) send(ctx context.Context, ev resource.Event[T]) error {
	select {
	case f.ch <- ev:
	case err := <-f.errs:
		return fmt.Errorf("an event failed: %w", err)
	case <-ctx.Done():
		return fmt.Errorf("sending a %s event: %w", ev.Kind, ctx.Err())
	}
	select {
	case err := <-f.errs:
		return fmt.Errorf("an event failed: %w", err)
	default:
		return nil
	}
}

// Observe implements resource.Resource; neither side uses it.
func (f *fakeResource[T]) Observe(_ context.Context, _ func(resource.Event[T]), complete func(error)) {
	complete(fmt.Errorf("fakeResource: Observe is not implemented"))
}

// Events implements resource.Resource. Options (Cilium's manager passes a
// rate limiter for retries) do not apply: no event is retried.
func (f *fakeResource[T]) Events(context.Context, ...resource.EventsOpt) <-chan resource.Event[T] {
	return f.ch
}

// Store implements resource.Resource; neither side uses it.
func (f *fakeResource[T]) Store(context.Context) (resource.Store[T], error) {
	return nil, fmt.Errorf("fakeResource: Store is not implemented")
}

// --- measuring ---

// scaleResult is what one side measured for one operation, per op.
type scaleResult struct {
	ns, cpuNs, allocs, bytes, entriesPerSec float64
}

// scaleMeter accumulates wall time, process CPU time, allocations and
// bytes over the timed regions of a benchmark, alongside b's own timer.
type scaleMeter struct {
	b                    *testing.B
	wall, cpu            time.Duration
	mallocs, bytes       uint64
	startWall            time.Time
	startCPU             time.Duration
	startMallocs, startB uint64
}

func newScaleMeter(b *testing.B) *scaleMeter {
	b.StopTimer()
	b.ResetTimer()
	return &scaleMeter{b: b}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (m *scaleMeter) start() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.startMallocs, m.startB = ms.Mallocs, ms.TotalAlloc
	m.startCPU = processCPU()
	m.startWall = time.Now()
	m.b.StartTimer()
}

func (m *scaleMeter) stop() {
	m.b.StopTimer()
	m.wall += time.Since(m.startWall)
	m.cpu += processCPU() - m.startCPU
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.mallocs += ms.Mallocs - m.startMallocs
	m.bytes += ms.TotalAlloc - m.startB
}

// report adds cpu-ns/op and entries/s to b's line and records the result
// for the ratio benchmarks. entriesPerOp is what one op writes or checks.
func (m *scaleMeter) report(side, op string, entriesPerOp int) {
	n := float64(m.b.N)
	r := scaleResult{
		ns:            float64(m.wall.Nanoseconds()) / n,
		cpuNs:         float64(m.cpu.Nanoseconds()) / n,
		allocs:        float64(m.mallocs) / n,
		bytes:         float64(m.bytes) / n,
		entriesPerSec: float64(entriesPerOp) * n / m.wall.Seconds(),
	}
	m.b.ReportMetric(r.cpuNs, "cpu-ns/op")
	m.b.ReportMetric(r.entriesPerSec, "entries/s")
	scaleResults.set(side, op, r)
}

// scaleResults are the results of the side benchmarks of this run.
var scaleResults = &scaleResultSet{m: map[string]scaleResult{}}

type scaleResultSet struct {
	mu sync.Mutex
	m  map[string]scaleResult
}

func (s *scaleResultSet) set(side, op string, r scaleResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[side+"/"+op] = r
}

func (s *scaleResultSet) get(side, op string) (scaleResult, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.m[side+"/"+op]
	return r, ok
}

// --- the benchmark ---

// scaleSide is one implementation under test.
type scaleSide interface {
	// fullResync builds fresh state, times (with m) feeding every
	// endpoint until every entry is in the map, checks the map and tears
	// the state down.
	fullResync(ctx context.Context, b *testing.B, m *scaleMeter)
	// start builds and starts the state: policy and gateway known, map
	// empty, no endpoint yet. programAll then sends every endpoint and
	// waits until every entry is in the map.
	start(ctx context.Context, tb testing.TB)
	programAll(ctx context.Context) error
	// prepare is start and programAll (untimed), for steadyResync and
	// endpointAdded; close tears the state down.
	prepare(ctx context.Context, tb testing.TB)
	steadyResync(ctx context.Context, tb testing.TB)
	// endpointAdded adds input endpoint i and waits for its entries.
	endpointAdded(ctx context.Context, tb testing.TB, i int)
	// settle waits (untimed) until the work an operation set off is over,
	// so none of it runs into the next timed operation.
	settle(ctx context.Context, tb testing.TB)
	// mapEntries counts the entries in the map (untimed checks); an entry
	// with another value than the side must write fails tb.
	mapEntries(tb testing.TB) int
	close(tb testing.TB)
}

const (
	scaleSideEgressha = "egressha"
	scaleSideCilium   = "cilium"
)

var scaleOps = []string{"full-resync", "steady-resync", "endpoint-added"}

// BenchmarkAgentScale compares egressha's agent path with Cilium v1.18's
// egress gateway manager: full resync, steady-state resync and one endpoint
// added, for 100,000 endpoints × 4 destination CIDRs (see the file comment).
func BenchmarkAgentScale(b *testing.B) {
	requirePrivilegedBench(b)
	n := scaleEndpoints(b)
	in := newScaleInput(n)
	sides := []struct {
		name string
		new  func(*scaleInput) scaleSide
	}{
		{scaleSideEgressha, newEgresshaScaleSide},
		{scaleSideCilium, newCiliumScaleSide},
	}
	for _, s := range sides {
		b.Run(s.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*scaleTimeout)
			defer cancel()
			b.Run("full-resync", func(b *testing.B) {
				m := newScaleMeter(b)
				for range b.N {
					s.new(in).fullResync(ctx, b, m)
				}
				m.report(s.name, "full-resync", scaleEntries(n))
			})
			var side scaleSide // prepared on first use, shared by the next two
			prepared := func(b *testing.B) scaleSide {
				if side == nil {
					side = s.new(in)
					side.prepare(ctx, b)
				}
				return side
			}
			defer func() {
				if side != nil {
					side.close(b)
				}
			}()
			b.Run("steady-resync", func(b *testing.B) {
				side := prepared(b)
				m := newScaleMeter(b)
				for range b.N {
					m.start()
					side.steadyResync(ctx, b)
					m.stop()
					side.settle(ctx, b)
				}
				if got := side.mapEntries(b); got != scaleEntries(n) {
					b.Fatalf("%d entries in the map after a steady resync, want %d", got, scaleEntries(n))
				}
				m.report(s.name, "steady-resync", scaleEntries(n))
			})
			next := n
			b.Run("endpoint-added", func(b *testing.B) {
				side := prepared(b)
				if scaleEntries(next+b.N) > scaleMapMaxEntries {
					b.Fatalf("b.N=%d endpoints more do not fit the map (%d entries); use a smaller -benchtime", b.N, scaleMapMaxEntries)
				}
				m := newScaleMeter(b)
				for range b.N {
					m.start()
					side.endpointAdded(ctx, b, next)
					m.stop()
					side.settle(ctx, b)
					next++
				}
				if got := side.mapEntries(b); got != scaleEntries(next) {
					b.Fatalf("%d entries in the map after adding endpoints, want %d", got, scaleEntries(next))
				}
				m.report(s.name, "endpoint-added", len(scaleDestinations))
			})
		})
	}
	b.Run("ratio", func(b *testing.B) {
		for _, op := range scaleOps {
			b.Run(op, func(b *testing.B) {
				ours, ok1 := scaleResults.get(scaleSideEgressha, op)
				theirs, ok2 := scaleResults.get(scaleSideCilium, op)
				if !ok1 || !ok2 {
					b.Skip("the egressha and cilium benchmarks of " + op + " did not both run; a ratio needs both in the same run")
				}
				for range b.N {
				}
				// The ratios are the result; this sub-benchmark's own time
				// means nothing.
				b.ReportMetric(0, "ns/op")
				b.ReportMetric(ours.ns/theirs.ns, "ns-ratio")
				b.ReportMetric(ours.cpuNs/theirs.cpuNs, "cpu-ratio")
				b.ReportMetric(ours.allocs/theirs.allocs, "allocs-ratio")
				b.ReportMetric(ours.bytes/theirs.bytes, "B-ratio")
			})
		}
	})
}

// waitUntil polls cond (for state that offers no watch channel) every
// 100µs until it holds or ctx ends: fine enough for operations of
// milliseconds, rare enough not to steal the CPU from them.
func waitUntil(ctx context.Context, what string, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(100 * time.Microsecond):
		}
	}
	return nil
}
