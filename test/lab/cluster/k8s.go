package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
)

// RESTConfig is the admin client configuration of the lab.
func (c Config) RESTConfig() (*rest.Config, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return nil, fmt.Errorf("lab kubeconfig %s (is the lab up?): %w", c.Kubeconfig(), err)
	}
	rc.QPS, rc.Burst = 100, 200
	return rc, nil
}

// Clientset is an admin client of the lab's apiserver.
func (c Config) Clientset() (kubernetes.Interface, error) {
	rc, err := c.RESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(rc)
}

const agentPodPrefix = "cilium-"

// ensureNodeObjects creates the Node object of each lab node, as a kubelet
// registers its node. Their status is the kubelets'.
func ensureNodeObjects(ctx context.Context, cs kubernetes.Interface, cfg Config) error {
	for _, n := range cfg.Nodes {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: n.Labels},
			Spec: corev1.NodeSpec{
				PodCIDR:  n.PodCIDR.String(),
				PodCIDRs: []string{n.PodCIDR.String()},
			},
		}
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		// The Node's addresses are status, as a kubelet reports them.
		if err := updateNodeStatus(ctx, cs, n.Name, func(st *corev1.NodeStatus) {
			st.Addresses = []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: n.ClusterIP.String()},
				{Type: corev1.NodeHostName, Address: n.Name},
			}
		}); err != nil {
			return fmt.Errorf("node %s status: %w", n.Name, err)
		}
	}
	return ensureServiceAccount(ctx, cs, CiliumNamespace)
}

// updateNodeStatus changes a Node's status, retrying update conflicts
// (kubelets, the lab's bring-up and Cilium all write Nodes).
func updateNodeStatus(ctx context.Context, cs kubernetes.Interface, name string, mutate func(*corev1.NodeStatus)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(&node.Status)
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
}

// ensureServiceAccount creates the namespace's default ServiceAccount, as
// kube-controller-manager would, so Pods pass ServiceAccount admission.
func ensureServiceAccount(ctx context.Context, cs kubernetes.Interface, ns string) error {
	_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("default ServiceAccount in %s: %w", ns, err)
	}
	return nil
}

// EnsureNamespace creates a namespace (and its default ServiceAccount).
func EnsureNamespace(ctx context.Context, cs kubernetes.Interface, ns string) error {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	return ensureServiceAccount(ctx, cs, ns)
}

// KubectlCommand returns the lab's kubectl (built by `make kubectl` at the
// lab's Kubernetes version, next to the lab binaries; never whatever the
// machine has on PATH) with the lab's admin kubeconfig.
func (c Config) KubectlCommand(args ...string) *exec.Cmd {
	return exec.Command(c.bin("kubectl"), append([]string{"--kubeconfig", c.Kubeconfig()}, args...)...)
}

// Kubectl runs kubectl and returns its combined output.
func Kubectl(c Config, stdin io.Reader, args ...string) (string, error) {
	cmd := c.KubectlCommand(args...)
	cmd.Stdin = stdin
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}
