// Command cp-smoke starts the lab control plane in a temporary directory on
// a free port of 127.0.0.1 (or -bind, -port), waits for /readyz, creates
// and lists a Namespace and a Node, prints the server version and the
// process RSS, shuts the control plane down and exits 0 (1 on any failure).
// With -serve it keeps serving after the checks until interrupted, for
// trying kubectl on it.
//
//	cd test && go run ./lab/cmd/cp-smoke [-v] [-serve] [-bind IP] [-port N]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/egressha/egressha/test/lab/controlplane"
)

func main() {
	verbose := flag.Bool("v", false, "also log etcd's and kube-apiserver's info messages")
	serve := flag.Bool("serve", false, "keep serving after the checks until SIGINT/SIGTERM")
	bind := flag.String("bind", "127.0.0.1", "address kube-apiserver listens on")
	port := flag.Int("port", 0, "kube-apiserver port; 0 picks a free one")
	flag.Parse()
	cfg := controlplane.Config{BindAddress: net.ParseIP(*bind), SecurePort: *port}
	if cfg.BindAddress == nil {
		fmt.Fprintf(os.Stderr, "-bind %q: not an IP address\n", *bind)
		os.Exit(2)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(cfg, log, *serve); err != nil {
		log.Error("smoke test failed", "err", err)
		os.Exit(1)
	}
}

func run(cfg controlplane.Config, log *slog.Logger, serve bool) error {
	dir, err := os.MkdirTemp("", "cp-smoke-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg.Dir = dir
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- controlplane.Run(ctx, cfg, log) }()

	err = smoke(ctx, cfg, start, done)
	if err == nil && serve {
		fmt.Printf("serving; KUBECONFIG=%s; interrupt to stop\n", cfg.KubeconfigPath())
		sig, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		select {
		case <-sig.Done():
		case runErr := <-done: // Run failed; reported below
			done <- runErr
		}
		stop()
	}
	cancel()
	stopping := time.Now()
	if runErr := <-done; runErr != nil {
		err = errors.Join(err, runErr)
	} else {
		fmt.Printf("shutdown: %s\n", time.Since(stopping).Round(time.Millisecond))
	}
	return err
}

func smoke(ctx context.Context, cfg controlplane.Config, start time.Time, done <-chan error) error {
	readyCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ready := make(chan error, 1)
	go func() { ready <- controlplane.WaitReady(readyCtx, cfg.KubeconfigPath()) }()
	select {
	case err := <-ready:
		if err != nil {
			return err
		}
	case err := <-done:
		return fmt.Errorf("control plane stopped before it was ready: %v", err)
	}
	fmt.Printf("readyz: %s after Run\n", time.Since(start).Round(time.Millisecond))

	rc, err := controlplane.RESTConfig(cfg.KubeconfigPath())
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke"},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke-node", Labels: map[string]string{"egress": "true"}},
		Spec:       corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var names []string
	for _, ns := range nss.Items {
		names = append(names, ns.Name)
	}
	fmt.Printf("namespaces: %s\n", strings.Join(names, " "))
	names = names[:0]
	for _, n := range nodes.Items {
		names = append(names, n.Name)
	}
	fmt.Printf("nodes: %s\n", strings.Join(names, " "))

	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		return err
	}
	fmt.Printf("server version: %s (major %s, minor %s)\n", v.GitVersion, v.Major, v.Minor)
	if v.GitVersion != controlplane.KubeVersion {
		return fmt.Errorf("server reports %s, want %s", v.GitVersion, controlplane.KubeVersion)
	}
	fmt.Printf("rss: %s\n", rss())
	return nil
}

// rss reads VmRSS from /proc/self/status.
func rss() string {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
