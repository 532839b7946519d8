// Package controlplane runs the lab's Kubernetes control plane in process:
// an embedded etcd and kube-apiserver from k8s.io/kubernetes, with a
// self-signed CA, a static admin token, RBAC and an admin kubeconfig. There
// is no kube-controller-manager, scheduler or kubelet; the lab plays their
// part where it needs to (design, section 6).
//
// kube-apiserver keeps process-wide state (feature gates, metrics
// registries, klog), so run one control plane at a time per process; running
// it again after Run returned works (TestRestart).
//
// The package lives in the nested module github.com/egressha/egressha/test
// so that the product module never depends on k8s.io/kubernetes:
//
//	cd test && go test ./lab/controlplane/ && go run ./lab/cmd/cp-smoke
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

// Config describes a control plane. Only Dir is required.
type Config struct {
	// Dir holds all state: etcd/ (etcd's data), pki/ (CA, serving
	// certificate, service-account key, tokens.csv) and kubeconfig. The
	// etcd data, the CA, the service-account key and the admin token are
	// reused when Run starts again on the same Dir.
	Dir string
	// BindAddress is the address kube-apiserver listens on; nil means
	// 127.0.0.1. It is also the advertised address and in the serving
	// certificate. If it is unspecified (0.0.0.0 or ::) the server
	// listens on every address and the kubeconfig points at loopback.
	BindAddress net.IP
	// SecurePort is the HTTPS port; 0 picks a free one.
	SecurePort int
	// ExtraServingIPs are more addresses the serving certificate names:
	// those of proxies that forward TCP to the server, as an in-cluster
	// client (KUBERNETES_SERVICE_HOST) reaches it without a server-name
	// override.
	ExtraServingIPs []net.IP
	// ServiceCIDR is --service-cluster-ip-range; "" means 10.96.0.0/16.
	ServiceCIDR string
	// EtcdPort is etcd's client port on 127.0.0.1; 0 picks a free one.
	EtcdPort int
	// AdminToken is the bearer token of AdminUser (group system:masters)
	// written into the kubeconfig. "" keeps the token of a previous run in
	// Dir, or makes a random one.
	AdminToken string
	// ExtraArgs are kube-apiserver flags applied after Run's own, so they
	// can add to or override them (e.g. "--feature-gates=...").
	ExtraArgs []string
}

// KubeconfigPath is where Run writes the admin kubeconfig: Dir/kubeconfig.
func (c Config) KubeconfigPath() string { return filepath.Join(c.Dir, "kubeconfig") }

func (c Config) withDefaults() (Config, error) {
	if c.Dir == "" {
		return c, errors.New("controlplane: Config.Dir is required")
	}
	if c.BindAddress == nil {
		c.BindAddress = net.IPv4(127, 0, 0, 1)
	}
	if c.ServiceCIDR == "" {
		c.ServiceCIDR = "10.96.0.0/16"
	}
	return c, nil
}

