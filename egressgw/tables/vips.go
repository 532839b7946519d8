package tables

import (
	"net/netip"
	"strings"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"

	"github.com/egressha/egressha/egressgw/heartbeat"
)

// VirtualIPsTableName is the name of the VIP controller's table.
const VirtualIPsTableName = "egress-virtual-ips"

// VIP states, in the order a node goes through them when it becomes active.
const (
	// VIPStandby: the node is a candidate, not the active node; it does not
	// answer.
	VIPStandby = "Standby"
	// VIPNotReady: no working ARP responder on some interface.
	VIPNotReady = "NotReady"
	// VIPWaiting: the node is active but another node's Lease still says it
	// announces the VIP (a planned move): the node waits for its withdrawal
	// or for that Lease to expire.
	VIPWaiting = "WaitingForWithdrawal"
	// VIPProbing: the node probes the segment before claiming.
	VIPProbing = "Probing"
	// VIPConflict: a probe was answered by another MAC; the node does not
	// claim and probes again later.
	VIPConflict = "Conflict"
	// VIPAnnouncing: the node answers ARP for the VIP.
	VIPAnnouncing = "Announcing"
	// VIPFenced: the node is active but its heartbeat Lease could not be
	// renewed in time, so it stopped answering (the operator may already
	// have moved the role).
	VIPFenced = "Fenced"
)

// VirtualIP is the VIP controller's state for one VirtualIPAddress gateway
// this node is a candidate of. `db/show egress-virtual-ips` prints it.
type VirtualIP struct {
	Gateway    string
	VIP        netip.Addr
	Interfaces []string
	State      string
	// Ready: a working responder on every interface.
	Ready bool
	// Message explains the state in words.
	Message string
	// Duplicate is the latest evidence of another host claiming the VIP.
	Duplicate string
	Since     time.Time
}

// Status is what the heartbeat Lease reports for the row.
func (v *VirtualIP) Status() heartbeat.VIPStatus {
	return heartbeat.VIPStatus{Ready: v.Ready, Message: v.Message, Announcing: v.State == VIPAnnouncing, Duplicate: v.Duplicate}
}

// TableHeader implements statedb.TableWritable.
func (*VirtualIP) TableHeader() []string {
	return []string{"Gateway", "VIP", "Interfaces", "State", "Since", "Duplicate", "Message"}
}

// TableRow implements statedb.TableWritable.
func (v *VirtualIP) TableRow() []string {
	since := ""
	if !v.Since.IsZero() {
		since = v.Since.UTC().Format(time.RFC3339Nano)
	}
	return []string{v.Gateway, addrString(v.VIP), orNone(strings.Join(v.Interfaces, ",")), v.State,
		orNone(since), orNone(v.Duplicate), orNone(v.Message)}
}

// VirtualIPGatewayIndex is the primary index: the gateway's name.
var VirtualIPGatewayIndex = statedb.Index[*VirtualIP, string]{
	Name: "gateway",
	FromObject: func(v *VirtualIP) index.KeySet {
		return index.NewKeySet(index.String(v.Gateway))
	},
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// VirtualIPByGateway queries the row of a gateway.
func VirtualIPByGateway(name string) statedb.Query[*VirtualIP] {
	return VirtualIPGatewayIndex.Query(name)
}

// NewVirtualIPsTable creates and registers egress-virtual-ips.
func NewVirtualIPsTable(db *statedb.DB) (statedb.RWTable[*VirtualIP], error) {
	tbl, err := statedb.NewTable(VirtualIPsTableName, VirtualIPGatewayIndex)
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}
