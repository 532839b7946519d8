package chart

import (
	"bufio"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// repoRoot is the egressha repository (this package is test/lab/chart).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.HasPrefix(string(gomod), "module github.com/egressha/egressha\n") {
		t.Fatalf("%s is not the egressha repository (go.mod: %v)", root, err)
	}
	return root
}

// ciliumDir is the Cilium module's directory ($EGRESSHA_LAB_CILIUM or
// found with `go mod download`): the tests fail, not skip, without it.
func ciliumDir(t testing.TB) string {
	t.Helper()
	dir, err := CiliumDir(repoRoot(t))
	if err != nil {
		t.Fatalf("cannot find Cilium's chart (set EGRESSHA_LAB_CILIUM to the Cilium module's directory, see hack/cilium-dir): %v", err)
	}
	return dir
}

func renderLab(t testing.TB, mode string) *Release {
	t.Helper()
	r, err := RenderLab(ciliumDir(t), repoRoot(t), mode)
	if err != nil {
		t.Fatalf("rendering mode %s: %v", mode, err)
	}
	return r
}

// labConfig is what lab-values.yaml must give cilium-config in every mode:
// today's lab flags (test/lab/cluster agentArgs, startOperator).
var labConfig = map[string]string{
	"cluster-name":                    "lab",
	"cluster-id":                      "1",
	"ipam":                            "kubernetes",
	"k8s-require-ipv4-pod-cidr":       "true",
	"identity-allocation-mode":        "crd",
	"enable-ipv4":                     "true",
	"enable-ipv6":                     "false",
	"routing-mode":                    "tunnel",
	"tunnel-protocol":                 "vxlan",
	"devices":                         "eth0 eth1",
	"kube-proxy-replacement":          "true",
	"enable-bpf-masquerade":           "true",
	"enable-ipv4-masquerade":          "true",
	"enable-l7-proxy":                 "false",
	"external-envoy-proxy":            "false",
	"enable-hubble":                   "false",
	"enable-health-checking":          "false",
	"enable-endpoint-health-checking": "false",
	"enable-gops":                     "false",
	"enable-k8s-networkpolicy":        "false",
	"enable-policy":                   "never",
}

func checkConfig(t *testing.T, r *Release, want map[string]string) {
	t.Helper()
	for k, v := range want {
		got, ok := r.Config[k]
		if !ok {
			t.Errorf("cilium-config has no %s (want %q)", k, v)
		} else if got != v {
			t.Errorf("cilium-config %s = %q, want %q", k, got, v)
		}
	}
}

