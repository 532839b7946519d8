package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const podNetnsPrefix = "lab-pod-"

// Pod is a lab pod: a Pod object and a network namespace wired by the real
// cilium-cni on its node.
type Pod struct {
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	Node        string `json:"node"`
	Netns       string `json:"netns"`
	ContainerID string `json:"containerID"`
	IP          string `json:"ip"`
	// CNIAddStart is when the CNI ADD was started (benchmarks time the
	// datapath from there).
	CNIAddStart time.Time `json:"cniAddStart"`
}

func (c Config) podFile(ns, name string) string { return c.path("pods", ns+"_"+name+".json") }

// cniConf is the network configuration the CNI ADD gets on stdin, as the
// cilium chart writes it to /etc/cni/net.d/05-cilium.conflist.
const cniConf = `{"cniVersion":"0.3.1","name":"cilium","type":"cilium-cni","enable-debug":false}`

// AddPod creates a Pod on node and runs the CNI ADD for it, as a kubelet
// and a container runtime would: the Pod object first (the agent reads its
// labels from the API), then the network namespace and cilium-cni, then
// the Pod's status with the IP the CNI returned.
func AddPod(ctx context.Context, cfg Config, node, ns, name string, labels map[string]string) (Pod, error) {
	n, err := cfg.Node(node)
	if err != nil {
		return Pod{}, err
	}
	cs, err := cfg.Clientset()
	if err != nil {
		return Pod{}, err
	}
	if err := EnsureNamespace(ctx, cs, ns); err != nil {
		return Pod{}, err
	}
	obj, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:                     node,
			AutomountServiceAccountToken: new(bool),
			Containers:                   []corev1.Container{{Name: "app", Image: "egressha/lab-pod"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return Pod{}, fmt.Errorf("creating pod %s/%s: %w", ns, name, err)
	}
	p := Pod{
		Namespace:   ns,
		Name:        name,
		Node:        node,
		Netns:       podNetnsPrefix + string(obj.UID)[:8],
		ContainerID: strings.ReplaceAll(string(obj.UID), "-", ""),
	}
	if err := ip("", "netns", "add", p.Netns); err != nil {
		return p, err
	}
	if err := ip(p.Netns, "link", "set", "lo", "up"); err != nil {
		return p, err
	}
	p.CNIAddStart = time.Now()
	out, err := cni(cfg, "ADD", p)
	if err != nil {
		_ = ip("", "netns", "del", p.Netns)
		_ = cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{})
		return p, err
	}
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) == 0 {
		return p, fmt.Errorf("cilium-cni ADD returned no IP: %v: %s", err, out)
	}
	p.IP = strings.Split(res.IPs[0].Address, "/")[0]
	if err := os.MkdirAll(filepath.Dir(cfg.podFile(ns, name)), 0o755); err != nil {
		return p, err
	}
	data, _ := json.Marshal(p)
	if err := os.WriteFile(cfg.podFile(ns, name), data, 0o644); err != nil {
		return p, err
	}
	// Cilium may have touched the Pod since it was created (the CNI ADD
	// ran in between): re-read and retry on conflict.
	if err := updatePodStatus(ctx, cs, ns, obj.Name, func(pod *corev1.Pod) {
		setPodRunning(pod, n.ClusterIP.String(), p.IP, true)
	}); err != nil {
		return p, fmt.Errorf("pod %s/%s status: %w", ns, name, err)
	}
	return p, nil
}

// cni runs cilium-cni on the pod's node with the CNI environment.
func cni(cfg Config, command string, p Pod) ([]byte, error) {
	cmd := cfg.OnNodeCommand(p.Node, cfg.bin("cilium-cni"))
	cmd.Env = append(os.Environ(),
		"CNI_COMMAND="+command,
		"CNI_CONTAINERID="+p.ContainerID,
		"CNI_NETNS=/run/netns/"+p.Netns,
		"CNI_IFNAME=eth0",
		"CNI_PATH="+cfg.BinDir,
		fmt.Sprintf("CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s", p.Namespace, p.Name, p.ContainerID),
	)
	cmd.Stdin = strings.NewReader(cniConf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("cilium-cni %s for %s/%s on %s: %w: %s %s", command, p.Namespace, p.Name, p.Node, err,
			strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// GetPod returns a lab pod created by AddPod.
func GetPod(cfg Config, ns, name string) (Pod, error) {
	data, err := os.ReadFile(cfg.podFile(ns, name))
	if err != nil {
		return Pod{}, fmt.Errorf("no lab pod %s/%s: %w", ns, name, err)
	}
	var p Pod
	return p, json.Unmarshal(data, &p)
}

// DeletePod runs the CNI DEL, removes the netns and deletes the Pod.
func DeletePod(ctx context.Context, cfg Config, ns, name string) error {
	p, err := GetPod(cfg, ns, name)
	if err != nil {
		return err
	}
	var errs []error
	if _, err := cni(cfg, "DEL", p); err != nil {
		errs = append(errs, err)
	}
	if err := ip("", "netns", "del", p.Netns); err != nil {
		errs = append(errs, err)
	}
	cs, err := cfg.Clientset()
	if err == nil {
		err = cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		if apierrors.IsNotFound(err) {
			err = nil
		}
	}
	if err != nil {
		errs = append(errs, err)
	}
	os.Remove(cfg.podFile(ns, name))
	if len(errs) > 0 {
		return fmt.Errorf("deleting pod %s/%s: %v", ns, name, errs)
	}
	return nil
}

// Curl sends an HTTP GET from inside the pod's network namespace and
// returns the response body.
func Curl(ctx context.Context, cfg Config, ns, name, url string, timeout time.Duration) (string, error) {
	p, err := GetPod(cfg, ns, name)
	if err != nil {
		return "", err
	}
	client := http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DialContext: DialContextIn(p.Netns), DisableKeepAlives: true},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s: %s", url, resp.Status, body)
	}
	return string(body), nil
}
