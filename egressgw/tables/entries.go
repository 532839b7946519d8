package tables

import (
	"fmt"
	"iter"
	"net/netip"
	"strings"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"

	"github.com/egressha/egressha/egressgw/egresspolicy"
)

// PolicyEntriesTableName is the name of the table of desired map entries.
const PolicyEntriesTableName = "egress-policy-entries"

// SourceEntries is one row of egress-policy-entries: every desired entry
// of Cilium's cilium_egress_gw_policy_v4 map for one source (pod) IP, as
// its targets (destination CIDR, value, owning policy), with the
// reconciler's status for the row as a whole (so a failed or full map
// shows in db/show).
//
// One row per source IP rather than per map key: the entries of a pod
// change together (a policy's CIDRs, a failover), all of a source's keys
// are written by one reconciliation, and a key can never move between
// rows. Targets is shared between the rows of endpoints that the same
// policies select (egresspolicy.Resolver), so a row costs a few words
// whatever its number of destinations. Rows are immutable; Targets must
// not be modified.
type SourceEntries struct {
	Source netip.Addr
	// Targets are sorted by destination, with unique destinations; never
	// empty (a source without entries has no row).
	Targets []egresspolicy.Target
	Status  reconciler.Status
}

// Entries yields the map entries of the row.
func (e *SourceEntries) Entries() iter.Seq[egresspolicy.Entry] {
	return func(yield func(egresspolicy.Entry) bool) {
		for _, t := range e.Targets {
			if !yield(t.Entry(e.Source)) {
				return
			}
		}
	}
}

// Clone returns a shallow copy for the reconciler (Targets is shared).
func (e *SourceEntries) Clone() *SourceEntries { cp := *e; return &cp }

// GetStatus returns the reconciliation status.
func (e *SourceEntries) GetStatus() reconciler.Status { return e.Status }

// SetStatus sets the reconciliation status (on the clone it is given).
func (e *SourceEntries) SetStatus(s reconciler.Status) *SourceEntries { e.Status = s; return e }

// TableHeader implements statedb.TableWritable.
func (e *SourceEntries) TableHeader() []string {
	return []string{"Source IP", "Entries", "Status"}
}

// TableRow implements statedb.TableWritable. Entries lists the targets
// grouped by value and policy, in the words of `cilium-dbg bpf egress
// list`: "192.0.2.0/24,198.51.100.0/24 -> egress 203.0.113.1 gateway
// 172.18.0.2 (my-policy)", groups separated by "; ", a gateway of "Not
// Found" for a dropped destination and "Excluded CIDR" for an exclusion.
func (e *SourceEntries) TableRow() []string {
	return []string{e.Source.String(), FormatTargets(e.Targets), e.Status.String()}
}

// FormatTargets prints targets as the Entries column of egress-policy-entries.
func FormatTargets(ts []egresspolicy.Target) string {
	type group struct {
		v      egresspolicy.Value
		policy string
		dests  []string
	}
	var groups []group
outer:
	for _, t := range ts {
		for i := range groups {
			if groups[i].v == t.Value && groups[i].policy == t.Policy {
				groups[i].dests = append(groups[i].dests, t.Dest.String())
				continue outer
			}
		}
		groups = append(groups, group{v: t.Value, policy: t.Policy, dests: []string{t.Dest.String()}})
	}
	var b strings.Builder
	for i, g := range groups {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(strings.Join(g.dests, ","))
		b.WriteString(" -> egress ")
		b.WriteString(g.v.EgressIP.String())
		b.WriteString(" gateway ")
		switch {
		case g.v.IsExcluded():
			b.WriteString("Excluded CIDR")
		case g.v.IsDrop():
			b.WriteString("Not Found")
		default:
			b.WriteString(g.v.GatewayIP.String())
		}
		b.WriteString(" (" + g.policy + ")")
	}
	return b.String()
}

// sourceKey is the primary key: the source IPv4 address.
func sourceKey(a netip.Addr) index.Key {
	b := a.As4()
	return b[:]
}

// SourceEntriesIndex is the primary index: one row per source IP.
var SourceEntriesIndex = statedb.Index[*SourceEntries, netip.Addr]{
	Name:       "source",
	FromObject: func(e *SourceEntries) index.KeySet { return oneKeySet(e.Source.As4()) },
	FromKey:    sourceKey,
	FromString: func(s string) (index.Key, error) {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("%q is not an IPv4 address", s)
		}
		return sourceKey(a), nil
	},
	Unique: true,
}

// oneKeySet is the key set of one 4-byte key, in one allocation: the key
// and the one-element slice index.NewKeySet keeps. statedb computes it at
// every write of a row (the reconciler's status writes included), for the
// old row and the new one, so at 100,000 endpoints this halves the
// garbage of a full sync's index keys. statedb only copies the key, so
// nothing stays referenced.
func oneKeySet[K [4]byte | [16]byte](k K) index.KeySet {
	ks := &struct {
		key  K
		keys [1]index.Key
	}{key: k}
	switch b := any(&ks.key).(type) {
	case *[4]byte:
		ks.keys[0] = b[:]
	case *[16]byte:
		ks.keys[0] = b[:]
	}
	return index.NewKeySet(ks.keys[:]...)
}

// SourceEntriesByIP queries the row of a source IP.
func SourceEntriesByIP(ip netip.Addr) statedb.Query[*SourceEntries] {
	return SourceEntriesIndex.Query(ip)
}

// SourceEntriesStatusIndex is the reconciler's status index: the same name
// ("status") and keys as reconciler.NewStatusIndex, so its queries work
// unchanged (and `db/list --index=status egress-policy-entries error`
// lists the failed rows), but sparse: a row that is Done is not in it. Only the rows
// still to do (Pending, Refreshing) or failed (Error) are, which are the
// ones anybody looks for (the agent's tests and benchmarks wait on it
// for "every row programmed"); in the programmed steady state the index
// is empty instead of holding one entry per row, and a row turning Done
// only deletes from it. A query for StatusKindDone finds nothing: look
// for the absence of the others.
var SourceEntriesStatusIndex = statedb.Index[*SourceEntries, reconciler.StatusKind]{
	Name:       "status",
	FromObject: statusKeySet,
	FromKey:    reconciler.StatusKind.Key,
	FromString: func(s string) (index.Key, error) {
		for _, k := range []reconciler.StatusKind{reconciler.StatusKindPending, reconciler.StatusKindRefreshing,
			reconciler.StatusKindError, reconciler.StatusKindDone} {
			if strings.EqualFold(s, string(k)) {
				return k.Key(), nil
			}
		}
		return nil, fmt.Errorf("%q is not a status: want pending, refreshing, error or done (done rows are not indexed)", s)
	},
	Unique: false,
}

// The status index keys, built once: every write of a row computes them,
// for the old row and the new one.
var (
	pendingKeySet    = index.NewKeySet(reconciler.StatusKindPending.Key())
	refreshingKeySet = index.NewKeySet(reconciler.StatusKindRefreshing.Key())
	errorKeySet      = index.NewKeySet(reconciler.StatusKindError.Key())
)

func statusKeySet(e *SourceEntries) index.KeySet {
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
// status write of the reconciler), so the table has only the source (the
// row of one endpoint IP, which the entries controller looks up) and the
// sparse status.
func NewPolicyEntriesTable(db *statedb.DB) (statedb.RWTable[*SourceEntries], error) {
	tbl, err := statedb.NewTable(PolicyEntriesTableName, SourceEntriesIndex, SourceEntriesStatusIndex)
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}
