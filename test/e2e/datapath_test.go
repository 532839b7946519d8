package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/egressha/egressha/test/lab/cluster"
	"github.com/egressha/egressha/test/lab/demo"
)

type egressEntry struct{ SourceIP, DestCIDR, EgressIP, GatewayIP string }

func egressList(t *testing.T, cfg cluster.Config, node string) []egressEntry {
	t.Helper()
	out, err := cfg.OnNodeCommand(node, cfg.BinDir+"/cilium-dbg", "bpf", "egress", "list", "-o", "json").Output()
	if err != nil {
		t.Fatalf("cilium-dbg bpf egress list on %s: %v", node, err)
	}
	var entries []egressEntry
	if err := json.Unmarshal(out, &entries); err != nil {
		t.Fatalf("%s: %v: %s", node, err, out)
	}
	slices.SortFunc(entries, func(a, b egressEntry) int {
		return compareStrings(a.SourceIP+a.DestCIDR, b.SourceIP+b.DestCIDR)
	})
	return entries
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestEgressHADatapath runs our agent cells with Cilium's own egress
// gateway off, with the spec's basic-mode gateway and policy: the selected
// pod leaves through the active node's eth1, an unselected pod and excluded
// or unlisted destinations do not, a crash of the active node moves the
// traffic to the standby and a recovery brings it back.
func TestEgressHADatapath(t *testing.T) {
	cfg := startLab(t, cluster.ModeEgressHA)
	ctx := context.Background()
	a, b, worker := mustNode(t, cfg, "lab-egress-a"), mustNode(t, cfg, "lab-egress-b"), mustNode(t, cfg, "lab-worker")
	for _, p := range []struct{ name, app string }{{"backend", "backend"}, {"other", "other"}} {
		if _, err := cluster.AddPod(ctx, cfg, worker.Name, "my-ns", p.name, map[string]string{"app": p.app}); err != nil {
			t.Fatal(err)
		}
	}
	kubectlApply(t, cfg, demo.BasicGateway)
	kubectlApply(t, cfg, demo.Policy)

	took := eventuallySource(t, cfg, "my-ns", "backend", a.PublicIP.String(), time.Minute)
	t.Logf("policy in effect after %s: backend leaves as %s", took.Round(time.Millisecond), a.PublicIP)
	if got, err := sourceSeen(ctx, cfg, "my-ns", "other"); err != nil || got != worker.PublicIP.String() {
		t.Fatalf("unselected pod: echo server saw %q (error %v), want its node's %s", got, err, worker.PublicIP)
	}
	backend, err := cluster.GetPod(cfg, "my-ns", "backend")
	if err != nil {
		t.Fatal(err)
	}
	// Every node tunnels to the active node. The egress IP is each node's
	// own eth1 address: a packet leaving a node that is not (or no longer,
	// or not yet) the active one leaves with that node's source address,
	// never with another node's.
	for _, n := range []cluster.Node{worker, a, b} {
		want := egressEntry{SourceIP: backend.IP, DestCIDR: "0.0.0.0/0", EgressIP: n.PublicIP.String(), GatewayIP: a.ClusterIP.String()}
		if got := egressList(t, cfg, n.Name); !slices.Contains(got, want) {
			t.Errorf("%s: cilium-dbg bpf egress list lacks %+v: %+v", n.Name, want, got)
		}
	}

	// Excluded destination: traffic to the echo server leaves as if no
	// policy matched.
	kubectlApply(t, cfg, fmt.Sprintf(`
apiVersion: network.deckhouse.io/v1alpha1
kind: EgressGatewayPolicy
metadata:
  name: my-egressgw-policy
spec:
  destinationCIDRs: [0.0.0.0/0]
  excludedCIDRs: [%s/32]
  egressGatewayName: my-egressgw
  selectors:
  - podSelector:
      matchLabels: {app: backend, io.kubernetes.pod.namespace: my-ns}
`, cluster.EchoAddr.Addr()))
	eventuallySource(t, cfg, "my-ns", "backend", worker.PublicIP.String(), 30*time.Second)
	// A destination outside destinationCIDRs: likewise.
	kubectlApply(t, cfg, `
apiVersion: network.deckhouse.io/v1alpha1
kind: EgressGatewayPolicy
metadata:
  name: my-egressgw-policy
spec:
  destinationCIDRs: [198.51.100.0/24]
  egressGatewayName: my-egressgw
  selectors:
  - podSelector:
      matchLabels: {app: backend, io.kubernetes.pod.namespace: my-ns}
`)
	eventuallySource(t, cfg, "my-ns", "backend", worker.PublicIP.String(), 30*time.Second)
	kubectlApply(t, cfg, demo.Policy)
	eventuallySource(t, cfg, "my-ns", "backend", a.PublicIP.String(), 30*time.Second)

	// Restart the worker's agent: not one entry may be removed or changed
	// while it is down and coming back, and traffic keeps flowing.
	restartAgentWatched(t, cfg, worker, backend.IP, a.PublicIP.String())

	// New pods whose policy already exists: their first request must leave
	// through the gateway (the entry exists before the pod sends).
	unsnated := 0
	for i := 0; i < newPods(t); i++ {
		name := fmt.Sprintf("new-%d", i)
		if _, err := cluster.AddPod(ctx, cfg, worker.Name, "my-ns", name, map[string]string{"app": "backend"}); err != nil {
			t.Fatal(err)
		}
		got, err := sourceSeen(ctx, cfg, "my-ns", name)
		if err != nil || got != a.PublicIP.String() {
			unsnated++
			t.Logf("new pod %s: first request seen as %q (error %v), want %s", name, got, err, a.PublicIP)
		}
	}
	t.Logf("new pods: %d of %d sent their first request un-SNATed", unsnated, newPods(t))
	if unsnated > 0 {
		t.Errorf("%d of %d new pods' first requests left without the egress gateway", unsnated, newPods(t))
	}

	// Crash the active node: traffic resumes through the standby.
	crashGap := measureGap(t, cfg, "my-ns", "backend", b.PublicIP.String(), func() {
		if err := cluster.Crash(cfg, a); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("crash of %s: traffic resumed via %s after a gap of %s", a.Name, b.Name, crashGap.Round(time.Millisecond))
	failbackGap := measureGap(t, cfg, "my-ns", "backend", a.PublicIP.String(), func() {
		if err := cluster.Recover(cfg, a); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("recovery of %s: traffic failed back after a gap of %s", a.Name, failbackGap.Round(time.Millisecond))
	report(t, "datapath-failover", map[string][]time.Duration{"crash-gap": {crashGap}, "failback-gap": {failbackGap}})
}

// measureGap sends a request every 50 ms, runs action, and returns the time
// from the last answer before the switch to the first answer with want.
func measureGap(t *testing.T, cfg cluster.Config, ns, pod, want string, action func()) time.Duration {
	t.Helper()
	ctx := context.Background()
	lastOK := time.Now()
	action()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		got, err := cluster.Curl(ctx, cfg, ns, pod, cluster.EchoURL(), 500*time.Millisecond)
		now := time.Now()
		if err == nil && got == want {
			return now.Sub(lastOK)
		}
		if err == nil {
			lastOK = now
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s/%s never reached the echo server as %s", ns, pod, want)
	return 0
}

// newPods is how many new pods the first-packet check creates:
// EGRESSHA_NEW_PODS, default 20.
func newPods(t *testing.T) int { return envInt(t, "EGRESSHA_NEW_PODS", 20) }

// restartAgentWatched restarts node's agent while dumping its egress map
// and sending requests from the pod every 100 ms; any entry removed or
// changed, and any request that fails or leaves un-SNATed, fails the test.
func restartAgentWatched(t *testing.T, cfg cluster.Config, n cluster.Node, podIP, want string) {
	t.Helper()
	before := egressList(t, cfg, n.Name)
	if len(before) == 0 {
		t.Fatalf("%s: no egress entries before the restart", n.Name)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mapChanges, badRequests, dumps, requests int
	var firstChange, firstBad string
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			out, err := cfg.OnNodeCommand(n.Name, cfg.BinDir+"/cilium-dbg", "bpf", "egress", "list", "-o", "json").Output()
			var cur []egressEntry
			if err == nil && json.Unmarshal(out, &cur) == nil {
				dumps++
				slices.SortFunc(cur, func(a, b egressEntry) int { return compareStrings(a.SourceIP+a.DestCIDR, b.SourceIP+b.DestCIDR) })
				if !slices.Equal(cur, before) {
					mapChanges++
					if firstChange == "" {
						firstChange = fmt.Sprintf("%+v", cur)
					}
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := sourceSeen(context.Background(), cfg, "my-ns", "backend")
			requests++
			if err != nil || got != want {
				badRequests++
				if firstBad == "" {
					firstBad = fmt.Sprintf("%q %v", got, err)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	start := time.Now()
	cluster.StopAgent(cfg, n, false)
	if err := cluster.StartAgent(cfg, n); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitAgentHealthy(context.Background(), cfg, n, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // the first resync after restart
	close(stop)
	wg.Wait()
	t.Logf("agent restart on %s took %s: %d map dumps, %d changed; %d requests, %d failed or un-SNATed",
		n.Name, time.Since(start).Round(time.Millisecond), dumps, mapChanges, requests, badRequests)
	if mapChanges > 0 {
		t.Errorf("the egress map of %s changed during the agent restart (first: %s; before: %+v)", n.Name, firstChange, before)
	}
	if badRequests > 0 {
		t.Errorf("%d of %d requests from %s failed or left un-SNATed during the restart (first: %s)", badRequests, requests, podIP, firstBad)
	}
}
