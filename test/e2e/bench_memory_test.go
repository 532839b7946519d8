package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/egressha/egressha/test/benchreport/results"
	"github.com/egressha/egressha/test/lab/cluster"
	"github.com/egressha/egressha/test/lab/demo"
)

// TestBenchAgentMemory (issue 18; `make bench`, EGRESSHA_BENCH=1) measures
// the whole cilium-agent's RSS on every lab node with N CiliumEndpoints
// (EGRESSHA_BENCH_MEMORY_ENDPOINTS, default 10,000) programmed, in both
// lab modes in the same run:
//
//   - stock: Cilium's own egress gateway and a CiliumEgressGatewayPolicy
//     selecting the endpoints (gateway lab-egress-a by a node label);
//   - egressha: the EgressGateway of the spec in basic mode and an
//     EgressGatewayPolicy selecting the same endpoints, then the same
//     gateway switched to VIP mode.
//
// The endpoints are CiliumEndpoint objects of pods that do not exist, as
// a large cluster's other nodes would publish them: IPs 198.19.100.1 on
// (pod CIDRs of no lab node), node IP 198.18.0.200 (no lab node, so no
// agent takes them for its own), over a few hundred CiliumIdentity
// objects (Cilium's manager resolves an endpoint's labels through its
// identity; egressha reads them from the CiliumEndpoint). An owner
// reference to a ConfigMap keeps the operator's CiliumEndpoint garbage
// collector off them (it only collects endpoints owned by missing Pods).
// Each policy has one destination (0.0.0.0/0): N map entries per node,
// within the default map size (16,384).
//
// Per node and variant: VmRSS of the cilium-agent process with the policy
// and gateway in place and none of the endpoints ("before"), and once the
// node's pinned cilium_egress_gw_policy_v4 holds an entry for every
// endpoint through the expected gateway ("after"); each reading is the
// median of 5 samples 2 s apart, taken after the map is complete and 20 s
// of settling. The report shows before, after, the delta and egressha's
// delta ÷ stock's. An agent that restarted between the readings fails the
// case (its RSS would say nothing).
func TestBenchAgentMemory(t *testing.T) {
	benchEnabled(t)
	n := envInt(t, "EGRESSHA_BENCH_MEMORY_ENDPOINTS", 10000)
	if n > memBenchMaxEndpoints {
		t.Fatalf("EGRESSHA_BENCH_MEMORY_ENDPOINTS=%d: at most %d (the map's default size and the IP range)", n, memBenchMaxEndpoints)
	}
	res := results.Case{
		Name: "agent-memory", Title: fmt.Sprintf("whole-agent RSS with %d CiliumEndpoints programmed, stock vs egressha", n),
		Kind: results.KindAgentMemory, Mode: "stock+egressha", Command: benchCommand(t), Started: time.Now(),
		Settings: map[string]string{
			"endpoints":  fmt.Sprintf("%d CiliumEndpoints over %d CiliumIdentities, IPs from %s, node %s (no lab node)", n, memBenchIdentities, memBenchIP(0), memBenchNodeIP),
			"policy":     "one per mode selecting app=" + memBenchApp + ", destination 0.0.0.0/0, gateway lab-egress-a: " + strconv.Itoa(n) + " entries per node",
			"stock":      "CiliumEgressGatewayPolicy, egressGateway.nodeSelector " + stockGatewayLabel + "=true (on lab-egress-a), interface eth1",
			"egressha":   "the spec's EgressGateway (basic mode, eth1), then the same gateway in VIP mode (" + demo.VIP.String() + "), EgressGatewayPolicy",
			"reading":    "VmRSS of the cilium-agent process, median of 5 samples 2s apart, 20s after every node's map held every entry",
			"before":     "policy and gateway applied, none of the endpoints",
			"lab agents": "every node's agent (lab-egress-a, lab-egress-b, lab-worker)",
		},
	}
	t.Run("stock", func(t *testing.T) { res.Memory = append(res.Memory, memBenchStock(t, n)...) })
	t.Run("egressha", func(t *testing.T) { res.Memory = append(res.Memory, memBenchEgressHA(t, n)...) })
	if len(res.Memory) == 0 {
		t.Fatal("no memory measured")
	}
	for _, m := range res.Memory {
		t.Logf("%-14s %-13s before %7.1f MiB after %7.1f MiB delta %+7.1f MiB (%d entries)",
			m.Variant, m.Node, m.BeforeMiB, m.AfterMiB, m.AfterMiB-m.BeforeMiB, m.Entries)
	}
	res.Finished = time.Now()
	if dir := os.Getenv("EGRESSHA_RESULTS_DIR"); dir != "" {
		if err := results.Write(dir, res); err != nil {
			t.Errorf("writing results: %v", err)
		}
	}
}

