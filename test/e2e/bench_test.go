package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/egressha/egressha/test/benchreport/results"
	"github.com/egressha/egressha/test/lab/cluster"
	"github.com/egressha/egressha/test/lab/demo"
	"github.com/egressha/egressha/test/lab/probe"
)

// The lab benchmarks of issue 8 (`make bench`; EGRESSHA_BENCH=1):
//
//   - TestBenchEgressHA: the traffic gap of a pod talking to the echo
//     server every 20 ms while the active gateway goes away (hard crash,
//     planned unlabel, planned cordon), and new-pod coverage.
//   - TestBenchStock: the same lab with stock Cilium and a
//     CiliumEgressGatewayPolicy: a crash black-holes traffic until a human
//     intervenes; planned relabel and new-pod coverage as the baseline.
//
// Each case writes $EGRESSHA_RESULTS_DIR/<case>.json (results package);
// test/benchreport turns them into BENCHMARKS.md. Timings are reported,
// never asserted: the tests fail only when the lab or the datapath does
// not work at all (no failover within minutes, no lab).
//
// Knobs: EGRESSHA_BENCH_TRIALS (default 20) trials per egressha case,
// EGRESSHA_BENCH_STOCK_TRIALS (default 3) stock crash trials,
// EGRESSHA_BENCH_STOCK_WAIT (default 45s) how long a stock trial waits for
// traffic to resume by itself, EGRESSHA_BENCH_NEW_PODS (default 50),
// EGRESSHA_BENCH_MEMORY_ENDPOINTS (default 10000, TestBenchAgentMemory in
// bench_memory_test.go).

const benchNS = "my-ns"

// gapCase is one failover case of TestBenchEgressHA.
type gapCase struct {
	name, title string
	// disruption is results.DisruptionCrash or results.DisruptionPlanned.
	disruption string
	// gatewayYAML is applied before the case (the EgressGateway is always
	// called my-egressgw, which demo.Policy names).
	gatewayYAML string
	// via builds the function that tells which node carried a reply.
	via func(t *testing.T, e *benchEnv) probe.Via
	// disrupt takes the active node a out of service; restore undoes it.
	disrupt, restore func(t *testing.T, e *benchEnv)
	// targetMS is the target for the p99 gap.
	targetMS float64
	// restoreTimeout bounds the failback after restore (agent restarts).
	restoreTimeout time.Duration
	// sharedSourceIP: every node SNATs to the same address (VIP mode), so
	// the source address cannot be cross-checked against the MAC.
	sharedSourceIP bool
}

// gapCases are the failover cases, run in order on one lab.
//
// crash-vip runs the spec's VirtualIPAddress gateway (demo.VIPGateway, VIP
// 203.0.113.50 on eth1): both nodes SNAT to the VIP, so the source address
// cannot tell them apart; viaSourceMAC reads the Ethernet source the echo
// server's capture on the public bridge saw, i.e. which node's eth1 sent
// the frame. Replies reach the new node only once the echo server's
// neighbour entry for the VIP follows its GARP; the gap includes that.
func gapCases() []gapCase {
	basicVia := func(t *testing.T, e *benchEnv) probe.Via { return viaAddrAndMAC(e.ipVia, e.macVia) }
	return []gapCase{
		{
			name: "crash-basic", title: "hard crash (cut links + SIGKILL agent), basic mode", disruption: results.DisruptionCrash,
			gatewayYAML: demo.BasicGateway, via: basicVia,
			disrupt: crashA, restore: recoverA,
			targetMS: 3000, restoreTimeout: 5 * time.Minute,
		},
		{
			name: "crash-vip", title: "hard crash (cut links + SIGKILL agent), VIP mode", disruption: results.DisruptionCrash,
			gatewayYAML: demo.VIPGateway,
			via:         func(t *testing.T, e *benchEnv) probe.Via { return viaSourceMAC(t, e.cfg) },
			disrupt:     crashA, restore: recoverA,
			targetMS: 3000, restoreTimeout: 5 * time.Minute,
			sharedSourceIP: true,
		},
		{
			name: "unlabel", title: "planned: remove the egress label from the active node", disruption: results.DisruptionPlanned,
			gatewayYAML: demo.BasicGateway, via: basicVia,
			disrupt: func(t *testing.T, e *benchEnv) { patchLabel(t, e.cs, e.a.Name, nil) },
			restore: func(t *testing.T, e *benchEnv) {
				empty := ""
				patchLabel(t, e.cs, e.a.Name, &empty)
			},
			targetMS: 300, restoreTimeout: time.Minute,
		},
		{
			name: "cordon", title: "planned: cordon the active node", disruption: results.DisruptionPlanned,
			gatewayYAML: demo.BasicGateway, via: basicVia,
			disrupt:  func(t *testing.T, e *benchEnv) { setUnschedulable(t, e.cs, e.a.Name, true) },
			restore:  func(t *testing.T, e *benchEnv) { setUnschedulable(t, e.cs, e.a.Name, false) },
			targetMS: 300, restoreTimeout: time.Minute,
		},
	}
}

