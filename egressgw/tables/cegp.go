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
	// one (every entry then has no node: the policy drops). When the
	// annotation is missing or malformed on a policy that had a decision
	// (KeepDecision), it is the last decision seen.
	Selection []cegp.EntrySelection
	// SelectionVersion is the resourceVersion of the object whose
	// annotation gave Selection.
	SelectionVersion string
	// AnnotationProblem is "missing" or "malformed" when the object's own
	// annotation gave no decision, empty when it gave one.
	AnnotationProblem string
	// Kept says why Selection is not the object's own annotation:
	// "annotation missing: keeping the decision of resourceVersion 12".
	Kept string
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
	if a, ok := obj.Annotations[cegp.Annotation]; !ok {
		r.AnnotationProblem = "missing"
	} else if sel, err := cegp.Decode(a); err != nil {
		errs = append(errs, err.Error())
		r.AnnotationProblem = "malformed"
	} else {
		r.Selection, r.SelectionVersion = sel, obj.ResourceVersion
	}
	r.Error = strings.Join(errs, "; ")
	return r
}

// KeepDecision is the row of cur given old, the row of the same name
// before it (nil if none): when cur's annotation is missing or malformed
// while old, the same policy (same UID), had a decision, cur keeps old's
// decision and says so in Kept: an object replaced without the
// annotation (a GitOps tool applying its own copy) or with a broken one
// keeps its traffic until the operator writes a new decision, which then
// replaces the kept one. A new policy of the same name (another UID)
// starts without any. kept reports that cur keeps a decision old did not
// already keep (to be logged once).
func KeepDecision(old, cur *CEGP) (row *CEGP, kept bool) {
	if old == nil || cur.AnnotationProblem == "" || old.Selection == nil ||
		old.Object == nil || cur.Object == nil || old.Object.UID != cur.Object.UID {
		return cur, false
	}
	cp := *cur
	cp.Selection, cp.SelectionVersion = old.Selection, old.SelectionVersion
	cp.Kept = "annotation " + cur.AnnotationProblem + ": keeping the decision"
	if old.SelectionVersion != "" {
		cp.Kept += " of resourceVersion " + old.SelectionVersion
	}
	return &cp, old.Kept == ""
}

// TableHeader implements statedb.TableWritable.
func (*CEGP) TableHeader() []string {
	return []string{"Name", "Destinations", "Excluded", "GatewayNodes", "Kept", "Error"}
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
		orNone(nodes), orNone(c.Kept), orNone(c.Error)}
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
