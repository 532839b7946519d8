package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/egressha/egressha/test/benchreport/results"
	"github.com/egressha/egressha/test/lab/cluster"
	"github.com/egressha/egressha/test/lab/demo"
	"github.com/egressha/egressha/test/lab/probe"
)

// An API server outage is a control-plane fault, not a data-plane one
// (issue 14): whoever loses the API server (everyone, one gateway node, or
// the operators only), nothing moves and no request fails, in basic and
// VIP mode, during the outage and after it. Liveness comes from probes
// over the cluster network, not from the heartbeat Lease.

// outageScope is who loses the API server.
type outageScope struct {
	name  string
	block func(on bool) error
}

func outageScopes(cfg cluster.Config, active cluster.Node) []outageScope {
	return []outageScope{
		{"everyone", cluster.BlockAPIAll},
		{"active-node", func(on bool) error { return cluster.BlockAPI(active, on) }},
		{"operators", func(on bool) error { return cluster.BlockAPIOperators(cfg, on) }},
	}
}

// outageResult is what one outage did to the traffic and the decision.
type outageResult struct {
	sent, failed int
	// viaOther counts answered requests that left through another node
	// than the active one.
	viaOther int
	// changes counts changes of status.activeNodeName seen by polling
	// (every 250 ms) during the outage and the settle time after it.
	changes int
	// lastFailoverChanged: status.lastFailover differs before and after.
	lastFailoverChanged bool
	// leaderBack is how long after the outage an operator leader renewed
	// its Lease again (zero when the scope left the operators alone).
	leaderBack time.Duration
}

