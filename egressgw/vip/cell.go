// Package vip is the VIP controller of VirtualIPAddress gateways: for every
// such gateway this node is a candidate of, it decides whether the node may
// answer ARP for the VIP (active node, fresh heartbeat Lease, no other
// node's Lease still announcing, no other host answering the probe),
// drives vipd's responders accordingly (vipd owns the packets), and
// writes its state per gateway into egress-virtual-ips, which the
// heartbeat reports to the operator.
package vip

import (
	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	"github.com/cilium/cilium/pkg/metrics"

	"github.com/egressha/egressha/egressgw/tables"
)

// TableCell provides egress-virtual-ips, the VIP controller's state per
// VirtualIPAddress gateway; the heartbeat reports it in the Lease. Without
// the controller (tests, or a build without Cell) the table stays empty and
// VIP gateways are reported not ready: fail closed.
var TableCell = cell.Provide(
	tables.NewVirtualIPsTable,
	statedb.RWTable[*tables.VirtualIP].ToTable,
)

// Cell runs the VIP controller on this node: for every VirtualIPAddress
// gateway the node is a candidate of, an ARP responder on the gateway's
// interfaces, which answers for the VIP only while this node is the active
// node, its heartbeat Lease is fresh, and no other node's Lease says it
// still announces.
var Cell = cell.Module(
	"egress-gateway-ha-vip",
	"ARP responder of VirtualIPAddress gateways",

	cell.Config(DefaultConfig),
	metrics.Metric(newMetrics),
	cell.Invoke(registerController),
)