func envValue(c Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

func TestRenderLabEgressHA(t *testing.T) {
	r := renderLab(t, ModeEgressHA)
	checkConfig(t, r, labConfig)
	// What egressha's agent checks at start (README "Install into a
	// cluster") and our settings from patches/helm-values.yaml.
	checkConfig(t, r, map[string]string{
		"kube-proxy-replacement":                     "true",
		"enable-bpf-masquerade":                      "true",
		"enable-ipv4-masquerade":                     "true",
		"identity-allocation-mode":                   "crd",
		"egress-gateway-ha-enabled":                  "true",
		"egress-gateway-ha-heartbeat-renew-interval": "5s",
		"egress-gateway-ha-heartbeat-expiry":         "15s",
		"egress-gateway-ha-probe-interval":           "100ms",
		"egress-gateway-ha-probe-fence":              "250ms",
		"egress-gateway-ha-restart-grace":            "30s",
		"egress-gateway-ha-max-restart-grace":        "2m",
		"egress-gateway-ha-hold-down":                "10s",
	})
	// The chart writes these only when they are on.
	for _, k := range []string{"enable-egress-gateway", "enable-cilium-endpoint-slice"} {
		if v, ok := r.Config[k]; ok && v != "false" {
			t.Errorf("cilium-config %s = %q, want false or absent", k, v)
		}
	}

	for name, c := range map[string]Container{"agent": r.Agent, "operator": r.Operator} {
		if dir, ok := c.ConfigDir(); !ok || dir != ChartConfigDir {
			t.Errorf("%s args %q: no --config-dir=%s", name, c.Args, ChartConfigDir)
		}
		// The API address of lab-values.yaml reaches the pods as the
		// in-cluster client's environment.
		if h, _ := envValue(c, "KUBERNETES_SERVICE_HOST"); h != "198.18.0.1" {
			t.Errorf("%s env KUBERNETES_SERVICE_HOST = %q, want 198.18.0.1", name, h)
		}
		if p, _ := envValue(c, "KUBERNETES_SERVICE_PORT"); p != "6443" {
			t.Errorf("%s env KUBERNETES_SERVICE_PORT = %q, want 6443", name, p)
		}
	}
	if !slices.Equal(r.Agent.Command, []string{"cilium-agent"}) {
		t.Errorf("agent command %q, want [cilium-agent]", r.Agent.Command)
	}
	if !slices.Equal(r.Operator.Command, []string{"cilium-operator-generic"}) {
		t.Errorf("operator command %q, want [cilium-operator-generic]", r.Operator.Command)
	}
	if r.OperatorReplicas != 2 {
		t.Errorf("OperatorReplicas = %d, want the chart's default 2", r.OperatorReplicas)
	}

	rbac := r.RBAC()
	for _, sa := range []string{"cilium", "cilium-operator"} {
		if !slices.ContainsFunc(rbac, func(o *unstructured.Unstructured) bool {
			return o.GetKind() == "ServiceAccount" && o.GetName() == sa && o.GetNamespace() == Namespace
		}) {
			t.Errorf("RBAC has no ServiceAccount %s/%s", Namespace, sa)
		}
	}
	checkRBACOrder(t, rbac)
}

func TestRenderLabStock(t *testing.T) {
	r := renderLab(t, ModeStock)
	checkConfig(t, r, labConfig)
	checkConfig(t, r, map[string]string{
		"enable-egress-gateway":     "true",
		"egress-gateway-ha-enabled": "false",
	})
	for k := range r.Config {
		if strings.HasPrefix(k, "egress-gateway-ha-") && k != "egress-gateway-ha-enabled" {
			t.Errorf("stock mode sets %s (patches/helm-values.yaml is not used in stock mode)", k)
		}
	}
	if r.OperatorReplicas != 2 {
		t.Errorf("OperatorReplicas = %d, want 2", r.OperatorReplicas)
	}
}

func TestValueFiles(t *testing.T) {
	root := repoRoot(t)
	for _, mode := range []string{ModeEgressHA, ModeStock} {
		files, err := ValueFiles(mode)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if _, err := os.Stat(filepath.Join(root, f)); err != nil {
				t.Errorf("mode %s: %v", mode, err)
			}
		}
	}
	if _, err := ValueFiles("bogus"); err == nil {
		t.Error("ValueFiles(bogus): no error")
	}
}

// The images patches/helm-values.yaml makes the chart pull are the ones
// README's install steps build.
func TestImagesMatchREADME(t *testing.T) {
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	built := map[string]bool{}
	for _, m := range regexp.MustCompile(`docker build .* -t (\S+)`).FindAllStringSubmatch(string(readme), -1) {
		built[m[1]] = true
	}
	if len(built) == 0 {
		t.Fatal("README.md has no `docker build ... -t IMAGE` line")
	}
	r := renderLab(t, ModeEgressHA)
	for _, w := range []struct{ kind, name, container string }{
		{"DaemonSet", "cilium", "cilium-agent"},
		{"Deployment", "cilium-operator", "cilium-operator"},
	} {
		o := r.Object(w.kind, w.name)
		if o == nil {
			t.Fatalf("no %s %s rendered", w.kind, w.name)
		}
		cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		var image string
		for _, c := range cs {
			if c, ok := c.(map[string]any); ok && c["name"] == w.container {
				image, _ = c["image"].(string)
			}
		}
		if !built[image] {
			t.Errorf("%s %s container %s pulls %q; README builds %v", w.kind, w.name, w.container, image, built)
		}
	}
}

// "Fails when our values set a key the chart does not use."
func TestValuesUseOnlyChartKeys(t *testing.T) {
	root := repoRoot(t)
	ch, err := loader.Load(ChartDir(ciliumDir(t)))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"patches/helm-values.yaml", "test/lab/chart/lab-values.yaml", "test/lab/chart/stock-values.yaml"} {
		vals, err := chartutil.ReadValuesFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if len(vals) == 0 {
			t.Errorf("%s: no values", f)
		}
		for _, u := range unusedValues(ch, vals) {
			t.Errorf("%s: %s", f, u)
		}
	}
}

