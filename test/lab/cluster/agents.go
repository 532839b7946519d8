package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/egressha/egressha/test/lab/chart"
)

// podSpecs is what the rendered chart runs: the agent and operator
// containers (command, args, env as the chart renders them), the operator's
// replicas and the cilium-config data. `up` renders the chart once and
// writes this to the lab directory; every later start (the supervisor, the
// CLI, the tests) reads it back, so a restarted process runs exactly what
// the bring-up rendered.
type podSpecs struct {
	Agent            chart.Container
	Operator         chart.Container
	OperatorReplicas int
	Config           map[string]string
}

func (c Config) podSpecsFile() string { return c.path("podspecs.json") }

func (c Config) writePodSpecs(r *chart.Release) error {
	data, err := json.MarshalIndent(podSpecs{Agent: r.Agent, Operator: r.Operator, OperatorReplicas: r.OperatorReplicas, Config: r.Config}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(c.podSpecsFile(), data, 0o644)
}

func (c Config) readPodSpecs() (podSpecs, error) {
	var s podSpecs
	data, err := os.ReadFile(c.podSpecsFile())
	if err != nil {
		return s, fmt.Errorf("the rendered chart of this lab (%s): %w", c.podSpecsFile(), err)
	}
	return s, json.Unmarshal(data, &s)
}

// labAgentFlags are the only cilium-agent flags the lab adds to what the
// chart renders (they come after the chart's, so they win). Each is a path
// that a pod gets from its image or a host mount and that several nodes on
// one machine cannot share:
//   - --lib-dir: the datapath sources the agent compiles. The image ships
//     them at /var/lib/cilium/bpf; here they are a copy of the Cilium
//     module's bpf/ (the same version as the agent's Go code).
//   - --procfs: the chart mounts the host's /proc at /host/proc; the lab's
//     agent sees the machine's /proc where it is.
//   - --write-cni-conf-when-ready: the chart writes the CNI config into the
//     host's /etc/cni/net.d (mounted at /host/etc/cni/net.d) and, with
//     cni-exclusive, renames every other config there; the lab's nodes
//     share the machine's /etc, so each writes into its own directory.
//
// Everything else (the node's own /run/cilium, bpffs and cgroup, the
// ServiceAccount token, cilium-config at the chart's --config-dir) is
// mounted by on-node and pod-exec where the chart's pod expects it, so the
// chart's flags stay as rendered.
func labAgentFlags(cfg Config, node string) []string {
	return []string{
		"--lib-dir=" + cfg.path("lib"),
		"--procfs=/proc",
		"--write-cni-conf-when-ready=" + cfg.path("nodes", node, "cni", "05-cilium.conflist"),
	}
}

// AgentPodName is the name of the cilium-agent Pod of a node.
func AgentPodName(node string) string { return agentPodPrefix + node }

func (c Config) agentPod(n Node) sysPod {
	return sysPod{
		Name: AgentPodName(n.Name), Namespace: CiliumNamespace, Kind: "agent",
		Node: n.Name, Netns: n.Name, HostIP: n.ClusterIP.String(), ServiceAccount: agentServiceAccount,
		dir: c.path("nodes", n.Name),
	}
}

// The operator replicas run on hosts of their own (network namespaces
// lab-op-1, lab-op-2 on the cluster network, no Node object), as the
// chart's anti-affinity spreads them: they do not share ports, and a
// gateway node's crash does not take an operator with it.
func operatorHost(i int) string { return fmt.Sprintf("lab-op-%d", i) }

func operatorHostAddr(i int) string { return fmt.Sprintf("198.18.0.%d", 1+i) }

// OperatorPods are the operator replicas' pods (from the rendered chart;
// none before the lab was brought up).
func (c Config) operatorPods() []sysPod {
	s, err := c.readPodSpecs()
	if err != nil {
		return nil
	}
	var pods []sysPod
	for i := 1; i <= s.OperatorReplicas; i++ {
		pods = append(pods, sysPod{
			Name: fmt.Sprintf("cilium-operator-%d", i), Namespace: CiliumNamespace, Kind: "operator",
			Netns: operatorHost(i), HostIP: operatorHostAddr(i), ServiceAccount: operatorServiceAccount,
			dir: c.path("operators", operatorHost(i)),
		})
	}
	return pods
}

// sysPods are every system pod of the lab: agents, then operators.
func (c Config) sysPods() []sysPod {
	var pods []sysPod
	for _, n := range c.Nodes {
		pods = append(pods, c.agentPod(n))
	}
	return append(pods, c.operatorPods()...)
}

// podCommand is the argv and environment that start the pod's container:
// the chart's command, args and env (fieldRefs resolved from the Pod, the
// ConfigMap refs from cilium-config), inside the pod's network namespace
// with its volumes mounted (pod-exec).
func (c Config) podCommand(p sysPod) (argv, env []string, err error) {
	s, err := c.readPodSpecs()
	if err != nil {
		return nil, nil, err
	}
	ctr := s.Agent
	if p.Kind == "operator" {
		ctr = s.Operator
	}
	refs := map[string]string{
		"metadata.name":           p.Name,
		"metadata.namespace":      p.Namespace,
		"spec.nodeName":           p.Node,
		"spec.serviceAccountName": p.ServiceAccount,
		// No memory limit: a kubelet gives the node's allocatable.
		"limits.memory": strconv.FormatUint(memTotal(), 10),
	}
	environ, err := ctr.Environ(refs, map[string]map[string]string{"cilium-config": s.Config})
	if err != nil {
		return nil, nil, err
	}
	cmdline := ctr.Argv("", environ)
	if len(cmdline) == 0 {
		return nil, nil, errors.New("the chart's container has no command")
	}
	// The images' binaries are ours, next to the lab's.
	cmdline[0] = c.bin(filepath.Base(cmdline[0]))
	exec := []string{c.podExec(), p.volumeDir()}
	switch p.Kind {
	case "agent":
		argv = append(append([]string{c.onNode(), p.Node}, exec...), append(cmdline, labAgentFlags(c, p.Node)...)...)
	default:
		// Its own UTS namespace: the operator's leader-election identity
		// starts with the hostname, so the leader Lease names the host.
		argv = append([]string{"ip", "netns", "exec", p.Netns, "unshare", "--uts", "sh", "-c", `hostname "$0" && exec "$@"`, p.Netns}, append(exec, cmdline...)...)
	}
	env = append(environ, "PATH="+c.path("bin")+":"+os.Getenv("PATH"))
	return argv, env, nil
}

// memTotal is the machine's memory in bytes.
func memTotal() uint64 {
	data, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// AgentLog is the path of a node's agent log.
func (c Config) AgentLog(node string) string { return c.path("nodes", node, "agent.log") }

// StartAgent starts the node's cilium-agent (and keeps it running: the lab
// daemon restarts it if it exits on its own).
func StartAgent(cfg Config, n Node) error { return cfg.startPod(cfg.agentPod(n)) }

// AgentRunning reports whether the node's agent process is alive.
func AgentRunning(cfg Config, n Node) bool { return cfg.agentPod(n).running() }

// BPFFSPath is a path inside the node's bpffs, as seen from the root
// mount namespace (the node sees it under /sys/fs/bpf).
func (c Config) BPFFSPath(node, rel string) string { return c.path("nodes", node, "bpffs", rel) }

// WaitAgentHealthy waits until the node's agent answers /healthz with 200.
func WaitAgentHealthy(ctx context.Context, cfg Config, n Node, timeout time.Duration) error {
	return waitFor(ctx, io.Discard, "cilium-agent on "+n.Name, timeout, func() error {
		if !AgentRunning(cfg, n) {
			return errFatal{fmt.Errorf("cilium-agent on %s exited:\n%s", n.Name, tail(cfg.AgentLog(n.Name), 30))}
		}
		if !probeAgent(ctx, n) {
			return errors.New("/healthz not OK yet")
		}
		return nil
	})
}

// AgentPID is the pid of node n's cilium-agent process: the agent pod's
// process, or the descendant of it that runs cilium-agent when the pod's
// process is a wrapper.
func AgentPID(cfg Config, n Node) (int, error) {
	root := cfg.agentPod(n).pid()
	if !alive(root) {
		return 0, fmt.Errorf("the cilium-agent of %s is not running", n.Name)
	}
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, err := parentPID(pid); err == nil {
			children[ppid] = append(children[ppid], pid)
		}
	}
	for queue := []int{root}; len(queue) > 0; queue = queue[1:] {
		pid := queue[0]
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == "cilium-agent" {
			return pid, nil
		}
		queue = append(queue, children[pid]...)
	}
	return 0, fmt.Errorf("no cilium-agent process under pid %d (%s)", root, n.Name)
}

// parentPID reads the parent of pid from /proc/PID/stat (the field after
// the command, which may hold blanks and parentheses).
func parentPID(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat: too short", pid)
	}
	return strconv.Atoi(f[1])
}

