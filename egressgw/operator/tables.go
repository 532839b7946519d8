package operator

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"

	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/selection"
)

// NodeRow is one row of the egress-gateway-nodes table: everything the
// operator knows about a node that bears on its eligibility.
type NodeRow struct {
	Name       string
	Labels     map[string]string
	InternalIP string
	// NodeKnown is false while only a pod or lease mentions the node.
	NodeKnown  bool
	Ready      bool
	Cordoned   bool
	AgentReady bool
	// Heartbeat is the decoded Lease, its RenewTime being when this
	// operator observed the renewal; nil when none was seen.
	Heartbeat *heartbeat.Heartbeat
	// ReportedRenewTime is the renewTime the node wrote (its own clock).
	ReportedRenewTime time.Time
	// HeartbeatError says why the Lease could not be decoded.
	HeartbeatError string
	// Reach is the liveness verdict of probing (liveness.go).
	Reach selection.Reach
	// RestartSince and RestartUntil bound the restart grace the node's
	// agent asked for as it stopped (zero: no restart in progress).
	RestartSince, RestartUntil time.Time
	// Restarting: within that grace, and the node itself answers (kernel
	// echo), so its agent's absence does not count (liveness.go).
	Restarting bool
	// Unsteady: judged alive while its probes go unanswered (liveness.go).
	Unsteady bool
}

// TableHeader implements statedb.TableWritable.
func (r *NodeRow) TableHeader() []string {
	return []string{"Name", "InternalIP", "Ready", "Cordoned", "AgentReady", "Probe", "Restart", "HeartbeatRenewed", "HeartbeatExpires", "Gateways"}
}

// TableRow implements statedb.TableWritable.
func (r *NodeRow) TableRow() []string {
	renewed, expires, gws := "never", "-", "-"
	if r.Heartbeat != nil {
		renewed = r.ReportedRenewTime.UTC().Format(time.RFC3339Nano)
		expires = r.Heartbeat.Expiry().UTC().Format(time.RFC3339Nano)
		var parts []string
		for _, name := range slices.Sorted(maps.Keys(r.Heartbeat.Gateways)) {
			rep := r.Heartbeat.Gateways[name]
			if rep.Ready {
				parts = append(parts, fmt.Sprintf("%s=ready(%s)", name, rep.EgressIP))
			} else {
				parts = append(parts, fmt.Sprintf("%s=%s", name, rep.Reason))
			}
		}
		if len(parts) > 0 {
			gws = strings.Join(parts, " ")
		}
	}
	if r.HeartbeatError != "" {
		gws = "lease error: " + r.HeartbeatError
	}
	ip := r.InternalIP
	if ip == "" {
		ip = "-"
	}
	restart := "-"
	if !r.RestartUntil.IsZero() {
		restart = "until " + r.RestartUntil.UTC().Format(time.RFC3339Nano)
		if !r.Restarting {
			restart += " (node not answering)"
		}
	}
	return []string{r.Name, ip, fmt.Sprint(r.Ready), fmt.Sprint(r.Cordoned), fmt.Sprint(r.AgentReady), r.Reach.String(), restart, renewed, expires, gws}
}

// selectionNode converts the row for the decision function.
func (r *NodeRow) selectionNode() *selection.Node {
	n := &selection.Node{
		Name:       r.Name,
		Labels:     r.Labels,
		Ready:      r.NodeKnown && r.Ready,
		Cordoned:   r.Cordoned,
		AgentReady: r.AgentReady,
		Heartbeat:  r.Heartbeat,
		Reach:      r.Reach,
		Restarting: r.Restarting,
		Unsteady:   r.Unsteady,
	}
	n.InternalIP = parseAddr(r.InternalIP)
	return n
}

