package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/egressha/egressha/test/lab/cluster"
	"github.com/egressha/egressha/test/lab/demo"
)

var egressGatewaysGVR = schema.GroupVersionResource{Group: "network.deckhouse.io", Version: "v1alpha1", Resource: "egressgateways"}

// trials is how many failovers each case runs: EGRESSHA_FAILOVER_TRIALS,
// default 3 in `make test`; `make bench` runs more to report percentiles.
func trials(t *testing.T) int { return envInt(t, "EGRESSHA_FAILOVER_TRIALS", 3) }

type gatewayWatcher struct {
	dyn  dynamic.Interface
	name string
}

func (w gatewayWatcher) active(ctx context.Context) (string, error) {
	u, err := w.dyn.Resource(egressGatewaysGVR).Get(ctx, w.name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	s, _, _ := unstructured.NestedString(u.Object, "status", "activeNodeName")
	return s, nil
}

// waitActive polls the status every 20 ms until activeNodeName is want and
// returns when it saw it. The timeout is a liveness bound, not a
// performance assertion: durations are reported, not asserted.
func (w gatewayWatcher) waitActive(t *testing.T, want string, timeout time.Duration) time.Time {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		got, err := w.active(ctx)
		if err == nil && got == want {
			return time.Now()
		}
		last = got
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("EgressGateway %s: activeNodeName never became %q within %s (last %q)", w.name, want, timeout, last)
	return time.Time{}
}

// TestOperatorFailover runs the operator and the agents' heartbeats in the
// lab: crashing the active node (SIGKILL + links cut) moves
// status.activeNodeName to the next node once its heartbeat expires;
// removing its egress label moves it at once; both fail back (Immediate).
// Measured durations are logged and written to $EGRESSHA_RESULTS_DIR.
func TestOperatorFailover(t *testing.T) {
	cfg := startLab(t, cluster.ModeEgressHA)
	rc, err := cfg.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(rc)
	cs := kubernetes.NewForConfigOrDie(rc)
	a, b := mustNode(t, cfg, "lab-egress-a"), mustNode(t, cfg, "lab-egress-b")

	kubectlApply(t, cfg, demo.BasicGateway)
	gw := gatewayWatcher{dyn: dyn, name: "my-egressgw"}
	gw.waitActive(t, a.Name, time.Minute)

	n := trials(t)
	var crash, unlabel []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		if err := cluster.Crash(cfg, a); err != nil {
			t.Fatal(err)
		}
		moved := gw.waitActive(t, b.Name, 60*time.Second)
		crash = append(crash, moved.Sub(start))
		t.Logf("crash %d/%d: %s -> %s after %s", i+1, n, a.Name, b.Name, moved.Sub(start).Round(time.Millisecond))
		if err := cluster.Recover(cfg, a); err != nil {
			t.Fatal(err)
		}
		gw.waitActive(t, a.Name, 2*time.Minute)
	}
	for i := 0; i < n; i++ {
		start := time.Now()
		patchLabel(t, cs, a.Name, nil)
		moved := gw.waitActive(t, b.Name, 30*time.Second)
		unlabel = append(unlabel, moved.Sub(start))
		t.Logf("unlabel %d/%d: %s -> %s after %s", i+1, n, a.Name, b.Name, moved.Sub(start).Round(time.Millisecond))
		empty := ""
		patchLabel(t, cs, a.Name, &empty)
		gw.waitActive(t, a.Name, 30*time.Second)
	}
	report(t, "operator-failover", map[string][]time.Duration{"crash-to-status": crash, "unlabel-to-status": unlabel})
}

// patchLabel sets (value != nil) or removes the egress label of a node.
func patchLabel(t *testing.T, cs kubernetes.Interface, node string, value *string) {
	t.Helper()
	v := "null"
	if value != nil {
		v = strconv.Quote(*value)
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, cluster.EgressLabel, v)
	if _, err := cs.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// report logs percentiles of each series and writes them to
// $EGRESSHA_RESULTS_DIR/<name>.txt when set.
func report(t *testing.T, name string, series map[string][]time.Duration) {
	t.Helper()
	var out string
	for _, key := range slices.Sorted(func(yield func(string) bool) {
		for k := range series {
			if !yield(k) {
				return
			}
		}
	}) {
		d := slices.Clone(series[key])
		slices.Sort(d)
		pct := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
		line := fmt.Sprintf("%s: n=%d min=%s p50=%s p95=%s p99=%s max=%s all=%v\n", key, len(d),
			d[0].Round(time.Millisecond), pct(.5).Round(time.Millisecond), pct(.95).Round(time.Millisecond),
			pct(.99).Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond), roundAll(series[key]))
		t.Log(line)
		out += line
	}
	if dir := os.Getenv("EGRESSHA_RESULTS_DIR"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err == nil {
			_ = os.WriteFile(dir+"/"+name+".txt", []byte(out), 0o644)
		}
	}
}

func roundAll(d []time.Duration) []time.Duration {
	out := make([]time.Duration, len(d))
	for i := range d {
		out[i] = d[i].Round(time.Millisecond)
	}
	return out
}
