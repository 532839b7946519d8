package reflectors

import (
	"fmt"
	"log/slog"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"k8s.io/client-go/tools/cache"

	"github.com/cilium/cilium/pkg/k8s"
	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	k8sClient "github.com/cilium/cilium/pkg/k8s/client"
	"github.com/cilium/cilium/pkg/k8s/utils"

	"github.com/egressha/egressha/egressgw/cegp"
	"github.com/egressha/egressha/egressgw/client"
	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/tables"
)

// CRDParams are what a reflector of a CRD needs.
type CRDParams struct {
	cell.In

	Log       *slog.Logger
	DB        *statedb.DB
	JobGroup  job.Group
	Enabled   config.Enabled
	Clientset k8sClient.Clientset
	CRDs      *client.Clientset
}

// reflectCRD registers a reflector from a CRD into tbl, created together
// with the table so that whoever depends on the table starts after the
// reflector is registered and can wait for the table's initialization.
// Disabled the table stays empty and is never initialized, and our CRDs,
// which may not be installed, are never listed. merge may be nil.
func reflectCRD[Obj any, Row any](p CRDParams, tbl statedb.RWTable[Row], name, scope string,
	lw cache.ListerWatcher, toRow func(Obj) Row, merge func(old, cur Row) Row) error {
	if !p.Enabled {
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
func newGatewaysTableAndReflector(p CRDParams) (statedb.RWTable[*tables.EgressGateway], error) {
	tbl, err := tables.NewEgressGatewaysTable(p.DB)
	if err != nil {
		return nil, err
	}
	return tbl, reflectCRD(p, tbl, "egressgateways", "EgressGateway", p.CRDs.Gateways.ListerWatcher(), tables.NewEgressGateway, nil)
}

// newCEGPsTableAndReflector creates egress-cegps and its reflector of
// Cilium's CiliumEgressGatewayPolicies. A policy whose decision
// annotation disappears or becomes malformed keeps the last decision seen
// (tables.KeepDecision): the previous row is read in the same write
// transaction, on a watch event as on a relist.
func newCEGPsTableAndReflector(p CRDParams) (statedb.RWTable[*tables.CEGP], error) {
	tbl, err := tables.NewCEGPsTable(p.DB)
	if err != nil {
		return nil, err
	}
	if !p.Enabled {
		return tbl, nil
	}
	lw := utils.ListerWatcherFromTyped[*ciliumv2.CiliumEgressGatewayPolicyList](p.Clientset.CiliumV2().CiliumEgressGatewayPolicies())
	return tbl, k8s.RegisterReflector(p.JobGroup, p.DB, k8s.ReflectorConfig[*tables.CEGP]{
		Name:          "ciliumegressgatewaypolicies",
		Table:         tbl,
		ListerWatcher: lw,
		MetricScope:   "CiliumEgressGatewayPolicy",
		Transform: func(txn statedb.ReadTxn, obj any) (*tables.CEGP, bool) {
			o, ok := obj.(*ciliumv2.CiliumEgressGatewayPolicy)
			if !ok {
				return nil, false
			}
			old, _, _ := tbl.Get(txn, tables.CEGPNameIndex.Query(o.Name))
			row, kept := tables.KeepDecision(old, tables.NewCEGP(o))
			if kept && p.Log != nil {
				p.Log.Warn("CiliumEgressGatewayPolicy decision annotation "+row.AnnotationProblem+
					": keeping the last decision seen until the operator writes a new one",
					"policy", o.Name, "annotation", cegp.Annotation, "keptFromResourceVersion", row.SelectionVersion,
					"decision", fmt.Sprint(row.Selection), "error", row.Error)
			}
			return row, true
		},
	})
}

// newPolicySpecsTableAndReflector creates egress-policy-specs and its
// reflector of EgressGatewayPolicies. The entries controller turns them
// into egress-policies, with the conditions it computes.
func newPolicySpecsTableAndReflector(p CRDParams) (statedb.RWTable[*tables.PolicySpec], error) {
	tbl, err := tables.NewPolicySpecsTable(p.DB)
	if err != nil {
		return nil, err
	}
	return tbl, reflectCRD(p, tbl, "egressgatewaypolicies", "EgressGatewayPolicy", p.CRDs.Policies.ListerWatcher(),
		tables.NewPolicySpec, nil)
}
