package client

import (
	"github.com/cilium/hive/cell"
	"k8s.io/client-go/rest"

	k8sClient "github.com/cilium/cilium/pkg/k8s/client"
)

// Cell provides the client of our CRDs, built from the REST configuration
// of Cilium's clientset (same API server, same credentials).
var Cell = cell.Provide(newCRDClient)

func newCRDClient(cs k8sClient.Clientset) *Clientset {
	return NewLazy(func() *rest.Config {
		if !cs.IsEnabled() {
			return nil
		}
		return cs.RestConfig()
	})
}
