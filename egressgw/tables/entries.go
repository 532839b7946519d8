package tables

import (
	"net/netip"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"

	"github.com/egressha/egressha/egressgw/egresspolicy"
)

// PolicyEntry is one row of egress-policy-entries: a desired entry of
// Cilium's cilium_egress_gw_policy_v4 map, with the policy it came from and
// the reconciler's status (so a failed or full map shows in db/show).
type PolicyEntry struct {
	egresspolicy.Entry
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
func keyBytes(k egresspolicy.Key) index.Key {
	s, d := k.Source.As4(), k.Dest.Addr().As4()
	return index.Key{s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3], byte(k.Dest.Bits())}
}

// PolicyEntryKeyIndex is the primary index (unique per map key).
var PolicyEntryKeyIndex = statedb.Index[*PolicyEntry, egresspolicy.Key]{
	Name:       "key",
	FromObject: func(e *PolicyEntry) index.KeySet { return index.NewKeySet(keyBytes(e.Key)) },
	FromKey:    keyBytes,
	Unique:     true,
}

// PolicyEntrySourceIndex finds the entries of one endpoint IP.
var PolicyEntrySourceIndex = statedb.Index[*PolicyEntry, netip.Addr]{
	Name:       "source",
	FromObject: sourceKeySet,
	FromKey:    func(a netip.Addr) index.Key { b := a.As4(); return b[:] },
	Unique:     false,
}

// sourceKeySet is the source index key of e, in one allocation: the key
// and the one-element slice index.NewKeySet keeps. statedb only copies the
// key (into its non-unique key), so nothing stays referenced.
func sourceKeySet(e *PolicyEntry) index.KeySet {
	ks := &struct {
		ip   [4]byte
		keys [1]index.Key
	}{ip: e.Source.As4()}
	ks.keys[0] = ks.ip[:]
	return index.NewKeySet(ks.keys[:]...)
}

// PolicyEntryStatusIndex is the reconciler's status index: the same name
// ("status") and keys as reconciler.NewStatusIndex, so its queries (and
// reconciler.WaitForReconciliation) work unchanged, but sparse: a row that is
// Done is not in it. Only the rows still to do (Pending, Refreshing) or
// failed (Error) are, which are the ones anybody looks for; in the
// programmed steady state the index is empty instead of holding one entry
// per row, and a row turning Done only deletes from it. A query for
// StatusKindDone finds nothing: look for the absence of the others.
var PolicyEntryStatusIndex = statedb.Index[*PolicyEntry, reconciler.StatusKind]{
	Name:       "status",
	FromObject: statusKeySet,
	FromKey:    reconciler.StatusKind.Key,
	Unique:     false,
}

// The status index keys, built once: every write of a row computes them,
// for the old row and the new one.
var (
	pendingKeySet    = index.NewKeySet(reconciler.StatusKindPending.Key())
	refreshingKeySet = index.NewKeySet(reconciler.StatusKindRefreshing.Key())
	errorKeySet      = index.NewKeySet(reconciler.StatusKindError.Key())
)

func statusKeySet(e *PolicyEntry) index.KeySet {
	switch e.Status.Kind {
	case reconciler.StatusKindDone:
		return index.KeySet{}
	case reconciler.StatusKindPending:
		return pendingKeySet
	case reconciler.StatusKindRefreshing:
		return refreshingKeySet
	case reconciler.StatusKindError:
		return errorKeySet
	}
	return index.NewKeySet(e.Status.Kind.Key())
}

// NewPolicyEntriesTable creates egress-policy-entries. Each index costs a
// tree entry per row, rewritten on every write of the row (including each
// status write of the reconciler), so the table has only those that are
// queried: the key, the source (the entries of one endpoint) and the
// sparse status.
func NewPolicyEntriesTable(db *statedb.DB) (statedb.RWTable[*PolicyEntry], error) {
	tbl, err := statedb.NewTable("egress-policy-entries", PolicyEntryKeyIndex, PolicyEntrySourceIndex,
		PolicyEntryStatusIndex)
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}
