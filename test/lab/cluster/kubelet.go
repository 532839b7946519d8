package cluster

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// What a kubelet and the node lifecycle controller would do, done honestly:
// a node whose links are up posts Ready every nodeStatusUpdateFrequency and
// its cilium-agent Pod is Ready exactly when the agent's /healthz answers
// 200; a node whose links are cut (crashed) posts nothing, and after the
// node monitor grace period it is marked Unknown and its pods not ready.
const (
	nodeStatusUpdateFrequency = 10 * time.Second
	nodeMonitorGracePeriod    = 40 * time.Second
	probePeriod               = time.Second
	agentHealthURL            = "http://127.0.0.1:9879/healthz"
)

type nodeState struct {
	lastHeartbeat time.Time
	nodeReady     corev1.ConditionStatus
	podReady      *bool
}

type kubelets struct {
	cfg   Config
	log   *slog.Logger
	cs    kubernetes.Interface
	state map[string]*nodeState
	// operatorReady is the last readiness posted per operator pod.
	operatorReady map[string]bool
}

func newKubelets(cfg Config, log *slog.Logger) (*kubelets, error) {
	cs, err := cfg.Clientset()
	if err != nil {
		return nil, err
	}
	k := &kubelets{cfg: cfg, log: log, cs: cs, state: map[string]*nodeState{}, operatorReady: map[string]bool{}}
	for _, n := range cfg.Nodes {
		k.state[n.Name] = &nodeState{}
	}
	return k, nil
}