// The check above reports what it must.
func TestUnusedValuesReports(t *testing.T) {
	ch, err := loader.Load(ChartDir(ciliumDir(t)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, values string
		want         []string // prefixes of the reports, in order
	}{
		{"known keys", "bpf: {masquerade: true}\noperator: {image: {tag: x}}\n", nil},
		{"commented-out key a template reads", "devices: [eth0]\n", nil},
		{"free-form map", "extraConfig: {anything-goes: \"1\"}\npodAnnotations: {a: b}\noperator: {nodeSelector: {x: y}}\n", nil},
		{"null removes a default", "bpf: {masquerade: null}\n", nil},
		{"bogus top-level key", "bogusKey: 1\n", []string{"bogusKey: not a value"}},
		{"bogus nested key", "bpf: {masquerade: true, bogus: true}\n", []string{"bpf.bogus: not a value"}},
		{"misspelt key", "egressGateway: {enable: false}\n", []string{"egressGateway.enable: not a value"}},
		{"scalar for a map", "ipam: kubernetes\n", []string{"ipam: the chart's value is a map"}},
		{"map for a scalar", "l7Proxy: {enabled: false}\n", []string{"l7Proxy: the chart's value is a bool"}},
		{"two at once", "hubble: {enabled: false, bogus: 1}\nzzz: 1\n", []string{"hubble.bogus:", "zzz:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals, err := chartutil.ReadValues([]byte(tc.values))
			if err != nil {
				t.Fatal(err)
			}
			got := unusedValues(ch, vals)
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want reports starting %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("report %d = %q, want prefix %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// documentedDefaults parses README's Configuration table: rows
// | `flag` | binary | `default` | meaning |, where a row may name two flags
// (`egress-gateway-ha-vip-probe-count` / `-probe-interval`) with two
// defaults (`2` / `30ms`).
func documentedDefaults(t *testing.T, readme string) map[string]string {
	t.Helper()
	code := regexp.MustCompile("`([^`]*)`")
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(readme))
	for sc.Scan() {
		cells := strings.Split(sc.Text(), "|")
		if len(cells) < 5 || !strings.Contains(cells[1], "`egress-gateway-ha-") {
			continue
		}
		var names, defaults []string
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			names = append(names, m[1])
		}
		for _, m := range code.FindAllStringSubmatch(cells[3], -1) {
			defaults = append(defaults, m[1])
		}
		if len(names) == 0 || len(names) != len(defaults) {
			t.Fatalf("README row %q: %d flags, %d defaults", sc.Text(), len(names), len(defaults))
		}
		for i, n := range names {
			if strings.HasPrefix(n, "-") {
				// "-probe-interval" after "egress-gateway-ha-vip-probe-count":
				// replace the first name's tail from "-probe-".
				seg, _, _ := strings.Cut(n[1:], "-")
				idx := strings.LastIndex(names[0], "-"+seg+"-")
				if idx < 0 {
					t.Fatalf("README row %q: cannot expand %s from %s", sc.Text(), n, names[0])
				}
				n = names[0][:idx] + n
			}
			if _, dup := out[n]; dup {
				t.Fatalf("README documents %s twice", n)
			}
			out[n] = defaults[i]
		}
	}
	return out
}

func TestDocumentedDefaultsParser(t *testing.T) {
	got := documentedDefaults(t, "| flag | binary | default | meaning |\n|---|---|---|---|\n"+
		"| `egress-gateway-ha-enabled` | agent, operator | `true` | x |\n"+
		"| `egress-gateway-ha-vip-probe-count` / `-probe-interval` | agent | `2` / `30ms` | y |\n"+
		"| `egress-gateway-ha-vip-garp-count` / `-garp-interval` | agent | `3` / `100ms` | z |\n")
	want := map[string]string{
		"egress-gateway-ha-enabled":            "true",
		"egress-gateway-ha-vip-probe-count":    "2",
		"egress-gateway-ha-vip-probe-interval": "30ms",
		"egress-gateway-ha-vip-garp-count":     "3",
		"egress-gateway-ha-vip-garp-interval":  "100ms",
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

// sameValue compares a value with a documented default: durations by
// duration ("1m" = "60s"), anything else as text.
func sameValue(a, b string) bool {
	if da, err := time.ParseDuration(a); err == nil {
		if db, err := time.ParseDuration(b); err == nil {
			return da == db
		}
	}
	return a == b
}

// "Fails when the shipped values disagree with the documented defaults."
func TestShippedValuesMatchDocumentedDefaults(t *testing.T) {
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := documentedDefaults(t, string(readme))
	if len(documented) < 10 {
		t.Fatalf("README's Configuration table documents only %d flags: %v", len(documented), documented)
	}
	for _, f := range []string{"patches/helm-values.yaml", "test/lab/chart/lab-values.yaml", "test/lab/chart/stock-values.yaml"} {
		vals, err := chartutil.ReadValuesFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		extra, _ := vals["extraConfig"].(map[string]any)
		n := 0
		for k, v := range extra {
			if !strings.HasPrefix(k, "egress-gateway-ha-") {
				continue
			}
			n++
			s, ok := v.(string)
			if !ok {
				t.Errorf("%s: extraConfig %s = %v (%T): cilium-config values are strings, quote it", f, k, v, v)
				continue
			}
			def, ok := documented[k]
			switch {
			case !ok:
				t.Errorf("%s: extraConfig %s is not a flag README's Configuration table documents", f, k)
			case f == "patches/helm-values.yaml" && !sameValue(s, def):
				t.Errorf("%s: extraConfig %s = %q, README documents the default %q", f, k, s, def)
			}
		}
		if f == "patches/helm-values.yaml" && n == 0 {
			t.Errorf("%s sets no egress-gateway-ha-* key", f)
		}
	}
}

func TestSameValue(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"500ms", "500ms", true}, {"1m", "60s", true}, {"1s", "500ms", false},
		{"true", "true", true}, {"2", "2", true}, {"2", "3", false}, {"k8s-app=cilium", "k8s-app=cilium", true},
	} {
		if got := sameValue(tc.a, tc.b); got != tc.want {
			t.Errorf("sameValue(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

// checkRBACOrder: the kinds come in apply order.
func checkRBACOrder(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	last := -1
	for _, o := range objs {
		i := slices.Index(rbacOrder, o.GetKind())
		if i < 0 {
			t.Errorf("RBAC() returned a %s", o.GetKind())
			continue
		}
		if i < last {
			t.Errorf("RBAC() returned %s %s after a %s", o.GetKind(), o.GetName(), rbacOrder[last])
		}
		last = i
		if i > 0 && !strings.HasPrefix(o.GetKind(), "Cluster") && o.GetKind() != "Namespace" && o.GetNamespace() == "" {
			t.Errorf("%s %s has no namespace", o.GetKind(), o.GetName())
		}
	}
}

func TestLoadManifestsPatchesRBAC(t *testing.T) {
	objs, err := LoadManifests(filepath.Join(repoRoot(t), "patches", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) == 0 {
		t.Fatal("patches/rbac.yaml: no objects")
	}
	for _, o := range objs {
		if !slices.Contains(rbacOrder, o.GetKind()) || o.GetName() == "" {
			t.Errorf("patches/rbac.yaml: %s %q is not an RBAC object", o.GetKind(), o.GetName())
		}
	}
	// Our bindings name the chart's ServiceAccounts.
	r := renderLab(t, ModeEgressHA)
	for _, o := range objs {
		subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
		for _, s := range subjects {
			s, _ := s.(map[string]any)
			if s["kind"] != "ServiceAccount" {
				continue
			}
			name, _ := s["name"].(string)
			ns, _ := s["namespace"].(string)
			sa := r.Object("ServiceAccount", name)
			if sa == nil || ns != Namespace {
				t.Errorf("patches/rbac.yaml %s %s binds ServiceAccount %s/%s, which the chart does not render", o.GetKind(), o.GetName(), ns, name)
			}
		}
	}
}

func TestLoadManifestsErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("---\nkind: ConfigMap\nmetadata: {name: x}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadManifests(bad); err == nil {
		t.Error("a document without apiVersion: no error")
	}
	if _, err := LoadManifests(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("a missing file: no error")
	}
}

func TestContainerEnvironAndArgv(t *testing.T) {
	r := renderLab(t, ModeEgressHA)
	refs := map[string]string{"spec.nodeName": "lab-egress-a", "metadata.namespace": Namespace}
	cms := map[string]map[string]string{ConfigMapName: r.Config}

	env, err := r.Operator.Environ(refs, cms)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range []string{"K8S_NODE_NAME=lab-egress-a", "CILIUM_K8S_NAMESPACE=kube-system", "CILIUM_DEBUG=false", "KUBERNETES_SERVICE_HOST=198.18.0.1"} {
		if !slices.Contains(env, kv) {
			t.Errorf("operator env %q has no %s", env, kv)
		}
	}
	argv := r.Operator.Argv("/lab/op-1/config", env)
	want := []string{"cilium-operator-generic", "--config-dir=/lab/op-1/config", "--debug=false"}
	if !slices.Equal(argv, want) {
		t.Errorf("operator argv %q, want %q", argv, want)
	}

	env, err = r.Agent.Environ(refs, cms)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "GOMEMLIMIT=") && kv != "GOMEMLIMIT=0" }) {
		t.Errorf("agent env %q: no GOMEMLIMIT from the machine's memory", env)
	}
	if argv := r.Agent.Argv("/lab/n1/config", env); !slices.Equal(argv, []string{"cilium-agent", "--config-dir=/lab/n1/config"}) {
		t.Errorf("agent argv %q", argv)
	}
	if _, err := r.Agent.Environ(map[string]string{"metadata.namespace": Namespace}, cms); err == nil || !strings.Contains(err.Error(), "K8S_NODE_NAME") {
		t.Errorf("Environ without spec.nodeName: %v, want an error naming K8S_NODE_NAME", err)
	}
}

func TestEnvironKubeletRules(t *testing.T) {
	optional := true
	c := Container{
		Command: []string{"prog", "$(A)"},
		Args:    []string{"--config-dir", "/tmp/cilium/config-map", "--x=$(B)", "$$(A)", "$(UNSET)", "$(A", "a$b"},
		Env: []corev1.EnvVar{
			{Name: "A", Value: "1"},
			{Name: "B", Value: "$(A)-$(C)"}, // C is defined later: kept
			{Name: "C", Value: "3"},
			{Name: "D", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}, Key: "missing", Optional: &optional}}},
		},
	}
	env, err := c.Environ(nil, map[string]map[string]string{"cm": {}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"A=1", "B=1-$(C)", "C=3"}; !slices.Equal(env, want) {
		t.Errorf("env %q, want %q", env, want)
	}
	argv := c.Argv("/d", env)
	want := []string{"prog", "1", "--config-dir", "/d", "--x=1-$(C)", "$(A)", "$(UNSET)", "$(A", "a$b"}
	if !slices.Equal(argv, want) {
		t.Errorf("argv %q, want %q", argv, want)
	}
	if dir, ok := c.ConfigDir(); !ok || dir != "/tmp/cilium/config-map" {
		t.Errorf("ConfigDir() = %q, %v", dir, ok)
	}

	c.Env[3].ValueFrom.ConfigMapKeyRef.Optional = nil
	if _, err := c.Environ(nil, map[string]map[string]string{"cm": {}}); err == nil {
		t.Error("a missing non-optional configMapKeyRef: no error")
	}
}

// readConfigDir reads a config dir as Cilium's option.ReadDirConfig does:
// directories (also through symlinks) skipped, values trimmed.
func readConfigDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if fi.IsDir() {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = strings.TrimSpace(string(b))
	}
	return out
}

func TestWriteConfigDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "config")
	first := map[string]string{"a": "1", "b-c": "two", "d.e": ""}
	if err := WriteConfigDir(dir, first); err != nil {
		t.Fatal(err)
	}
	if got := readConfigDir(t, dir); !maps.Equal(got, first) {
		t.Errorf("after the first write: %v, want %v", got, first)
	}
	if target, err := os.Readlink(filepath.Join(dir, "a")); err != nil || target != "..data/a" {
		t.Errorf("a -> %q, %v; want a symlink to ..data/a as a kubelet projects it", target, err)
	}

	second := map[string]string{"a": "one", "f": "new"}
	if err := WriteConfigDir(dir, second); err != nil {
		t.Fatal(err)
	}
	if got := readConfigDir(t, dir); !maps.Equal(got, second) {
		t.Errorf("after the update: %v, want %v", got, second)
	}
	entries, _ := os.ReadDir(dir)
	var hidden []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			hidden = append(hidden, e.Name())
		}
	}
	if len(hidden) != 2 { // ..data and one timestamped dir
		t.Errorf("hidden entries %q, want ..data and one data dir", hidden)
	}

	if err := WriteConfigDir(dir, map[string]string{"../x": "1"}); err == nil {
		t.Error("key ../x: no error")
	}
	if err := WriteConfigDir(dir, map[string]string{"..data": "1"}); err == nil {
		t.Error("key ..data: no error")
	}
}

func TestRenderErrors(t *testing.T) {
	if _, err := Render(filepath.Join(t.TempDir(), "nochart")); err == nil {
		t.Error("no chart: no error")
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("kubeProxyReplacement: [1, 2]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Render(ChartDir(ciliumDir(t)), bad); err == nil {
		t.Error("values against the chart's schema: no error")
	}
}

// It runs at every lab bring-up.
func BenchmarkRenderLab(b *testing.B) {
	dir, root := ciliumDir(b), repoRoot(b)
	for b.Loop() {
		if _, err := RenderLab(dir, root, ModeEgressHA); err != nil {
			b.Fatal(err)
		}
	}
}
