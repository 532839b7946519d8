package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressha/egressha/test/benchreport/results"
	"github.com/egressha/egressha/test/lab/cluster"
	"github.com/egressha/egressha/test/lab/probe"
)

// Hitless operations (issue 15): what a platform team does every week
// (a rolling Cilium upgrade restarts every cilium-agent) must move nothing
// and break nothing, as with stock Cilium.

// disruption is what an operation did to the traffic and the decision.
type disruption struct {
	sent, failed int
	// viaOther counts answered requests that left through another node
	// than the active one (a source address or MAC change).
	viaOther int
	// unattributed counts answered requests whose Ethernet source the
	// echo server did not capture (not counted as through another node).
	unattributed int
	// changes counts changes of status.activeNodeName seen by polling
	// (every 100 ms) from the start to the end of the settle time.
	changes int
	// lastFailoverChanged: status.lastFailover differs before and after.
	lastFailoverChanged bool
	took                time.Duration
}

// watchDisruption runs op while watching the gateway (gw.name "" for
// stock Cilium: no EgressGateway) and the prober's traffic, expected to
// leave through active throughout; it keeps watching for settle after op
// returns.
func watchDisruption(t *testing.T, gw gatewayWatcher, p *probe.Prober, via probe.Via, active string, settle time.Duration, op func()) disruption {
	t.Helper()
	ctx := context.Background()
	var r disruption
	before := ""
	if gw.name != "" {
		before = lastFailover(t, gw)
	}
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if gw.name != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := active
			for {
				if got, err := gw.active(ctx); err == nil && got != last {
					r.changes++
					t.Logf("activeNodeName %q -> %q at +%s", last, got, time.Since(start).Round(time.Millisecond))
					last = got
				}
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
	}
	op()
	r.took = time.Since(start)
	time.Sleep(settle)
	close(stop)
	wg.Wait()
	r.sent, r.failed, r.viaOther, r.unattributed = tally(t, p, via, active, start, time.Now())
	if gw.name != "" {
		r.lastFailoverChanged = lastFailover(t, gw) != before
	}
	return r
}

// tally counts the prober's requests sent in [start, end): sent, failed,
// answered through another node than active, and answered through an
// unknown node (the echo server's capture missed the frame: not a move).
// It logs the first five of each kind of trouble.
func tally(t *testing.T, p *probe.Prober, via probe.Via, active string, start, end time.Time) (sent, failed, viaOther, unattributed int) {
	t.Helper()
	for _, s := range p.Snapshot() {
		if s.Sent.Before(start) || !s.Sent.Before(end) {
			continue
		}
		sent++
		switch {
		case !s.OK():
			failed++
			if failed <= 5 {
				t.Logf("request sent at +%s failed: %s", s.Sent.Sub(start).Round(time.Millisecond), s.Err)
			}
		case via(s) == "" && s.MAC == "-":
			unattributed++
		case via(s) != active:
			viaOther++
			if viaOther <= 5 {
				t.Logf("request sent at +%s answered through %q (source %s, MAC %s), not %s",
					s.Sent.Sub(start).Round(time.Millisecond), via(s), s.Source, s.MAC, active)
			}
		}
	}
	return sent, failed, viaOther, unattributed
}