func (k *kubelets) run(ctx context.Context) {
	go k.supervise(ctx)
	t := time.NewTicker(probePeriod)
	defer t.Stop()
	for {
		for _, n := range k.cfg.Nodes {
			k.sync(ctx, n)
		}
		for _, p := range k.cfg.operatorPods() {
			k.syncOperator(ctx, p)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (k *kubelets) sync(ctx context.Context, n Node) {
	st := k.state[n.Name]
	now := time.Now()
	if !NodeLinksUp(n) {
		if st.nodeReady == corev1.ConditionTrue && now.Sub(st.lastHeartbeat) > nodeMonitorGracePeriod {
			k.log.Info("node stopped posting status: marking it Unknown", "node", n.Name)
			if k.setNodeReady(ctx, n.Name, corev1.ConditionUnknown, "NodeStatusUnknown", "Kubelet stopped posting node status.", st.lastHeartbeat) == nil {
				st.nodeReady = corev1.ConditionUnknown
			}
			if k.setAgentPodReady(ctx, n, false) == nil {
				f := false
				st.podReady = &f
			}
		}
		return
	}
	if st.nodeReady != corev1.ConditionTrue || now.Sub(st.lastHeartbeat) >= nodeStatusUpdateFrequency {
		if err := k.setNodeReady(ctx, n.Name, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status", now); err == nil {
			st.nodeReady, st.lastHeartbeat = corev1.ConditionTrue, now
		}
	}
	healthy := probeAgent(ctx, n)
	if !healthy && !NodeLinksUp(n) {
		return // crashed while probing: a dead kubelet reports nothing
	}
	if st.podReady == nil || *st.podReady != healthy {
		if err := k.setAgentPodReady(ctx, n, healthy); err == nil {
			st.podReady = &healthy
			k.log.Info("cilium-agent readiness changed", "node", n.Name, "ready", healthy)
		}
	}
}

// supervisePeriod is how often the supervisor looks for exited containers
// (a kubelet's PLEG relists every second).
const supervisePeriod = 500 * time.Millisecond

// supervise restarts system pods whose process exited on its own and
// renews their ServiceAccount tokens, as a kubelet does.
func (k *kubelets) supervise(ctx context.Context) {
	t := time.NewTicker(supervisePeriod)
	defer t.Stop()
	logf := func(msg string, args ...any) { k.log.Info(msg, args...) }
	for {
		now := time.Now()
		pods := k.cfg.sysPods()
		for _, p := range pods {
			k.cfg.supervise(p, now, logf)
		}
		for _, p := range pods {
			if tokenDue(p, now) {
				if err := k.cfg.writePodVolumes(ctx, k.cs, p, nil); err != nil {
					k.log.Warn("renewing the ServiceAccount token", "pod", p.Name, "error", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// syncOperator posts an operator pod's readiness: its /healthz, as the
// chart's readiness probe asks.
func (k *kubelets) syncOperator(ctx context.Context, p sysPod) {
	ready := p.running() && probeHTTP(ctx, p.Netns, operatorHealthURL)
	if last, ok := k.operatorReady[p.Name]; ok && last == ready {
		return
	}
	err := updatePodStatus(ctx, k.cs, p.Namespace, p.Name, func(pod *corev1.Pod) {
		setPodRunning(pod, p.HostIP, p.HostIP, ready)
	})
	if err != nil {
		k.log.Warn("updating cilium-operator pod status", "pod", p.Name, "error", err)
		return
	}
	k.operatorReady[p.Name] = ready
	k.log.Info("cilium-operator readiness changed", "pod", p.Name, "ready", ready)
}

const operatorHealthURL = "http://127.0.0.1:9234/healthz"

// probeAgent is the cilium-agent readiness probe: GET /healthz with
// "brief: true" on the node's loopback.
func probeAgent(ctx context.Context, n Node) bool { return probeHTTP(ctx, n.Name, agentHealthURL) }

// probeHTTP is an httpGet probe from inside a network namespace.
func probeHTTP(ctx context.Context, netns, url string) bool {
	client := http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{DialContext: DialContextIn(netns), DisableKeepAlives: true},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	req.Header.Set("brief", "true")
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (k *kubelets) setNodeReady(ctx context.Context, name string, status corev1.ConditionStatus, reason, msg string, heartbeat time.Time) error {
	err := updateNodeStatus(ctx, k.cs, name, func(st *corev1.NodeStatus) {
		setCondition(&st.Conditions, corev1.NodeCondition{
			Type: corev1.NodeReady, Status: status, Reason: reason, Message: msg,
			LastHeartbeatTime: metav1.NewTime(heartbeat),
		})
	})
	if err != nil {
		k.log.Warn("updating node status", "node", name, "error", err)
	}
	return err
}

func setCondition(conds *[]corev1.NodeCondition, c corev1.NodeCondition) {
	for i := range *conds {
		if (*conds)[i].Type == c.Type {
			if (*conds)[i].Status == c.Status {
				c.LastTransitionTime = (*conds)[i].LastTransitionTime
			} else {
				c.LastTransitionTime = metav1.Now()
			}
			(*conds)[i] = c
			return
		}
	}
	c.LastTransitionTime = metav1.Now()
	*conds = append(*conds, c)
}

func (k *kubelets) setAgentPodReady(ctx context.Context, n Node, ready bool) error {
	err := updatePodStatus(ctx, k.cs, CiliumNamespace, AgentPodName(n.Name), func(pod *corev1.Pod) {
		setPodRunning(pod, n.ClusterIP.String(), n.ClusterIP.String(), ready)
	})
	if err != nil {
		k.log.Warn("updating cilium-agent pod status", "node", n.Name, "error", err)
	}
	return err
}

// setPodRunning fills a Pod's status as a kubelet does for a running pod
// with one container whose readiness is ready.
func setPodRunning(pod *corev1.Pod, hostIP, podIP string, ready bool) {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	now := metav1.Now()
	st := &pod.Status
	st.Phase = corev1.PodRunning
	st.HostIP = hostIP
	st.HostIPs = []corev1.HostIP{{IP: st.HostIP}}
	st.PodIP = podIP
	st.PodIPs = []corev1.PodIP{{IP: podIP}}
	if st.StartTime == nil {
		st.StartTime = &now
	}
	set := func(t corev1.PodConditionType, s corev1.ConditionStatus) {
		for i := range st.Conditions {
			if st.Conditions[i].Type == t {
				if st.Conditions[i].Status != s {
					st.Conditions[i].Status, st.Conditions[i].LastTransitionTime = s, now
				}
				return
			}
		}
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: s, LastTransitionTime: now})
	}
	set(corev1.PodScheduled, corev1.ConditionTrue)
	set(corev1.PodInitialized, corev1.ConditionTrue)
	set(corev1.ContainersReady, status)
	set(corev1.PodReady, status)
	name := "app"
	if len(pod.Spec.Containers) > 0 {
		name = pod.Spec.Containers[0].Name
	}
	started := true
	st.ContainerStatuses = []corev1.ContainerStatus{{
		Name: name, Ready: ready, Started: &started,
		Image: "lab", ImageID: "lab",
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: *st.StartTime}},
	}}
}
