package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// contextName names the cluster, user and context in the kubeconfig.
const contextName = "egressha-lab"

// writeKubeconfig writes an admin kubeconfig with the CA and the token
// embedded, so the file alone is enough to talk to the server. It is
// replaced atomically: pollers never read half a file.
func writeKubeconfig(path, server, caFile, token string) error {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters[contextName] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	kc.AuthInfos[contextName] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts[contextName] = &clientcmdapi.Context{Cluster: contextName, AuthInfo: contextName}
	kc.CurrentContext = contextName
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".kubeconfig-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path) // CreateTemp made it 0600
}

// RESTConfig loads a kubeconfig written by Run.
func RESTConfig(kubeconfigPath string) (*rest.Config, error) {
	return clientcmd.BuildConfigFromFlags("", kubeconfigPath)
}

// WaitReady polls /readyz of the server in the kubeconfig until it answers
// ok or ctx ends. The kubeconfig may not exist yet: Run writes it shortly
// after it starts, so WaitReady can be called right after starting Run.
func WaitReady(ctx context.Context, kubeconfigPath string) error {
	const interval = 100 * time.Millisecond
	var last error
	for {
		if last = probeReady(ctx, kubeconfigPath); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("control plane not ready: %w (last probe: %v)", context.Cause(ctx), last)
		case <-time.After(interval):
		}
	}
}

func probeReady(ctx context.Context, kubeconfigPath string) error {
	cfg, err := RESTConfig(kubeconfigPath)
	if err != nil {
		return err
	}
	cfg.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("/readyz: %w: %s", err, body)
	}
	return nil
}
