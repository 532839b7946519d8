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
}

func newKubelets(cfg Config, log *slog.Logger) (*kubelets, error) {
	cs, err := cfg.Clientset()
	if err != nil {
		return nil, err
	}
	k := &kubelets{cfg: cfg, log: log, cs: cs, state: map[string]*nodeState{}}
	for _, n := range cfg.Nodes {
		k.state[n.Name] = &nodeState{}
	}
	return k, nil
}

func (k *kubelets) run(ctx context.Context) {
	t := time.NewTicker(probePeriod)
	defer t.Stop()
	for {
		for _, n := range k.cfg.Nodes {
			k.sync(ctx, n)
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

// probeAgent is the cilium-agent readiness probe: GET /healthz with
// "brief: true" on the node's loopback.
func probeAgent(ctx context.Context, n Node) bool {
	client := http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{DialContext: DialContextIn(n.Name), DisableKeepAlives: true},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, agentHealthURL, nil)
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
	pods := k.cs.CoreV1().Pods(CiliumNamespace)
	pod, err := pods.Get(ctx, agentPodName(n.Name), metav1.GetOptions{})
	if err != nil {
		return err
	}
	setPodRunning(pod, n, n.ClusterIP.String(), ready)
	_, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if err != nil {
		k.log.Warn("updating cilium-agent pod status", "node", n.Name, "error", err)
	}
	return err
}

// setPodRunning fills a Pod's status as a kubelet does for a running pod
// with one container whose readiness is ready.
func setPodRunning(pod *corev1.Pod, n Node, podIP string, ready bool) {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	now := metav1.Now()
	st := &pod.Status
	st.Phase = corev1.PodRunning
	st.HostIP = n.ClusterIP.String()
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
