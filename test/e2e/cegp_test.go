package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressha/egressha/test/lab/cluster"
)

// The CiliumEgressGatewayPolicy examples of spec document 004, adapted to
// the lab: pods app=nginx in namespace default; destinationCIDRs as written
// (the IPv6 one is ignored, the lab is IPv4). The first example pins one
// node by hostname with its egressIP; for a failover the entry must match
// more than one node, so it selects the egress role with interface eth1.
const cegpSingle = `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: egress-test
spec:
  selectors:
  - podSelector:
      matchLabels:
        app: nginx
        io.kubernetes.pod.namespace: default
  destinationCIDRs:
  - "0.0.0.0/0"
  - "::/0"
  egressGateway:
    nodeSelector:
      matchLabels:
        node-role.deckhouse.io/egress: ""
    interface: eth1
`

// The second example: egressGateway is required by the CRD but ignored by
// Cilium once egressGateways has items; each entry pins one node by
// hostname with that node's address as egressIP (in the lab its eth1
// address, so the echo server tells the gateways apart).
func cegpSpread(a, b cluster.Node) string {
	return fmt.Sprintf(`
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: egress-test
spec:
  selectors:
  - podSelector:
      matchLabels:
        app: nginx
        io.kubernetes.pod.namespace: default
  destinationCIDRs:
  - "0.0.0.0/0"
  - "::/0"
  egressGateway:
    nodeSelector:
      matchLabels:
        kubernetes.io/hostname: %[1]s
    egressIP: %[2]s
  egressGateways:
  - nodeSelector:
      matchLabels:
        kubernetes.io/hostname: %[1]s
    egressIP: %[2]s
  - nodeSelector:
      matchLabels:
        kubernetes.io/hostname: %[3]s
    egressIP: %[4]s
`, a.Name, a.PublicIP, b.Name, b.PublicIP)
}