// ProcessRSS is VmRSS of pid in bytes.
func ProcessRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: VmRSS %q: %w", pid, v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// StopAgent stops the node's agent, gracefully or at once with SIGKILL,
// and keeps it stopped until StartAgent.
func StopAgent(cfg Config, n Node, kill bool) { stopPod(cfg.agentPod(n), kill) }

// RestartAgent stops the node's agent with SIGTERM and starts it again at
// once, as a rolling upgrade replaces the pod.
func RestartAgent(cfg Config, n Node) error {
	StopAgent(cfg, n, false)
	return StartAgent(cfg, n)
}

// Crash simulates a hard failure of a node: its links are cut and its
// agent is SIGKILLed, so it neither forwards nor talks to the API server;
// it stays down until Recover. The links go first, as on a power loss
// where the kubelet dies with the node: killing the agent first would let
// the lab's kubelet, which probes the agent every second while the links
// are up, report the agent Pod NotReady in the window between the two, a
// signal a real hard crash never gives.
func Crash(cfg Config, n Node) error {
	err := setNodeLinks(n, false)
	StopAgent(cfg, n, true)
	return err
}

// Recover reconnects a crashed node and starts its agent again.
func Recover(cfg Config, n Node) error {
	if err := setNodeLinks(n, true); err != nil {
		return err
	}
	return StartAgent(cfg, n)
}