const (
	memBenchNS           = "bench-memory"
	memBenchApp          = "bench-memory"
	memBenchIdentities   = 300
	memBenchFirstID      = 60000 // CRD identities are 256..65535; a taken ID is skipped
	memBenchNodeIP       = "198.18.0.200"
	memBenchOwner        = "bench-memory-owner"
	memBenchMaxEndpoints = 40 * 250
	memBenchWorkers      = 16
	memBenchWait         = 10 * time.Minute
	memBenchSettle       = 20 * time.Second
)

// memBenchIP is the IP of endpoint i: 198.19.100.1, ... 250 per /24.
func memBenchIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 19, byte(100 + i/250), byte(1 + i%250)})
}

var (
	ciliumEndpointsGVR   = schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumendpoints"}
	ciliumIdentitiesGVR  = schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumidentities"}
	memBenchPolicyEgress = `
apiVersion: network.deckhouse.io/v1alpha1
kind: EgressGatewayPolicy
metadata:
  name: bench-memory
spec:
  egressGatewayName: ` + demo.GatewayName + `
  destinationCIDRs: [0.0.0.0/0]
  selectors:
  - podSelector:
      matchLabels:
        app: ` + memBenchApp + `
`
	memBenchPolicyStock = `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: bench-memory
spec:
  selectors:
  - podSelector:
      matchLabels:
        app: ` + memBenchApp + `
  destinationCIDRs:
  - 0.0.0.0/0
  egressGateway:
    nodeSelector:
      matchLabels:
        ` + stockGatewayLabel + `: "true"
    interface: eth1
`
)

// memEnv is one lab mode of the case.
type memEnv struct {
	cfg   cluster.Config
	cs    kubernetes.Interface
	dyn   dynamic.Interface
	nodes []cluster.Node
	a     cluster.Node
	pids  map[string]int
}

func newMemEnv(t *testing.T, mode cluster.Mode) *memEnv {
	t.Helper()
	cfg := startLab(t, mode)
	rc, err := cfg.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	// Thousands of creates: the client's default 5 QPS would take half an hour.
	rc.QPS, rc.Burst = 500, 1000
	e := &memEnv{cfg: cfg, cs: kubernetes.NewForConfigOrDie(rc), dyn: dynamic.NewForConfigOrDie(rc),
		nodes: cfg.Nodes, a: mustNode(t, cfg, "lab-egress-a"), pids: map[string]int{}}
	for _, nd := range e.nodes {
		pid, err := cluster.AgentPID(cfg, nd)
		if err != nil {
			t.Fatal(err)
		}
		e.pids[nd.Name] = pid
	}
	return e
}

func memBenchStock(t *testing.T, n int) []results.AgentMemory {
	e := newMemEnv(t, cluster.ModeStock)
	yes := "true"
	setNodeLabel(t, e.cs, e.a.Name, stockGatewayLabel, &yes)
	kubectlApply(t, e.cfg, memBenchPolicyStock)
	before := e.settledRSS(t)
	e.createEndpoints(t, n)
	entries := e.waitEntries(t, n, func(_, gw netip.Addr) bool { return gw == e.a.ClusterIP })
	after := e.settledRSS(t)
	return e.rows("stock", before, after, entries)
}

