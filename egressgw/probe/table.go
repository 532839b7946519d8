package probe

import (
	"strconv"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
)

// SessionRow is one row of egress-probe-sessions: this operator replica's
// probe session to one candidate node. The prober writes a row when the
// session's state or the node's fence bound changes (not on every reply);
// the selection controller reads the table.
type SessionRow struct {
	Status `yaml:",inline"`
}

// TableHeader implements statedb.TableWritable.
func (r *SessionRow) TableHeader() []string {
	return []string{"Node", "Address", "State", "Since", "LastReply", "RTT", "Fence", "Transitions", "Kernel"}
}

// TableRow implements statedb.TableWritable.
func (r *SessionRow) TableRow() []string {
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	return []string{r.Node, r.Addr.String(), r.State.String(), ts(r.Since), ts(r.LastReply),
		r.RTT.String(), r.Fence.String(), strconv.FormatUint(r.Transitions, 10), r.Kernel.String()}
}

var sessionNodeIndex = statedb.Index[*SessionRow, string]{
	Name:       "node",
	FromObject: func(r *SessionRow) index.KeySet { return index.NewKeySet(index.String(r.Node)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// SessionByNode queries egress-probe-sessions by node name.
func SessionByNode(node string) statedb.Query[*SessionRow] { return sessionNodeIndex.Query(node) }

// NewSessionsTable creates egress-probe-sessions.
func NewSessionsTable(db *statedb.DB) (statedb.RWTable[*SessionRow], error) {
	tbl, err := statedb.NewTable("egress-probe-sessions", sessionNodeIndex)
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}
