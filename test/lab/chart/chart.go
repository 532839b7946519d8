// Package chart renders Cilium's own Helm chart (install/kubernetes/cilium
// of the Cilium module that go.mod names) with egressha's values, as
// `helm template` would, so the lab starts its agents and operators from
// what a real install runs: the cilium-config ConfigMap (projected into a
// --config-dir, one file per key), the containers' command, args and env,
// and the RBAC the chart renders.
package chart

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// What the lab installs as: `helm template cilium <chart> -n kube-system
// --kube-version v1.33.13` (the lab's kube-apiserver version).
const (
	ReleaseName = "cilium"
	Namespace   = "kube-system"
	KubeVersion = "v1.33.13"

	// ConfigMapName is the ConfigMap the agents and operators read.
	ConfigMapName = "cilium-config"
	// ChartConfigDir is where the chart's pods read cilium-config
	// (their --config-dir); the lab points it at a per-process dir.
	ChartConfigDir = "/tmp/cilium/config-map"
)

// The lab's modes (the values of the lab's cluster.Mode).
const (
	// ModeEgressHA: our cells on, Cilium's own egress gateway off.
	ModeEgressHA = "egressha"
	// ModeStock: Cilium's own egress gateway on, our cells off (baseline).
	ModeStock = "stock"
)

// Container is what a pod's container runs, as the chart renders it.
type Container struct {
	Command []string
	Args    []string
	Env     []corev1.EnvVar
}

// Release is a rendered chart.
type Release struct {
	// Config is the data of the cilium-config ConfigMap.
	Config map[string]string
	// Agent is the cilium-agent container of the cilium DaemonSet.
	Agent Container
	// Operator is the container of the cilium-operator Deployment.
	Operator Container
	// OperatorReplicas is the cilium-operator Deployment's replicas.
	OperatorReplicas int
	// Objects is everything the chart rendered, by template file name
	// and then in the order of the documents in the file.
	Objects []*unstructured.Unstructured
}

// ValueFiles are the values files the lab renders the chart with in a
// mode, in `-f` order, relative to the repository root.
func ValueFiles(mode string) ([]string, error) {
	switch mode {
	case ModeEgressHA, "":
		// What an egressha user installs (README "Install into a
		// cluster"), with the lab's cluster settings on top.
		return []string{"patches/helm-values.yaml", "test/lab/chart/lab-values.yaml"}, nil
	case ModeStock:
		// Stock Cilium's own egress gateway. patches/helm-values.yaml is
		// not used: its images do not matter to the lab (it runs its own
		// binaries) and its egress settings are the opposite of stock's.
		return []string{"test/lab/chart/lab-values.yaml", "test/lab/chart/stock-values.yaml"}, nil
	}
	return nil, fmt.Errorf("unknown lab mode %q (want %q or %q)", mode, ModeEgressHA, ModeStock)
}

// RenderLab renders the chart of the Cilium module in ciliumDir with the
// values files of the lab's mode from the repository at repoRoot.
func RenderLab(ciliumDir, repoRoot, mode string) (*Release, error) {
	files, err := ValueFiles(mode)
	if err != nil {
		return nil, err
	}
	for i, f := range files {
		files[i] = filepath.Join(repoRoot, f)
	}
	return Render(ChartDir(ciliumDir), files...)
}

// ChartDir is the chart's directory in the Cilium module's directory.
func ChartDir(ciliumDir string) string {
	return filepath.Join(ciliumDir, "install", "kubernetes", "cilium")
}

// CiliumDir finds the Cilium module's directory: $EGRESSHA_LAB_CILIUM, or
// else the module that repoRoot's go.mod names, from the module cache
// (downloaded if it is missing, as hack/cilium-dir does).
func CiliumDir(repoRoot string) (string, error) {
	if dir := os.Getenv("EGRESSHA_LAB_CILIUM"); dir != "" {
		if _, err := os.Stat(ChartDir(dir)); err != nil {
			return "", fmt.Errorf("EGRESSHA_LAB_CILIUM=%s has no chart: %w", dir, err)
		}
		return dir, nil
	}
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "mod", "download", "-json", "github.com/cilium/cilium")
	cmd.Dir = repoRoot
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download -json github.com/cilium/cilium in %s: %w\n%s%s", repoRoot, err, out, stderr.Bytes())
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil {
		return "", fmt.Errorf("go mod download -json github.com/cilium/cilium: %w", err)
	}
	if mod.Dir == "" {
		return "", fmt.Errorf("go mod download -json github.com/cilium/cilium in %s: no module directory (%s)", repoRoot, mod.Error)
	}
	if _, err := os.Stat(ChartDir(mod.Dir)); err != nil {
		return "", fmt.Errorf("the Cilium module at %s has no chart: %w", mod.Dir, err)
	}
	return mod.Dir, nil
}

// Render renders the chart in chartDir as `helm template cilium chartDir
// -n kube-system --kube-version v1.33.13 -f valueFiles[0] -f ...`: the
// files are merged in order over the chart's defaults (maps key by key,
// anything else replaced), the result is checked against the chart's
// schema.
func Render(chartDir string, valueFiles ...string) (*Release, error) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return nil, fmt.Errorf("loading the chart: %w", err)
	}
	vals := map[string]any{}
	for _, f := range valueFiles {
		v, err := chartutil.ReadValuesFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading values: %w", err)
		}
		vals = mergeMaps(vals, v)
	}
	files, err := renderChart(ch, vals)
	if err != nil {
		return nil, err
	}
	return parseRelease(files)
}

