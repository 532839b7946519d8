package e2e

import (
	"context"
	"testing"
	"time"

	"k8s.io/client-go/dynamic"

	"github.com/egressha/egressha/test/lab/cluster"
	"github.com/egressha/egressha/test/lab/demo"
)

// TestOperatorsLikeADeployment runs the operator as the chart's Deployment
// would: two replicas, each its own Pod and ServiceAccount token, restarted
// with back-off when the process exits. Killing the egressha leader (kill
// -9) hands its work to the other, warm, replica within seconds (egressha's
// own election, egressgw/leader: lease 2 s); killing every replica or
// cutting every replica's API server for longer than the leader lease must
// not leave the cluster without an operator: one comes back, becomes leader
// and fails the active gateway over when it crashes.
func TestOperatorsLikeADeployment(t *testing.T) {
	cfg := startLab(t, cluster.ModeEgressHA)
	rc, err := cfg.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	gw := gatewayWatcher{dyn: dynamic.NewForConfigOrDie(rc), name: "my-egressgw"}
	a, b := mustNode(t, cfg, "lab-egress-a"), mustNode(t, cfg, "lab-egress-b")
	kubectlApply(t, cfg, demo.BasicGateway)
	gw.waitActive(t, a.Name, time.Minute)
	t.Run("identities", func(t *testing.T) { checkIdentities(t, cfg) })

	ops := cluster.Operators(cfg)
	if len(ops) != 2 {
		t.Fatalf("want the chart's 2 operator replicas, have %+v", ops)
	}
	holder, host := waitOperatorLeader(t, cfg, "", time.Minute)
	t.Logf("operator leader: %s on %s", holder, host)

	// kill -9 the egressha leader alone and crash the active gateway at
	// once: the other replica, whose informers and probes are warm, takes
	// the Lease over once it expired (2 s + up to two 0.15 s polls, each
	// jittered up to 2.2×) and moves the role; a leader change alone moves
	// nothing (the gateway stays on b until a comes back).
	killed := time.Now()
	if pid := cluster.KillOperator(cfg, host); pid == 0 {
		t.Fatalf("no running operator on %s to kill", host)
	}
	if err := cluster.Crash(cfg, a); err != nil {
		t.Fatal(err)
	}
	newHolder, newHost := waitOperatorLeader(t, cfg, holder, 30*time.Second)
	leaderBack := time.Since(killed)
	moved := gw.waitActive(t, b.Name, time.Minute)
	t.Logf("kill -9 of the egressha leader: %s on %s leads after %s; the crashed gateway failed over %s after the kill",
		newHolder, newHost, leaderBack.Round(time.Millisecond), moved.Sub(killed).Round(time.Millisecond))
	if newHost == host {
		t.Errorf("the killed replica's host %s leads again: want the other replica", host)
	}
	// How fast is measured by TestBenchOperations (leader-kill-crash, 10
	// trials), not asserted here.
	report(t, "operator-leader-kill", map[string][]time.Duration{"kill-to-leader": {leaderBack}, "kill-to-failover": {moved.Sub(killed)}})
	if err := cluster.Recover(cfg, a); err != nil {
		t.Fatal(err)
	}
	gw.waitActive(t, a.Name, 2*time.Minute)
	holder, host = newHolder, newHost

	// kill -9 every replica, then crash the active gateway: the first
	// failover the restarted operators can make.
	killed = time.Now()
	pids := cluster.KillOperators(cfg)
	if len(pids) != 2 {
		t.Fatalf("killed %v, want both replicas", pids)
	}
	if err := cluster.Crash(cfg, a); err != nil {
		t.Fatal(err)
	}
	newHolder, newHost = waitOperatorLeader(t, cfg, holder, time.Minute)
	leaderBack = time.Since(killed)
	moved = gw.waitActive(t, b.Name, time.Minute)
	t.Logf("kill -9 of both operators: a new leader (%s on %s) after %s; the crashed gateway failed over %s after the kill",
		newHolder, newHost, leaderBack.Round(time.Millisecond), moved.Sub(killed).Round(time.Millisecond))
	for _, op := range cluster.Operators(cfg) {
		if op.Restarts < 1 || op.PID == 0 {
			t.Errorf("operator %s: %d restarts, pid %d; want restarted and running", op.Pod, op.Restarts, op.PID)
		}
	}
	if err := cluster.Recover(cfg, a); err != nil {
		t.Fatal(err)
	}
	gw.waitActive(t, a.Name, 2*time.Minute)
	report(t, "operator-kill", map[string][]time.Duration{"kill-to-leader": {leaderBack}, "kill-to-failover": {moved.Sub(killed)}})

	// The API server unreachable for everyone for 40 s, longer than the
	// operators' leader leases: Cilium's leader gives up and exits, as
	// upstream's does; egressha's leader ends its term and stands again
	// without exiting. After the outage a replica is leader again on its
	// own and a crash still fails over.
	holder = newHolder
	if err := cluster.BlockAPIAll(true); err != nil {
		t.Fatal(err)
	}
	blockedAt := time.Now()
	time.Sleep(40 * time.Second)
	if err := cluster.BlockAPIAll(false); err != nil {
		t.Fatal(err)
	}
	unblocked := time.Now()
	t.Logf("API server blocked for %s", unblocked.Sub(blockedAt).Round(time.Millisecond))
	// A leader that renews: the holder may be the same replica if it kept
	// running, so wait for a fresh renewal rather than a new holder.
	holder, host = waitOperatorLeaderRenewing(t, cfg, unblocked, 3*time.Minute)
	leaderAfter := time.Since(unblocked)
	// Agents' heartbeats resume; the gateway stays on (or returns to) a.
	gw.waitActive(t, a.Name, time.Minute)
	crashed := time.Now()
	if err := cluster.Crash(cfg, a); err != nil {
		t.Fatal(err)
	}
	moved = gw.waitActive(t, b.Name, time.Minute)
	t.Logf("after a 40 s API outage: leader %s on %s renewing %s after the API returned; a crash then failed over after %s",
		holder, host, leaderAfter.Round(time.Millisecond), moved.Sub(crashed).Round(time.Millisecond))
	for _, op := range cluster.Operators(cfg) {
		t.Logf("operator %s on %s: pid %d, %d restarts", op.Pod, op.Host, op.PID, op.Restarts)
	}
	if err := cluster.Recover(cfg, a); err != nil {
		t.Fatal(err)
	}
	gw.waitActive(t, a.Name, 2*time.Minute)
	report(t, "operator-api-outage", map[string][]time.Duration{"unblock-to-leader": {leaderAfter}, "crash-to-status": {moved.Sub(crashed)}})
}

// waitOperatorLeader waits until a replica of the lab other than the one
// with identity not holds the operator leader Lease, and returns the new
// holder and its host.
func waitOperatorLeader(t *testing.T, cfg cluster.Config, not string, timeout time.Duration) (holder, host string) {
	t.Helper()
	var li cluster.LeaderInfo
	waitUntil(t, timeout, "an operator replica other than "+not+" leads", func() bool {
		var err error
		li, err = cluster.OperatorLeader(context.Background(), cfg)
		return err == nil && li.Host != "" && li.Holder != not
	})
	return li.Holder, li.Host
}

// waitOperatorLeaderRenewing waits until a replica of the lab holds the
// operator leader Lease and renewed it after since.
func waitOperatorLeaderRenewing(t *testing.T, cfg cluster.Config, since time.Time, timeout time.Duration) (holder, host string) {
	t.Helper()
	var li cluster.LeaderInfo
	waitUntil(t, timeout, "an operator replica renews the leader Lease after the API returned", func() bool {
		var err error
		li, err = cluster.OperatorLeader(context.Background(), cfg)
		return err == nil && li.Host != "" && li.Renewed.After(since)
	})
	return li.Holder, li.Host
}
