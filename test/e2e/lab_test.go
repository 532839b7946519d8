// Package e2e holds the end-to-end tests. They bring the lab up (the same
// code as `make lab`), drive it and take it down. They need root, the
// binaries in _output/bin and Cilium's bpf sources: `make test-e2e`.
package e2e

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressha/egressha/test/lab/cluster"
)

// testWriter sends lab output to the test log.
type testWriter struct {
	t  *testing.T
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	for {
		line, err := w.b.ReadString('\n')
		if err != nil {
			w.b.WriteString(line)
			break
		}
		w.t.Log(strings.TrimRight(line, "\n"))
	}
	return len(p), nil
}

// startLab brings the lab up in mode and registers its teardown. It fails,
// never skips: these tests are part of `make test`, which CI runs as root.
func startLab(t *testing.T, mode cluster.Mode) cluster.Config {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the e2e tests need root (network namespaces, bpffs); run `make test` as root")
	}
	cfg := cluster.DefaultConfig()
	cfg.Mode = mode
	if cfg.CiliumDir == "" || os.Getenv("EGRESSHA_LAB_BIN") == "" {
		t.Fatal("EGRESSHA_LAB_BIN and EGRESSHA_LAB_CILIUM must be set; run through `make test-e2e`")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out := &testWriter{t: t}
	if err := cluster.Up(ctx, cfg, out); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range cfg.Nodes {
				t.Logf("--- last lines of %s:\n%s", cfg.AgentLog(n.Name), tailFile(cfg.AgentLog(n.Name), 40))
			}
		}
		if os.Getenv("EGRESSHA_E2E_KEEP_LAB") != "" {
			t.Log("EGRESSHA_E2E_KEEP_LAB set: leaving the lab up")
			return
		}
		if err := cluster.Down(cfg, out); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	return cfg
}

func tailFile(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sourceSeen asks the echo server, from inside the pod, which source
// address it saw.
func sourceSeen(ctx context.Context, cfg cluster.Config, ns, pod string) (string, error) {
	return cluster.Curl(ctx, cfg, ns, pod, cluster.EchoURL(), 3*time.Second)
}

// eventuallySource polls until the echo server sees want from the pod.
func eventuallySource(t *testing.T, cfg cluster.Config, ns, pod, want string, within time.Duration) time.Duration {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	var last string
	var lastErr error
	for time.Since(start) < within {
		last, lastErr = sourceSeen(ctx, cfg, ns, pod)
		if lastErr == nil && last == want {
			return time.Since(start)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s/%s: echo server never saw %s within %s; last answer %q, error %v", ns, pod, want, within, last, lastErr)
	return 0
}

func mustNode(t *testing.T, cfg cluster.Config, name string) cluster.Node {
	t.Helper()
	n, err := cfg.Node(name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func kubectlApply(t *testing.T, cfg cluster.Config, yaml string) {
	t.Helper()
	runKubectl(t, cfg, strings.NewReader(yaml), "apply", "-f", "-")
}

func runKubectl(t *testing.T, cfg cluster.Config, stdin io.Reader, args ...string) string {
	t.Helper()
	out, err := cluster.Kubectl(cfg, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// publicMAC is the MAC address of a node's eth1 (public network).
func publicMAC(t *testing.T, n cluster.Node) string {
	t.Helper()
	hw, err := cluster.LinkMAC(n, "eth1")
	if err != nil {
		t.Fatal(err)
	}
	return hw.String()
}
