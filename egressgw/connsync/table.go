package connsync

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
)

// TableName is the name of the connection sync's table.
const TableName = "egress-conn-sync"

// Row is the connection sync's state for one VirtualIPAddress gateway this
// node is a candidate of; `db/show egress-conn-sync` prints it. The syncer
// (its one writer) rewrites the rows every refresh period and when a
// gateway's role changes here.
type Row struct {
	Gateway string
	VIP     netip.Addr
	// Role: Announcing (this node sends) or Standby (it installs).
	Role  string
	Peers []string
	// Mappings: announcing, in the latest full report; standby, installed
	// and tracked.
	Mappings int
	// From is, on a standby, the node whose datagram came last.
	From string
	// LastSync: announcing, the latest full report sent; standby, the
	// latest datagram taken.
	LastSync time.Time
}

// TableHeader implements statedb.TableWritable.
func (*Row) TableHeader() []string {
	return []string{"Gateway", "VIP", "Role", "Peers", "Mappings", "From", "LastSync"}
}

// TableRow implements statedb.TableWritable.
func (r *Row) TableRow() []string {
	last := "never"
	if !r.LastSync.IsZero() {
		last = r.LastSync.UTC().Format(time.RFC3339Nano)
	}
	from, peers := r.From, strings.Join(r.Peers, ",")
	if from == "" {
		from = "(none)"
	}
	if peers == "" {
		peers = "(none)"
	}
	return []string{r.Gateway, r.VIP.String(), r.Role, peers, strconv.Itoa(r.Mappings), from, last}
}

var rowGatewayIndex = statedb.Index[*Row, string]{
	Name:       "gateway",
	FromObject: func(r *Row) index.KeySet { return index.NewKeySet(index.String(r.Gateway)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// NewTable creates and registers egress-conn-sync.
func NewTable(db *statedb.DB) (statedb.RWTable[*Row], error) {
	tbl, err := statedb.NewTable(TableName, rowGatewayIndex)
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}
