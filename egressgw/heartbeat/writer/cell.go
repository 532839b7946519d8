// Package writer is the agent's side of the heartbeat: while this node is a
// candidate of some EgressGateway (or of a CiliumEgressGatewayPolicy gateway
// entry) it renews the node's Lease every renew interval, and at once when
// what it reports changes, with the report heartbeat.BuildReport makes from
// the gateways, this node's devices and labels, and the VIP controller's
// egress-virtual-ips. It records each renewal in heartbeat.Status, which
// the VIP controller fences on. The Lease format is package heartbeat's.
package writer

import (
	"github.com/cilium/hive/cell"

	"github.com/egressha/egressha/egressgw/heartbeat"
)

// Cell renews this node's heartbeat Lease while the node is a candidate of
// at least one EgressGateway, and provides *heartbeat.Status (ValidUntil)
// for the VIP controller's self-fencing.
var Cell = cell.Module(
	"egress-gateway-ha-heartbeat",
	"Heartbeat Lease of a gateway candidate node",

	cell.Provide(heartbeat.NewStatus),
	cell.Invoke(register),
)
