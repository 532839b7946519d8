package tables

import (
	"net/netip"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"

	"github.com/egressha/egressha/egressgw/policy"
)

// PolicyEntry is one row of egress-policy-entries: a desired entry of
// Cilium's cilium_egress_gw_policy_v4 map, with the policy it came from and
// the reconciler's status (so a failed or full map shows in db/show).
type PolicyEntry struct {
	policy.Entry
	Status reconciler.Status
}

// Clone returns a shallow copy for the reconciler.
func (e *PolicyEntry) Clone() *PolicyEntry { cp := *e; return &cp }

// GetStatus returns the reconciliation status.
func (e *PolicyEntry) GetStatus() reconciler.Status { return e.Status }

// SetStatus sets the reconciliation status (on the clone it is given).
func (e *PolicyEntry) SetStatus(s reconciler.Status) *PolicyEntry { e.Status = s; return e }

// TableHeader implements statedb.TableWritable, in the columns of
// `cilium-dbg bpf egress list`.
func (e *PolicyEntry) TableHeader() []string {
	return []string{"Source IP", "Destination CIDR", "Egress IP", "Gateway IP", "Policy", "Status"}
}

// TableRow implements statedb.TableWritable.
func (e *PolicyEntry) TableRow() []string {
	gw := e.GatewayIP.String()
	switch {
	case e.IsExcluded():
		gw = "Excluded CIDR"
	case e.IsDrop():
		gw = "Not Found"
	}
	return []string{e.Source.String(), e.Dest.String(), e.EgressIP.String(), gw, e.Policy, e.Status.String()}
}

// keyBytes is the primary key: source IP, destination address, prefix length.
func keyBytes(k policy.Key) index.Key {
	s, d := k.Source.As4(), k.Dest.Addr().As4()
	return index.Key{s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3], byte(k.Dest.Bits())}
}

// PolicyEntryKeyIndex is the primary index (unique per map key).
var PolicyEntryKeyIndex = statedb.Index[*PolicyEntry, policy.Key]{
	Name:       "key",
	FromObject: func(e *PolicyEntry) index.KeySet { return index.NewKeySet(keyBytes(e.Key)) },
	FromKey:    keyBytes,
	Unique:     true,
}

// PolicyEntrySourceIndex finds the entries of one endpoint IP.
var PolicyEntrySourceIndex = statedb.Index[*PolicyEntry, netip.Addr]{
	Name: "source",
	FromObject: func(e *PolicyEntry) index.KeySet {
		a := e.Source.As4()
		return index.NewKeySet(a[:])
	},
	FromKey: func(a netip.Addr) index.Key { b := a.As4(); return b[:] },
	Unique:  false,
}

// PolicyEntryPolicyIndex finds the entries a policy owns.
var PolicyEntryPolicyIndex = statedb.Index[*PolicyEntry, string]{
	Name:       "policy",
	FromObject: func(e *PolicyEntry) index.KeySet { return index.NewKeySet(index.String(e.Policy)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     false,
}

// NewPolicyEntriesTable creates egress-policy-entries.
func NewPolicyEntriesTable(db *statedb.DB) (statedb.RWTable[*PolicyEntry], error) {
	tbl, err := statedb.NewTable("egress-policy-entries", PolicyEntryKeyIndex, PolicyEntrySourceIndex, PolicyEntryPolicyIndex,
		reconciler.NewStatusIndex((*PolicyEntry).GetStatus))
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}
