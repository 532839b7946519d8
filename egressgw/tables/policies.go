package tables

import (
	"net/netip"
	"strings"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/egresspolicy"
)

// PoliciesTableName is the name of the table of EgressGatewayPolicies with
// this agent's conditions; PolicySpecsTableName the one of the policies as
// reflected.
const (
	PoliciesTableName    = "egress-policies"
	PolicySpecsTableName = "egress-policy-specs"
)

// PolicySpec is one EgressGatewayPolicy as reflected from the API server:
// the policy parsed for the desired-entry computation and what could not
// be parsed. The reflector is the only writer of egress-policy-specs. Rows
// and Object are immutable.
type PolicySpec struct {
	Name string
	// Policy is the object converted by egresspolicy.PolicyFromObject: what it
	// could use, even when Error is set.
	Policy egresspolicy.Policy
	// Error describes what the conversion left out (empty when nothing).
	Error string
	// Object is the EgressGatewayPolicy as received from the API server.
	Object *v1alpha1.EgressGatewayPolicy
}

// NewPolicySpec builds the row of obj.
func NewPolicySpec(obj *v1alpha1.EgressGatewayPolicy) *PolicySpec {
	p, err := egresspolicy.PolicyFromObject(obj)
	r := &PolicySpec{Name: obj.Name, Policy: p, Object: obj}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// Policy is one EgressGatewayPolicy as the agent sees it: its spec and the
// conditions this agent computed for it. The entries controller is the
// only writer of egress-policies. Rows are immutable: a writer inserts a
// modified copy.
type Policy struct {
	PolicySpec
	// Conditions are Ready and Conflict from egresspolicy.Conditions, as this
	// agent computed them from its inputs; nil until the first computation
	// after all inputs have synced. They are not written to the API: the
	// operator owns the policy status.
	Conditions []egresspolicy.Condition
}

// NewPolicy builds the row of obj (without conditions).
func NewPolicy(obj *v1alpha1.EgressGatewayPolicy) *Policy {
	return &Policy{PolicySpec: *NewPolicySpec(obj)}
}

// WithConditions returns the row of egress-policies of s with conds.
func (s *PolicySpec) WithConditions(conds []egresspolicy.Condition) *Policy {
	return &Policy{PolicySpec: *s, Conditions: conds}
}

// TableHeader implements statedb.TableWritable.
func (*PolicySpec) TableHeader() []string {
	return []string{"Name", "Gateway", "Destinations", "Excluded", "Error"}
}

// TableRow implements statedb.TableWritable.
func (s *PolicySpec) TableRow() []string {
	return []string{s.Name, s.Policy.Gateway, orNone(prefixesString(s.Policy.Destinations)),
		orNone(prefixesString(s.Policy.Exclusions)), orNone(s.Error)}
}

// PolicySpecNameIndex is the primary index of egress-policy-specs.
var PolicySpecNameIndex = statedb.Index[*PolicySpec, string]{
	Name: "name",
	FromObject: func(s *PolicySpec) index.KeySet {
		return index.NewKeySet(index.String(s.Name))
	},
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// NewPolicySpecsTable creates the egress-policy-specs table and registers
// it with db.
func NewPolicySpecsTable(db *statedb.DB) (statedb.RWTable[*PolicySpec], error) {
	tbl, err := statedb.NewTable(PolicySpecsTableName, PolicySpecNameIndex)
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}

// Condition returns the condition of type typ, if computed.
func (p *Policy) Condition(typ string) (egresspolicy.Condition, bool) {
	for _, c := range p.Conditions {
		if c.Type == typ {
			return c, true
		}
	}
	return egresspolicy.Condition{}, false
}

// WithConditions returns a copy of p with the given conditions.
func (p *Policy) WithConditions(conds []egresspolicy.Condition) *Policy {
	return p.PolicySpec.WithConditions(conds)
}

// TableHeader implements statedb.TableWritable.
func (*Policy) TableHeader() []string {
	return []string{"Name", "Gateway", "Destinations", "Excluded", "Ready", "Conflict", "Message", "Error"}
}

// TableRow implements statedb.TableWritable. Ready and Conflict show the
// status and, when not in the good state, the reason; Message explains the
// conflict, or else why the policy is not ready.
func (p *Policy) TableRow() []string {
	ready, readyOK := p.Condition(egresspolicy.ConditionReady)
	conflict, conflictOK := p.Condition(egresspolicy.ConditionConflict)
	var msg string
	switch {
	case conflictOK && conflict.Status == egresspolicy.StatusTrue:
		msg = conflict.Message
	case readyOK && ready.Status != egresspolicy.StatusTrue:
		msg = ready.Message
	}
	return []string{
		p.Name,
		p.Policy.Gateway,
		orNone(prefixesString(p.Policy.Destinations)),
		orNone(prefixesString(p.Policy.Exclusions)),
		conditionString(ready, readyOK, egresspolicy.StatusTrue),
		conditionString(conflict, conflictOK, egresspolicy.StatusFalse),
		orNone(msg),
		orNone(p.Error),
	}
}

// conditionString is "Unknown" before the first computation, the status
// alone in the good state, "status (reason)" otherwise.
func conditionString(c egresspolicy.Condition, ok bool, good string) string {
	switch {
	case !ok:
		return "Unknown"
	case c.Status == good:
		return c.Status
	}
	return c.Status + " (" + c.Reason + ")"
}

func prefixesString(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// PolicyNameIndex is the primary index: the policy's name.
var PolicyNameIndex = statedb.Index[*Policy, string]{
	Name: "name",
	FromObject: func(p *Policy) index.KeySet {
		return index.NewKeySet(index.String(p.Name))
	},
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// PolicyByName queries a policy by name.
func PolicyByName(name string) statedb.Query[*Policy] {
	return PolicyNameIndex.Query(name)
}

// PolicyGatewayIndex finds the policies that name a gateway.
var PolicyGatewayIndex = statedb.Index[*Policy, string]{
	Name: "gateway",
	FromObject: func(p *Policy) index.KeySet {
		return index.NewKeySet(index.String(p.Policy.Gateway))
	},
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     false,
}

// NewPoliciesTable creates the egress-policies table and registers it with
// db.
func NewPoliciesTable(db *statedb.DB) (statedb.RWTable[*Policy], error) {
	tbl, err := statedb.NewTable(PoliciesTableName, PolicyNameIndex, PolicyGatewayIndex)
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}
