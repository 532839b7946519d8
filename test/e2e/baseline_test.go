package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressha/egressha/test/lab/cluster"
)

// TestBaselineStockCiliumEgressGateway proves the lab's datapath with
// Cilium's own egress gateway and a stock CiliumEgressGatewayPolicy: a
// selected pod's traffic to the echo server leaves through the gateway
// node's eth1 address; an unselected pod, and the same pod without the
// policy, leave through their own node's eth1 address. It stays as the
// baseline our cells are compared with.
func TestBaselineStockCiliumEgressGateway(t *testing.T) {
	cfg := startLab(t, cluster.ModeStock)
	ctx := context.Background()
	worker := mustNode(t, cfg, "lab-worker")
	gateway := mustNode(t, cfg, "lab-egress-a")

	for _, p := range []struct{ name, app string }{{"backend", "backend"}, {"other", "other"}} {
		if _, err := cluster.AddPod(ctx, cfg, worker.Name, "my-ns", p.name, map[string]string{"app": p.app}); err != nil {
			t.Fatal(err)
		}
	}

	// No policy: masqueraded to the worker's own public address.
	eventuallySource(t, cfg, "my-ns", "backend", worker.PublicIP.String(), 10*time.Second)

	kubectlApply(t, cfg, `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: egress-test
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
        kubernetes.io/hostname: lab-egress-a
    interface: eth1
`)
	took := eventuallySource(t, cfg, "my-ns", "backend", gateway.PublicIP.String(), 30*time.Second)
	t.Logf("policy applied: traffic leaves via %s after %s", gateway.Name, took.Round(time.Millisecond))

	// The policy selects only app=backend.
	if got, err := sourceSeen(ctx, cfg, "my-ns", "other"); err != nil || got != worker.PublicIP.String() {
		t.Fatalf("unselected pod: echo server saw %q (error %v), want %s", got, err, worker.PublicIP)
	}

	// The entry is in the pinned map of both the pod's node and the gateway.
	backend, err := cluster.GetPod(cfg, "my-ns", "backend")
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{worker.Name, gateway.Name} {
		out, err := cfg.OnNodeCommand(node, cfg.BinDir+"/cilium-dbg", "bpf", "egress", "list", "-o", "json").Output()
		if err != nil {
			t.Fatalf("cilium-dbg bpf egress list on %s: %v", node, err)
		}
		var entries []struct{ SourceIP, DestCIDR, EgressIP, GatewayIP string }
		if err := json.Unmarshal(out, &entries); err != nil {
			t.Fatalf("%s: %v: %s", node, err, out)
		}
		found := false
		for _, e := range entries {
			if e.SourceIP == backend.IP && e.DestCIDR == "0.0.0.0/0" && e.GatewayIP == gateway.ClusterIP.String() {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no egress entry %s -> gateway %s in %s", node, backend.IP, gateway.ClusterIP, strings.TrimSpace(string(out)))
		}
	}

	// Pinned maps live on a bpffs mounted outside the agent's mount
	// namespace: an agent restart reuses the very same map (same inode).
	pin := cfg.BPFFSPath(worker.Name, "tc/globals/cilium_egress_gw_policy_v4")
	before := inode(t, pin)
	cluster.StopAgent(cfg, worker, false)
	if err := cluster.StartAgent(cfg, worker); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitAgentHealthy(ctx, cfg, worker, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	if after := inode(t, pin); after != before {
		t.Fatalf("%s was re-created by the agent restart (inode %d -> %d)", pin, before, after)
	}
	eventuallySource(t, cfg, "my-ns", "backend", gateway.PublicIP.String(), 30*time.Second)

	runKubectl(t, cfg, nil, "delete", "ciliumegressgatewaypolicy", "egress-test")
	eventuallySource(t, cfg, "my-ns", "backend", worker.PublicIP.String(), 30*time.Second)
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("pinned map: %v", err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}