// viaAddrAndMAC names a node only when the SNAT address and the sender
// MAC agree on it (basic mode): a reply SNATed by one node to the other's
// address was carried by neither as configured.
func viaAddrAndMAC(ipVia, macVia probe.Via) probe.Via {
	return func(s probe.Sample) string {
		if n := ipVia(s); n != "" && n == macVia(s) {
			return n
		}
		return ""
	}
}

func crashA(t *testing.T, e *benchEnv) {
	if err := cluster.Crash(e.cfg, e.a); err != nil {
		t.Fatal(err)
	}
}

func recoverA(t *testing.T, e *benchEnv) {
	if err := cluster.Recover(e.cfg, e.a); err != nil {
		t.Fatal(err)
	}
}

// benchEnv is the lab a benchmark runs in.
type benchEnv struct {
	cfg          cluster.Config
	cs           kubernetes.Interface
	dyn          dynamic.Interface
	a, b, worker cluster.Node
	gw           gatewayWatcher
	// ipVia and macVia tell nodes apart by SNAT address and by eth1
	// MAC; measureSwitch cross-checks them when crossCheck is set (every
	// case where each node SNATs to its own address).
	ipVia, macVia probe.Via
	crossCheck    bool
}

func newBenchEnv(t *testing.T, mode cluster.Mode) *benchEnv {
	t.Helper()
	cfg := startLab(t, mode)
	rc, err := cfg.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	e := &benchEnv{
		cfg:    cfg,
		cs:     kubernetes.NewForConfigOrDie(rc),
		dyn:    dynamic.NewForConfigOrDie(rc),
		a:      mustNode(t, cfg, "lab-egress-a"),
		b:      mustNode(t, cfg, "lab-egress-b"),
		worker: mustNode(t, cfg, "lab-worker"),
	}
	e.gw = gatewayWatcher{dyn: e.dyn, name: "my-egressgw"}
	e.ipVia, e.macVia, e.crossCheck = probe.ViaSourceIP(cfg), viaSourceMAC(t, cfg), true
	return e
}

// save writes a case's results (when EGRESSHA_RESULTS_DIR is set) and
// logs a summary.
func (e *benchEnv) save(t *testing.T, c results.Case) {
	t.Helper()
	gaps := results.Observed(results.Series(c.Trials, func(tr results.Trial) float64 { return tr.GapMS }))
	if len(gaps) > 0 {
		t.Logf("%s: n=%d gap p50=%.0fms p95=%.0fms p99=%.0fms max=%.0fms", c.Name, len(gaps),
			results.Percentile(gaps, 50), results.Percentile(gaps, 95), results.Percentile(gaps, 99), results.Percentile(gaps, 100))
	}
	saveCase(t, c)
}