// apiOutage cuts the API server off for scope for hold, keeps watching for
// settle after it, and reports. The prober p must be running from a pod
// whose traffic goes through gateway gw, active on node active.
func apiOutage(t *testing.T, cfg cluster.Config, gw gatewayWatcher, p *probe.Prober, via probe.Via, active cluster.Node,
	scope outageScope, hold, settle time.Duration) outageResult {
	t.Helper()
	ctx := context.Background()
	before := lastFailover(t, gw)
	start := time.Now()
	if err := scope.block(true); err != nil {
		t.Fatal(err)
	}
	restored := false
	defer func() {
		if !restored {
			_ = scope.block(false)
		}
	}()
	var r outageResult
	last := active.Name
	poll := func(until time.Time) {
		for time.Now().Before(until) {
			if got, err := gw.active(ctx); err == nil && got != last {
				r.changes++
				t.Logf("%s outage: activeNodeName %q -> %q at +%s", scope.name, last, got, time.Since(start).Round(time.Millisecond))
				last = got
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	poll(start.Add(hold))
	if err := scope.block(false); err != nil {
		t.Fatal(err)
	}
	restored = true
	ended := time.Now()
	if scope.name != "active-node" {
		_, _ = waitOperatorLeaderRenewing(t, cfg, ended, 3*time.Minute)
		r.leaderBack = time.Since(ended)
	}
	poll(time.Now().Add(settle))
	t.Logf("%s outage: requests", scope.name)
	r.sent, r.failed, r.viaOther, _ = tally(t, p, via, active.Name, start, time.Now())
	r.lastFailoverChanged = lastFailover(t, gw) != before
	return r
}

// lastFailover is status.lastFailover as text ("" when none).
func lastFailover(t *testing.T, gw gatewayWatcher) string {
	t.Helper()
	u, err := gw.dyn.Resource(egressGatewaysGVR).Get(context.Background(), gw.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lf, _, _ := unstructured.NestedFieldNoCopy(u.Object, "status", "lastFailover")
	return fmt.Sprint(lf)
}

// outageModes are the gateways the outage checks run with.
var outageModes = []struct{ name, yaml string }{{"basic", demo.BasicGateway}, {"vip", demo.VIPGateway}}

// TestAPIOutageMovesNothing: in basic and VIP mode, the API server
// unreachable for everyone, for the active gateway node only, and for the
// operators only, each for longer than a heartbeat Lease lives (17 s; the
// benchmark runs 60 s): 0 failed requests, 0 requests through another
// node, 0 changes of the active node, during the outage and in the 5 s
// after it.
func TestAPIOutageMovesNothing(t *testing.T) {
	cfg := startLab(t, cluster.ModeEgressHA)
	hold := envDuration(t, "EGRESSHA_OUTAGE_HOLD", 17*time.Second)
	for _, m := range outageModes {
		t.Run(m.name, func(t *testing.T) {
			for _, r := range runOutages(t, cfg, m.yaml, hold) {
				if r.res.failed > 0 || r.res.viaOther > 0 || r.res.changes > 0 || r.res.lastFailoverChanged {
					t.Errorf("%s mode, API server cut off from %s for %s: %d of %d requests failed, %d left through another node, "+
						"%d active-node changes, lastFailover changed: %v", m.name, r.scope, hold, r.res.failed, r.res.sent,
						r.res.viaOther, r.res.changes, r.res.lastFailoverChanged)
				}
			}
		})
	}
}

type scopedOutage struct {
	scope string
	res   outageResult
}

// runOutages applies the gateway, waits for lab-egress-a to be active and
// serving, and runs one outage per scope while a pod on the worker probes
// every 20 ms.
func runOutages(t *testing.T, cfg cluster.Config, gatewayYAML string, hold time.Duration) []scopedOutage {
	t.Helper()
	a := mustNode(t, cfg, "lab-egress-a")
	gw, p, via := steadyThrough(t, cfg, gatewayYAML, a)
	defer p.Stop()
	var out []scopedOutage
	for _, s := range outageScopes(cfg, a) {
		r := apiOutage(t, cfg, gw, p, via, a, s, hold, 5*time.Second)
		t.Logf("API server cut off from %s for %s: %d of %d requests failed, %d through another node, %d active-node changes; "+
			"operator leader renewing %s after", s.name, hold, r.failed, r.sent, r.viaOther, r.changes, r.leaderBack.Round(time.Millisecond))
		out = append(out, scopedOutage{s.name, r})
	}
	return out
}

// TestHeartbeatWriteRate: with probing doing liveness, a candidate's
// heartbeat Lease is written on change and refreshed every 5 s, so in a
// steady state each candidate writes at most 0.2 times a second (issue
// 14; kubelet's node Lease: 0.1/s). Counted from a watch over 60 s.
func TestHeartbeatWriteRate(t *testing.T) {
	cfg := startLab(t, cluster.ModeEgressHA)
	rc, err := cfg.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(rc)
	gw := gatewayWatcher{dyn: dynamic.NewForConfigOrDie(rc), name: demo.GatewayName}
	kubectlApply(t, cfg, demo.BasicGateway)
	gw.waitActive(t, "lab-egress-a", 2*time.Minute)
	time.Sleep(3 * time.Second) // let the election's own writes pass
	window := envDuration(t, "EGRESSHA_WRITE_RATE_WINDOW", time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), window)
	defer cancel()
	w, err := cs.CoordinationV1().Leases("kube-system").Watch(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/component=egressha-heartbeat"})
	if err != nil {
		t.Fatal(err)
	}
	writes := map[string]int{}
	for ev := range w.ResultChan() {
		if ev.Type != watch.Modified {
			continue
		}
		if l, ok := ev.Object.(*coordinationv1.Lease); ok {
			writes[l.Name]++
		}
	}
	for _, name := range []string{"egressha-lab-egress-a", "egressha-lab-egress-b"} {
		rate := float64(writes[name]) / window.Seconds()
		t.Logf("%s: %d writes in %s = %.3f/s", name, writes[name], window, rate)
		// One refresh may fall on each edge of the window.
		if max := int(window.Seconds()*0.2) + 1; writes[name] > max {
			t.Errorf("%s: %d writes in %s, want at most %d (0.2/s)", name, writes[name], window, max)
		}
		if writes[name] == 0 {
			t.Errorf("%s: no write in %s: the slow refresh is not running, or the watch saw nothing", name, window)
		}
	}
}

// TestBenchAPIOutage is the benchmark form of TestAPIOutageMovesNothing
// (`make bench`): each outage lasts EGRESSHA_BENCH_OUTAGE (default 60 s).
func TestBenchAPIOutage(t *testing.T) {
	benchEnabled(t)
	cfg := startLab(t, cluster.ModeEgressHA)
	hold := envDuration(t, "EGRESSHA_BENCH_OUTAGE", time.Minute)
	for _, m := range outageModes {
		res := results.Case{
			Name: "api-outage-" + m.name, Title: "API server unreachable, " + m.name + " mode", Kind: results.KindAPIOutage,
			Mode: string(cluster.ModeEgressHA), Command: benchCommand(t), Started: time.Now(),
			Settings: map[string]string{
				"probe":  "one HTTP request (new TCP connection) every 20ms from a pod on lab-worker",
				"window": "from the cut to 5 s after an operator leader renews again (active-node scope: 5 s after the cut ends)",
			},
		}
		for _, r := range runOutages(t, cfg, m.yaml, hold) {
			res.Trials = append(res.Trials, results.Trial{Scope: r.scope, HoldMS: ms(hold), Sent: r.res.sent, Failed: r.res.failed,
				ViaOther: r.res.viaOther, ActiveChanges: r.res.changes, LeaderBackMS: ms(r.res.leaderBack),
				LastFailoverNew: r.res.lastFailoverChanged, GapMS: -1, ToStatusMS: -1, StatusToTrafficMS: -1, FailbackGapMS: -1})
			t.Logf("bench api-outage mode=%s scope=%s hold=%s: sent=%d failed=%d via-other=%d active-changes=%d lastFailover-changed=%v leader-back=%s",
				m.name, r.scope, hold, r.res.sent, r.res.failed, r.res.viaOther, r.res.changes, r.res.lastFailoverChanged,
				r.res.leaderBack.Round(time.Millisecond))
			if r.res.failed > 0 || r.res.viaOther > 0 || r.res.changes > 0 || r.res.lastFailoverChanged {
				t.Errorf("%s mode, API server cut off from %s for %s: traffic or the active node was disturbed", m.name, r.scope, hold)
			}
		}
		saveCase(t, res)
	}
	crashDuringOutage(t, cfg)
}

// steadyThrough applies the gateway (and the demo policy, and its pod on
// the worker if missing), waits until active is the active node, and
// starts a prober whose traffic is steady through it. The caller stops
// the prober.
func steadyThrough(t *testing.T, cfg cluster.Config, gatewayYAML string, active cluster.Node) (gatewayWatcher, *probe.Prober, probe.Via) {
	t.Helper()
	rc, err := cfg.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	gw := gatewayWatcher{dyn: dynamic.NewForConfigOrDie(rc), name: demo.GatewayName}
	if _, err := cluster.GetPod(cfg, demo.Namespace, demo.PodName); err != nil {
		worker := mustNode(t, cfg, "lab-worker")
		if _, err := cluster.AddPod(context.Background(), cfg, worker.Name, demo.Namespace, demo.PodName, map[string]string{"app": "backend"}); err != nil {
			t.Fatal(err)
		}
	}
	kubectlApply(t, cfg, gatewayYAML)
	kubectlApply(t, cfg, demo.Policy)
	gw.waitActive(t, active.Name, 2*time.Minute)
	waitDatapathQuiet(t, cfg, 5*time.Second, 90*time.Second)
	via := viaSourceMAC(t, cfg)
	p := probe.Start(cfg, demo.Namespace, demo.PodName)
	if !p.WaitSteady(25, time.Minute, probe.IsVia(via, active.Name)) {
		p.Stop()
		t.Fatalf("traffic never steady through %s", active.Name)
	}
	return gw, p, via
}

// crashDuringOutage crashes the active node 5 s into a full API server
// outage of 20 s, and reports when traffic flows through the other node:
// no decision can reach the agents before the API server is back, so the
// move happens right after it returns.
func crashDuringOutage(t *testing.T, cfg cluster.Config) {
	t.Helper()
	a, b := mustNode(t, cfg, "lab-egress-a"), mustNode(t, cfg, "lab-egress-b")
	gw, p, via := steadyThrough(t, cfg, demo.BasicGateway, a)
	defer p.Stop()
	if err := cluster.BlockAPIAll(true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	crashed := time.Now()
	if err := cluster.Crash(cfg, a); err != nil {
		_ = cluster.BlockAPIAll(false)
		t.Fatal(err)
	}
	time.Sleep(15 * time.Second)
	if err := cluster.BlockAPIAll(false); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	s, ok := p.WaitFor(back, 3*time.Minute, probe.IsVia(via, b.Name))
	if !ok {
		t.Fatalf("traffic never went through %s after the API server returned", b.Name)
	}
	t.Logf("bench crash-during-api-outage: crash at +5s of a 20s outage; traffic through %s %s after the API server returned (%s after the crash)",
		b.Name, s.Replied.Sub(back).Round(time.Millisecond), s.Replied.Sub(crashed).Round(time.Millisecond))
	if err := cluster.Recover(cfg, a); err != nil {
		t.Fatal(err)
	}
	gw.waitActive(t, a.Name, 2*time.Minute)
}

// saveCase writes a case's results when EGRESSHA_RESULTS_DIR is set.
func saveCase(t *testing.T, c results.Case) {
	t.Helper()
	c.Finished = time.Now()
	if dir := os.Getenv("EGRESSHA_RESULTS_DIR"); dir != "" {
		if err := results.Write(dir, c); err != nil {
			t.Errorf("writing results: %v", err)
		}
	}
}

// datapathBusy are the agent log messages of a datapath (re)generation.
var datapathBusy = []string{"Compiled new BPF template", "Reloaded endpoint BPF program", "Updated link for program"}

// waitDatapathQuiet waits until no agent has (re)generated its datapath
// for quiet (at most max): right after the lab starts, agents compile and
// reload their BPF programs for up to ~20 s on this machine, and an
// endpoint reloaded meanwhile can send a few packets another way. An
// outage check measures the outage, not the lab's start.
func waitDatapathQuiet(t *testing.T, cfg cluster.Config, quiet, max time.Duration) {
	t.Helper()
	deadline := time.Now().Add(max)
	for {
		var last time.Time
		for _, n := range cfg.Nodes {
			data, err := os.ReadFile(cfg.AgentLog(n.Name))
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(data), "\n") {
				if !slices.ContainsFunc(datapathBusy, func(m string) bool { return strings.Contains(line, m) }) {
					continue
				}
				ts, _, ok := strings.Cut(strings.TrimPrefix(line, "time="), " ")
				if !ok {
					continue
				}
				if at, err := time.Parse(time.RFC3339Nano, ts); err == nil && at.After(last) {
					last = at
				}
			}
		}
		if time.Since(last) >= quiet {
			return
		}
		if time.Now().After(deadline) {
			t.Logf("agents still regenerating their datapath after %s (last at %s); going on", max, last.Format(time.RFC3339Nano))
			return
		}
		time.Sleep(time.Second)
	}
}
