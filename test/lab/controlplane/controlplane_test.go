package controlplane

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// crdDir holds the product's generated CRDs and their test objects.
const crdDir = "../../../crds"

// TestControlPlane starts a real control plane and checks what the lab
// relies on: readiness, the reported version, core objects, and that our
// CRDs install and validate (CEL rules included) as in a real cluster.
func TestControlPlane(t *testing.T) {
	rc, _ := startControlPlane(t, Config{Dir: t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cs := kubernetes.NewForConfigOrDie(rc)
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != KubeVersion || v.Major != "1" || v.Minor != "33" {
		t.Fatalf("server version %+v, want %s", v, KubeVersion)
	}

	t.Run("ConfigMap", func(t *testing.T) {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: "default"},
			Data:       map[string]string{"k": "v"},
		}
		if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		got, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "probe", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Data["k"] != "v" {
			t.Fatalf("got data %v", got.Data)
		}
	})

	t.Run("CRDs", func(t *testing.T) {
		gvrs := installCRDs(ctx, t, rc)
		dyn := dynamic.NewForConfigOrDie(rc)

		valid, err := filepath.Glob(filepath.Join(crdDir, "testdata/valid/*.yaml"))
		if err != nil || len(valid) == 0 {
			t.Fatalf("no valid objects in %s: %v", crdDir, err)
		}
		for _, path := range valid {
			obj, _ := readObject(t, path)
			if _, err := dyn.Resource(gvrs[obj.GetKind()]).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
				t.Errorf("%s: refused: %v", filepath.Base(path), err)
			}
		}

		// Every malformed object the product's in-process validation test
		// refuses must be refused by the real API server too, with the same
		// field and message: the apiserver is the truth for CEL. Strict
		// field validation, as kubectl uses, refuses unknown fields.
		invalid, err := filepath.Glob(filepath.Join(crdDir, "testdata/invalid/*.yaml"))
		if err != nil || len(invalid) < 15 {
			t.Fatalf("want at least 15 malformed objects in %s, got %d: %v", crdDir, len(invalid), err)
		}
		for _, path := range invalid {
			obj, want := readObject(t, path)
			field, msg, ok := strings.Cut(want, ": ")
			if !ok {
				t.Fatalf("%s: want comment %q is not \"<field>: <message>\"", path, want)
			}
			_, err := dyn.Resource(gvrs[obj.GetKind()]).Create(ctx, obj, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
			switch {
			case err == nil:
				t.Errorf("%s: accepted, want refused with %q", filepath.Base(path), want)
			case !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err):
				t.Errorf("%s: %v, want an Invalid or BadRequest error", filepath.Base(path), err)
			case !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), field):
				t.Errorf("%s: refused with %q, want %q on %s", filepath.Base(path), err, msg, field)
			}
		}
	})
}

// TestRestart checks that a control plane started again on the same Dir
// (and port) keeps its data, CA and admin token: clients of the first run
// carry on.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	rc, stop := startControlPlane(t, Config{Dir: dir})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "survivor", Namespace: "default"}}
	if _, err := kubernetes.NewForConfigOrDie(rc).CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stop()

	u, err := url.Parse(rc.Host)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	startControlPlane(t, Config{Dir: dir, SecurePort: port})
	if _, err := kubernetes.NewForConfigOrDie(rc).CoreV1().ConfigMaps("default").Get(ctx, "survivor", metav1.GetOptions{}); err != nil {
		t.Fatalf("after restart, with the first run's client: %v", err)
	}
}

// startControlPlane runs the control plane until the test ends or stop is
// called, and returns an admin client config once /readyz is ok.
func startControlPlane(t *testing.T, cfg Config) (rc *rest.Config, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelInfo}))
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- Run(ctx, cfg, log) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	// Runs before the cleanup of a t.TempDir made earlier (LIFO): etcd is
	// gone before its directory is removed.
	t.Cleanup(stop)

	readyCtx, readyCancel := context.WithTimeout(ctx, 2*time.Minute)
	defer readyCancel()
	ready := make(chan error, 1)
	go func() { ready <- WaitReady(readyCtx, cfg.KubeconfigPath()) }()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case err := <-done:
		done <- err // for the cleanup
		t.Fatalf("Run returned before the server was ready: %v", err)
	}
	t.Logf("ready %s after Run", time.Since(start).Round(time.Millisecond))

	rc, err := RESTConfig(cfg.KubeconfigPath())
	if err != nil {
		t.Fatal(err)
	}
	return rc, stop
}

// installCRDs creates every CRD in crdDir, waits until each is Established
// and returns the resource of each kind.
func installCRDs(ctx context.Context, t *testing.T, rc *rest.Config) map[string]schema.GroupVersionResource {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in %s: %v", crdDir, err)
	}
	client := apiextensionsclient.NewForConfigOrDie(rc).ApiextensionsV1().CustomResourceDefinitions()
	gvrs := map[string]schema.GroupVersionResource{}
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(data, crd); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if _, err := client.Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating %s: %v", crd.Name, err)
		}
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := client.Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, c := range got.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("CRD %s not established: %v", crd.Name, err)
		}
		for _, v := range crd.Spec.Versions {
			if v.Storage {
				gvrs[crd.Spec.Names.Kind] = schema.GroupVersionResource{
					Group: crd.Spec.Group, Version: v.Name, Resource: crd.Spec.Names.Plural,
				}
			}
		}
	}
	return gvrs
}

// readObject reads a test object and the text of its "# want: " comment.
func readObject(t *testing.T, path string) (*unstructured.Unstructured, string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want string
	for sc := bufio.NewScanner(bytes.NewReader(data)); sc.Scan(); {
		if w, ok := strings.CutPrefix(sc.Text(), "# want: "); ok {
			want = w
		}
	}
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &obj.Object); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return obj, want
}

// testWriter sends Run's log to the test log, and to stderr once the test
// is over: kube-apiserver goroutines may still log then, and t.Log would
// panic.
type testWriter struct {
	t    *testing.T
	over *atomic.Bool
}

func newTestWriter(t *testing.T) testWriter {
	w := testWriter{t, new(atomic.Bool)}
	t.Cleanup(func() { w.over.Store(true) })
	return w
}

func (w testWriter) Write(p []byte) (int, error) {
	if w.over.Load() {
		return os.Stderr.Write(p)
	}
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
