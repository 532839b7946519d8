package cells

import (
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"k8s.io/client-go/tools/cache"

	"github.com/cilium/cilium/pkg/k8s"
	k8sClient "github.com/cilium/cilium/pkg/k8s/client"

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

// crdTableParams are what a reflector of one of our CRDs needs.
type crdTableParams struct {
	cell.In

	DB        *statedb.DB
	JobGroup  job.Group
	Config    AgentConfig
	Clientset k8sClient.Clientset
	CRDs      *client.Clientset
}

// reflectCRD registers a reflector from one of our CRDs into tbl, created
// together with the table so that whoever depends on the table starts
// after the reflector is registered and can wait for the table's
// initialization. Disabled (or without Kubernetes) the table stays empty
// and is never initialized, and our CRDs, which may not be installed, are
// never listed. merge may be nil.
func reflectCRD[Obj any, Row any](p crdTableParams, tbl statedb.RWTable[Row], name, scope string,
	lw cache.ListerWatcher, toRow func(Obj) Row, merge func(old, cur Row) Row) error {
	if !p.Config.EgressGatewayHAEnabled || !p.Clientset.IsEnabled() {
		return nil
	}
	return k8s.RegisterReflector(p.JobGroup, p.DB, k8s.ReflectorConfig[Row]{
		Name:          name,
		Table:         tbl,
		ListerWatcher: lw,
		MetricScope:   scope,
		Transform: func(_ statedb.ReadTxn, obj any) (row Row, ok bool) {
			o, ok := obj.(Obj)
			if !ok {
				return row, false
			}
			return toRow(o), true
		},
		Merge: merge,
	})
}

// newGatewaysTableAndReflector creates egress-gateways and its reflector.
func newGatewaysTableAndReflector(p crdTableParams) (statedb.RWTable[*tables.EgressGateway], error) {
	tbl, err := tables.NewEgressGatewaysTable(p.DB)
	if err != nil {
		return nil, err
	}
	return tbl, reflectCRD(p, tbl, "egressgateways", "EgressGateway", p.CRDs.Gateways.ListerWatcher(), tables.NewEgressGateway, nil)
}