func memBenchEgressHA(t *testing.T, n int) []results.AgentMemory {
	e := newMemEnv(t, cluster.ModeEgressHA)
	kubectlApply(t, e.cfg, demo.BasicGateway)
	gw := gatewayWatcher{dyn: e.dyn, name: demo.GatewayName}
	gw.waitActive(t, e.a.Name, 2*time.Minute)
	kubectlApply(t, e.cfg, memBenchPolicyEgress)
	before := e.settledRSS(t)
	e.createEndpoints(t, n)
	entries := e.waitEntries(t, n, func(_, g netip.Addr) bool { return g == e.a.ClusterIP })
	afterBasic := e.settledRSS(t)
	out := e.rows("egressha-basic", before, afterBasic, entries)

	// The same gateway in VIP mode: every entry's value changes.
	kubectlApply(t, e.cfg, demo.VIPGateway)
	gw.waitActive(t, e.a.Name, 2*time.Minute)
	entries = e.waitEntries(t, n, func(egress, g netip.Addr) bool { return g == e.a.ClusterIP && egress == demo.VIP })
	afterVIP := e.settledRSS(t)
	return append(out, e.rows("egressha-vip", before, afterVIP, entries)...)
}

func (e *memEnv) rows(variant string, before, after map[string]int64, entries map[string]int) []results.AgentMemory {
	var out []results.AgentMemory
	for _, nd := range e.nodes {
		out = append(out, results.AgentMemory{Node: nd.Name, Variant: variant,
			BeforeMiB: float64(before[nd.Name]) / (1 << 20), AfterMiB: float64(after[nd.Name]) / (1 << 20), Entries: entries[nd.Name]})
	}
	return out
}

// settledRSS waits memBenchSettle, then reads every agent's VmRSS 5
// times 2 s apart and keeps the median. It fails the test if an agent is
// not the process it was when the lab came up.
func (e *memEnv) settledRSS(t *testing.T) map[string]int64 {
	t.Helper()
	time.Sleep(memBenchSettle)
	samples := map[string][]int64{}
	for i := range 5 {
		if i > 0 {
			time.Sleep(2 * time.Second)
		}
		for _, nd := range e.nodes {
			pid, err := cluster.AgentPID(e.cfg, nd)
			if err != nil {
				t.Fatal(err)
			}
			if pid != e.pids[nd.Name] {
				t.Fatalf("the cilium-agent of %s restarted (pid %d, was %d): its RSS says nothing about the endpoints", nd.Name, pid, e.pids[nd.Name])
			}
			rss, err := cluster.ProcessRSS(pid)
			if err != nil {
				t.Fatal(err)
			}
			samples[nd.Name] = append(samples[nd.Name], rss)
		}
	}
	out := map[string]int64{}
	for node, s := range samples {
		slices.Sort(s)
		out[node] = s[len(s)/2]
	}
	return out
}

// createEndpoints creates the namespace, the owner ConfigMap, the
// identities and n CiliumEndpoints.
func (e *memEnv) createEndpoints(t *testing.T, n int) {
	t.Helper()
	ctx := context.Background()
	if err := cluster.EnsureNamespace(ctx, e.cs, memBenchNS); err != nil {
		t.Fatal(err)
	}
	owner, err := e.cs.CoreV1().ConfigMaps(memBenchNS).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: memBenchOwner},
		Data:       map[string]string{"purpose": "owner of the CiliumEndpoints of TestBenchAgentMemory (keeps Cilium's endpoint GC off them)"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ids := e.createIdentities(t)
	start := time.Now()
	work := make(chan int)
	errs := make(chan error, memBenchWorkers)
	var wg sync.WaitGroup
	for range memBenchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if _, err := e.dyn.Resource(ciliumEndpointsGVR).Namespace(memBenchNS).Create(ctx, memBenchEndpoint(i, ids[i%len(ids)], owner), metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("creating CiliumEndpoint %d: %w", i, err)
					return
				}
			}
		}()
	}
	for i := range n {
		select {
		case work <- i:
		case err := <-errs:
			close(work)
			wg.Wait()
			t.Fatal(err)
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	t.Logf("created %d CiliumEndpoints over %d identities in %s", n, len(ids), time.Since(start).Round(time.Millisecond))
}

// memBenchIdentity is one CiliumIdentity of the case.
type memBenchIdentity struct {
	id     int64
	labels []string // the CiliumEndpoint's status.identity.labels
}

func (e *memEnv) createIdentities(t *testing.T) []memBenchIdentity {
	t.Helper()
	ctx := context.Background()
	var out []memBenchIdentity
	for id := int64(memBenchFirstID); len(out) < memBenchIdentities; id++ {
		if id > 65535 {
			t.Fatalf("no room for %d identities from %d", memBenchIdentities, memBenchFirstID)
		}
		k := len(out)
		sec := map[string]any{
			"k8s:app":                                 memBenchApp,
			"k8s:bench-identity":                      strconv.Itoa(k),
			"k8s:io.kubernetes.pod.namespace":         memBenchNS,
			"k8s:io.cilium.k8s.policy.cluster":        "default",
			"k8s:io.cilium.k8s.policy.serviceaccount": "default",
		}
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cilium.io/v2", "kind": "CiliumIdentity",
			"metadata": map[string]any{"name": strconv.FormatInt(id, 10), "labels": map[string]any{
				"app": memBenchApp, "bench-identity": strconv.Itoa(k), "io.kubernetes.pod.namespace": memBenchNS,
			}},
			"security-labels": sec,
		}}
		_, err := e.dyn.Resource(ciliumIdentitiesGVR).Create(ctx, obj, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			continue // an agent allocated it: take the next
		}
		if err != nil {
			t.Fatalf("creating CiliumIdentity %d: %v", id, err)
		}
		var model []string
		for key, v := range sec {
			model = append(model, key+"="+v.(string))
		}
		slices.Sort(model)
		out = append(out, memBenchIdentity{id: id, labels: model})
	}
	return out
}

