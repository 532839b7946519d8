package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Status prints the state of the lab. The line "echo-url: URL" is meant
// for scripts.
func Status(ctx context.Context, cfg Config, out io.Writer) error {
	mode := RunningMode(cfg)
	if mode == "" {
		fmt.Fprintf(out, "lab: down (%s)\n", cfg.Dir)
		return nil
	}
	daemon := "running"
	if !alive(readPid(cfg.path("daemon.pid"))) {
		daemon = "NOT RUNNING"
	}
	fmt.Fprintf(out, "lab: up, mode %s, dir %s, daemon %s\n", mode, cfg.Dir, daemon)
	fmt.Fprintf(out, "kubeconfig: %s\n", cfg.Kubeconfig())
	fmt.Fprintf(out, "echo-url: %s\n", EchoURL())
	fmt.Fprintf(out, "memory: %d MiB RSS in %d lab processes\n", labRSS(cfg)>>20, len(labProcesses(cfg)))

	cs, err := cfg.Clientset()
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tINTERNAL-IP\tETH1-IP\tLINKS\tAGENT\tNODE-READY\tAGENT-POD-READY\tLABELS")
	for _, n := range cfg.Nodes {
		links := "up"
		if !NodeLinksUp(n) {
			links = "cut"
		}
		agent := "stopped"
		if AgentRunning(cfg, n) {
			agent = "running"
			if probeAgent(ctx, n) {
				agent += ",healthy"
			}
		}
		ready, podOK, labels := "?", "?", ""
		if node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{}); err == nil {
			ready = string(nodeReady(node))
			if _, ok := node.Labels[EgressLabel]; ok {
				labels = EgressLabel
			}
		}
		if pod, err := cs.CoreV1().Pods(CiliumNamespace).Get(ctx, AgentPodName(n.Name), metav1.GetOptions{}); err == nil {
			podOK = strconv.FormatBool(podReady(pod))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.ClusterIP, n.PublicIP, links, agent, ready, podOK, labels)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return podsStatus(ctx, cfg, out)
}

// OperatorLeaseName is the Lease egressha's operator replicas elect their
// leader with (egressgw/leader.LeaseName): the leader decides the active
// nodes and writes status; every replica runs the informers and probes.
const OperatorLeaseName = "egressha.operator"

// CiliumOperatorLeaseName is the Lease of Cilium's own operator leader
// election (Cilium's operator work and the CRD registration, ours too).
const CiliumOperatorLeaseName = "cilium-operator-resource-lock"

// LeaderInfo is the state of an operator leader Lease.
type LeaderInfo struct {
	// Holder is the leader's identity, Host the lab host it runs on ("" if
	// no replica of the lab holds the Lease).
	Holder, Host string
	// Renewed is the Lease's renewTime.
	Renewed time.Time
}

// OperatorLeader reads egressha's operator leader Lease.
func OperatorLeader(ctx context.Context, cfg Config) (LeaderInfo, error) {
	return leaseLeader(ctx, cfg, OperatorLeaseName)
}

// CiliumOperatorLeader reads Cilium's operator leader Lease.
func CiliumOperatorLeader(ctx context.Context, cfg Config) (LeaderInfo, error) {
	return leaseLeader(ctx, cfg, CiliumOperatorLeaseName)
}

func leaseLeader(ctx context.Context, cfg Config, name string) (LeaderInfo, error) {
	var li LeaderInfo
	cs, err := cfg.Clientset()
	if err != nil {
		return li, err
	}
	l, err := cs.CoordinationV1().Leases(CiliumNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return li, err
	}
	if l.Spec.HolderIdentity != nil {
		li.Holder = *l.Spec.HolderIdentity
	}
	if l.Spec.RenewTime != nil {
		li.Renewed = l.Spec.RenewTime.Time
	}
	// The identity starts with the replica's hostname, its host's name.
	for _, p := range cfg.operatorPods() {
		if strings.HasPrefix(li.Holder, p.Netns+"-") {
			li.Host = p.Netns
		}
	}
	return li, nil
}

// podsStatus prints every process the lab supervises, as `kubectl get
// pods -o wide` would show their pods, with the operator leaders: egressha's
// ("leader"; "standby" otherwise) and Cilium's ("cilium-leader"), which may
// be different replicas.
func podsStatus(ctx context.Context, cfg Config, out io.Writer) error {
	leader, _ := OperatorLeader(ctx, cfg)
	ciliumLeader, _ := CiliumOperatorLeader(ctx, cfg)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "POD\tHOST\tPID\tPROCESS\tRESTARTS\tSERVICEACCOUNT\tROLE")
	for _, p := range cfg.sysPods() {
		proc := "running"
		switch {
		case !p.running() && !p.wanted():
			proc = "stopped (until recover/start)"
		case !p.running():
			proc = "exited (restarting"
			if st := p.state(); !st.NextStart.IsZero() {
				proc += fmt.Sprintf(" in %s", time.Until(st.NextStart).Round(time.Second))
			}
			proc += ")"
		}
		pid := "-"
		if p.running() {
			pid = strconv.Itoa(p.pid())
		}
		role := ""
		if p.Kind == "operator" {
			role = "standby"
			if p.Netns == leader.Host {
				role = "leader"
			}
			if p.Netns == ciliumLeader.Host {
				role += ",cilium-leader"
			}
		}
		fmt.Fprintf(w, "%s/%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Namespace, p.Name, p.Netns, pid, proc, restartsText(p.state()), p.ServiceAccount, role)
	}
	return w.Flush()
}

// labRSS sums the resident memory of every lab process.
func labRSS(cfg Config) int64 {
	var total int64
	pids := labProcesses(cfg)
	if pid := readPid(cfg.path("daemon.pid")); alive(pid) {
		pids = append(pids, pid)
	}
	seen := map[int]bool{}
	for _, pid := range pids {
		if seen[pid] {
			continue
		}
		seen[pid] = true
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}