var nodeNameIndex = statedb.Index[*NodeRow, string]{
	Name:       "name",
	FromObject: func(r *NodeRow) index.KeySet { return index.NewKeySet(index.String(r.Name)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// NodeByName queries egress-gateway-nodes by node name.
func NodeByName(name string) statedb.Query[*NodeRow] { return nodeNameIndex.Query(name) }

// NewNodesTable creates the egress-gateway-nodes table.
func NewNodesTable(db *statedb.DB) (statedb.RWTable[*NodeRow], error) {
	tbl, err := statedb.NewTable("egress-gateway-nodes", nodeNameIndex)
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}

// SelectionRow is one row of the egress-gateway-selection table: the
// decision for one EgressGateway and when it was made.
type SelectionRow struct {
	selection.Result
	// DecidedAt is when this decision was computed.
	DecidedAt time.Time
	// Status is the EgressGateway status write's: the statedb reconciler
	// (gatewayStatusOps) writes the decision into the gateway's status and
	// records here whether it did.
	Status reconciler.Status
}

// Clone returns a shallow copy (rows are immutable).
func (r *SelectionRow) Clone() *SelectionRow { cp := *r; return &cp }

// GetStatus returns the status write's reconciliation status.
func (r *SelectionRow) GetStatus() reconciler.Status { return r.Status }

// SetStatus sets the status write's reconciliation status.
func (r *SelectionRow) SetStatus(st reconciler.Status) *SelectionRow { r.Status = st; return r }

// TableHeader implements statedb.TableWritable.
func (r *SelectionRow) TableHeader() []string {
	return []string{"Gateway", "Active", "EgressIP", "ReadyNodes", "Candidates", "Change", "Message", "Status"}
}

// TableRow implements statedb.TableWritable.
func (r *SelectionRow) TableRow() []string {
	var cands []string
	for _, c := range r.Candidates {
		if c.Eligible {
			cands = append(cands, c.Node+"=eligible")
		} else {
			cands = append(cands, c.Node+"="+strings.Join(c.Reasons, ","))
		}
	}
	orDash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	status := statusColumn(r.Status)
	return []string{r.Gateway, orDash(r.Active), orDash(r.EgressIP), fmt.Sprint(r.ReadyNodes),
		orDash(strings.Join(cands, " ")), orDash(r.ChangeReason), orDash(r.Message), status}
}

var selectionGatewayIndex = statedb.Index[*SelectionRow, string]{
	Name:       "gateway",
	FromObject: func(r *SelectionRow) index.KeySet { return index.NewKeySet(index.String(r.Gateway)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// SelectionByGateway queries egress-gateway-selection by gateway name.
func SelectionByGateway(name string) statedb.Query[*SelectionRow] {
	return selectionGatewayIndex.Query(name)
}

// NewSelectionTable creates the egress-gateway-selection table.
func NewSelectionTable(db *statedb.DB) (statedb.RWTable[*SelectionRow], error) {
	tbl, err := statedb.NewTable("egress-gateway-selection", selectionGatewayIndex)
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}

// statusColumn shows a write's reconciliation status: pending, written, or
// the error of the last attempt.
func statusColumn(st reconciler.Status) string {
	switch st.Kind {
	case reconciler.StatusKindError:
		return "error: " + st.Error
	case reconciler.StatusKindDone:
		return "written"
	}
	return "pending"
}

// PolicyStatusRow is one row of the egress-policy-status table: an
// EgressGatewayPolicy whose status the operator keeps, and the state of
// that write. The statedb reconciler (policyStatusOps) writes the status
// from the decision of the policy's gateway.
type PolicyStatusRow struct {
	Policy string
	Status reconciler.Status
}

// Clone returns a shallow copy (rows are immutable).
func (r *PolicyStatusRow) Clone() *PolicyStatusRow { cp := *r; return &cp }

// GetStatus returns the status write's reconciliation status.
func (r *PolicyStatusRow) GetStatus() reconciler.Status { return r.Status }

// SetStatus sets the status write's reconciliation status.
func (r *PolicyStatusRow) SetStatus(st reconciler.Status) *PolicyStatusRow { r.Status = st; return r }

// TableHeader implements statedb.TableWritable.
func (r *PolicyStatusRow) TableHeader() []string { return []string{"Policy", "Status"} }

// TableRow implements statedb.TableWritable.
func (r *PolicyStatusRow) TableRow() []string { return []string{r.Policy, statusColumn(r.Status)} }

var policyStatusIndex = statedb.Index[*PolicyStatusRow, string]{
	Name:       "policy",
	FromObject: func(r *PolicyStatusRow) index.KeySet { return index.NewKeySet(index.String(r.Policy)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// PolicyStatusByName queries egress-policy-status by policy name.
func PolicyStatusByName(name string) statedb.Query[*PolicyStatusRow] {
	return policyStatusIndex.Query(name)
}

// NewPolicyStatusTable creates the egress-policy-status table.
func NewPolicyStatusTable(db *statedb.DB) (statedb.RWTable[*PolicyStatusRow], error) {
	tbl, err := statedb.NewTable("egress-policy-status", policyStatusIndex)
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}