func memBenchEndpoint(i int, id memBenchIdentity, owner *corev1.ConfigMap) *unstructured.Unstructured {
	labels := make([]any, len(id.labels))
	for j, l := range id.labels {
		labels[j] = l
	}
	name := fmt.Sprintf("bench-memory-%05d", i)
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cilium.io/v2", "kind": "CiliumEndpoint",
		"metadata": map[string]any{
			"name": name, "namespace": memBenchNS,
			"ownerReferences": []any{map[string]any{
				"apiVersion": "v1", "kind": "ConfigMap", "name": owner.Name, "uid": string(owner.UID),
			}},
		},
		"status": map[string]any{
			"id":       int64(1 + i),
			"state":    "ready",
			"identity": map[string]any{"id": id.id, "labels": labels},
			"networking": map[string]any{
				"node":       memBenchNodeIP,
				"addressing": []any{map[string]any{"ipv4": memBenchIP(i).String()}},
			},
		},
	}}
}

// waitEntries waits until the pinned egress map of every node holds an
// entry for each of the n endpoints whose value ok accepts, and returns
// the count per node. The wait is a liveness bound, not a measurement.
func (e *memEnv) waitEntries(t *testing.T, n int, ok func(egressIP, gatewayIP netip.Addr) bool) map[string]int {
	t.Helper()
	first, last := memBenchIP(0), memBenchIP(n-1)
	deadline := time.Now().Add(memBenchWait)
	counts := map[string]int{}
	for {
		done := true
		for _, nd := range e.nodes {
			c, err := countEgressEntries(e.cfg, nd.Name, func(src netip.Addr, egress, gw netip.Addr) bool {
				return src.Compare(first) >= 0 && src.Compare(last) <= 0 && ok(egress, gw)
			})
			if err != nil {
				t.Fatal(err)
			}
			counts[nd.Name] = c
			done = done && c == n
		}
		if done {
			return counts
		}
		if time.Now().After(deadline) {
			t.Fatalf("the egress maps never held the %d entries within %s: %v", n, memBenchWait, counts)
		}
		time.Sleep(time.Second)
	}
}

// countEgressEntries counts the entries of node's pinned egress map that
// match.
func countEgressEntries(cfg cluster.Config, node string, match func(src, egressIP, gatewayIP netip.Addr) bool) (int, error) {
	path := cfg.BPFFSPath(node, "tc/globals/cilium_egress_gw_policy_v4")
	fd, err := bpfObjGet(path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return 0, nil // not created yet
		}
		return 0, fmt.Errorf("opening %s: %w", path, err)
	}
	defer syscall.Close(fd)
	n := 0
	err = dumpEgressMap(fd, func(src netip.Addr, _ netip.Prefix, egress, gw netip.Addr) {
		if match(src, egress, gw) {
			n++
		}
	})
	return n, err
}