// OperatorLog is the path of an operator replica's log (1-based).
func (c Config) OperatorLog(replica int) string {
	return c.path("operators", operatorHost(replica), "operator.log")
}

// startOperators starts every operator replica.
func startOperators(cfg Config) error {
	for _, p := range cfg.operatorPods() {
		if err := cfg.startPod(p); err != nil {
			return err
		}
	}
	return nil
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// KillOperators SIGKILLs every operator replica's process, as a node
// failure or an OOM kill would; they stay wanted, so the lab's kubelets
// restart them with back-off.
func KillOperators(cfg Config) []int {
	var pids []int
	for _, p := range cfg.operatorPods() {
		if pid := p.pid(); alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			pids = append(pids, pid)
		}
	}
	return pids
}

// KillOperator SIGKILLs the operator replica on host (a lab-op-N), as
// KillOperators does every replica; it returns the pid killed, 0 if none.
func KillOperator(cfg Config, host string) int {
	for _, p := range cfg.operatorPods() {
		if pid := p.pid(); p.Netns == host && alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return pid
		}
	}
	return 0
}

// OperatorStatus is one operator replica as `status` shows it.
type OperatorStatus struct {
	Pod, Host string
	PID       int // 0 when not running
	Restarts  int
}

// Operators reports every operator replica.
func Operators(cfg Config) []OperatorStatus {
	var out []OperatorStatus
	for _, p := range cfg.operatorPods() {
		st := OperatorStatus{Pod: p.Name, Host: p.Netns, Restarts: p.state().Restarts}
		if p.running() {
			st.PID = p.pid()
		}
		out = append(out, st)
	}
	return out
}
