package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/egressha/egressha/test/lab/chart"
)

// The ServiceAccounts of Cilium's chart.
const (
	agentServiceAccount    = "cilium"
	operatorServiceAccount = "cilium-operator"
)

// Projected ServiceAccount tokens, as a kubelet requests them: bound to the
// Pod (so the apiserver puts the Pod's node name into the token and refuses
// it once the Pod is gone), an hour long, renewed at 80 % of that.
const (
	tokenLifetime = time.Hour
	tokenRenewAt  = tokenLifetime * 8 / 10
)

// fieldManager is the lab's name in managedFields.
const fieldManager = "egressha-lab"

// applyObjects creates or updates objects by server-side apply, as `kubectl
// apply --server-side` does: what Helm would install, here the RBAC and the
// ConfigMap the chart renders and our patches/rbac.yaml.
func applyObjects(ctx context.Context, cfg Config, objs []*unstructured.Unstructured) error {
	rc, err := cfg.RESTConfig()
	if err != nil {
		return err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("%s %s: %w", gvk.Kind, o.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == "namespace" {
			ns := o.GetNamespace()
			if ns == "" {
				ns = CiliumNamespace
			}
			ri = dyn.Resource(m.Resource).Namespace(ns)
		}
		if _, err := ri.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: fieldManager, Force: true}); err != nil {
			return fmt.Errorf("applying %s %s: %w", gvk.Kind, o.GetName(), err)
		}
	}
	return nil
}

// renderChart renders Cilium's chart with the lab's values and records the
// pods' specs for every later start.
func renderChart(cfg Config) (*chart.Release, error) {
	rel, err := chart.RenderLab(cfg.CiliumDir, cfg.RepoDir, string(cfg.Mode))
	if err != nil {
		return nil, fmt.Errorf("rendering Cilium's chart: %w", err)
	}
	return rel, cfg.writePodSpecs(rel)
}

// egresshaManifests are what README's install steps apply next to the Helm
// release, relative to the repository root.
var egresshaManifests = []string{"patches/rbac.yaml", "patches/heartbeat-admission.yaml"}

// installChart applies what the rendered chart installs that the lab's
// processes need from the API: the RBAC (ServiceAccounts, roles, bindings),
// the cilium-config ConfigMap, and our manifests (egresshaManifests).
func installChart(ctx context.Context, cfg Config, rel *chart.Release) error {
	objs := rel.RBAC()
	if cm := rel.Object("ConfigMap", "cilium-config"); cm != nil {
		objs = append(objs, cm)
	}
	if cfg.Mode != ModeStock {
		for _, f := range egresshaManifests {
			ours, err := chart.LoadManifests(filepath.Join(cfg.RepoDir, f))
			if err != nil {
				return err
			}
			objs = append(objs, ours...)
		}
	}
	return applyObjects(ctx, cfg, objs)
}

// ensurePodObject creates the Pod object of a system pod, as the DaemonSet
// or Deployment controller would (bound to its node, with its
// ServiceAccount); its status is the kubelets'.
func ensurePodObject(ctx context.Context, cs kubernetes.Interface, p sysPod) error {
	labels := map[string]string{"k8s-app": "cilium", "app.kubernetes.io/name": "cilium-agent", "app.kubernetes.io/part-of": "cilium"}
	container := "cilium-agent"
	if p.Kind == "operator" {
		labels = map[string]string{"io.cilium/app": "operator", "name": "cilium-operator", "app.kubernetes.io/name": "cilium-operator", "app.kubernetes.io/part-of": "cilium"}
		container = "cilium-operator"
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:           p.Node,
			HostNetwork:        true,
			ServiceAccountName: p.ServiceAccount,
			// The lab projects the token itself (writePodVolumes).
			AutomountServiceAccountToken: ptr.To(false),
			Containers:                   []corev1.Container{{Name: container, Image: "egressha/" + container + ":lab"}},
			Tolerations:                  []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
		},
	}
	_, err := cs.CoreV1().Pods(p.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// writePodVolumes writes what the pod's containers mount: a ServiceAccount
// token bound to the Pod with the cluster CA and namespace (the projected
// volume every pod gets), and cilium-config as files (the chart's
// --config-dir). Files are replaced atomically, as a kubelet does, since
// client-go rereads the token file while the process runs.
func (c Config) writePodVolumes(ctx context.Context, cs kubernetes.Interface, p sysPod, config map[string]string) error {
	pod, err := cs.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(p.Namespace).CreateToken(ctx, p.ServiceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To(int64(tokenLifetime / time.Second)),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for %s/%s (ServiceAccount %s): %w", p.Namespace, p.Name, p.ServiceAccount, err)
	}
	ca, err := os.ReadFile(c.path("controlplane", "pki", "ca.crt"))
	if err != nil {
		return err
	}
	sa := filepath.Join(p.volumeDir(), "serviceaccount")
	for name, data := range map[string][]byte{"token": []byte(tr.Status.Token), "ca.crt": ca, "namespace": []byte(p.Namespace)} {
		if err := writeFileAtomic(filepath.Join(sa, name), data, 0o600); err != nil {
			return err
		}
	}
	if config != nil {
		return chart.WriteConfigDir(filepath.Join(p.volumeDir(), "config-map"), config)
	}
	return nil
}

// tokenDue reports whether the pod's token must be renewed.
func tokenDue(p sysPod, now time.Time) bool {
	st, err := os.Stat(filepath.Join(p.volumeDir(), "serviceaccount", "token"))
	return err != nil || now.Sub(st.ModTime()) > tokenRenewAt
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	// A temporary file of its own: the daemon's kubelets renew tokens
	// while `up` writes them, and a shared name let one writer's rename
	// take the other's file away.
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, mode)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// prepareSysPods creates the Pod objects of every system pod and writes
// their volumes: what must exist before the first process starts.
func prepareSysPods(ctx context.Context, cs kubernetes.Interface, cfg Config) error {
	s, err := cfg.readPodSpecs()
	if err != nil {
		return err
	}
	for _, p := range cfg.sysPods() {
		if err := ensurePodObject(ctx, cs, p); err != nil {
			return err
		}
		if err := cfg.writePodVolumes(ctx, cs, p, s.Config); err != nil {
			return err
		}
	}
	return nil
}

// updatePodStatus changes a Pod's status, retrying update conflicts.
func updatePodStatus(ctx context.Context, cs kubernetes.Interface, ns, name string, mutate func(*corev1.Pod)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(pod)
		_, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
}

// PodRESTConfig is a client configuration with the ServiceAccount token of
// a lab system pod (an agent's or an operator's Pod name), for tests of
// what that identity may do. It reaches the server the admin's way.
func (c Config) PodRESTConfig(podName string) (*rest.Config, error) {
	for _, p := range c.sysPods() {
		if p.Name != podName {
			continue
		}
		admin, err := c.RESTConfig()
		if err != nil {
			return nil, err
		}
		return &rest.Config{
			Host:            admin.Host,
			TLSClientConfig: rest.TLSClientConfig{CAData: admin.CAData, CAFile: admin.CAFile, ServerName: admin.ServerName},
			BearerTokenFile: filepath.Join(p.volumeDir(), "serviceaccount", "token"),
		}, nil
	}
	return nil, fmt.Errorf("no system pod %q in the lab", podName)
}
