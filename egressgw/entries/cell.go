// Package entries is the desired-entries controller: it keeps
// egress-policy-entries, the desired contents of Cilium's egress policy
// map, equal to policy.Compute over its inputs, incrementally:
//
//   - egress-policy-specs: EgressGatewayPolicies as reflected;
//   - egress-cegps: CiliumEgressGatewayPolicies with the operator's decision;
//   - egress-gateways: EgressGateway status (active node, its InternalIP,
//     egress IP);
//   - egress-endpoints: every pod endpoint of the cluster;
//   - reflectors.NodeLabels: the labels of each endpoint's node, for the
//     nodeSelector of CiliumEgressGatewayPolicy selectors;
//   - egress-local-gateways: this node's own address per basic-mode gateway.
//
// It is the only writer of egress-policies: each EgressGatewayPolicy with
// the Ready and Conflict conditions this agent computes for it. It never touches the BPF
// map (the datapath package's reconciler does) nor the API server.
//
// The table egress-policy-entries itself belongs to the datapath cells. Its
// initializer is only marked done once all inputs have synced and the first
// full computation is written: the reconciler must never prune on the
// strength of a partial table (an agent restart would delete correct
// entries).
package entries

import (
	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	"github.com/egressha/egressha/egressgw/tables"
)

// Cell provides egress-policies (statedb.Table) and runs the controller.
// It needs egress-policy-entries as a statedb.RWTable, which the datapath
// cells provide privately to the agent module.
var Cell = cell.Module(
	"egress-gateway-ha-entries",
	"Desired egress map entries and EgressGatewayPolicies",

	cell.ProvidePrivate(tables.NewPoliciesTable),
	cell.Provide(statedb.RWTable[*tables.Policy].ToTable),
	cell.Invoke(registerDesiredEntries),
)

// LocalCell provides CEGPLocal on the real node.
var LocalCell = cell.Provide(newCEGPLocal)