// benchCommand is the command line that reproduces a test's figures.
func benchCommand(t *testing.T) string {
	var env []string
	for _, k := range []string{"EGRESSHA_BENCH_TRIALS", "EGRESSHA_BENCH_STOCK_TRIALS", "EGRESSHA_BENCH_STOCK_WAIT", "EGRESSHA_BENCH_NEW_PODS", "EGRESSHA_BENCH_MEMORY_ENDPOINTS", "EGRESSHA_BENCH_OPS", "EGRESSHA_BENCH_OPS_TRIALS", "EGRESSHA_BENCH_LEADER_TRIALS"} {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	return fmt.Sprintf("cd test && EGRESSHA_BENCH=1 %s go test -count=1 -timeout 120m -run '^%s$' -v ./e2e/",
		strings.Join(append(env, "EGRESSHA_LAB_BIN=… EGRESSHA_LAB_REPO=… EGRESSHA_LAB_CILIUM=… EGRESSHA_RESULTS_DIR=…"), " "), t.Name())
}

func envInt(t *testing.T, key string, def int) int {
	t.Helper()
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", key, v)
	}
	return n
}

func envDuration(t *testing.T, key string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration", key, v)
	}
	return d
}

// switchResult is one measured move of the traffic between two nodes.
type switchResult struct {
	gap, toStatus, statusToTraffic time.Duration // -1: not observed
	sent, failed                   int
	// lateOld counts replies through from more than 200 ms after the
	// disruption, before the first through to.
	lateOld int
	// mismatched counts replies whose source address and MAC name
	// different nodes (basic mode only).
	mismatched int
}

