// Package demo is the lab's demo, the README's first command: on a lab
// that is up in mode egressha it applies the spec's EgressGateway and
// EgressGatewayPolicy, starts a pod, shows what egressha made of them
// (`kubectl get egw`, each node's egress map, the source address the echo
// server saw), crashes the active gateway node while the pod sends a
// request every 20 ms, prints the measured gap and the new source address,
// recovers the node, and does the same in VirtualIPAddress mode. It leaves
// the lab up. The e2e test TestDemo runs the same code.
package demo

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/egressha/egressha/test/lab/cluster"
	"github.com/egressha/egressha/test/lab/probe"
)

// The manifests the demo applies: the spec's examples, adapted to the lab
// where they must be (each file says how). Users apply them too, e.g.
// `egressha-lab kubectl apply -f test/lab/demo/examples/vip.yaml`.
var (
	//go:embed examples/basic.yaml
	BasicGateway string
	//go:embed examples/vip.yaml
	VIPGateway string
	//go:embed examples/policy.yaml
	Policy string
)

// ExamplesDir is where the manifests live, relative to the repository root.
const ExamplesDir = "test/lab/demo/examples"

// VIP is the virtual IP of VIPGateway, on the lab's public network.
var VIP = netip.MustParseAddr("203.0.113.50")

// What the manifests name and select, and where the demo's pod runs.
const (
	GatewayName = "my-egressgw"
	Namespace   = "my-ns"
	PodName     = "backend"
	PodNode     = "lab-worker"
)

// EgressGatewaysGVR is the resource of EgressGateway objects.
var EgressGatewaysGVR = schema.GroupVersionResource{Group: "network.deckhouse.io", Version: "v1alpha1", Resource: "egressgateways"}

// Result is what the demo observed.
type Result struct {
	Basic, VIP ModeResult
	// Took is how long the demo ran.
	Took time.Duration
}

// ModeResult is what the demo observed in one source-IP mode.
type ModeResult struct {
	// Mode is the EgressGateway's spec.sourceIP.mode.
	Mode string
	// ActiveBefore is status.activeNodeName before the crash (the node
	// crashed), ActiveAfter once traffic left through another node,
	// ActiveRecovered after the crashed node recovered.
	ActiveBefore, ActiveAfter, ActiveRecovered string
	// SourceBefore, SourceAfter and SourceRecovered: the source address
	// the echo server saw at those times.
	SourceBefore, SourceAfter, SourceRecovered string
	// MACBefore and MACAfter: the Ethernet source of the pod's requests
	// on the public network (the eth1 MAC of the node they left through).
	MACBefore, MACAfter string
	// VIPOwnerBefore and VIPOwnerAfter (VIP mode): the MAC the echo
	// server's ARP table holds for the VIP, i.e. the node answering for it.
	VIPOwnerBefore, VIPOwnerAfter string
	// CrashGap is the longest time without a reply through a gateway from
	// the crash on; FailbackGap the same from the recovery on.
	CrashGap, FailbackGap time.Duration
}

// mode is one of the two source-IP modes the demo shows.
type mode struct {
	name, file, gateway, differs string
	// source is the address the echo server sees when the pod's traffic
	// leaves through n.
	source func(n cluster.Node) string
	// via tells which node a reply left through.
	via probe.Via
}

type demo struct {
	ctx     context.Context
	cfg     cluster.Config
	out     io.Writer
	start   time.Time
	dyn     dynamic.Interface
	macOf   map[string]string // node name -> eth1 MAC
	crashed []cluster.Node    // crashed by the demo and not yet recovered
}

