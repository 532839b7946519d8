package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/egressha/egressha/test/lab/cluster"
	"github.com/egressha/egressha/test/lab/demo"
	"github.com/egressha/egressha/test/lab/probe"
)

// isVIP matches the replies the echo server saw coming from the VIP.
func isVIP(s probe.Sample) bool { return s.Source == demo.VIP.String() }

// announced waits until the gateway's active node is want, its Ready
// condition says the VIP is announced, the echo server's neighbour entry
// for the VIP is want's MAC and the prober got an answer from the VIP after
// that.
func (w gatewayWatcher) announced(t *testing.T, want, mac string, p *probe.Prober, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		u, err := w.dyn.Resource(egressGatewaysGVR).Get(context.Background(), w.name, metav1.GetOptions{})
		if err == nil {
			active, _, _ := unstructured.NestedString(u.Object, "status", "activeNodeName")
			reason := readyReason(u)
			neigh := cluster.EchoNeighbour(demo.VIP)
			last = fmt.Sprintf("active=%s ready=%s neighbour=%s", active, reason, neigh)
			if active == want && reason == "ElectionSucceededAndVirtualIPAnnounced" && neigh == mac {
				at := time.Now()
				if p == nil {
					return at
				}
				if _, ok := p.WaitFor(at, time.Until(deadline), isVIP); ok {
					return at
				}
				last += "; no reply from the VIP since"
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("VIP never announced by %s (%s) within %s: %s", want, mac, timeout, last)
	return time.Time{}
}

func readyReason(u *unstructured.Unstructured) string {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" {
			r, _ := m["reason"].(string)
			return r
		}
	}
	return ""
}

// fencingTrials is how many rounds of the four forced handovers (each
// round moves the VIP away and back: 8 handovers) the fencing check runs:
// EGRESSHA_FENCING_TRIALS, default 7 (56 handovers).
func fencingTrials(t *testing.T) int { return envInt(t, "EGRESSHA_FENCING_TRIALS", 7) }

