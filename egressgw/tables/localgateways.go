package tables

import (
	"strconv"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"

	"github.com/egressha/egressha/egressgw/heartbeat"
)

// LocalGatewaysTableName is the name of the table of this node's facts per
// gateway.
const LocalGatewaysTableName = "egress-local-gateways"

// LocalGateway is what this node knows of one EgressGateway
// (heartbeat.LocalFact): candidate or not, the basic-mode interface, this
// node's address on it, or why it cannot serve. One job derives it from
// egress-gateways, the node's labels and Cilium's devices
// (egressgw/localgateways); the heartbeat, the VIP controller, rp_filter
// and the entries controller read it. Rows are immutable.
type LocalGateway struct {
	heartbeat.LocalFact
}

// TableHeader implements statedb.TableWritable.
func (*LocalGateway) TableHeader() []string {
	return []string{"Gateway", "Mode", "Candidate", "Interface", "Egress IP", "Reason"}
}

// TableRow implements statedb.TableWritable.
func (g *LocalGateway) TableRow() []string {
	return []string{g.Gateway, shortMode(g.Mode), strconv.FormatBool(g.Candidate), orNone(g.Interface),
		orNone(g.LocalEgressIP()), orNone(g.Basic.Reason)}
}

// LocalGatewayNameIndex is the primary index: the gateway's name.
var LocalGatewayNameIndex = statedb.Index[*LocalGateway, string]{
	Name: "gateway",
	FromObject: func(g *LocalGateway) index.KeySet {
		return index.NewKeySet(index.String(g.Gateway))
	},
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// NewLocalGatewaysTable creates and registers egress-local-gateways.
func NewLocalGatewaysTable(db *statedb.DB) (statedb.RWTable[*LocalGateway], error) {
	tbl, err := statedb.NewTable(LocalGatewaysTableName, LocalGatewayNameIndex)
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}

// LocalFacts returns the facts of the rows.
func LocalFacts(rows []*LocalGateway) []heartbeat.LocalFact {
	out := make([]heartbeat.LocalFact, len(rows))
	for i, r := range rows {
		out[i] = r.LocalFact
	}
	return out
}