// Run runs the demo on the lab cfg describes, which must be up in mode
// egressha, writing what it does and sees to out. It can run again on the
// same lab: it recreates its pod and re-applies its manifests.
func Run(ctx context.Context, cfg cluster.Config, out io.Writer) (res *Result, err error) {
	d := &demo{ctx: ctx, cfg: cfg, out: out, start: time.Now(), macOf: map[string]string{}}
	switch m := cluster.RunningMode(cfg); m {
	case cluster.ModeEgressHA:
	case "":
		return nil, fmt.Errorf("the lab in %s is down: bring it up first (egressha-lab up)", cfg.Dir)
	default:
		return nil, fmt.Errorf("the lab runs in mode %s, the demo needs mode %s: egressha-lab down, then egressha-lab up", m, cluster.ModeEgressHA)
	}
	rc, err := cfg.RESTConfig()
	if err != nil {
		return nil, err
	}
	if d.dyn, err = dynamic.NewForConfig(rc); err != nil {
		return nil, err
	}
	byMAC, err := probe.NodesByMAC(cfg)
	if err != nil {
		return nil, err
	}
	for mac, node := range byMAC {
		d.macOf[node] = mac
	}
	defer func() {
		// Never leave a node crashed behind, even on an error.
		for _, n := range d.crashed {
			fmt.Fprintf(out, "    recovering %s, which the demo crashed\n", n.Name)
			if rerr := cluster.Recover(cfg, n); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}()
	if err := d.prepare(); err != nil {
		return nil, err
	}
	viaMAC, err := probe.ViaSourceMAC(cfg)
	if err != nil {
		return nil, err
	}
	res = &Result{}
	basic := mode{
		name: "PrimaryIPFromEgressGatewayNodeInterface", file: "basic.yaml", gateway: BasicGateway,
		differs: "as in the spec, except that the gateway is named my-egressgw, the name the spec's policy refers to " +
			"(the spec's Russian example calls it myegressgw)",
		source: func(n cluster.Node) string { return n.PublicIP.String() },
		via:    probe.ViaSourceIP(cfg),
	}
	if res.Basic, err = d.runMode(basic); err != nil {
		return res, fmt.Errorf("basic mode: %w", err)
	}
	vip := mode{
		name: "VirtualIPAddress", file: "vip.yaml", gateway: VIPGateway,
		differs: fmt.Sprintf("as in the spec, except the VIP: %s instead of 172.18.18.242, which is not on the lab's "+
			"public network %s (the nodes' eth1)", VIP, cluster.EchoAddr.Masked()),
		source: func(cluster.Node) string { return VIP.String() },
		via:    viaMAC, // every gateway SNATs to the VIP: tell them apart by MAC
	}
	if res.VIP, err = d.runMode(vip); err != nil {
		return res, fmt.Errorf("VIP mode: %w", err)
	}
	res.Took = time.Since(d.start)
	d.next(res)
	return res, nil
}

func (d *demo) step(format string, args ...any) {
	fmt.Fprintf(d.out, "==> [%5.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "    %s\n", fmt.Sprintf(format, args...))
}

// indent writes text indented, without a trailing blank line.
func (d *demo) indent(text string) {
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		fmt.Fprintf(d.out, "    %s\n", line)
	}
}

// prepare recovers nodes an earlier, interrupted run left crashed, waits
// for the lab to be healthy and (re)creates the demo's pod.
func (d *demo) prepare() error {
	d.step("checking the lab (mode %s, %s)", cluster.ModeEgressHA, d.cfg.Dir)
	for _, n := range d.cfg.Nodes {
		if !cluster.NodeLinksUp(n) || !cluster.AgentRunning(d.cfg, n) {
			d.say("%s is down (crashed earlier?): recovering it", n.Name)
			if err := cluster.Recover(d.cfg, n); err != nil {
				return err
			}
		}
	}
	if err := d.waitHealthy(2 * time.Minute); err != nil {
		return err
	}
	if _, err := cluster.GetPod(d.cfg, Namespace, PodName); err == nil {
		d.say("deleting the pod %s/%s of an earlier run", Namespace, PodName)
		if err := cluster.DeletePod(d.ctx, d.cfg, Namespace, PodName); err != nil {
			return err
		}
	} else if cs, err := d.cfg.Clientset(); err == nil {
		// A Pod object without its lab pod (an interrupted run).
		err := cs.CoreV1().Pods(Namespace).Delete(d.ctx, PodName, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	d.step("starting pod %s/%s (app=backend) on %s", Namespace, PodName, PodNode)
	p, err := cluster.AddPod(d.ctx, d.cfg, PodNode, Namespace, PodName, map[string]string{"app": "backend"})
	if err != nil {
		return err
	}
	d.say("pod %s/%s: ip %s, wired by cilium-cni on %s", Namespace, PodName, p.IP, PodNode)
	return nil
}

func (d *demo) waitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cluster.Healthy(d.ctx, d.cfg)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the lab is not healthy after %s: %w (see egressha-lab status)", timeout, err)
		}
		if err := d.sleep(200 * time.Millisecond); err != nil {
			return err
		}
	}
}

func (d *demo) sleep(t time.Duration) error {
	select {
	case <-d.ctx.Done():
		return d.ctx.Err()
	case <-time.After(t):
		return nil
	}
}

