package cells

import (
	"github.com/cilium/hive/cell"
	"k8s.io/client-go/rest"

	k8sClient "github.com/cilium/cilium/pkg/k8s/client"

	"github.com/egressha/egressha/egressgw/client"
)

// crdClientCell provides the client of our CRDs, built from the REST
// configuration of Cilium's clientset (same API server, same credentials).
var crdClientCell = cell.Provide(newCRDClient)

func newCRDClient(cs k8sClient.Clientset) *client.Clientset {
	return client.NewLazy(func() *rest.Config {
		if !cs.IsEnabled() {
			return nil
		}
		return cs.RestConfig()
	})
}
