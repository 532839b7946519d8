package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressha/egressha/test/lab/chart"
)

// Timeouts of the bring-up steps; generous for a cold 2-core machine.
const (
	daemonTimeout   = 3 * time.Minute
	crdTimeout      = 2 * time.Minute
	agentTimeout    = 4 * time.Minute
	stepPrintPeriod = 15 * time.Second
)

// Up brings the lab up, printing each step to out. Running it on a lab that
// is already up and healthy only prints the status; a lab in any other
// state is taken down first. A failed bring-up takes down what it made and
// returns an error that names the failed step and the relevant log.
func Up(ctx context.Context, cfg Config, out io.Writer) (err error) {
	if err := preflight(cfg); err != nil {
		return err
	}
	if st := RunningMode(cfg); st != "" {
		if st == cfg.Mode && Healthy(ctx, cfg) == nil {
			fmt.Fprintf(out, "==> lab already up (mode %s) and healthy\n", cfg.Mode)
			return Status(ctx, cfg, out)
		}
		fmt.Fprintf(out, "==> a lab (mode %s) is present but not as asked: taking it down first\n", st)
		if err := Down(cfg, out); err != nil {
			return err
		}
	} else if hasLeftovers(cfg) {
		fmt.Fprintln(out, "==> leftovers of an earlier lab found: cleaning up first")
		if err := Down(cfg, out); err != nil {
			return err
		}
	}
	start := time.Now()
	defer func() {
		if err != nil {
			fmt.Fprintf(out, "==> bring-up failed: %v\n==> cleaning up\n", err)
			if derr := Down(cfg, out); derr != nil {
				err = errors.Join(err, fmt.Errorf("cleanup: %w", derr))
			}
		}
	}()
	step := func(format string, args ...any) {
		fmt.Fprintf(out, "==> [%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	step("preparing %s (bpf sources, per-node run dirs and bpffs, cgroups)", cfg.Dir)
	if err := prepareHost(cfg); err != nil {
		return fmt.Errorf("preparing the host: %w", err)
	}
	step("rendering Cilium's chart %s with %s", chart.ChartDir(cfg.CiliumDir), valuesText(cfg))
	rel, err := renderChart(cfg)
	if err != nil {
		return err
	}
	step("creating network namespaces: %s, %s, nodes %s and operator hosts %s", CPNetns, EchoNetns, strings.Join(cfg.nodeNames(), ", "), strings.Join(operatorHosts(cfg), ", "))
	if err := createNetwork(cfg); err != nil {
		return fmt.Errorf("creating the network: %w", err)
	}
	step("starting etcd, kube-apiserver, the echo server and the kubelets (log: %s)", cfg.path("daemon.log"))
	if _, err := startDetached(cfg.path("daemon.pid"), cfg.path("daemon.log"), nil,
		cfg.bin("egressha-lab"), "daemon", "--dir", cfg.Dir); err != nil {
		return err
	}
	if err := waitFor(ctx, out, "control plane", daemonTimeout, func() error {
		if !alive(readPid(cfg.path("daemon.pid"))) {
			return errFatal{fmt.Errorf("lab daemon exited:\n%s", tail(cfg.path("daemon.log"), 20))}
		}
		if _, err := os.Stat(cfg.path("daemon.ready")); err != nil {
			return errors.New("not ready yet")
		}
		return nil
	}); err != nil {
		return err
	}
	if err := os.WriteFile(cfg.path("mode"), []byte(cfg.Mode), 0o644); err != nil {
		return err
	}
	cs, err := cfg.Clientset()
	if err != nil {
		return err
	}
	step("creating Node objects")
	if err := ensureNodeObjects(ctx, cs, cfg); err != nil {
		return err
	}
	step("installing what the chart renders for the API (RBAC, cilium-config) and %s", strings.Join(egresshaManifests, ", "))
	if err := installChart(ctx, cfg, rel); err != nil {
		return err
	}
	step("creating the cilium-agent and cilium-operator Pods and their ServiceAccount tokens")
	if err := prepareSysPods(ctx, cs, cfg); err != nil {
		return err
	}
	step("starting %d cilium-operator-generic replicas on %s (logs: %s)", rel.OperatorReplicas, strings.Join(operatorHosts(cfg), ", "), cfg.path("operators", "*", "operator.log"))
	if err := startOperators(cfg); err != nil {
		return err
	}
	crds := []string{"ciliumnodes.cilium.io", "ciliumendpoints.cilium.io", "ciliumidentities.cilium.io", "ciliumegressgatewaypolicies.cilium.io"}
	if cfg.Mode != ModeStock {
		crds = append(crds, "egressgateways.network.deckhouse.io", "egressgatewaypolicies.network.deckhouse.io")
	}
	if err := waitFor(ctx, out, "the operator leader to install the CRDs", crdTimeout, func() error {
		if err := operatorsCrashLooping(cfg); err != nil {
			return errFatal{err}
		}
		return crdsEstablished(ctx, cfg, crds)
	}); err != nil {
		return err
	}
	step("starting cilium-agent on %s (mode %s)", strings.Join(cfg.nodeNames(), ", "), cfg.Mode)
	for _, n := range cfg.Nodes {
		if err := StartAgent(cfg, n); err != nil {
			return fmt.Errorf("agent on %s: %w", n.Name, err)
		}
	}
	for _, n := range cfg.Nodes {
		if err := WaitAgentHealthy(ctx, cfg, n, agentTimeout); err != nil {
			return err
		}
	}
	step("waiting for the kubelets to report every node and agent Ready")
	if err := waitFor(ctx, out, "Ready nodes and agent pods", time.Minute, func() error { return Healthy(ctx, cfg) }); err != nil {
		return err
	}
	step("lab is up")
	return Status(ctx, cfg, out)
}

// errFatal stops waitFor at once.
type errFatal struct{ error }

// waitFor polls check until it succeeds, fails fatally or timeout passes,
// printing progress every stepPrintPeriod.
func waitFor(ctx context.Context, out io.Writer, what string, timeout time.Duration, check func() error) error {
	start := time.Now()
	lastPrint := start
	for {
		err := check()
		if err == nil {
			return nil
		}
		var fatal errFatal
		if errors.As(err, &fatal) {
			return fatal.error
		}
		if time.Since(start) > timeout {
			return fmt.Errorf("timed out after %s waiting for %s: %w", timeout, what, err)
		}
		if time.Since(lastPrint) >= stepPrintPeriod {
			fmt.Fprintf(out, "    ... still waiting for %s (%.0fs): %v\n", what, time.Since(start).Seconds(), err)
			lastPrint = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func crdsEstablished(ctx context.Context, cfg Config, names []string) error {
	rc, err := cfg.RESTConfig()
	if err != nil {
		return err
	}
	cs, err := apiextensionsclient.NewForConfig(rc)
	if err != nil {
		return err
	}
	for _, name := range names {
		crd, err := cs.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("CRD %s: %w", name, err)
		}
		established := false
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				established = true
			}
		}
		if !established {
			return fmt.Errorf("CRD %s not established", name)
		}
	}
	return nil
}

// Healthy returns nil when the daemon runs and every node is Ready with a
// Ready cilium-agent Pod.
func Healthy(ctx context.Context, cfg Config) error {
	if !alive(readPid(cfg.path("daemon.pid"))) {
		return errors.New("lab daemon not running")
	}
	cs, err := cfg.Clientset()
	if err != nil {
		return err
	}
	for _, n := range cfg.Nodes {
		node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if nodeReady(node) != corev1.ConditionTrue {
			return fmt.Errorf("node %s not Ready", n.Name)
		}
		pod, err := cs.CoreV1().Pods(CiliumNamespace).Get(ctx, AgentPodName(n.Name), metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !podReady(pod) {
			return fmt.Errorf("cilium-agent pod on %s not Ready", n.Name)
		}
	}
	return nil
}

func nodeReady(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// RunningMode is the mode the lab in cfg.Dir was brought up in, "" when it
// is down.
func RunningMode(cfg Config) Mode {
	data, err := os.ReadFile(cfg.path("mode"))
	if err != nil {
		return ""
	}
	return Mode(strings.TrimSpace(string(data)))
}

func preflight(cfg Config) error {
	if os.Geteuid() != 0 {
		return errors.New("the lab needs root (network namespaces, bpffs, cgroups)")
	}
	var missing []string
	for _, tool := range []string{"ip", "iptables", "ipset", "unshare", "mount", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	for _, f := range []string{llvmBin("clang"), llvmBin("llc")} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f)
		}
	}
	for _, b := range []string{"cilium-agent", "cilium-operator-generic", "cilium-cni", "cilium-dbg", "egressha-lab", "kubectl"} {
		if _, err := os.Stat(cfg.bin(b)); err != nil {
			missing = append(missing, cfg.bin(b))
		}
	}
	if cfg.BPFDir == "" {
		missing = append(missing, "Cilium's bpf/ sources (set EGRESSHA_LAB_BPF)")
	} else if _, err := os.Stat(filepath.Join(cfg.BPFDir, "bpf_lxc.c")); err != nil {
		missing = append(missing, filepath.Join(cfg.BPFDir, "bpf_lxc.c"))
	}
	if cfg.CiliumDir == "" {
		missing = append(missing, "the Cilium module's directory (set EGRESSHA_LAB_CILIUM)")
	} else if _, err := os.Stat(filepath.Join(chart.ChartDir(cfg.CiliumDir), "Chart.yaml")); err != nil {
		missing = append(missing, filepath.Join(chart.ChartDir(cfg.CiliumDir), "Chart.yaml"))
	}
	if files, err := chart.ValueFiles(string(cfg.Mode)); err != nil {
		return err
	} else {
		for _, f := range append(files, egresshaManifests...) {
			if _, err := os.Stat(filepath.Join(cfg.RepoDir, f)); err != nil {
				missing = append(missing, filepath.Join(cfg.RepoDir, f)+" (set EGRESSHA_LAB_REPO to the egressha checkout)")
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing: %s (`make lab` installs and builds them)", strings.Join(missing, ", "))
	}
	return nil
}

// llvmBin is the LLVM 19 tool the agents compile their datapath with
// (the version Cilium v1.18's images ship).
func llvmBin(tool string) string { return "/usr/lib/llvm-19/bin/" + tool }

func prepareHost(cfg Config) error {
	for _, d := range []string{cfg.path("bin"), cfg.path("pods"), "/run/cilium"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, tool := range []string{"clang", "llc"} {
		if err := os.Symlink(llvmBin(tool), cfg.path("bin", tool)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	if _, err := os.Stat(cfg.path("lib", "bpf")); err != nil {
		if err := os.MkdirAll(cfg.path("lib"), 0o755); err != nil {
			return err
		}
		if _, err := run("cp", "-r", cfg.BPFDir, cfg.path("lib", "bpf")); err != nil {
			return err
		}
		if _, err := run("chmod", "-R", "u+w", cfg.path("lib", "bpf")); err != nil {
			return err
		}
	}
	cgroot, err := cgroup2Root()
	if err != nil {
		return err
	}
	if err := os.WriteFile(cfg.onNode(), []byte(fmt.Sprintf(onNodeScript, cfg.Dir, cgroot)), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(cfg.podExec(), []byte(podExecScript), 0o755); err != nil {
		return err
	}
	for _, n := range cfg.Nodes {
		for _, d := range []string{cfg.path("nodes", n.Name, "run"), cfg.path("nodes", n.Name, "bpffs"), cfg.path("nodes", n.Name, "cni"), cfg.cgroupDir(cgroot, n.Name)} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		// bpffs in the root mount namespace: the node's agent sees it
		// through a bind mount, and its pinned maps survive a restart.
		if err := syscall.Mount("bpf", cfg.path("nodes", n.Name, "bpffs"), "bpf", 0, ""); err != nil {
			return fmt.Errorf("mounting bpffs for %s: %w", n.Name, err)
		}
	}
	return nil
}

// hasLeftovers reports whether anything of a lab remains.
func hasLeftovers(cfg Config) bool {
	if _, err := os.Stat(cfg.Dir); err == nil {
		return true
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if isLabNetns(cfg, e.Name()) {
			return true
		}
	}
	return len(labProcesses(cfg)) > 0
}

// Down removes everything the lab made: processes, network namespaces,
// mounts, cgroups and the lab directory. It is safe to run at any time.
func Down(cfg Config, out io.Writer) error {
	var errs []error
	fmt.Fprintln(out, "==> stopping the lab daemon (kubelets, supervisor), agents and operators")
	// The daemon first: its supervisor would restart what stops next.
	stopPid(readPid(cfg.path("daemon.pid")), syscall.SIGTERM, 15*time.Second)
	for _, p := range cfg.sysPods() {
		stopPod(p, false)
	}
	for _, pid := range labProcesses(cfg) {
		stopPid(pid, syscall.SIGKILL, 5*time.Second)
	}
	fmt.Fprintln(out, "==> deleting network namespaces")
	errs = append(errs, deleteNetwork(cfg)...)
	fmt.Fprintln(out, "==> unmounting and removing", cfg.Dir)
	for _, m := range mountsUnder(cfg.Dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	if cgroot, err := cgroup2Root(); err == nil {
		base := filepath.Join(cgroot, "egressha-lab")
		subs, _ := os.ReadDir(base)
		for _, s := range subs {
			if s.IsDir() {
				if err := os.Remove(filepath.Join(base, s.Name())); err != nil {
					errs = append(errs, fmt.Errorf("cgroup %s: %w", s.Name(), err))
				}
			}
		}
		if err := os.Remove(base); err != nil && !os.IsNotExist(err) {
			errs = append(errs, fmt.Errorf("cgroup %s: %w", base, err))
		}
	}
	if err := os.RemoveAll(cfg.Dir); err != nil {
		errs = append(errs, err)
	}
	// The empty mount point for the nodes' /run/cilium, if nothing else uses it.
	_ = os.Remove("/run/cilium")
	return errors.Join(errs...)
}

// mountsUnder lists mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 1 && strings.HasPrefix(fields[1], dir+"/") {
			out = append(out, fields[1])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	return out
}

// valuesText names the values files the chart is rendered with.
func valuesText(cfg Config) string {
	files, _ := chart.ValueFiles(string(cfg.Mode))
	return strings.Join(files, " + ")
}

// operatorsCrashLooping fails when every operator replica keeps exiting.
func operatorsCrashLooping(cfg Config) error {
	pods := cfg.operatorPods()
	for _, p := range pods {
		if p.running() || p.state().Restarts < 2 {
			return nil
		}
	}
	if len(pods) == 0 {
		return errors.New("no operator replicas")
	}
	return fmt.Errorf("every cilium-operator replica keeps exiting; the last lines of %s:\n%s", pods[0].logFile(), tail(pods[0].logFile(), 20))
}