// runMode applies m's gateway and the policy, shows the state, crashes
// the active node and recovers it.
func (d *demo) runMode(m mode) (ModeResult, error) {
	r := ModeResult{Mode: m.name}
	d.step("%s mode: applying the spec's EgressGateway and EgressGatewayPolicy (%s/%s, %s/policy.yaml)",
		m.name, ExamplesDir, m.file, ExamplesDir)
	d.say("%s.", m.differs)
	manifests := m.gateway + "---\n" + Policy
	d.indent(manifests)
	out, err := cluster.Kubectl(d.cfg, strings.NewReader(manifests), "apply", "-f", "-")
	d.say("$ egressha-lab kubectl apply -f ...")
	d.indent(out)
	if err != nil {
		return r, fmt.Errorf("kubectl apply: %w", err)
	}

	active, s, err := d.waitInEffect(m, time.Minute)
	if err != nil {
		return r, err
	}
	r.ActiveBefore, r.SourceBefore, r.MACBefore = active.Name, s.Source, s.MAC
	d.step("in effect: %s/%s leaves through the active node %s", Namespace, PodName, active.Name)
	d.kubectl("get", "egw")
	for _, n := range d.cfg.Nodes {
		d.egressList(n.Name)
	}
	d.say("the echo server saw source %s, Ethernet source %s (%s)", s.Source, s.MAC, d.nodeOfMAC(s.MAC))
	if m.via(s) != active.Name {
		return r, fmt.Errorf("reply %+v did not come through %s", s, active.Name)
	}
	if m.name == "VirtualIPAddress" {
		r.VIPOwnerBefore = cluster.EchoNeighbour(VIP)
		d.say("the echo server's ARP table: %s is at %s (%s)", VIP, r.VIPOwnerBefore, d.nodeOfMAC(r.VIPOwnerBefore))
	}

	p := probe.Start(d.cfg, Namespace, PodName)
	defer p.Stop()
	through := func(node string) func(probe.Sample) bool {
		n, _ := d.cfg.Node(node)
		return func(s probe.Sample) bool { return m.via(s) == node && s.Source == m.source(n) }
	}
	if !p.WaitSteady(10, 30*time.Second, through(active.Name)) {
		return r, fmt.Errorf("the pod's requests never steadily left through %s", active.Name)
	}

	// Crash the active node.
	d.step("crashing %s (links cut, cilium-agent SIGKILLed) while the pod opens a new connection to the echo server every %s",
		active.Name, probe.Interval)
	t0 := time.Now()
	d.crashed = append(d.crashed, active)
	if err := cluster.Crash(d.cfg, active); err != nil {
		return r, err
	}
	first, ok := d.waitFor(p, t0, time.Minute, func(s probe.Sample) bool {
		v := m.via(s)
		n, err := d.cfg.Node(v)
		return err == nil && v != active.Name && v != PodNode && s.Source == m.source(n)
	})
	if !ok {
		return r, errors.Join(d.ctx.Err(), fmt.Errorf("no reply through another gateway within a minute of the crash of %s", active.Name))
	}
	standby := m.via(first)
	p.WaitSteady(5, 10*time.Second, through(standby))
	// The gap counts every reply with a gateway's source address (in VIP
	// mode: the VIP, whatever MAC carried it).
	standbyNode, _ := d.cfg.Node(standby)
	good := func(s probe.Sample) bool { return s.Source == m.source(active) || s.Source == m.source(standbyNode) }
	r.CrashGap = p.LongestGap(t0, good)
	r.SourceAfter, r.MACAfter = first.Source, first.MAC
	r.ActiveAfter = d.waitActive(standby, 10*time.Second)
	sent, failed := p.Count(t0, first.Replied)
	d.step("traffic resumed through %s after a gap of %s (%d of %d requests sent meanwhile failed)",
		standby, r.CrashGap.Round(time.Millisecond), failed, sent)
	d.say("the echo server now sees source %s, Ethernet source %s (%s)", first.Source, first.MAC, d.nodeOfMAC(first.MAC))
	if m.name == "VirtualIPAddress" {
		r.VIPOwnerAfter = d.waitVIPOwner(d.macOf[standby], 10*time.Second)
		d.say("the echo server's ARP table: %s is at %s (%s): the source address stayed the VIP", VIP, r.VIPOwnerAfter, d.nodeOfMAC(r.VIPOwnerAfter))
	} else {
		d.say("the source address changed from %s to %s, as the spec says it does in this mode", r.SourceBefore, r.SourceAfter)
	}
	d.kubectl("get", "egw")

	// Recover it: with the default failback (Immediate) the traffic moves
	// back.
	d.step("recovering %s (links up, cilium-agent started)", active.Name)
	t1 := time.Now()
	if err := cluster.Recover(d.cfg, active); err != nil {
		return r, err
	}
	d.crashed = d.crashed[:len(d.crashed)-1]
	if err := cluster.WaitAgentHealthy(d.ctx, d.cfg, active, 2*time.Minute); err != nil {
		return r, err
	}
	healthy := time.Since(t1)
	back, ok := d.waitFor(p, t1, 2*time.Minute, through(active.Name))
	if !ok {
		return r, errors.Join(d.ctx.Err(), fmt.Errorf("traffic never failed back to %s", active.Name))
	}
	p.WaitSteady(5, 10*time.Second, through(active.Name))
	r.FailbackGap = p.LongestGap(t1, good)
	r.SourceRecovered = back.Source
	r.ActiveRecovered = d.waitActive(active.Name, 10*time.Second)
	p.Stop()
	if err := d.waitHealthy(2 * time.Minute); err != nil {
		return r, err
	}
	d.step("%s is back: agent healthy after %s; traffic failed back to it (source %s) %s after it recovered, once it had stayed eligible for the hold-down (selection.holdDown, 10 s by default), with a gap of %s",
		active.Name, healthy.Round(100*time.Millisecond), back.Source, back.Replied.Sub(t1).Round(100*time.Millisecond), r.FailbackGap.Round(time.Millisecond))
	return r, nil
}

