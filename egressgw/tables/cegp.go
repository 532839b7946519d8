package tables

import (
	"strings"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"

	"github.com/egressha/egressha/egressgw/cegp"
	"github.com/egressha/egressha/egressgw/egresspolicy"
)

// CEGPsTableName is the name of the agent's table of
// CiliumEgressGatewayPolicies.
const CEGPsTableName = "egress-cegps"

// CEGP is one CiliumEgressGatewayPolicy as the agent sees it: the policy
// parsed for the desired-entry computation (without its spread values,
// which depend on this node), its gateway entries, and the operator's
// decision from the egressha.io/gateway-nodes annotation. Rows are
// immutable.
type CEGP struct {
	Name    string
	Policy  egresspolicy.Policy
	Entries []cegp.GatewayEntry
	// Selection is the operator's decision; nil before the operator wrote
	// one (every entry then has no node: the policy drops).
	Selection []cegp.EntrySelection
	// Error describes what the conversion left out.
	Error  string
	Object *ciliumv2.CiliumEgressGatewayPolicy
}

// NewCEGP builds the row of obj.
func NewCEGP(obj *ciliumv2.CiliumEgressGatewayPolicy) *CEGP {
	p, entries, err := cegp.PolicyFromObject(obj)
	r := &CEGP{Name: obj.Name, Policy: p, Entries: entries, Object: obj}
	var errs []string
	if err != nil {
		errs = append(errs, err.Error())
	}
	if a, ok := obj.Annotations[cegp.Annotation]; ok {
		sel, err := cegp.Decode(a)
		if err != nil {
			errs = append(errs, err.Error())
		}
		r.Selection = sel
	}
	r.Error = strings.Join(errs, "; ")
	return r
}

// TableHeader implements statedb.TableWritable.
func (*CEGP) TableHeader() []string {
	return []string{"Name", "Destinations", "Excluded", "GatewayNodes", "Error"}
}

// TableRow implements statedb.TableWritable.
func (c *CEGP) TableRow() []string {
	sel := make([]string, len(c.Selection))
	for i, s := range c.Selection {
		sel[i] = s.String()
	}
	nodes := strings.Join(sel, " | ")
	if c.Selection == nil {
		nodes = "(no decision from the operator yet)"
	}
	return []string{c.Name, orNone(prefixesString(c.Policy.Destinations)), orNone(prefixesString(c.Policy.Exclusions)),
		orNone(nodes), orNone(c.Error)}
}

// CEGPNameIndex is the primary index: the policy's name.
var CEGPNameIndex = statedb.Index[*CEGP, string]{
	Name:       "name",
	FromObject: func(c *CEGP) index.KeySet { return index.NewKeySet(index.String(c.Name)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// NewCEGPsTable creates the egress-cegps table and registers it with db.
func NewCEGPsTable(db *statedb.DB) (statedb.RWTable[*CEGP], error) {
	tbl, err := statedb.NewTable(CEGPsTableName, CEGPNameIndex)
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}