// Run starts etcd and kube-apiserver, writes the admin kubeconfig to
// cfg.KubeconfigPath() and blocks until ctx is cancelled; then it shuts the
// API server down gracefully, stops etcd and returns nil. It returns early
// with an error if either fails to start or stops on its own. Use WaitReady
// to know when the server serves.
//
// Run's own messages go to log at Info. The chatter of etcd and
// kube-apiserver (their Info, klog V(0)) goes to log at Debug, klog V(n) at
// Debug-n; their warnings and errors keep their level, except a few known
// to be meaningless here (etcdBenign, apiserverBenign), which go to Debug.
// log may be nil.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	serviceIP, err := firstServiceIP(cfg.ServiceCIDR)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return err
	}
	pki, err := ensurePKI(cfg, serviceIP)
	if err != nil {
		return err
	}

	// Listen before anything else so that the port is known (and ours)
	// when the kubeconfig is written. kube-apiserver serves on this
	// listener; closing it again here is a no-op if it already did.
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.BindAddress.String(), strconv.Itoa(cfg.SecurePort)))
	if err != nil {
		return fmt.Errorf("kube-apiserver listener: %w", err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	host := cfg.BindAddress
	if host.IsUnspecified() {
		host = net.IPv4(127, 0, 0, 1)
		if cfg.BindAddress.To4() == nil {
			host = net.IPv6loopback
		}
	}
	server := "https://" + net.JoinHostPort(host.String(), strconv.Itoa(port))
	if err := writeKubeconfig(cfg.KubeconfigPath(), server, pki.caCert, pki.adminToken); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}

	started := time.Now()
	etcdLog := slog.New(newQuietHandler(log.Handler(), etcdBenign)).With("component", "etcd")
	etcd, etcdURL, err := startEtcd(ctx, cfg.Dir, cfg.EtcdPort, etcdLog)
	if err != nil {
		return err
	}
	defer func() {
		etcd.Close()
		log.Info("etcd stopped")
	}()
	log.Info("etcd serving", "url", etcdURL, "after", time.Since(started).Round(time.Millisecond))

	// The API server stops when ctx ends or when etcd dies under it.
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case err := <-etcd.Err():
			cancel(fmt.Errorf("etcd stopped: %w", err))
		case <-runCtx.Done():
		}
	}()

	// kube-apiserver logs through klog, which is process-wide.
	klog.SetSlogLogger(slog.New(newQuietHandler(log.Handler(), apiserverBenign)).With("component", "kube-apiserver"))
	log.Info("kube-apiserver starting", "server", server, "kubeconfig", cfg.KubeconfigPath())
	err = runAPIServer(runCtx, cfg, ln, port, pki, etcdURL)
	switch {
	case err != nil:
		return fmt.Errorf("kube-apiserver: %w", err)
	case ctx.Err() == nil && context.Cause(runCtx) != nil:
		return context.Cause(runCtx) // etcd died
	case ctx.Err() == nil:
		return errors.New("kube-apiserver stopped on its own")
	}
	log.Info("kube-apiserver stopped")
	return nil
}

// apiserverArgs are the kube-apiserver flags of the lab, as they would be
// given to the binary.
func apiserverArgs(cfg Config, port int, p *pki, etcdURL string) []string {
	args := []string{
		"--bind-address=" + cfg.BindAddress.String(),
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servKey,
		// Lets the lab sign client certificates with the same CA.
		"--client-ca-file=" + p.caCert,
		"--token-auth-file=" + p.tokenFile,
		"--authorization-mode=Node,RBAC",
		"--etcd-servers=" + etcdURL,
		"--service-cluster-ip-range=" + cfg.ServiceCIDR,
		// Required by validation even though nothing mints pod tokens here.
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.serviceAccountKey,
		"--service-account-signing-key-file=" + p.serviceAccountKey,
		// The ServiceAccount admission plugin refuses every Pod until the
		// namespace's "default" ServiceAccount exists, and only
		// kube-controller-manager creates those.
		"--disable-admission-plugins=ServiceAccount",
		// cilium-agent Pods are privileged.
		"--allow-privileged=true",
		"--profiling=false",
	}
	switch {
	case cfg.BindAddress.IsLoopback():
		// The advertised address goes into the Endpoints of the
		// kubernetes Service, and validation refuses loopback addresses
		// there: the default reconciler would log an error every 10 s.
		args = append(args, "--advertise-address="+cfg.BindAddress.String(), "--endpoint-reconciler-type=none")
	case !cfg.BindAddress.IsUnspecified():
		args = append(args, "--advertise-address="+cfg.BindAddress.String())
	}
	return append(args, cfg.ExtraArgs...)
}

// runAPIServer does what `kube-apiserver <flags>` does, minus the signal
// handling and the global logging setup, on the given listener.
func runAPIServer(ctx context.Context, cfg Config, ln net.Listener, port int, p *pki, etcdURL string) error {
	s := options.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // no usage text on a bad flag; the error says it
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(apiserverArgs(cfg, port, p, etcdURL)); err != nil {
		return err
	}
	s.SecureServing.Listener = ln

	// What the command's PersistentPreRunE does: resolve feature gates and
	// the emulation version from the flags.
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return utilerrors.NewAggregate(errs)
	}
	return app.Run(ctx, completed)
}

// firstServiceIP is the ClusterIP kube-apiserver gives the kubernetes
// Service: the first address of the (first) service CIDR.
func firstServiceIP(cidrs string) (net.IP, error) {
	first, _, _ := strings.Cut(cidrs, ",")
	prefix, err := netip.ParsePrefix(strings.TrimSpace(first))
	if err != nil {
		return nil, fmt.Errorf("service CIDR: %w", err)
	}
	return net.IP(prefix.Masked().Addr().Next().AsSlice()), nil
}