// waitFor is p.WaitFor that gives up when the demo is cancelled.
func (d *demo) waitFor(p *probe.Prober, after time.Time, timeout time.Duration, match func(probe.Sample) bool) (probe.Sample, bool) {
	deadline := time.Now().Add(timeout)
	for d.ctx.Err() == nil {
		if s, ok := p.WaitFor(after, 250*time.Millisecond, match); ok {
			return s, true
		}
		if time.Now().After(deadline) {
			break
		}
	}
	return probe.Sample{}, false
}

// waitInEffect waits until the gateway has settled on the spec as applied
// (status for the current generation, Ready, every candidate eligible, so
// the active node is the one the selection prefers and not one that merely
// reported first) and the pod's traffic leaves through the active node as
// m says (in VIP mode: the echo server also resolves the VIP to that
// node's MAC).
func (d *demo) waitInEffect(m mode, timeout time.Duration) (cluster.Node, probe.Sample, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		name, unsettled := d.settled()
		if n, err := d.cfg.Node(name); err == nil && unsettled == "" {
			body, err := cluster.Curl(d.ctx, d.cfg, Namespace, PodName, cluster.EchoL2URL(), 2*time.Second)
			s := probe.Sample{Replied: time.Now(), Err: err}
			if f := strings.Fields(body); len(f) == 2 {
				s.Source, s.MAC = f[0], f[1]
			}
			owner := ""
			if m.name == "VirtualIPAddress" {
				owner = cluster.EchoNeighbour(VIP)
			}
			last = fmt.Sprintf("active %s, the echo server saw %q (error %v)", name, body, err)
			if s.OK() && s.Source == m.source(n) && m.via(s) == name && (owner == "" || owner == d.macOf[name]) {
				return n, s, nil
			}
		} else {
			last = fmt.Sprintf("active node %q: %s", name, unsettled)
		}
		if time.Now().After(deadline) {
			return cluster.Node{}, probe.Sample{}, fmt.Errorf("not in effect after %s: %s", timeout, last)
		}
		if err := d.sleep(100 * time.Millisecond); err != nil {
			return cluster.Node{}, probe.Sample{}, err
		}
	}
}

// settled returns the gateway's active node and, if its status has not
// settled on the current spec, why ("" once it has).
func (d *demo) settled() (active, why string) {
	u, err := d.dyn.Resource(EgressGatewaysGVR).Get(d.ctx, GatewayName, metav1.GetOptions{})
	if err != nil {
		return "", err.Error()
	}
	active, _, _ = unstructured.NestedString(u.Object, "status", "activeNodeName")
	if gen, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration"); gen != u.GetGeneration() {
		return active, fmt.Sprintf("status is for generation %d, the spec is at %d", gen, u.GetGeneration())
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	ready := false
	for _, c := range conds {
		if c, _ := c.(map[string]any); c["type"] == "Ready" {
			ready = c["status"] == "True"
			if !ready {
				why = fmt.Sprintf("Ready is %v (%v: %v)", c["status"], c["reason"], c["message"])
			}
			// A better-ranked node held down takes the role when its
			// hold ends: not settled yet (e.g. after a mode change,
			// where a node's VIP is not set up for a moment).
			if msg, _ := c["message"].(string); ready && strings.Contains(msg, "held down") {
				return active, msg
			}
		}
	}
	if !ready {
		return active, cmp.Or(why, "no Ready condition yet")
	}
	cands, _, _ := unstructured.NestedSlice(u.Object, "status", "candidates")
	if len(cands) == 0 {
		return active, "no candidate nodes"
	}
	for _, c := range cands {
		if c, _ := c.(map[string]any); c["eligible"] != true {
			return active, fmt.Sprintf("candidate %v not eligible yet %v", c["node"], c["reasons"])
		}
	}
	return active, ""
}

