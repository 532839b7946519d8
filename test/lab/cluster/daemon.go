package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/egressha/egressha/test/lab/controlplane"
)

// RunDaemon is the lab's long-running process (`egressha-lab daemon`): the
// control plane (etcd and kube-apiserver), the API's address on the
// cluster network, the echo server on the public network, and what kubelets
// would report. It blocks until ctx is cancelled.
func RunDaemon(ctx context.Context, cfg Config, log *slog.Logger) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	defer wg.Wait()

	cp := controlplane.Config{
		Dir:         cfg.path("controlplane"),
		BindAddress: net.IPv4(127, 0, 0, 1),
		SecurePort:  APILocalPort,
		ServiceCIDR: ServiceCIDR.String(),
		// In-cluster clients (the chart's k8sServiceHost) reach the server
		// through the proxy in lab-cp and verify it by this address.
		ExtraServingIPs: []net.IP{CPAddr.Addr().AsSlice()},
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := controlplane.Run(ctx, cp, log.With("component", "controlplane")); err != nil {
			cancel(fmt.Errorf("control plane: %w", err))
		}
	}()
	readyCtx, readyCancel := context.WithTimeout(ctx, 2*time.Minute)
	err := controlplane.WaitReady(readyCtx, cp.KubeconfigPath())
	readyCancel()
	if err != nil {
		return err
	}
	// The admin kubeconfig is for the CLI, the tests and the kubelets
	// only; Cilium's pods use their ServiceAccount tokens.
	data, err := os.ReadFile(cp.KubeconfigPath())
	if err != nil {
		return err
	}
	if err := os.WriteFile(cfg.Kubeconfig(), data, 0o600); err != nil {
		return err
	}
	log.Info("control plane ready", "kubeconfig", cfg.Kubeconfig())

	// The nodes reach the API at 198.18.0.1:6443 over their eth0 only: a
	// TCP proxy listening inside lab-cp, so cutting a node's links cuts
	// its API access as on a real network.
	apiLn, err := listenIn(CPNetns, net.JoinHostPort(CPAddr.Addr().String(), strconv.Itoa(APIPort)))
	if err != nil {
		return fmt.Errorf("API proxy in %s: %w", CPNetns, err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		proxyTCP(ctx, apiLn, fmt.Sprintf("127.0.0.1:%d", APILocalPort))
	}()

	echoLn, err := listenIn(EchoNetns, net.JoinHostPort(EchoAddr.Addr().String(), strconv.Itoa(EchoPort)))
	if err != nil {
		return fmt.Errorf("echo server in %s: %w", EchoNetns, err)
	}
	macs, err := startPeerCapture(ctx)
	if err != nil {
		return fmt.Errorf("echo server capture on br1: %w", err)
	}
	if err := serveUDPEcho(ctx); err != nil {
		return fmt.Errorf("UDP echo server in %s: %w", EchoNetns, err)
	}
	echo := &http.Server{Handler: echoHandler(macs), ReadHeaderTimeout: 5 * time.Second}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := echo.Serve(echoLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cancel(fmt.Errorf("echo server: %w", err))
		}
	}()

	kl, err := newKubelets(cfg, log.With("component", "kubelet"))
	if err != nil {
		return err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		kl.run(ctx)
	}()

	if err := os.WriteFile(cfg.path("daemon.ready"), []byte(time.Now().Format(time.RFC3339Nano)), 0o644); err != nil {
		return err
	}
	<-ctx.Done()
	shutdownCtx, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	_ = echo.Shutdown(shutdownCtx)
	apiLn.Close()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

func proxyTCP(ctx context.Context, ln net.Listener, target string) {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			up, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(up, conn); done <- struct{}{} }()
			go func() { io.Copy(conn, up); done <- struct{}{} }()
			select {
			case <-done:
			case <-ctx.Done():
			}
		}()
	}
}