// measureSwitch starts the prober, waits until the traffic steadily leaves
// through from, runs action and measures the gap until the first reply
// through to. statusWatch (egressha only) also times the EgressGateway
// status naming to. fromDead says action takes from down (a crash): a
// reply through it long after is then logged as suspect. It fails the test if traffic does not arrive through
// to within timeout: a liveness bound, not a performance assertion.
func measureSwitch(t *testing.T, e *benchEnv, pod string, via probe.Via, from, to string, fromDead, statusWatch bool, timeout time.Duration, action func()) switchResult {
	t.Helper()
	p := probe.Start(e.cfg, benchNS, pod)
	defer p.Stop()
	if !p.WaitSteady(10, 3*time.Minute, probe.IsVia(via, from)) {
		t.Fatalf("traffic from %s/%s never steadily left through %s (last samples: %s)", benchNS, pod, from, lastSamples(p, via, 5))
	}
	statusAt := make(chan time.Time, 1)
	stopStatus := make(chan struct{})
	if statusWatch {
		go func() {
			defer close(statusAt)
			for {
				if got, err := e.gw.active(context.Background()); err == nil && got == to {
					statusAt <- time.Now()
					return
				}
				select {
				case <-stopStatus:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
	} else {
		close(statusAt)
	}
	t0 := time.Now()
	action()
	first, ok := p.WaitFor(t0, timeout, probe.IsVia(via, to))
	if !ok {
		close(stopStatus)
		t.Fatalf("traffic from %s/%s did not reach the echo server through %s within %s (last samples: %s)",
			benchNS, pod, to, timeout, lastSamples(p, via, 5))
	}
	r := switchResult{gap: -1, toStatus: -1, statusToTraffic: -1}
	if last, ok := p.LastBefore(first.Replied, probe.IsVia(via, from)); ok {
		r.gap = first.Replied.Sub(last.Replied)
	}
	if statusWatch {
		select {
		case at, ok := <-statusAt:
			if ok {
				// The status is polled every 10 ms through the API: the
				// agents may act on it before the poll sees it; such a
				// split counts as 0.
				r.toStatus, r.statusToTraffic = at.Sub(t0), max(first.Replied.Sub(at), 0)
			}
		case <-time.After(5 * time.Second):
		}
	}
	close(stopStatus)
	r.sent, r.failed = p.Count(t0, first.Replied)
	// Replies through a crashed node long after the crash shorten the
	// gap by definition; log them with what the echo server saw. In
	// basic mode the MAC should name the same node as the address; a
	// reply where they differ was SNATed by one node to the other's
	// address (Cilium's datapath SNATs to the egress IP of the node's own
	// entry without checking that the node is the gateway, so while the
	// pod's node and the gateways update their maps at different moments
	// a node can SNAT to the other's address). Such replies count for
	// neither node (viaAddrAndMAC) and are reported.
	for _, s := range p.Snapshot() {
		if e.crossCheck && s.OK() && e.macVia(s) != e.ipVia(s) {
			r.mismatched++
			if r.mismatched <= 3 {
				t.Logf("  wrong source: reply %s after the action (sent at %s): source %s (%s) but MAC %s (%s)",
					s.Replied.Sub(t0).Round(time.Millisecond), s.Sent.Sub(t0).Round(time.Millisecond),
					s.Source, e.ipVia(s), s.MAC, e.macVia(s))
			}
		}
		if fromDead && s.OK() && via(s) == from && s.Replied.After(t0.Add(200*time.Millisecond)) && s.Replied.Before(first.Replied) {
			r.lateOld++
			if r.lateOld <= 3 {
				t.Logf("  reply through %s %s after the disruption (sent at %s): source %s, MAC %s; first through %s at %s",
					from, s.Replied.Sub(t0).Round(time.Millisecond), s.Sent.Sub(t0).Round(time.Millisecond), s.Source, s.MAC,
					to, first.Replied.Sub(t0).Round(time.Millisecond))
			}
		}
	}
	return r
}

func lastSamples(p *probe.Prober, via probe.Via, n int) string {
	all := p.Snapshot()
	all = all[max(0, len(all)-n):]
	var out []string
	for _, s := range all {
		if s.OK() {
			out = append(out, fmt.Sprintf("%s/%s(%s)", s.Source, s.MAC, via(s)))
		} else {
			out = append(out, "error: "+s.Err.Error())
		}
	}
	return strings.Join(out, "; ")
}

func ms(d time.Duration) float64 {
	if d < 0 {
		return -1
	}
	return results.MS(d)
}

// TestBenchEgressHA runs the failover cases and new-pod coverage with our
// cells.
func TestBenchEgressHA(t *testing.T) {
	benchEnabled(t)
	e := newBenchEnv(t, cluster.ModeEgressHA)
	if _, err := cluster.AddPod(context.Background(), e.cfg, e.worker.Name, benchNS, "prober", map[string]string{"app": "backend"}); err != nil {
		t.Fatal(err)
	}
	kubectlApply(t, e.cfg, demo.Policy)
	n := envInt(t, "EGRESSHA_BENCH_TRIALS", 20)

	only := benchCases(t)
	for _, c := range gapCases() {
		if only != nil && !only[c.name] {
			continue
		}
		kubectlApply(t, e.cfg, c.gatewayYAML)
		e.gw.waitActive(t, e.a.Name, 2*time.Minute)
		via := c.via(t, e)
		e.crossCheck = !c.sharedSourceIP
		res := results.Case{
			Name: c.name, Title: c.title, Kind: results.KindFailover, Mode: string(cluster.ModeEgressHA), Disruption: c.disruption,
			Command: benchCommand(t), Started: time.Now(), TargetMS: c.targetMS,
			Settings: map[string]string{
				"probe":      fmt.Sprintf("one HTTP request (new TCP connection) every %s, %s timeout, from a pod on %s", probe.Interval, probe.Timeout, e.worker.Name),
				"liveness":   "defaults: probes every 100ms, Down after 3 misses, VIP fence 250ms; heartbeat Lease refresh 5s, expiry 15s",
				"failback":   "Immediate (default)",
				"gap":        "last reply through the old gateway to the first reply through the new one",
				"from -> to": e.a.Name + " -> " + e.b.Name,
			},
		}
		for i := range n {
			r := measureSwitch(t, e, "prober", via, e.a.Name, e.b.Name, c.disruption == results.DisruptionCrash, true, 2*time.Minute, func() { c.disrupt(t, e) })
			back := measureSwitch(t, e, "prober", via, e.b.Name, e.a.Name, false, true, c.restoreTimeout, func() { c.restore(t, e) })
			res.Trials = append(res.Trials, results.Trial{
				GapMS: ms(r.gap), ToStatusMS: ms(r.toStatus), StatusToTrafficMS: ms(r.statusToTraffic),
				FailbackGapMS: ms(back.gap), Sent: r.sent, Failed: r.failed, LateOldReplies: r.lateOld,
				WrongSourceReplies: r.mismatched + back.mismatched,
			})
			t.Logf("%s %d/%d: gap %s (disruption->status %s, status->traffic %s), %d/%d requests failed; failback gap %s",
				c.name, i+1, n, r.gap.Round(time.Millisecond), r.toStatus.Round(time.Millisecond),
				r.statusToTraffic.Round(time.Millisecond), r.failed, r.sent, back.gap.Round(time.Millisecond))
		}
		e.save(t, res)
	}
	if only == nil || only["new-pods"] {
		newPodCoverage(t, e, string(cluster.ModeEgressHA))
	}
}

// benchCases is the set of case names EGRESSHA_BENCH_CASES lists
// (comma-separated; "new-pods" for the new-pod coverage), or nil for all:
// to measure a few cases while working on them. `make bench` runs all.
func benchCases(t *testing.T) map[string]bool {
	t.Helper()
	v := os.Getenv("EGRESSHA_BENCH_CASES")
	if v == "" {
		return nil
	}
	out := map[string]bool{}
	for _, c := range strings.Split(v, ",") {
		out[strings.TrimSpace(c)] = true
	}
	t.Logf("EGRESSHA_BENCH_CASES=%s: only these cases run", v)
	return out
}

// The stock baseline: Cilium's own egress gateway with a
// CiliumEgressGatewayPolicy whose nodeSelector matches one node by a label
// a human moves.
const stockGatewayLabel = "bench.egressha.io/stock-gateway"

// stockPolicyOn is the baseline's CiliumEgressGatewayPolicy with a
// nodeSelector matching key=value.
func stockPolicyOn(key, value string) string {
	return fmt.Sprintf(`
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: bench-stock
spec:
  selectors:
  - podSelector:
      matchLabels:
        app: backend
        io.kubernetes.pod.namespace: my-ns
  destinationCIDRs:
  - 0.0.0.0/0
  egressGateway:
    nodeSelector:
      matchLabels:
        %s: %q
    interface: eth1
`, key, value)
}

// relabelWait is how long a stock trial gives the node relabel to work
// before the human edits the policy instead.
const relabelWait = 15 * time.Second

// setNodeLabel sets (value != nil) or removes a label of a node.
func setNodeLabel(t *testing.T, cs kubernetes.Interface, node, key string, value *string) {
	t.Helper()
	v := "null"
	if value != nil {
		v = strconv.Quote(*value)
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, key, v)
	if _, err := cs.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// moveStockGateway is the human's fix: the label goes from one node to
// the other.
func moveStockGateway(t *testing.T, cs kubernetes.Interface, from, to string) {
	t.Helper()
	yes := "true"
	setNodeLabel(t, cs, from, stockGatewayLabel, nil)
	setNodeLabel(t, cs, to, stockGatewayLabel, &yes)
}

func setUnschedulable(t *testing.T, cs kubernetes.Interface, node string, on bool) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"unschedulable":%t}}`, on)
	if _, err := cs.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestBenchStock is the baseline: the same crash with stock Cilium, which
// does not fail over; then a human moves the gateway label (which does not
// help while the dead node's CiliumNode keeps it) and edits the policy,
// and traffic flows again. Also the planned move (relabel, both nodes up)
// and new-pod coverage.
func TestBenchStock(t *testing.T) {
	benchEnabled(t)
	e := newBenchEnv(t, cluster.ModeStock)
	ctx := context.Background()
	yes := "true"
	setNodeLabel(t, e.cs, e.a.Name, stockGatewayLabel, &yes)
	if _, err := cluster.AddPod(ctx, e.cfg, e.worker.Name, benchNS, "prober", map[string]string{"app": "backend"}); err != nil {
		t.Fatal(err)
	}
	kubectlApply(t, e.cfg, stockPolicyOn(stockGatewayLabel, "true"))
	eventuallySource(t, e.cfg, benchNS, "prober", e.a.PublicIP.String(), 2*time.Minute)

	via := viaAddrAndMAC(e.ipVia, e.macVia)
	n := envInt(t, "EGRESSHA_BENCH_STOCK_TRIALS", 3)
	wait := envDuration(t, "EGRESSHA_BENCH_STOCK_WAIT", 45*time.Second)
	crash := results.Case{
		Name: "stock-crash", Title: "stock Cilium CiliumEgressGatewayPolicy: hard crash of the gateway node, then a human relabels",
		Kind: results.KindStockFailover, Mode: string(cluster.ModeStock), Disruption: results.DisruptionCrash,
		Command: benchCommand(t), Started: time.Now(),
		Settings: map[string]string{
			"probe":  fmt.Sprintf("one HTTP request (new TCP connection) every %s, %s timeout, from a pod on %s", probe.Interval, probe.Timeout, e.worker.Name),
			"policy": "CiliumEgressGatewayPolicy, nodeSelector " + stockGatewayLabel + "=true (on " + e.a.Name + "), interface eth1",
			"wait":   fmt.Sprintf("%s after the crash for traffic to resume by itself (the lab marks a silent node Unknown after 40s)", wait),
			"human fix 1": fmt.Sprintf("when the wait ends: remove %s from %s, set it on %s (two API patches); %s to take effect",
				stockGatewayLabel, e.a.Name, e.b.Name, relabelWait),
			"human fix 2": "if fix 1 did not work: edit the policy's nodeSelector to kubernetes.io/hostname=" + e.b.Name,
		},
	}
	for i := range n {
		p := probe.Start(e.cfg, benchNS, "prober")
		if !p.WaitSteady(10, 3*time.Minute, probe.IsVia(via, e.a.Name)) {
			t.Fatalf("stock: traffic never steadily left through %s (last: %s)", e.a.Name, lastSamples(p, via, 5))
		}
		t0 := time.Now()
		crashA(t, e)
		// Does traffic resume by itself, through any node? Watch the whole
		// wait; requests sent before the crash may still be answered.
		time.Sleep(wait)
		resumed := false
		for _, s := range p.Snapshot() {
			if s.OK() && s.Sent.After(t0.Add(50*time.Millisecond)) {
				if !resumed {
					t.Logf("  stock: a request sent %s after the crash was answered: source %s (%s), MAC %s (%s)",
						s.Sent.Sub(t0).Round(time.Millisecond), s.Source, e.ipVia(s), s.MAC, e.macVia(s))
				}
				resumed = true
			}
		}
		tr := results.Trial{GapMS: -1, ToStatusMS: -1, StatusToTrafficMS: -1, FailbackGapMS: -1,
			WaitMS: ms(wait), ResumedWithinWait: resumed, RelabelToTrafficMS: -1, PolicyEditToTrafficMS: -1}
		// The human's first fix: move the gateway label to the other node.
		// Cilium v1.18 matches the policy's nodeSelector against CiliumNode
		// labels, which only a node's own agent mirrors from its Node: the
		// dead node keeps the label, so this is expected not to help.
		t1 := time.Now()
		moveStockGateway(t, e.cs, e.a.Name, e.b.Name)
		first, ok := p.WaitFor(t1, relabelWait, probe.IsVia(via, e.b.Name))
		if ok {
			tr.RelabelToTrafficMS = ms(first.Replied.Sub(t1))
		} else {
			// The fix that works: point the policy at the other node.
			t2 := time.Now()
			kubectlApply(t, e.cfg, stockPolicyOn("kubernetes.io/hostname", e.b.Name))
			first, ok = p.WaitFor(t2, 2*time.Minute, probe.IsVia(via, e.b.Name))
			if !ok {
				p.Stop()
				t.Fatalf("stock: traffic never left through %s after the policy edit (last: %s)", e.b.Name, lastSamples(p, via, 5))
			}
			tr.PolicyEditToTrafficMS = ms(first.Replied.Sub(t2))
		}
		if last, ok := p.LastBefore(first.Replied, probe.IsVia(via, e.a.Name)); ok {
			tr.GapMS = ms(first.Replied.Sub(last.Replied))
		}
		tr.Sent, tr.Failed = p.Count(t0, first.Replied)
		p.Stop()
		t.Logf("stock crash %d/%d: resumed by itself within %s: %v; node relabel -> traffic %.0fms (-1: not within %s); policy edit -> traffic %.0fms; gap %.0fms",
			i+1, n, wait, resumed, tr.RelabelToTrafficMS, relabelWait, tr.PolicyEditToTrafficMS, tr.GapMS)

		// Put it back: recover the node (its agent now mirrors the label's
		// removal), select by the label again (now on b), then move the
		// label back: the baseline's planned move.
		recoverA(t, e)
		if err := cluster.WaitAgentHealthy(ctx, e.cfg, e.a, 5*time.Minute); err != nil {
			t.Fatal(err)
		}
		kubectlApply(t, e.cfg, stockPolicyOn(stockGatewayLabel, "true"))
		back := measureSwitch(t, e, "prober", via, e.b.Name, e.a.Name, false, false, 2*time.Minute, func() {
			moveStockGateway(t, e.cs, e.b.Name, e.a.Name)
		})
		tr.FailbackGapMS, tr.WrongSourceReplies = ms(back.gap), back.mismatched
		crash.Trials = append(crash.Trials, tr)
		t.Logf("stock relabel back to %s: gap %s", e.a.Name, back.gap.Round(time.Millisecond))
	}
	e.save(t, crash)

	// Planned move with stock Cilium: a human moves the label (the
	// counterpart of our unlabel case, which needs no second label).
	planned := results.Case{
		Name: "stock-relabel", Title: "stock Cilium: planned move, a human moves the gateway label to the other node",
		Kind: results.KindFailover, Mode: string(cluster.ModeStock), Disruption: results.DisruptionPlanned,
		Command: benchCommand(t), Started: time.Now(),
		Settings: map[string]string{
			"probe":      fmt.Sprintf("one HTTP request (new TCP connection) every %s, %s timeout, from a pod on %s", probe.Interval, probe.Timeout, e.worker.Name),
			"gap":        "last reply through the old gateway to the first reply through the new one",
			"from -> to": e.a.Name + " -> " + e.b.Name,
		},
	}
	for i := range envInt(t, "EGRESSHA_BENCH_TRIALS", 20) {
		r := measureSwitch(t, e, "prober", via, e.a.Name, e.b.Name, false, false, 2*time.Minute, func() { moveStockGateway(t, e.cs, e.a.Name, e.b.Name) })
		back := measureSwitch(t, e, "prober", via, e.b.Name, e.a.Name, false, false, 2*time.Minute, func() { moveStockGateway(t, e.cs, e.b.Name, e.a.Name) })
		planned.Trials = append(planned.Trials, results.Trial{GapMS: ms(r.gap), ToStatusMS: -1, StatusToTrafficMS: -1,
			FailbackGapMS: ms(back.gap), Sent: r.sent, Failed: r.failed, WrongSourceReplies: r.mismatched + back.mismatched})
		t.Logf("stock relabel %d: gap %s, back %s", i+1, r.gap.Round(time.Millisecond), back.gap.Round(time.Millisecond))
	}
	e.save(t, planned)

	newPodCoverage(t, e, string(cluster.ModeStock))
}

// newPodCoverage creates EGRESSHA_BENCH_NEW_PODS pods (default 50) on the
// worker, selected by the policy already in place whose gateway is node a,
// one after the other. For each: does its first request leave SNATed to
// a's address, and how long from the CNI ADD's start until the pod's entry
// is in the egress map of its node and of the gateway (read from the
// pinned maps every 10 ms).
func newPodCoverage(t *testing.T, e *benchEnv, mode string) {
	t.Helper()
	ctx := context.Background()
	n := envInt(t, "EGRESSHA_BENCH_NEW_PODS", 50)
	onNode := watchEgressMap(t, e.cfg, e.worker.Name, e.a.ClusterIP)
	onGateway := watchEgressMap(t, e.cfg, e.a.Name, e.a.ClusterIP)
	res := results.Case{
		Name: "new-pods-" + mode, Title: "new pods whose policy already exists (" + mode + ")",
		Kind: results.KindNewPods, Mode: mode, Command: benchCommand(t), Started: time.Now(),
		Settings: map[string]string{
			"pods":   fmt.Sprintf("%d pods on %s created one after the other (Pod object, netns, real cilium-cni ADD, Pod status)", n, e.worker.Name),
			"first":  "one HTTP request to the echo server right after the CNI ADD returns (3s timeout)",
			"entry":  "CNI ADD start to the pod's entry (gateway " + e.a.ClusterIP.String() + ") in the pinned cilium_egress_gw_policy_v4, polled every 10ms",
			"egress": e.a.PublicIP.String() + " (" + e.a.Name + ")",
		},
	}
	unsnated, failed := 0, 0
	for i := range n {
		name := fmt.Sprintf("new-%02d", i)
		pod, err := cluster.AddPod(ctx, e.cfg, e.worker.Name, benchNS, name, map[string]string{"app": "backend"})
		if err != nil {
			t.Fatal(err)
		}
		added := time.Now()
		got, ferr := cluster.Curl(ctx, e.cfg, benchNS, name, cluster.EchoURL(), 3*time.Second)
		pr := results.Pod{Name: name, IP: pod.IP, FirstSource: got, SNATed: ferr == nil && got == e.a.PublicIP.String(),
			CNIAddMS: ms(added.Sub(pod.CNIAddStart)), EntryNodeMS: -1, EntryGatewayMS: -1}
		if ferr != nil {
			pr.FirstError = ferr.Error()
			failed++
		} else if !pr.SNATed {
			unsnated++
		}
		res.Pods = append(res.Pods, pr)
	}
	// Give late entries time to appear, then read the watchers.
	deadline := time.Now().Add(30 * time.Second)
	for i := range res.Pods {
		pr := &res.Pods[i]
		pod, err := cluster.GetPod(e.cfg, benchNS, pr.Name)
		if err != nil {
			t.Fatal(err)
		}
		for time.Now().Before(deadline) {
			_, ok1 := onNode.seen(pr.IP)
			_, ok2 := onGateway.seen(pr.IP)
			if ok1 && ok2 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if at, ok := onNode.seen(pr.IP); ok {
			pr.EntryNodeMS = ms(at.Sub(pod.CNIAddStart))
		}
		if at, ok := onGateway.seen(pr.IP); ok {
			pr.EntryGatewayMS = ms(at.Sub(pod.CNIAddStart))
		}
	}
	for _, w := range []*egressMapWatcher{onNode, onGateway} {
		if err := w.stop(); err != nil {
			t.Errorf("reading the egress map: %v", err)
		}
	}
	res.Notes = append(res.Notes, fmt.Sprintf("%d of %d first requests left un-SNATed, %d failed", unsnated, n, failed))
	t.Logf("new pods (%s): %d of %d first requests un-SNATed, %d failed", mode, unsnated, n, failed)
	e.save(t, res)
}