// active is the gateway's status.activeNodeName.
func (d *demo) active() (string, error) {
	u, err := d.dyn.Resource(EgressGatewaysGVR).Get(d.ctx, GatewayName, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	s, _, _ := unstructured.NestedString(u.Object, "status", "activeNodeName")
	return s, nil
}

// waitActive waits up to timeout for the status to name want and returns
// what it names last.
func (d *demo) waitActive(want string, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		got, _ := d.active()
		if got == want || time.Now().After(deadline) || d.sleep(50*time.Millisecond) != nil {
			return got
		}
	}
}

// waitVIPOwner waits up to timeout for the echo server to resolve the VIP
// to want and returns what it resolves it to last.
func (d *demo) waitVIPOwner(want string, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		got := cluster.EchoNeighbour(VIP)
		if got == want || time.Now().After(deadline) || d.sleep(50*time.Millisecond) != nil {
			return got
		}
	}
}

func (d *demo) nodeOfMAC(mac string) string {
	for node, m := range d.macOf {
		if m == mac {
			return node + "'s eth1"
		}
	}
	return "no lab node's"
}

// kubectl prints a kubectl command and its output.
func (d *demo) kubectl(args ...string) {
	d.say("$ egressha-lab kubectl %s", strings.Join(args, " "))
	out, err := cluster.Kubectl(d.cfg, nil, args...)
	if err != nil {
		out += err.Error()
	}
	d.indent(out)
}

// egressList prints cilium-dbg bpf egress list on node.
func (d *demo) egressList(node string) {
	d.say("$ egressha-lab cilium-dbg %s bpf egress list", node)
	out, err := d.cfg.OnNodeCommand(node, d.cfg.BinDir+"/cilium-dbg", "bpf", "egress", "list").CombinedOutput()
	if err != nil {
		out = append(out, err.Error()...)
	}
	d.indent(string(out))
}

// next says what to try next.
func (d *demo) next(res *Result) {
	d.step("done in %.1fs: basic mode crash gap %s (failback %s), VIP mode crash gap %s (failback %s)",
		res.Took.Seconds(), res.Basic.CrashGap.Round(time.Millisecond), res.Basic.FailbackGap.Round(time.Millisecond),
		res.VIP.CrashGap.Round(time.Millisecond), res.VIP.FailbackGap.Round(time.Millisecond))
	d.say("The lab stays up, with the VIP gateway applied. Try (egressha-lab is _output/bin/egressha-lab):")
	for _, c := range [][2]string{
		{"egressha-lab kubectl get egw -o yaml", "the status: active node, conditions, ready nodes"},
		{"egressha-lab kubectl get egwp", "the policy and whether it is Ready"},
		{"egressha-lab cilium-dbg lab-worker bpf egress list", "the pod's node tunnels to the active node"},
		{fmt.Sprintf("egressha-lab curl %s/%s %s", Namespace, PodName, cluster.EchoURL()), "the source address the echo server sees"},
		{"egressha-lab crash lab-egress-a", "the active node: the VIP moves to lab-egress-b"},
		{"egressha-lab recover lab-egress-a", "and back (failback: Immediate)"},
		{"egressha-lab crash lab-egress-b", "the standby: nothing moves"},
		{"egressha-lab kubectl cordon lab-egress-a", "a planned move (uncordon to move back)"},
		{fmt.Sprintf("egressha-lab kubectl apply -f %s/basic.yaml", ExamplesDir), "back to basic mode"},
		{"egressha-lab status", "every node's state"},
		{"egressha-lab demo", "run this demo again"},
		{"make lab-down", "remove everything the lab made"},
	} {
		d.say("  %-64s # %s", c[0], c[1])
	}
}