// rollingRestart restarts every cilium-agent as a rolling upgrade with
// maxUnavailable 2 would: both egress nodes at the same time (SIGTERM,
// start again), then, once they are healthy, the worker.
func rollingRestart(t *testing.T, cfg cluster.Config) {
	t.Helper()
	ctx := context.Background()
	restart := func(nodes ...cluster.Node) {
		var wg sync.WaitGroup
		errs := make([]error, len(nodes))
		for i, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if errs[i] = cluster.RestartAgent(cfg, n); errs[i] == nil {
					errs[i] = cluster.WaitAgentHealthy(ctx, cfg, n, 3*time.Minute)
				}
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	restart(mustNode(t, cfg, "lab-egress-a"), mustNode(t, cfg, "lab-egress-b"))
	restart(mustNode(t, cfg, "lab-worker"))
}

func (d disruption) String() string {
	return fmt.Sprintf("took=%s sent=%d failed=%d via-other=%d unattributed=%d active-changes=%d lastFailover-changed=%v",
		d.took.Round(time.Millisecond), d.sent, d.failed, d.viaOther, d.unattributed, d.changes, d.lastFailoverChanged)
}

// TestRollingRestartMovesNothing: every cilium-agent restarted (both
// egress nodes at once, then the worker) while a pod on the worker sends
// a request every 20 ms through the gateway, in basic and in VIP mode:
// 0 failed requests, 0 requests through another node, 0 changes of the
// active node, during the restarts and in the 10 s after them.
func TestRollingRestartMovesNothing(t *testing.T) {
	cfg := startLab(t, cluster.ModeEgressHA)
	a := mustNode(t, cfg, "lab-egress-a")
	for _, m := range outageModes {
		t.Run(m.name, func(t *testing.T) {
			gw, p, via := steadyThrough(t, cfg, m.yaml, a)
			defer p.Stop()
			d := watchDisruption(t, gw, p, via, a.Name, 10*time.Second, func() { rollingRestart(t, cfg) })
			t.Logf("rolling restart, %s mode: %s", m.name, d)
			if d.failed > 0 || d.viaOther > 0 || d.changes > 0 || d.lastFailoverChanged {
				t.Errorf("%s mode: a rolling restart of every cilium-agent disturbed the traffic or moved the gateway: %s; lastFailover %s",
					m.name, d, lastFailover(t, gw))
				logDecisions(t, cfg)
			}
		})
	}
}

// operatorDecisions are the operator log messages that explain a move.
var operatorDecisions = []string{"active node decided", "Liveness of a candidate node changed", "Agent restarting",
	"Agent back after", "Agent not back", "Liveness: suspect", "EgressGateway status written"}

// logDecisions logs the last decision lines of every operator replica's
// log, so a failed run says why the gateway moved.
func logDecisions(t *testing.T, cfg cluster.Config) {
	t.Helper()
	for i := 1; i <= 2; i++ {
		data, err := os.ReadFile(cfg.OperatorLog(i))
		if err != nil {
			continue
		}
		var lines []string
		for _, l := range strings.Split(string(data), "\n") {
			if slices.ContainsFunc(operatorDecisions, func(m string) bool { return strings.Contains(l, m) }) {
				lines = append(lines, l)
			}
		}
		t.Logf("--- operator replica %d, last decisions:\n%s", i, strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
}

// operationTrial turns a disruption into a results trial.
func operationTrial(scope string, d disruption) results.Trial {
	return results.Trial{Scope: scope, Sent: d.sent, Failed: d.failed, ViaOther: d.viaOther, ActiveChanges: d.changes,
		LastFailoverNew: d.lastFailoverChanged, GapMS: -1, ToStatusMS: -1, StatusToTrafficMS: -1, FailbackGapMS: -1}
}

// operationsSettings are the settings every operations case shares.
func operationsSettings(gatewayMode string) map[string]string {
	return map[string]string{
		"gateway mode":      gatewayMode,
		"probe":             fmt.Sprintf("one HTTP request (new TCP connection) every %s, %s timeout, from a pod on lab-worker", probe.Interval, probe.Timeout),
		"rolling-restart":   "SIGTERM and restart the cilium-agents of lab-egress-a and lab-egress-b at the same time (the chart's maxUnavailable allows 2), wait until both are healthy, then lab-worker's; window: until 10 s after the last agent is healthy",
		"link-flap":         "lab-egress-a's cluster link (eth0) down 0.5 s / up 0.5 s, 30 times; window: until 15 s after the last flap (the hold-down is 10 s)",
		"leader-kill-crash": "kill -9 the egressha operator leader, crash the active gateway lab-egress-a (links cut, agent killed) 1 s later; gap: last reply through lab-egress-a to the first through lab-egress-b (egressha basic mode only: stock Cilium has no failover)",
	}
}

// TestBenchOperations measures routine operations with stock Cilium and
// with egressha (basic and VIP mode) in the same run: a rolling restart
// of every cilium-agent (EGRESSHA_BENCH_OPS_TRIALS rounds, default 3).
func TestBenchOperations(t *testing.T) {
	benchEnabled(t)
	n := envInt(t, "EGRESSHA_BENCH_OPS_TRIALS", 3)
	// EGRESSHA_BENCH_OPS runs a subset (comma-separated operations);
	// its cases are named after it, so they sit beside a full run's.
	runOp, suffix := func(string) bool { return true }, ""
	if v := os.Getenv("EGRESSHA_BENCH_OPS"); v != "" {
		ops := strings.Split(v, ",")
		runOp, suffix = func(op string) bool { return slices.Contains(ops, op) }, "-"+strings.Join(ops, "-")
	}
	const settle = 10 * time.Second
	t.Run("stock", func(t *testing.T) {
		e := newBenchEnv(t, cluster.ModeStock)
		yes := "true"
		setNodeLabel(t, e.cs, e.a.Name, stockGatewayLabel, &yes)
		if _, err := cluster.AddPod(context.Background(), e.cfg, e.worker.Name, benchNS, "prober", map[string]string{"app": "backend"}); err != nil {
			t.Fatal(err)
		}
		kubectlApply(t, e.cfg, stockPolicyOn(stockGatewayLabel, "true"))
		eventuallySource(t, e.cfg, benchNS, "prober", e.a.PublicIP.String(), 2*time.Minute)
		waitDatapathQuiet(t, e.cfg, 5*time.Second, 90*time.Second)
		via := viaAddrAndMAC(e.ipVia, e.macVia)
		c := results.Case{Name: "operations-stock" + suffix, Title: "routine operations, stock Cilium", Kind: results.KindOperations,
			Mode: string(cluster.ModeStock), Command: benchCommand(t), Started: time.Now(), Settings: operationsSettings("–")}
		p := probe.Start(e.cfg, benchNS, "prober")
		defer p.Stop()
		if !p.WaitSteady(25, 3*time.Minute, probe.IsVia(via, e.a.Name)) {
			t.Fatalf("stock: traffic never steadily left through %s (last: %s)", e.a.Name, lastSamples(p, via, 5))
		}
		for i := range n * b2i(runOp("rolling-restart")) {
			d := watchDisruption(t, gatewayWatcher{}, p, via, e.a.Name, settle, func() { rollingRestart(t, e.cfg) })
			t.Logf("bench operations stock rolling-restart %d/%d: %s", i+1, n, d)
			c.Trials = append(c.Trials, operationTrial("rolling-restart", d))
		}
		for i := range n * b2i(runOp("link-flap")) {
			d := watchDisruption(t, gatewayWatcher{}, p, via, e.a.Name, flapSettle, func() {
				flapClusterLink(t, e.a, 30, 500*time.Millisecond, 500*time.Millisecond)
			})
			t.Logf("bench operations stock link-flap %d/%d: %s", i+1, n, d)
			c.Trials = append(c.Trials, operationTrial("link-flap", d))
		}
		saveCase(t, c)
	})
	t.Run("egressha", func(t *testing.T) {
		cfg := startLab(t, cluster.ModeEgressHA)
		a := mustNode(t, cfg, "lab-egress-a")
		for _, m := range outageModes {
			c := results.Case{Name: "operations-egressha-" + m.name + suffix, Title: "routine operations, egressha " + m.name + " mode",
				Kind: results.KindOperations, Mode: string(cluster.ModeEgressHA), Command: benchCommand(t), Started: time.Now(),
				Settings: operationsSettings(m.name)}
			gw, p, via := steadyThrough(t, cfg, m.yaml, a)
			for i := range n * b2i(runOp("rolling-restart")) {
				d := watchDisruption(t, gw, p, via, a.Name, settle, func() { rollingRestart(t, cfg) })
				t.Logf("bench operations egressha %s rolling-restart %d/%d: %s", m.name, i+1, n, d)
				c.Trials = append(c.Trials, operationTrial("rolling-restart", d))
				if d.failed > 0 || d.viaOther > 0 || d.changes > 0 {
					t.Errorf("%s mode: a rolling restart disturbed the traffic or moved the gateway: %s", m.name, d)
				}
			}
			for i := range n * b2i(runOp("link-flap")) {
				d := watchDisruption(t, gw, p, via, a.Name, flapSettle, func() {
					flapClusterLink(t, a, 30, 500*time.Millisecond, 500*time.Millisecond)
				})
				t.Logf("bench operations egressha %s link-flap %d/%d: %s", m.name, i+1, n, d)
				c.Trials = append(c.Trials, operationTrial("link-flap", d))
				if d.changes > flapMoves {
					t.Errorf("%s mode: 30 flaps moved the gateway %d times, want at most %d", m.name, d.changes, flapMoves)
					logDecisions(t, cfg)
				}
				gw.waitActive(t, a.Name, time.Minute)
			}
			if m.name == "basic" && runOp("leader-kill-crash") {
				c.Trials = append(c.Trials, leaderKillCrash(t, cfg, gw, p, via, envInt(t, "EGRESSHA_BENCH_LEADER_TRIALS", 10))...)
			}
			p.Stop()
			saveCase(t, c)
		}
	})
}

// leaderKillCrash kills the egressha operator leader (kill -9), crashes
// the active gateway lab-egress-a 1 s later and measures when traffic
// leaves through lab-egress-b, n times. Both replicas run and are warm
// before each trial (the killed one comes back with the kubelet's
// back-off).
func leaderKillCrash(t *testing.T, cfg cluster.Config, gw gatewayWatcher, p *probe.Prober, via probe.Via, n int) []results.Trial {
	t.Helper()
	a, b := mustNode(t, cfg, "lab-egress-a"), mustNode(t, cfg, "lab-egress-b")
	var out []results.Trial
	for i := range n {
		waitUntil(t, 10*time.Minute, "both operator replicas running", func() bool {
			for _, op := range cluster.Operators(cfg) {
				if op.PID == 0 {
					return false
				}
			}
			return true
		})
		time.Sleep(10 * time.Second) // the restarted replica warms up (informers, probe sessions)
		_, host := waitOperatorLeader(t, cfg, "", time.Minute)
		if !p.WaitSteady(25, time.Minute, probe.IsVia(via, a.Name)) {
			t.Fatalf("traffic never steady through %s", a.Name)
		}
		killed := time.Now()
		if pid := cluster.KillOperator(cfg, host); pid == 0 {
			t.Fatalf("no running operator on %s to kill", host)
		}
		time.Sleep(time.Second)
		crashed := time.Now()
		if err := cluster.Crash(cfg, a); err != nil {
			t.Fatal(err)
		}
		first, ok := p.WaitFor(crashed, 2*time.Minute, probe.IsVia(via, b.Name))
		if !ok {
			t.Fatalf("trial %d: traffic never went through %s after the leader kill and the crash", i+1, b.Name)
		}
		tr := results.Trial{Scope: "leader-kill-crash", GapMS: -1, ToStatusMS: -1, StatusToTrafficMS: -1, FailbackGapMS: -1}
		if last, ok := p.LastBefore(first.Replied, probe.IsVia(via, a.Name)); ok {
			tr.GapMS = ms(first.Replied.Sub(last.Replied))
		}
		tr.Sent, tr.Failed = p.Count(killed, first.Replied)
		tr.ActiveChanges = 1
		t.Logf("bench operations egressha basic leader-kill-crash %d/%d: leader on %s killed, %s crashed 1 s later; traffic through %s %s after the crash (gap %.0fms)",
			i+1, n, host, a.Name, b.Name, first.Replied.Sub(crashed).Round(time.Millisecond), tr.GapMS)
		out = append(out, tr)
		if err := cluster.Recover(cfg, a); err != nil {
			t.Fatal(err)
		}
		gw.waitActive(t, a.Name, 2*time.Minute)
	}
	return out
}

// flapClusterLink takes n's cluster link down for down and up for up,
// times times.
func flapClusterLink(t *testing.T, n cluster.Node, times int, down, up time.Duration) {
	t.Helper()
	for range times {
		if err := cluster.CutClusterLink(n, true); err != nil {
			t.Fatal(err)
		}
		time.Sleep(down)
		if err := cluster.CutClusterLink(n, false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(up)
	}
}

// flapMoves is the most active-node changes a flapping node may cause:
// one away when it first fails, one back once it stayed eligible for the
// hold-down.
const flapMoves = 2

// flapSettle covers the hold-down (10 s by default) after the last flap,
// so the failback is counted.
const flapSettle = 15 * time.Second

// TestLinkFlapMovesAtMostTwice: the active node's cluster link goes down
// for 0.5 s and up for 0.5 s, 30 times, in basic and in VIP mode: at most
// two changes of the active node (away, and back once the node stayed
// eligible for the hold-down), counted until 15 s after the last flap.
// Failed requests are reported, not asserted: traffic through a node whose
// link is down fails until the role moves.
func TestLinkFlapMovesAtMostTwice(t *testing.T) {
	cfg := startLab(t, cluster.ModeEgressHA)
	a := mustNode(t, cfg, "lab-egress-a")
	for _, m := range outageModes {
		t.Run(m.name, func(t *testing.T) {
			gw, p, via := steadyThrough(t, cfg, m.yaml, a)
			defer p.Stop()
			d := watchDisruption(t, gw, p, via, a.Name, flapSettle, func() { flapClusterLink(t, a, 30, 500*time.Millisecond, 500*time.Millisecond) })
			t.Logf("cluster link flap, %s mode: %s", m.name, d)
			if d.changes > flapMoves {
				t.Errorf("%s mode: 30 flaps of the active node's cluster link moved the gateway %d times, want at most %d", m.name, d.changes, flapMoves)
				logDecisions(t, cfg)
			}
			gw.waitActive(t, a.Name, time.Minute)
		})
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