// TestCEGPFailover runs CiliumEgressGatewayPolicies with Cilium's own egress
// gateway off (egressha mode): traffic leaves through the serving node,
// a crash of that node moves it to the next matching node; with two
// egressGateways entries the pods are spread over both and all keep
// working after one gateway crashes.
func TestCEGPFailover(t *testing.T) {
	cfg := startLab(t, cluster.ModeEgressHA)
	ctx := context.Background()
	a, b, worker := mustNode(t, cfg, "lab-egress-a"), mustNode(t, cfg, "lab-egress-b"), mustNode(t, cfg, "lab-worker")
	if _, err := cluster.AddPod(ctx, cfg, worker.Name, "default", "nginx-0", map[string]string{"app": "nginx"}); err != nil {
		t.Fatal(err)
	}

	// 1. One entry matching both egress nodes: lab-egress-a serves.
	kubectlApply(t, cfg, cegpSingle)
	took := eventuallySource(t, cfg, "default", "nginx-0", a.PublicIP.String(), time.Minute)
	t.Logf("CEGP in effect after %s: nginx-0 leaves as %s", took.Round(time.Millisecond), a.PublicIP)
	pod, err := cluster.GetPod(cfg, "default", "nginx-0")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []cluster.Node{worker, a, b} {
		// Every node tunnels to the serving node; the gateway node SNATs
		// to its eth1 address; the other nodes hold 0.0.0.0, as upstream.
		got := egressList(t, cfg, n.Name)
		t.Logf("cilium-dbg bpf egress list on %s: %+v", n.Name, got)
		i := slices.IndexFunc(got, func(e egressEntry) bool { return e.SourceIP == pod.IP && e.DestCIDR == "0.0.0.0/0" })
		switch {
		case i < 0:
			t.Errorf("%s: cilium-dbg bpf egress list has no entry for %s: %+v", n.Name, pod.IP, got)
		case got[i].GatewayIP != a.ClusterIP.String():
			t.Errorf("%s: gateway IP %s, want %s", n.Name, got[i].GatewayIP, a.ClusterIP)
		case n.Name == a.Name && got[i].EgressIP != a.PublicIP.String():
			t.Errorf("%s: egress IP %s, want %s", n.Name, got[i].EgressIP, a.PublicIP)
		case n.Name != a.Name && got[i].EgressIP != "0.0.0.0":
			t.Errorf("%s: egress IP %s, want 0.0.0.0 (as upstream, only the serving node has one)", n.Name, got[i].EgressIP)
		}
	}
	ann := runKubectl(t, cfg, nil, "get", "ciliumegressgatewaypolicies", "egress-test", "-o", `jsonpath={.metadata.annotations.egressha\.io/gateway-nodes}`)
	if !strings.Contains(ann, `"node":"lab-egress-a"`) {
		t.Errorf("annotation egressha.io/gateway-nodes = %q, want lab-egress-a serving", ann)
	}

	// 2. Crash the serving node: the next matching node takes over.
	crashGap := measureGap(t, cfg, "default", "nginx-0", b.PublicIP.String(), func() {
		if err := cluster.Crash(cfg, a); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("crash of %s: nginx-0 resumed via %s after a gap of %s", a.Name, b.Name, crashGap.Round(time.Millisecond))
	ann = runKubectl(t, cfg, nil, "get", "ciliumegressgatewaypolicies", "egress-test", "-o", `jsonpath={.metadata.annotations.egressha\.io/gateway-nodes}`)
	if !strings.Contains(ann, `"node":"lab-egress-b"`) || !strings.Contains(ann, `"skipped":[{"node":"lab-egress-a"`) {
		t.Errorf("annotation after the crash = %q, want lab-egress-b serving and lab-egress-a skipped", ann)
	}
	events := runKubectl(t, cfg, nil, "get", "events", "-A", "--field-selector", "reason=GatewayNodeChanged", "-o", "custom-columns=MSG:.message")
	if !strings.Contains(events, "gateway entry 0: lab-egress-a -> lab-egress-b") {
		t.Errorf("no GatewayNodeChanged event for the failover:\n%s", events)
	}
	failbackGap := measureGap(t, cfg, "default", "nginx-0", a.PublicIP.String(), func() {
		if err := cluster.Recover(cfg, a); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("recovery of %s: nginx-0 failed back after a gap of %s", a.Name, failbackGap.Round(time.Millisecond))

	// 3. Two egressGateways entries: pods are spread over both. Until the
	// operator has decided entry 1 the agents still see the old decision
	// (one entry), so wait for it before sampling.
	kubectlApply(t, cfg, cegpSpread(a, b))
	waitAnnotation(t, cfg, `{"index":1,"node":"lab-egress-b"`, time.Minute)
	// Pods are spread by upstream's hash of the endpoint's UID (random):
	// six pods all land on one entry in 1 of 32 runs, so add pods (up to
	// 12) until both entries carry one.
	pods := []string{}
	via := map[string]string{}
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; i < 12; i++ {
		name := fmt.Sprintf("nginx-%d", i)
		if i > 0 {
			if _, err := cluster.AddPod(ctx, cfg, worker.Name, "default", name, map[string]string{"app": "nginx"}); err != nil {
				t.Fatal(err)
			}
		}
		pods = append(pods, name)
		for {
			got, err := sourceSeen(ctx, cfg, "default", name)
			if err == nil && (got == a.PublicIP.String() || got == b.PublicIP.String()) {
				via[name] = got
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never left through a gateway: %q %v", name, got, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if len(pods) >= 6 && slices.Contains(slices.Collect(maps.Values(via)), a.PublicIP.String()) &&
			slices.Contains(slices.Collect(maps.Values(via)), b.PublicIP.String()) {
			break
		}
	}
	onA := []string{}
	for _, p := range pods {
		if via[p] == a.PublicIP.String() {
			onA = append(onA, p)
		}
	}
	t.Logf("spread: %d of %d pods via %s (%v), the rest via %s", len(onA), len(pods), a.Name, onA, b.Name)
	if len(onA) == 0 || len(onA) == len(pods) {
		t.Fatalf("pods not spread over both gateways: %v", via)
	}
	for _, n := range []cluster.Node{worker, a, b} {
		t.Logf("cilium-dbg bpf egress list on %s: %+v", n.Name, egressList(t, cfg, n.Name))
	}

	// 4. Crash lab-egress-a: its pods move to lab-egress-b, the others
	// keep working.
	spreadGap := measureGap(t, cfg, "default", onA[0], b.PublicIP.String(), func() {
		if err := cluster.Crash(cfg, a); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("crash of %s: %s resumed via %s after a gap of %s", a.Name, onA[0], b.Name, spreadGap.Round(time.Millisecond))
	for _, p := range pods {
		eventuallySource(t, cfg, "default", p, b.PublicIP.String(), 30*time.Second)
	}
	report(t, "cegp-failover", map[string][]time.Duration{
		"single-entry-crash-gap": {crashGap}, "single-entry-failback-gap": {failbackGap}, "two-entries-crash-gap": {spreadGap},
	})
}

// waitAnnotation waits until the egressha.io/gateway-nodes annotation of
// egress-test contains want.
func waitAnnotation(t *testing.T, cfg cluster.Config, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var ann string
	for time.Now().Before(deadline) {
		ann = runKubectl(t, cfg, nil, "get", "ciliumegressgatewaypolicies", "egress-test", "-o", `jsonpath={.metadata.annotations.egressha\.io/gateway-nodes}`)
		if strings.Contains(ann, want) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("annotation egressha.io/gateway-nodes never contained %s; last %q", want, ann)
}