// TestVirtualIPMode runs the spec's VirtualIPAddress gateway in the lab:
// the echo server sees the VIP before and after a crash of the active node
// and after its recovery; then, over many forced handovers (crash,
// unlabel, cordon, a cut of the active node's cluster link with its
// public link up, and back) and an API-only cut that must move nothing,
// an ARP capture on the public network must never show two MACs answering
// for the VIP at once.
func TestVirtualIPMode(t *testing.T) {
	cfg := startLab(t, cluster.ModeEgressHA)
	ctx := context.Background()
	rc, err := cfg.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(rc)
	cs := kubernetes.NewForConfigOrDie(rc)
	a, b, worker := mustNode(t, cfg, "lab-egress-a"), mustNode(t, cfg, "lab-egress-b"), mustNode(t, cfg, "lab-worker")
	macA, macB := publicMAC(t, a), publicMAC(t, b)
	if _, err := cluster.AddPod(ctx, cfg, worker.Name, "my-ns", "backend", map[string]string{"app": "backend"}); err != nil {
		t.Fatal(err)
	}
	kubectlApply(t, cfg, demo.VIPGateway)
	kubectlApply(t, cfg, demo.Policy)
	gw := gatewayWatcher{dyn: dyn, name: "my-egressgw"}

	took := eventuallySource(t, cfg, "my-ns", "backend", demo.VIP.String(), time.Minute)
	t.Logf("VIP policy in effect after %s: backend leaves as %s", took.Round(time.Millisecond), demo.VIP)
	gw.announced(t, a.Name, macA, nil, 30*time.Second)
	backend, err := cluster.GetPod(cfg, "my-ns", "backend")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{worker.Name, a.Name, b.Name} {
		want := egressEntry{SourceIP: backend.IP, DestCIDR: "0.0.0.0/0", EgressIP: demo.VIP.String(), GatewayIP: a.ClusterIP.String()}
		if !slices.Contains(egressList(t, cfg, n), want) {
			t.Errorf("%s: cilium-dbg bpf egress list lacks %+v: %+v", n, want, egressList(t, cfg, n))
		}
	}

	watch, err := cluster.WatchARP(demo.VIP, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	watchStopped := false
	defer func() {
		if !watchStopped {
			watch.Stop()
		}
	}()
	p := probe.Start(cfg, "my-ns", "backend")
	defer p.Stop()

	// Crash of the active node and its recovery: the echo server keeps
	// seeing the VIP.
	start := time.Now()
	if err := cluster.Crash(cfg, a); err != nil {
		t.Fatal(err)
	}
	gw.announced(t, b.Name, macB, p, time.Minute)
	crashGap := p.LongestGap(start, isVIP)
	t.Logf("crash of %s: the VIP moved to %s; traffic gap %s", a.Name, b.Name, crashGap.Round(time.Millisecond))
	start = time.Now()
	if err := cluster.Recover(cfg, a); err != nil {
		t.Fatal(err)
	}
	gw.announced(t, a.Name, macA, p, 2*time.Minute)
	failbackGap := p.LongestGap(start, isVIP)
	t.Logf("recovery of %s: the VIP failed back; traffic gap %s", a.Name, failbackGap.Round(time.Millisecond))
	if got, err := sourceSeen(ctx, cfg, "my-ns", "backend"); err != nil || got != demo.VIP.String() {
		t.Fatalf("after recovery the echo server saw %q (error %v), want the VIP %s", got, err, demo.VIP)
	}

	// Forced handovers: away from lab-egress-a and back, four ways.
	handovers := 2 // the crash and the failback above
	gaps := map[string][]time.Duration{"crash": {crashGap}, "crash-failback": {failbackGap}}
	move := func(kind string, away, back func()) {
		start := time.Now()
		away()
		gw.announced(t, b.Name, macB, p, 2*time.Minute)
		gaps[kind] = append(gaps[kind], p.LongestGap(start, isVIP))
		start = time.Now()
		back()
		gw.announced(t, a.Name, macA, p, 2*time.Minute)
		gaps[kind+"-failback"] = append(gaps[kind+"-failback"], p.LongestGap(start, isVIP))
		handovers += 2
	}
	empty := ""
	for i := 0; i < fencingTrials(t); i++ {
		move("crash", func() {
			if err := cluster.Crash(cfg, a); err != nil {
				t.Fatal(err)
			}
		}, func() {
			if err := cluster.Recover(cfg, a); err != nil {
				t.Fatal(err)
			}
		})
		move("unlabel", func() { patchLabel(t, cs, a.Name, nil) }, func() { patchLabel(t, cs, a.Name, &empty) })
		move("cordon", func() { setCordon(t, cs, a.Name, true) }, func() { setCordon(t, cs, a.Name, false) })
		move("cluster-link", func() {
			if err := cluster.CutClusterLink(a, true); err != nil {
				t.Fatal(err)
			}
		}, func() {
			if err := cluster.CutClusterLink(a, false); err != nil {
				t.Fatal(err)
			}
		})
		// Only the API server is cut off from the active node, for longer
		// than its heartbeat Lease lives: it is still heard over the
		// cluster network, so it keeps the VIP and nothing moves.
		stillA := apiCutMovesNothing(t, gw, a, macA, p, apiCutHold)
		gaps["api-cut"] = append(gaps["api-cut"], stillA)
		t.Logf("fencing round %d/%d done (%d handovers so far)", i+1, fencingTrials(t), handovers)
	}
	p.Stop()
	answers, rounds := watch.Stop()
	watchStopped = true
	// A legitimate holder keeps the VIP at least for a probe (60 ms) after
	// claiming it; a MAC that comes back within 30 ms never stopped.
	an := cluster.AnalyzeARP(answers, 30*time.Millisecond)
	t.Logf("fencing: %d handovers; ARP capture: %d request rounds every 10ms, %d answers, %d MAC runs, "+
		"%d rounds answered by two MACs, %d interleaved runs, shortest switch %s",
		handovers, rounds, an.Answers, len(an.Runs), an.OverlapSlots, an.Interleaved, an.MinSwitchGap.Round(time.Microsecond))
	if an.OverlapSlots > 0 || an.Interleaved > 0 {
		t.Errorf("two MACs answered for %s in an overlapping window: %d rounds, %d interleaved runs (runs: %+v)",
			demo.VIP, an.OverlapSlots, an.Interleaved, an.Runs)
	}
	// The first holder may not answer before the first crash cuts it off,
	// so at least one run per handover.
	if len(an.Runs) < handovers {
		t.Errorf("capture shows %d MAC runs for %d handovers: the capture missed handovers, so it proves nothing", len(an.Runs), handovers)
	}
	for _, r := range an.Runs {
		if r.MAC != macA && r.MAC != macB {
			t.Errorf("an unknown MAC %s answered for the VIP: %+v", r.MAC, r)
		}
	}
	gaps["min-switch"] = []time.Duration{an.MinSwitchGap}
	report(t, "vip-failover", gaps)
}

// apiCutHold is how long the API-only cut lasts: longer than the agents'
// heartbeat expiry (15 s), so a Lease-based fence or failover would act.
const apiCutHold = 17 * time.Second

// apiCutMovesNothing blocks node's access to the API server for hold and
// checks, during it and for 3 s after, that node stays active and keeps
// the VIP (the echo server's neighbour entry is its MAC); it returns the
// longest traffic gap over the whole time.
func apiCutMovesNothing(t *testing.T, gw gatewayWatcher, node cluster.Node, mac string, p *probe.Prober, hold time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if err := cluster.BlockAPI(node, true); err != nil {
		t.Fatal(err)
	}
	unblocked := false
	defer func() {
		if !unblocked {
			_ = cluster.BlockAPI(node, false)
		}
	}()
	check := func(phase string) {
		u, err := gw.dyn.Resource(egressGatewaysGVR).Get(context.Background(), gw.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if active, _, _ := unstructured.NestedString(u.Object, "status", "activeNodeName"); active != node.Name {
			t.Fatalf("%s: the active node is %q, want %s (an API-only cut must move nothing)", phase, active, node.Name)
		}
		if n := cluster.EchoNeighbour(demo.VIP); n != mac && n != "" {
			t.Fatalf("%s: the echo server's neighbour entry for the VIP is %s, want %s", phase, n, mac)
		}
	}
	for time.Since(start) < hold {
		check(fmt.Sprintf("%s into the API cut of %s", time.Since(start).Round(time.Second), node.Name))
		time.Sleep(time.Second)
	}
	if err := cluster.BlockAPI(node, false); err != nil {
		t.Fatal(err)
	}
	unblocked = true
	for i := range 3 {
		time.Sleep(time.Second)
		check(fmt.Sprintf("%ds after the API cut of %s ended", i+1, node.Name))
	}
	return p.LongestGap(start, isVIP)
}

func setCordon(t *testing.T, cs kubernetes.Interface, node string, on bool) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"unschedulable":%t}}`, on)
	if _, err := cs.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}
