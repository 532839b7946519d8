// Package datapath hands egressha the egress gateway datapath that Cilium's
// --enable-egress-gateway would set up (node define, tunnel, the pinned
// cilium_egress_gw_policy_v4 map), reconciles egress-policy-entries into
// that map (package maps does the map operations), and relaxes rp_filter on
// the egress interfaces of this node's basic-mode gateways. It decides
// nothing about entries: it writes what the entries controller computed.
package datapath

import (
	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	"github.com/cilium/cilium/pkg/metrics"

	"github.com/egressha/egressha/egressgw/policymap"
	"github.com/egressha/egressha/egressgw/tables"
)

// Cell owns egress-policy-entries and write it into Cilium's
// egress gateway policy map: the table (RWTable private to the agent
// module, for whoever computes the entries; Table public, for db/show),
// the map reconciler, and rp_filter on egress interfaces. They act only
// when TakeoverCell provided a policy map (policymap.PolicyMap non-nil),
// i.e. when egressha owns the egress gateway datapath on this agent.
var Cell = cell.Group(
	cell.ProvidePrivate(tables.NewPolicyEntriesTable),
	cell.Provide(statedb.RWTable[*tables.SourceEntries].ToTable),

	cell.Module(
		"egress-gateway-ha-datapath",
		"Reconciles egress-policy-entries into the egress policy map and sets rp_filter",

		cell.Config(DefaultConfig),
		metrics.Metric(policymap.NewMetrics),
		cell.Invoke(registerPolicyMapReconciler),
		cell.Invoke(registerRPFilter),
	),
)

// TakeoverCell provides what Cilium's --enable-egress-gateway would,
// without Cilium's egress gateway manager (which deletes every map entry
// it did not write): the node define ENABLE_EGRESS_GATEWAY, a tunnel
// enabler, and the pinned cilium_egress_gw_policy_v4 map, opened in a
// start hook the datapath loader waits for. It lives outside the agent's other cells
// because it touches the host's bpffs; tests provide a
// policymap.PolicyMap (a fake, or nil) instead.
var TakeoverCell = cell.Module(
	"egress-gateway-ha-takeover",
	"Egress gateway node define and tunnel and pinned policy map without Cilium EGW",

	cell.Provide(newDatapathTakeover),
)
