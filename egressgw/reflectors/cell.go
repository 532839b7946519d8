// Package reflectors converts what the agent reads from the API server and
// from Cilium into egressha's tables, once: EgressGateways into
// egress-gateways, EgressGatewayPolicies into egress-policy-specs,
// CiliumEgressGatewayPolicies into egress-cegps,
// CiliumEndpoints and the endpoint manager's local endpoints into
// egress-endpoints, CiliumNode labels into NodeLabels, this node's labels
// into LocalNodeLabels.
// Nothing here decides anything: every decision reads these tables.
package reflectors

import (
	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	"github.com/egressha/egressha/egressgw/tables"
)

// Cell provides egress-gateways, egress-policy-specs, egress-cegps and
// egress-endpoints
// (statedb.Table, read-only to everyone else), *NodeLabels and
// *LocalNodeLabels.
var Cell = cell.Module(
	"egress-gateway-ha-reflectors",
	"Gateways CEGPs endpoints and node labels reflected into tables",

	cell.ProvidePrivate(
		newGatewaysTableAndReflector,
		newPolicySpecsTableAndReflector,
		newCEGPsTableAndReflector,
		newEndpointsTableAndSources,
	),
	cell.Provide(
		statedb.RWTable[*tables.EgressGateway].ToTable,
		statedb.RWTable[*tables.PolicySpec].ToTable,
		statedb.RWTable[*tables.CEGP].ToTable,
		statedb.RWTable[*tables.Endpoint].ToTable,
		newNodeLabelsSource,
	),
	LocalNodeCell,
)

// LocalNodeCell provides *LocalNodeLabels (part of Cell; on its own for
// tests of the cells that read only this node's labels).
var LocalNodeCell = cell.Provide(newLocalNodeLabels)
