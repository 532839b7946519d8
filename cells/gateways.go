package cells

import (
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"

	"github.com/cilium/cilium/pkg/k8s"
	k8sClient "github.com/cilium/cilium/pkg/k8s/client"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/client"
	"github.com/egressha/egressha/egressgw/tables"
)

// gatewaysTableCell provides the agent's egress-gateways table
// (statedb.Table[*tables.EgressGateway]), filled from the API server by a
// reflector. `db/show egress-gateways` prints it.
var gatewaysTableCell = cell.Module(
	"egress-gateway-ha-gateways",
	"EgressGateways reflected into the egress-gateways table",

	cell.ProvidePrivate(newGatewaysTableAndReflector),
	cell.Provide(statedb.RWTable[*tables.EgressGateway].ToTable),
)

type gatewaysTableParams struct {
	cell.In

	DB        *statedb.DB
	JobGroup  job.Group
	Config    AgentConfig
	Clientset k8sClient.Clientset
	CRDs      *client.Clientset
}

// newGatewaysTableAndReflector creates the table and registers its
// reflector, together, so that whoever depends on the table starts after
// the reflector is registered and can wait for the table's initialization.
// Disabled (or without Kubernetes) the table stays empty and is never
// initialized, and our CRDs, which may not be installed, are never listed.
func newGatewaysTableAndReflector(p gatewaysTableParams) (statedb.RWTable[*tables.EgressGateway], error) {
	tbl, err := tables.NewEgressGatewaysTable(p.DB)
	if err != nil {
		return nil, err
	}
	if !p.Config.EgressGatewayHAEnabled || !p.Clientset.IsEnabled() {
		return tbl, nil
	}
	return tbl, k8s.RegisterReflector(p.JobGroup, p.DB, k8s.ReflectorConfig[*tables.EgressGateway]{
		Name:          "egressgateways",
		Table:         tbl,
		ListerWatcher: p.CRDs.Gateways.ListerWatcher(),
		MetricScope:   "EgressGateway",
		Transform: func(_ statedb.ReadTxn, obj any) (*tables.EgressGateway, bool) {
			gw, ok := obj.(*v1alpha1.EgressGateway)
			if !ok {
				return nil, false
			}
			return tables.NewEgressGateway(gw), true
		},
	})
}
