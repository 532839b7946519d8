package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"
)

// agentArgs are the cilium-agent flags of a lab node: tunnel routing over
// eth0, kube-proxy replacement and BPF masquerading (what the egress
// gateway datapath needs), the features a lab does not need turned off.
func agentArgs(cfg Config, n Node) []string {
	args := []string{
		cfg.bin("cilium-agent"),
		"--k8s-kubeconfig-path=" + cfg.nodeKubeconfig(),
		"--k8s-namespace=" + CiliumNamespace,
		"--cluster-name=" + ClusterName,
		"--cluster-id=1",
		"--lib-dir=" + cfg.path("lib"),
		"--ipam=kubernetes",
		"--k8s-require-ipv4-pod-cidr",
		"--identity-allocation-mode=crd",
		"--enable-ipv4=true",
		"--enable-ipv6=false",
		"--routing-mode=tunnel",
		"--tunnel-protocol=vxlan",
		"--devices=eth0,eth1",
		"--kube-proxy-replacement=true",
		"--enable-bpf-masquerade=true",
		"--enable-ipv4-masquerade=true",
		"--enable-l7-proxy=false",
		"--enable-envoy-config=false",
		"--enable-hubble=false",
		"--enable-health-checking=false",
		"--enable-endpoint-health-checking=false",
		"--enable-gops=false",
		"--enable-k8s-networkpolicy=false",
		"--enable-policy=never",
	}
	switch cfg.Mode {
	case ModeStock:
		args = append(args, "--enable-egress-gateway=true", "--egress-gateway-ha-enabled=false")
	default:
		args = append(args, "--enable-egress-gateway=false", "--egress-gateway-ha-enabled=true")
	}
	return args
}

func (c Config) agentPidFile(node string) string { return c.path("nodes", node, "agent.pid") }

// AgentLog is the path of a node's agent log.
func (c Config) AgentLog(node string) string { return c.path("nodes", node, "agent.log") }

// StartAgent starts the node's cilium-agent in the background.
func StartAgent(cfg Config, n Node) error {
	if pid := readPid(cfg.agentPidFile(n.Name)); alive(pid) {
		return nil
	}
	env := []string{
		"K8S_NODE_NAME=" + n.Name,
		"PATH=" + cfg.path("bin") + ":" + os.Getenv("PATH"),
	}
	argv := append([]string{cfg.onNode(), n.Name}, agentArgs(cfg, n)...)
	_, err := startDetached(cfg.agentPidFile(n.Name), cfg.AgentLog(n.Name), env, argv...)
	return err
}

// AgentRunning reports whether the node's agent process is alive.
func AgentRunning(cfg Config, n Node) bool { return alive(readPid(cfg.agentPidFile(n.Name))) }

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

// StopAgent stops the node's agent: gracefully, or at once with SIGKILL.
func StopAgent(cfg Config, n Node, kill bool) {
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	stopPid(readPid(cfg.agentPidFile(n.Name)), sig, 20*time.Second)
}

// Crash simulates a hard failure of a node: its links are cut and its
// agent is SIGKILLed, so it neither forwards nor talks to the API server.
// The links go first, as on a power loss where the kubelet dies with the
// node: killing the agent first would let the lab's kubelet, which probes
// the agent every second while the links are up, report the agent Pod
// NotReady in the window between the two, a signal a real hard crash
// never gives.
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

func (c Config) operatorPidFile() string { return c.path("operator.pid") }

// OperatorLog is the path of the operator's log.
func (c Config) OperatorLog() string { return c.path("operator.log") }

// startOperator runs cilium-operator-generic in lab-cp, where the API
// proxy listens.
func startOperator(cfg Config) error {
	if alive(readPid(cfg.operatorPidFile())) {
		return nil
	}
	argv := []string{
		"ip", "netns", "exec", CPNetns,
		cfg.bin("cilium-operator-generic"),
		"--k8s-kubeconfig-path=" + cfg.nodeKubeconfig(),
		"--k8s-namespace=" + CiliumNamespace,
		"--cluster-name=" + ClusterName,
		"--cluster-id=1",
		"--identity-allocation-mode=crd",
		"--ipam=kubernetes",
		"--enable-gops=false",
		"--operator-api-serve-addr=127.0.0.1:9234",
		"--egress-gateway-ha-enabled=" + fmt.Sprint(cfg.Mode != ModeStock),
	}
	if cfg.Mode == ModeStock {
		// Stock Cilium's operator installs the CiliumEgressGatewayPolicy
		// CRD only with its egress gateway on; egressha's operator
		// installs it itself (it serves those policies).
		argv = append(argv, "--enable-egress-gateway=true")
	}
	_, err := startDetached(cfg.operatorPidFile(), cfg.OperatorLog(), nil, argv...)
	return err
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
