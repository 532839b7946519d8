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

	cell.Provide(heartbeat.NewStatus, newLastWord),
	cell.Invoke(register),
)

// LastWordCell says the heartbeat's last word when the agent stops: with a
// restart grace, "restarting, keep my roles"; without, "withdrawn". It
// must come after every other egressha agent cell: its stop hook then runs
// first, while the probe responder still answers and the agent is still
// Ready, so the operator learns of the restart before it could see the
// agent gone.
var LastWordCell = cell.Invoke(registerLastWord)