func renderChart(ch *chart.Chart, vals map[string]any) (map[string]string, error) {
	kv, err := chartutil.ParseKubeVersion(KubeVersion)
	if err != nil {
		return nil, err
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = *kv
	opts := chartutil.ReleaseOptions{Name: ReleaseName, Namespace: Namespace, Revision: 1, IsInstall: true}
	top, err := chartutil.ToRenderValues(ch, vals, opts, caps)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	files, err := engine.Render(ch, top)
	if err != nil {
		return nil, fmt.Errorf("rendering the chart: %w", err)
	}
	return files, nil
}

// mergeMaps merges b over a as helm merges -f files.
func mergeMaps(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = mergeMaps(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// parseRelease decodes the rendered manifests and picks what the lab runs.
func parseRelease(files map[string]string) (*Release, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		base := filepath.Base(name)
		if strings.HasPrefix(base, "_") || !(strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".yml")) {
			continue // partials, NOTES.txt, warnings.txt
		}
		names = append(names, name)
	}
	sort.Strings(names)
	r := &Release{}
	for _, name := range names {
		objs, err := decodeManifests(strings.NewReader(files[name]))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		r.Objects = append(r.Objects, objs...)
	}

	var cm *corev1.ConfigMap
	var agent, operator *corev1.Container
	for _, o := range r.Objects {
		switch {
		case o.GetKind() == "ConfigMap" && o.GetName() == ConfigMapName:
			cm = &corev1.ConfigMap{}
			if err := fromUnstructured(o, cm); err != nil {
				return nil, err
			}
		case o.GetKind() == "DaemonSet" && o.GetName() == "cilium":
			var ds struct {
				Spec struct{ Template corev1.PodTemplateSpec }
			}
			if err := fromUnstructured(o, &ds); err != nil {
				return nil, err
			}
			agent = findContainer(ds.Spec.Template.Spec.Containers, "cilium-agent")
			if agent == nil {
				return nil, errors.New("the cilium DaemonSet has no cilium-agent container")
			}
		case o.GetKind() == "Deployment" && o.GetName() == "cilium-operator":
			var dep struct {
				Spec struct {
					Replicas *int32
					Template corev1.PodTemplateSpec
				}
			}
			if err := fromUnstructured(o, &dep); err != nil {
				return nil, err
			}
			operator = findContainer(dep.Spec.Template.Spec.Containers, "cilium-operator")
			if operator == nil {
				return nil, errors.New("the cilium-operator Deployment has no cilium-operator container")
			}
			r.OperatorReplicas = 1 // the Deployment default
			if dep.Spec.Replicas != nil {
				r.OperatorReplicas = int(*dep.Spec.Replicas)
			}
		}
	}
	switch {
	case cm == nil:
		return nil, fmt.Errorf("the chart rendered no ConfigMap %s", ConfigMapName)
	case agent == nil:
		return nil, errors.New("the chart rendered no cilium DaemonSet")
	case operator == nil:
		return nil, errors.New("the chart rendered no cilium-operator Deployment")
	}
	r.Config = cm.Data
	r.Agent = Container{Command: agent.Command, Args: agent.Args, Env: agent.Env}
	r.Operator = Container{Command: operator.Command, Args: operator.Args, Env: operator.Env}
	return r, nil
}

func findContainer(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

func fromUnstructured(o *unstructured.Unstructured, into any) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, into); err != nil {
		return fmt.Errorf("%s %s: %w", o.GetKind(), o.GetName(), err)
	}
	return nil
}

// decodeManifests decodes a multi-document YAML stream; empty documents
// (templates whose condition is off) are skipped.
func decodeManifests(r io.Reader) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var out []*unstructured.Unstructured
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(obj) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("document without kind or apiVersion: %v", obj)
		}
		out = append(out, u)
	}
}

// LoadManifests reads a multi-document YAML file (e.g. patches/rbac.yaml).
func LoadManifests(path string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	objs, err := decodeManifests(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return objs, nil
}

// rbacOrder is the order Helm installs these kinds in (releaseutil's
// InstallOrder): namespaces, identities, roles, then their bindings.
var rbacOrder = []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}

// RBAC returns the ServiceAccounts, ClusterRoles, ClusterRoleBindings,
// Roles and RoleBindings the chart rendered, in the order Helm applies
// them, preceded by the Namespaces the chart renders (cilium-secrets, where
// some of the Roles live). Namespaced objects without a namespace get the
// release's. The objects are copies.
func (r *Release) RBAC() []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, kind := range rbacOrder {
		for _, o := range r.Objects {
			if o.GetKind() != kind {
				continue
			}
			o = o.DeepCopy()
			if kind != "Namespace" && !strings.HasPrefix(kind, "Cluster") && o.GetNamespace() == "" {
				o.SetNamespace(Namespace)
			}
			out = append(out, o)
		}
	}
	return out
}

// Object returns the rendered object of that kind and name, or nil.
func (r *Release) Object(kind, name string) *unstructured.Unstructured {
	for _, o := range r.Objects {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}
