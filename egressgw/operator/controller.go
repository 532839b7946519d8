// Package operator is the operator side of egressha: it gathers, per node,
// the facts that decide eligibility (Node Ready and cordon, the
// cilium-agent Pod's readiness, the heartbeat Lease and what it reports
// per gateway), runs the selection engine, and writes the decisions to
// the egress-gateway-selection table; statedb reconcilers over that table
// and egress-policy-status write them to EgressGateway and
// EgressGatewayPolicy status, with Events and metrics. The informers run
// on every operator replica; the controllers decide and write only in a
// term of egressha leadership (egressgw/leader), each term from scratch,
// so there is one authority on which node is active. The decision itself
// lives in egressgw/selection and never sees a Kubernetes client.
package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/cilium/cilium/pkg/k8s/resource"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/client"
	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/probe"
	"github.com/egressha/egressha/egressgw/selection"
)

// Inputs are the watched objects.
type Inputs struct {
	Nodes     resource.Resource[*corev1.Node]
	AgentPods resource.Resource[*corev1.Pod]
	Leases    resource.Resource[*coordinationv1.Lease]
	Gateways  resource.Resource[*v1alpha1.EgressGateway]
	Policies  resource.Resource[*v1alpha1.EgressGatewayPolicy]
}

// Controller turns the inputs into decisions and status.
type Controller struct {
	log       *slog.Logger
	db        *statedb.DB
	nodesTbl  statedb.RWTable[*NodeRow]
	selTbl    statedb.RWTable[*SelectionRow]
	crd       *client.Clientset
	metrics   *Metrics
	clock     clock.WithTicker
	recorder  record.EventRecorder
	inputs    Inputs
	engine    *selection.Engine
	rows      map[string]*NodeRow
	ready     bool
	agentPods map[string]map[resource.Key]bool // node -> pod -> ready

	// Shared with the status reconcilers' Ops.
	mu         sync.Mutex
	gateways   map[string]*v1alpha1.EgressGateway
	policies   map[string]*v1alpha1.EgressGatewayPolicy
	results    map[string]selection.Result
	detectedAt map[string]time.Time
	// seq numbers the decisions; resultSeq is the number of each gateway's
	// latest one, and changes the changes of active node decided since its
	// status was last written (decidedChange).
	seq       uint64
	resultSeq map[string]uint64
	changes   map[string][]decidedChange
	// events limits the ActiveNodeChanged Events of a flapping gateway
	// (changeEvents); runCtx ends its flush timers.
	events *changeEvents
	runCtx context.Context
	// vip is, per VirtualIPAddress gateway, what its active node's Lease
	// reports (announcing, duplicate); it feeds the Ready and
	// VirtualIPConflict conditions.
	vip map[string]heartbeat.GatewayReport
	// polTbl holds the policies whose status the policy status
	// reconciler writes; the controller marks a row pending when the
	// status may have to change.
	polTbl statedb.RWTable[*PolicyStatusRow]

	// NodesSynced, when set, is called once in a write transaction of
	// egress-gateway-nodes when every input has synced, to mark the table
	// initialized for its other readers (the CiliumEgressGatewayPolicy
	// controller).
	NodesSynced func(statedb.WriteTxn)

	// MaxExpiry bounds the expiry a heartbeat Lease may claim (zero: no
	// bound); set before Run.
	MaxExpiry time.Duration
	// MaxRestartGrace bounds the restart grace an agent may ask for (zero:
	// none is granted); set before Run.
	MaxRestartGrace time.Duration
	// HoldDown is the hold-down of gateways that do not set
	// spec.selection.holdDown; set before Run.
	HoldDown time.Duration
	// Probes is this replica's liveness probe sessions (nil: no probing;
	// every node is judged by its Lease); set before Run.
	Probes statedb.Table[*probe.SessionRow]
	// sessions is the last read of Probes, by node.
	sessions map[string]probe.Status
	// liveness is the last liveness verdict (Run goroutine only).
	liveness livenessVerdict
	// held and heldWhy are the nodes the verdict holds and why, for the
	// LivenessSuspect condition (under mu).
	held    map[string]bool
	heldWhy livenessVerdict
	// rejectedAt is, per heartbeat Lease, the resourceVersion whose
	// rejections were last logged and counted: each is reported once, not
	// on every event that repeats the same object.
	rejectedAt map[string]string
}

// NewController creates a controller; Run drives it.
func NewController(log *slog.Logger, db *statedb.DB, nodes statedb.RWTable[*NodeRow], sel statedb.RWTable[*SelectionRow],
	pol statedb.RWTable[*PolicyStatusRow], crd *client.Clientset, m *Metrics, clk clock.WithTicker, in Inputs) *Controller {
	return &Controller{
		log: log, db: db, nodesTbl: nodes, selTbl: sel, polTbl: pol, crd: crd, metrics: m, clock: clk, inputs: in,
		engine:     selection.NewEngine(),
		rows:       map[string]*NodeRow{},
		agentPods:  map[string]map[resource.Key]bool{},
		gateways:   map[string]*v1alpha1.EgressGateway{},
		policies:   map[string]*v1alpha1.EgressGatewayPolicy{},
		results:    map[string]selection.Result{},
		detectedAt: map[string]time.Time{},
		resultSeq:  map[string]uint64{},
		changes:    map[string][]decidedChange{},
		events:     newChangeEvents(),
		runCtx:     context.Background(),
		vip:        map[string]heartbeat.GatewayReport{},
		rejectedAt: map[string]string{},
		sessions:   map[string]probe.Status{},
	}
}

// Run processes events until ctx ends. Nothing is decided or written
// before every input has synced: a new leader must not act on a partial
// view (it would see candidates without heartbeats and move the role).
func (c *Controller) Run(ctx context.Context, recorder record.EventRecorder) error {
	c.recorder = recorder
	c.mu.Lock()
	c.runCtx = ctx
	c.mu.Unlock()

	nodes := c.inputs.Nodes.Events(ctx)
	pods := c.inputs.AgentPods.Events(ctx)
	leases := c.inputs.Leases.Events(ctx)
	gws := c.inputs.Gateways.Events(ctx)
	pols := c.inputs.Policies.Events(ctx)
	const inputs = 5
	synced := map[string]bool{}
	expiry := expiryTimer{clock: c.clock}
	pending := map[string]struct{}{} // gateways to recompute
	var probeWatch <-chan struct{}
	if c.Probes != nil {
		probeWatch = c.readSessions()
	}
	var livenessWake clock.Timer
	var livenessC <-chan time.Time
	// Liveness depends on the probe sessions, the Leases and the time
	// only: it is judged again (O(nodes)) after those, not after every
	// Node, Pod, gateway or policy event.
	livenessDirty := true

	for {
		var detected time.Time
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-nodes:
			if !ok {
				return errors.New("node events closed")
			}
			detected = c.clock.Now()
			c.onNode(ev, synced, pending)
		case ev, ok := <-pods:
			if !ok {
				return errors.New("pod events closed")
			}
			detected = c.clock.Now()
			c.onPod(ev, synced, pending)
			// An agent Ready again ends its restart (refreshLiveness).
			livenessDirty = true
		case ev, ok := <-leases:
			if !ok {
				return errors.New("lease events closed")
			}
			detected = c.clock.Now()
			c.onLease(ev, synced, pending)
			livenessDirty = true
		case ev, ok := <-gws:
			if !ok {
				return errors.New("gateway events closed")
			}
			detected = c.clock.Now()
			c.onGateway(ev, synced, pending)
		case ev, ok := <-pols:
			if !ok {
				return errors.New("policy events closed")
			}
			detected = c.clock.Now()
			c.onPolicy(ev, synced)
		case <-expiry.C:
			// A heartbeat lapsed: recompute the gateways of every node.
			expiry.Fired()
			detected = c.clock.Now()
			for name := range c.gatewayNames() {
				pending[name] = struct{}{}
			}
			livenessDirty = true
		case <-probeWatch:
			detected = c.clock.Now()
			probeWatch = c.readSessions()
			livenessDirty = true
		case <-livenessC:
			livenessC = nil
			detected = c.clock.Now()
			livenessDirty = true
		}
		if livenessDirty {
			livenessDirty = false
			if wake := c.refreshLiveness(c.clock.Now(), pending); !wake.IsZero() {
				if livenessWake != nil {
					livenessWake.Stop()
				}
				livenessWake = c.clock.NewTimer(max(wake.Sub(c.clock.Now()), 0) + time.Millisecond)
				livenessC = livenessWake.C()
			}
		}
		if len(synced) < inputs {
			continue
		}
		if !c.ready {
			c.ready = true
			c.log.Info("all inputs synced: deciding active nodes", "nodes", len(c.rows), "gateways", len(pending))
			if c.NodesSynced != nil {
				txn := c.db.WriteTxn(c.nodesTbl)
				c.NodesSynced(txn)
				txn.Commit()
			}
		}
		if len(pending) > 0 {
			c.recompute(pending, detected)
			clear(pending)
		}
		expiry.Arm(c.engine.NextExpiry, func(now time.Time) { c.recompute(pending, now) })
	}
}

func (c *Controller) gatewayNames() map[string]struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]struct{}, len(c.gateways))
	for name := range c.gateways {
		out[name] = struct{}{}
	}
	return out
}

func markSynced(kind resource.EventKind, name string, synced map[string]bool) bool {
	if kind == resource.Sync {
		synced[name] = true
		return true
	}
	return false
}

func (c *Controller) row(node string) *NodeRow {
	r := c.rows[node]
	if r == nil {
		r = &NodeRow{Name: node}
	} else {
		cp := *r
		r = &cp
	}
	return r
}

func (c *Controller) onNode(ev resource.Event[*corev1.Node], synced map[string]bool, pending map[string]struct{}) {
	defer ev.Done(nil)
	if markSynced(ev.Kind, "nodes", synced) {
		return
	}
	name := ev.Key.Name
	r := c.row(name)
	if ev.Kind == resource.Delete {
		r.NodeKnown, r.Ready, r.Labels, r.InternalIP, r.Cordoned = false, false, nil, "", false
	} else {
		f := factsFromNode(ev.Object)
		r.NodeKnown, r.Labels, r.InternalIP, r.Ready, r.Cordoned = true, f.labels, f.internalIP, f.ready, f.cordoned
	}
	c.storeRow(r, ev.Kind == resource.Delete && r.Heartbeat == nil && len(c.agentPods[name]) == 0, pending)
}

func (c *Controller) onPod(ev resource.Event[*corev1.Pod], synced map[string]bool, pending map[string]struct{}) {
	defer ev.Done(nil)
	if markSynced(ev.Kind, "pods", synced) {
		return
	}
	// A pod may move between nodes only by being recreated; find its node
	// from the object, or from where we saw it before on delete.
	node := ""
	if ev.Object != nil {
		node = ev.Object.Spec.NodeName
	}
	for n, pods := range c.agentPods {
		if _, ok := pods[ev.Key]; ok && (ev.Kind == resource.Delete || n != node) {
			delete(pods, ev.Key)
			if len(pods) == 0 {
				delete(c.agentPods, n)
			}
			c.refreshAgentReady(n, pending)
		}
	}
	if ev.Kind == resource.Delete || node == "" {
		return
	}
	if c.agentPods[node] == nil {
		c.agentPods[node] = map[resource.Key]bool{}
	}
	c.agentPods[node][ev.Key] = agentPodReady(ev.Object)
	c.refreshAgentReady(node, pending)
}

func (c *Controller) refreshAgentReady(node string, pending map[string]struct{}) {
	ready := false
	for _, r := range c.agentPods[node] {
		ready = ready || r
	}
	r := c.row(node)
	if r.AgentReady == ready && c.rows[node] != nil {
		return
	}
	r.AgentReady = ready
	c.storeRow(r, false, pending)
}

func (c *Controller) onLease(ev resource.Event[*coordinationv1.Lease], synced map[string]bool, pending map[string]struct{}) {
	defer ev.Done(nil)
	if markSynced(ev.Kind, "leases", synced) {
		return
	}
	if ev.Kind == resource.Delete {
		node, ok := leaseNode(ev.Key.Name)
		if !ok {
			return
		}
		delete(c.rejectedAt, ev.Key.String())
		r := c.row(node)
		r.Heartbeat, r.HeartbeatError = nil, ""
		c.storeRow(r, !r.NodeKnown && len(c.agentPods[node]) == 0, pending)
		return
	}
	node, ok := leaseNode(ev.Object.Name)
	if !ok {
		return
	}
	r := c.row(node)
	prev, prevReported := r.Heartbeat, r.ReportedRenewTime
	r.Heartbeat, r.HeartbeatError = heartbeatFromLease(ev.Object, c.MaxExpiry, c.MaxRestartGrace)
	if hb := r.Heartbeat; hb != nil {
		c.reportRejections(ev.Key.String(), ev.Object.ResourceVersion, hb.Rejections)
	}
	if hb := r.Heartbeat; hb != nil {
		r.ReportedRenewTime = hb.RenewTime
		var prevObserved time.Time
		if prev != nil {
			prevObserved = prev.RenewTime
		}
		hb.RenewTime = observedRenewTime(prev != nil, prevObserved, prevReported, hb.RenewTime, c.clock.Now())
		// The agent stopped to restart: its grace counts from when this
		// operator saw the request (once per restart).
		if hb.RestartGrace > 0 && (prev == nil || prev.RestartGrace == 0) && r.RestartUntil.IsZero() {
			now := c.clock.Now()
			r.RestartSince, r.RestartUntil = now, now.Add(hb.RestartGrace)
			c.log.Info("Agent restarting: keeping the node's roles while the node itself answers, for up to the grace",
				"node", node, "grace", hb.RestartGrace, "until", r.RestartUntil)
		}
	}
	c.storeRow(r, false, pending)
}

// observedRenewTime is the renew time freshness counts from, on this
// operator's clock, as client-go's leader election does: a renewal counts
// from when it was observed, so a node whose clock is behind or ahead is
// neither expired nor kept alive by the skew. A Lease seen for the first
// time (a new leader, a new node) counts as renewed now: its own renewTime
// is on the node's clock, and a node 2 s behind would look expired to a
// new leader although it renews on time. (A Lease that really lapsed is
// then taken as fresh for one lease duration; probing, where it has a
// verdict, decides before.) A Lease whose renewTime did not change keeps
// the time it was first observed; a new renewTime counts from now.
func observedRenewTime(seen bool, prevObserved, prevReported, reported, now time.Time) time.Time {
	switch {
	case !seen:
		return now
	case reported.Equal(prevReported):
		return prevObserved
	}
	return now
}

// reportRejections logs and counts what a Lease said that was not taken
// as written, once per resourceVersion of the Lease.
func (c *Controller) reportRejections(lease, version string, rej []heartbeat.Rejection) {
	if len(rej) == 0 {
		delete(c.rejectedAt, lease)
		return
	}
	if seen, ok := c.rejectedAt[lease]; ok && seen == version {
		return
	}
	c.rejectedAt[lease] = version
	for _, x := range rej {
		c.metrics.HeartbeatRejected.WithLabelValues(x.Kind).Inc()
		c.log.Warn("heartbeat lease not taken as written", "lease", lease, "resourceVersion", version,
			"reason", x.Kind, "detail", x.Detail)
	}
}

// storeRow records a node row in the engine and the table; del removes it.
func (c *Controller) storeRow(r *NodeRow, del bool, pending map[string]struct{}) {
	var affected []string
	txn := c.db.WriteTxn(c.nodesTbl)
	if del {
		delete(c.rows, r.Name)
		affected = c.engine.DeleteNode(r.Name)
		c.nodesTbl.Delete(txn, r)
	} else {
		c.rows[r.Name] = r
		affected = c.engine.UpsertNode(r.selectionNode())
		c.nodesTbl.Insert(txn, r)
	}
	txn.Commit()
	for _, g := range affected {
		pending[g] = struct{}{}
	}
	c.refreshVIP(func(active string) bool { return active == r.Name })
}

// refreshVIP updates the announcing state of the VIP gateways whose active
// node matches, from that node's Lease, and marks its status write pending when it
// changed. Run goroutine only (it reads rows).
func (c *Controller) refreshVIP(match func(active string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, gw := range c.gateways {
		if gw.Spec.SourceIP.Mode != v1alpha1.SourceIPModeVirtualIP {
			continue
		}
		r, ok := c.results[name]
		if !ok || !match(r.Active) {
			continue
		}
		var rep heartbeat.GatewayReport
		if row := c.rows[r.Active]; row != nil && row.Heartbeat != nil {
			rep = row.Heartbeat.Gateways[name]
		}
		if old, had := c.vip[name]; !had || old != rep {
			c.vip[name] = rep
			c.markGatewayPending(name)
		}
	}
}

func (c *Controller) onGateway(ev resource.Event[*v1alpha1.EgressGateway], synced map[string]bool, pending map[string]struct{}) {
	defer ev.Done(nil)
	if markSynced(ev.Kind, "gateways", synced) {
		return
	}
	name := ev.Key.Name
	c.mu.Lock()
	if ev.Kind == resource.Delete {
		delete(c.gateways, name)
		delete(c.results, name)
		delete(c.detectedAt, name)
		delete(c.resultSeq, name)
		delete(c.changes, name)
		c.events.forget(name)
		c.mu.Unlock()
		c.engine.DeleteGateway(name)
		txn := c.db.WriteTxn(c.selTbl, c.polTbl)
		c.selTbl.Delete(txn, &SelectionRow{Result: selection.Result{Gateway: name}})
		c.mu.Lock()
		c.markPoliciesPending(txn, name)
		c.mu.Unlock()
		txn.Commit()
		c.metrics.EligibleCandidates.DeleteLabelValues(name)
		return
	}
	c.gateways[name] = ev.Object
	c.mu.Unlock()
	c.engine.UpsertGateway(gatewayFromObject(ev.Object, c.HoldDown))
	pending[name] = struct{}{}
	// The status may differ from the decision (another writer, a restore
	// from backup): let the reconciler compare.
	c.markGatewayPending(name)
}

// markGatewayPending makes the status reconciler compare the gateway's
// status with its decision again (a row exists once it is decided).
func (c *Controller) markGatewayPending(name string) {
	txn := c.db.WriteTxn(c.selTbl)
	if row, _, ok := c.selTbl.Get(txn, SelectionByGateway(name)); ok {
		c.selTbl.Insert(txn, row.Clone().SetStatus(reconciler.StatusPending()))
	}
	txn.Commit()
}

func (c *Controller) onPolicy(ev resource.Event[*v1alpha1.EgressGatewayPolicy], synced map[string]bool) {
	defer ev.Done(nil)
	if markSynced(ev.Kind, "policies", synced) {
		return
	}
	txn := c.db.WriteTxn(c.polTbl)
	defer txn.Commit()
	c.mu.Lock()
	defer c.mu.Unlock()
	if ev.Kind == resource.Delete {
		delete(c.policies, ev.Key.Name)
		c.polTbl.Delete(txn, &PolicyStatusRow{Policy: ev.Key.Name})
		return
	}
	c.policies[ev.Key.Name] = ev.Object
	c.polTbl.Insert(txn, &PolicyStatusRow{Policy: ev.Key.Name, Status: reconciler.StatusPending()})
}

// markPoliciesPending marks the policies that use a gateway pending for the
// policy status reconciler. Caller holds mu.
func (c *Controller) markPoliciesPending(txn statedb.WriteTxn, gateway string) {
	for name, p := range c.policies {
		if p.Spec.EgressGatewayName == gateway {
			c.polTbl.Insert(txn, &PolicyStatusRow{Policy: name, Status: reconciler.StatusPending()})
		}
	}
}

// MaxHoldDown bounds a hold-down (the CRD refuses more; this guards
// against an object written before that validation, and the flag).
const MaxHoldDown = time.Hour

// gatewayFromObject is what the selection needs of an EgressGateway;
// holdDown is the hold-down when spec.selection.holdDown is not set.
func gatewayFromObject(gw *v1alpha1.EgressGateway, holdDown time.Duration) selection.Gateway {
	g := selection.Gateway{
		Name:           gw.Name,
		NodeSelector:   gw.Spec.NodeSelector,
		Mode:           gw.Spec.SourceIP.Mode,
		PreviousActive: gw.Status.ActiveNodeName,
		HoldDown:       holdDown,
	}
	if v := gw.Spec.SourceIP.VirtualIPAddress; v != nil {
		g.VirtualIP = string(v.IP)
	}
	if s := gw.Spec.Selection; s != nil {
		g.Order, g.Failback = s.Order, s.Failback
		if s.HoldDown != nil {
			g.HoldDown = min(max(s.HoldDown.Duration, 0), MaxHoldDown)
		}
	}
	return g
}

// recompute runs the engine for the pending gateways and publishes every
// decision that changed.
func (c *Controller) recompute(pending map[string]struct{}, detected time.Time) {
	names := make([]string, 0, len(pending))
	for n := range pending {
		names = append(names, n)
	}
	now := c.clock.Now()
	changed := c.engine.Recompute(names, now)
	c.log.Debug("recomputed", "gateways", names, "changed", len(changed))
	if len(changed) == 0 {
		return
	}
	txn := c.db.WriteTxn(c.selTbl, c.polTbl)
	c.mu.Lock()
	for _, r := range changed {
		if _, ok := c.gateways[r.Gateway]; !ok {
			continue
		}
		prev, had := c.results[r.Gateway]
		c.results[r.Gateway] = r
		c.seq++
		c.resultSeq[r.Gateway] = c.seq
		if r.ChangeReason != "" {
			ch := append(c.changes[r.Gateway], decidedChange{seq: c.seq, from: r.PreviousActive, to: r.Active, reason: r.ChangeReason})
			if len(ch) > maxDecidedChanges {
				ch = slices.Delete(ch, 0, len(ch)-maxDecidedChanges)
			}
			c.changes[r.Gateway] = ch
		}
		if _, waiting := c.detectedAt[r.Gateway]; !waiting {
			c.detectedAt[r.Gateway] = detected
		}
		if !had || prev.Active != r.Active {
			c.log.Info("active node decided",
				"gateway", r.Gateway, "from", prev.Active, "to", r.Active, "reason", r.ChangeReason,
				"readyNodes", r.ReadyNodes, "message", r.Message)
		}
		c.metrics.EligibleCandidates.WithLabelValues(r.Gateway).Set(float64(r.ReadyNodes))
		c.selTbl.Insert(txn, &SelectionRow{Result: r, DecidedAt: now, Status: reconciler.StatusPending()})
		c.markPoliciesPending(txn, r.Gateway)
	}
	c.mu.Unlock()
	txn.Commit()
	c.refreshVIP(func(string) bool { return true })
}

// GatewayStatusOps are the operations of the statedb reconciler that
// writes each decision of egress-gateway-selection into its EgressGateway's
// status (writeGateway).
func (c *Controller) GatewayStatusOps() reconciler.Operations[*SelectionRow] {
	return writeOps[*SelectionRow]{log: c.log, what: "EgressGateway status",
		name:  func(r *SelectionRow) string { return r.Gateway },
		write: func(ctx context.Context, r *SelectionRow) error { return c.writeGateway(ctx, r.Gateway) }}
}

// PolicyStatusOps are the operations of the statedb reconciler that writes
// the status of the policies of egress-policy-status (writePolicy).
func (c *Controller) PolicyStatusOps() reconciler.Operations[*PolicyStatusRow] {
	return writeOps[*PolicyStatusRow]{log: c.log, what: "EgressGatewayPolicy status",
		name:  func(r *PolicyStatusRow) string { return r.Policy },
		write: func(ctx context.Context, r *PolicyStatusRow) error { return c.writePolicy(ctx, r.Policy) }}
}

// writeGateway writes the decision to the gateway's status if it differs.
// A conflict means our copy is stale: fetch the object and try again.
func (c *Controller) writeGateway(ctx context.Context, name string) error {
	c.mu.Lock()
	gw, ok := c.gateways[name]
	r, decided := c.results[name]
	seq := c.resultSeq[name]
	changes := slices.Clone(c.changes[name])
	detected := c.detectedAt[name]
	vip := c.vip[name]
	suspect := c.suspectCondition(r)
	c.mu.Unlock()
	if !ok || !decided {
		return nil
	}
	for attempt := 0; ; attempt++ {
		now := c.clock.Now()
		if detected.IsZero() {
			detected = now
		}
		// What this write changes, from the status it replaces: the
		// latest decision may start from a node the status never showed.
		t := transitionOf(gw.Status.ActiveNodeName, r, changes)
		w := r
		w.ChangeReason = t.Reason
		desired := DesiredStatus(gw, w, vip, suspect, detected, now)
		if !StatusChanged(gw.Status, desired) {
			c.forgetChanges(name, seq)
			return nil
		}
		upd := gw.DeepCopy()
		upd.Status = desired
		written, err := c.crd.Gateways.UpdateStatus(ctx, upd)
		if err == nil {
			c.forgetChanges(name, seq)
			c.afterGatewayWrite(gw, written, r, t, detected)
			return nil
		}
		c.metrics.StatusWriteErrors.WithLabelValues("EgressGateway").Inc()
		if !apierrors.IsConflict(err) || attempt >= 5 {
			return err
		}
		fresh, gerr := c.crd.Gateways.Get(ctx, name)
		if gerr != nil {
			if apierrors.IsNotFound(gerr) {
				return nil
			}
			return gerr
		}
		gw = fresh
	}
}

// forgetChanges drops the decided changes of gw up to decision seq: the
// status shows their outcome.
func (c *Controller) forgetChanges(gw string, seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.changes[gw]
	i := 0
	for i < len(ch) && ch[i].seq <= seq {
		i++
	}
	if i == len(ch) {
		delete(c.changes, gw)
	} else {
		c.changes[gw] = slices.Delete(ch, 0, i)
	}
}

func (c *Controller) afterGatewayWrite(old, written *v1alpha1.EgressGateway, r selection.Result, t writtenTransition, detected time.Time) {
	now := c.clock.Now()
	c.mu.Lock()
	if cur, ok := c.gateways[written.Name]; ok && cur.ResourceVersion == old.ResourceVersion {
		c.gateways[written.Name] = written
	}
	// Only clear the detection time if no newer decision arrived meanwhile.
	if c.results[written.Name].Active == r.Active {
		delete(c.detectedAt, written.Name)
	}
	c.mu.Unlock()
	c.vipEvents(old, written)
	if t.From != t.To {
		c.metrics.ActiveChanges.WithLabelValues(written.Name, t.Reason).Inc()
		c.metrics.StatusWriteSeconds.WithLabelValues(written.Name).Observe(now.Sub(detected).Seconds())
		evType := corev1.EventTypeNormal
		if t.To == "" {
			evType = corev1.EventTypeWarning
		}
		c.mu.Lock()
		send, summary, flushAt := c.events.admit(written.Name, decidedChange{from: t.From, to: t.To, reason: t.Reason}.String(), now)
		ctx := c.runCtx
		c.mu.Unlock()
		if summary != "" {
			c.recorder.Event(written, corev1.EventTypeWarning, EventActiveNodeFlapping, summary)
		}
		if send {
			c.recorder.Event(written, evType, EventActiveNodeChanged, t.describe(r.Message))
		} else if !flushAt.IsZero() {
			c.flushEventsAt(ctx, written.Name, flushAt)
		}
		c.log.Info("EgressGateway status written", "gateway", written.Name, "from", orNone(t.From), "to", orNone(t.To),
			"reason", t.Reason, "decidedChanges", len(t.Via), "sinceDetection", now.Sub(detected), "event", send)
	}
}

// Reasons of the Events about a gateway's active node.
const (
	// EventActiveNodeChanged: one change of active node, as written.
	EventActiveNodeChanged = "ActiveNodeChanged"
	// EventActiveNodeFlapping sums up the changes of a window that had
	// more than changeEventBurst of them (changeEvents).
	EventActiveNodeFlapping = "ActiveNodeFlapping"
)

// flushEventsAt records, at at, the summary of gw's Event window. The timer
// is armed here, so a clock that moves on at once still fires it.
func (c *Controller) flushEventsAt(ctx context.Context, gw string, at time.Time) {
	t := c.clock.NewTimer(max(at.Sub(c.clock.Now()), 0))
	go func() {
		defer t.Stop()
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		c.mu.Lock()
		summary := c.events.flush(gw, c.clock.Now())
		obj := c.gateways[gw]
		c.mu.Unlock()
		if summary != "" && obj != nil {
			c.recorder.Event(obj, corev1.EventTypeWarning, EventActiveNodeFlapping, summary)
		}
	}()
}

// vipEvents records Events for VIP conditions that turned on.
func (c *Controller) vipEvents(old, written *v1alpha1.EgressGateway) {
	if cond := meta.FindStatusCondition(written.Status.Conditions, v1alpha1.ConditionVirtualIPConflict); cond != nil &&
		cond.Status == metav1.ConditionTrue && !meta.IsStatusConditionTrue(old.Status.Conditions, v1alpha1.ConditionVirtualIPConflict) {
		c.recorder.Event(written, corev1.EventTypeWarning, v1alpha1.ConditionVirtualIPConflict, cond.Message)
		c.log.Warn("Virtual IP conflict", "gateway", written.Name, "message", cond.Message)
	}
	if cond := meta.FindStatusCondition(written.Status.Conditions, v1alpha1.ConditionReady); cond != nil &&
		cond.Reason == v1alpha1.ReasonVirtualIPAnnouncingFailed {
		if prev := meta.FindStatusCondition(old.Status.Conditions, v1alpha1.ConditionReady); prev == nil || prev.Reason != cond.Reason {
			c.recorder.Event(written, corev1.EventTypeWarning, cond.Reason, cond.Message)
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func (c *Controller) writePolicy(ctx context.Context, name string) error {
	c.mu.Lock()
	p, ok := c.policies[name]
	var r selection.Result
	found := false
	if ok {
		_, found = c.gateways[p.Spec.EgressGatewayName]
		r = c.results[p.Spec.EgressGatewayName]
	}
	c.mu.Unlock()
	if !ok {
		return nil
	}
	for attempt := 0; ; attempt++ {
		desired := PolicyStatus(p, r, found)
		if !policyStatusChanged(p.Status, desired) {
			return nil
		}
		upd := p.DeepCopy()
		upd.Status = desired
		written, err := c.crd.Policies.UpdateStatus(ctx, upd)
		if err == nil {
			c.mu.Lock()
			if cur, ok := c.policies[name]; ok && cur.ResourceVersion == p.ResourceVersion {
				c.policies[name] = written
			}
			c.mu.Unlock()
			return nil
		}
		c.metrics.StatusWriteErrors.WithLabelValues("EgressGatewayPolicy").Inc()
		if !apierrors.IsConflict(err) || attempt >= 5 {
			return err
		}
		fresh, gerr := c.crd.Policies.Get(ctx, name)
		if gerr != nil {
			if apierrors.IsNotFound(gerr) {
				return nil
			}
			return gerr
		}
		p = fresh
	}
}

// readSessions reads this replica's probe sessions and returns the channel
// that closes when they change.
func (c *Controller) readSessions() <-chan struct{} {
	iter, watch := c.Probes.AllWatch(c.db.ReadTxn())
	clear(c.sessions)
	for r := range iter {
		c.sessions[r.Node] = r.Status
	}
	return watch
}

// refreshLiveness judges every node's liveness from its probe session and
// Lease (judgeLiveness), stores the rows whose Reach changed, and returns
// when the verdict changes next without an input changing (zero: never).
// Run goroutine only.
func (c *Controller) refreshLiveness(now time.Time, pending map[string]struct{}) time.Time {
	c.endRestarts(now, pending)
	in := make([]livenessInput, 0, len(c.sessions))
	for name, r := range c.rows {
		st, probed := c.sessions[name]
		if !probed && r.Heartbeat == nil {
			continue
		}
		in = append(in, livenessInput{Node: name, Probe: st, Heartbeat: r.Heartbeat, RestartUntil: r.RestartUntil})
	}
	v := judgeLiveness(in, now)
	if v.Why != c.liveness.Why {
		if v.Why != "" {
			c.log.Warn("Liveness: suspecting the observer or the control plane; not moving the nodes held",
				"why", v.Why, "held", v.Held)
		} else {
			c.log.Info("Liveness: suspicion cleared; judging every node by its own signals again")
		}
	}
	if !slices.Equal(v.Held, c.liveness.Held) || v.Why != c.liveness.Why {
		c.mu.Lock()
		c.held = map[string]bool{}
		for _, n := range v.Held {
			c.held[n] = true
		}
		c.heldWhy = v
		names := slices.Collect(maps.Keys(c.gateways))
		c.mu.Unlock()
		for _, name := range names {
			c.markGatewayPending(name)
		}
	}
	c.metrics.LivenessSuspect.WithLabelValues("probe").Set(b2f(v.ProbeSuspect))
	c.metrics.LivenessSuspect.WithLabelValues("lease").Set(b2f(v.LeaseSuspect))
	c.liveness = v
	for name, reach := range v.Reach {
		r := c.rows[name]
		if r == nil || (r.Reach == reach && r.Restarting == v.Restarting[name] && r.Unsteady == v.Unsteady[name]) {
			continue
		}
		r = c.row(name)
		c.log.Info("Liveness of a candidate node changed", "node", name, "from", c.rows[name].Reach, "to", reach,
			"restarting", v.Restarting[name], "probe", c.sessions[name].State, "probeSince", c.sessions[name].Since,
			"kernel", c.sessions[name].Kernel)
		r.Reach, r.Restarting, r.Unsteady = reach, v.Restarting[name], v.Unsteady[name]
		c.storeRow(r, false, pending)
	}
	// Rows no longer judged (no session, no Lease) go back to Unknown.
	for name, r := range c.rows {
		if _, ok := v.Reach[name]; !ok && (r.Reach != selection.ReachUnknown || r.Restarting || r.Unsteady) {
			r = c.row(name)
			r.Reach, r.Restarting, r.Unsteady = selection.ReachUnknown, false, false
			c.storeRow(r, false, pending)
		}
	}
	return v.Wake
}

// endRestarts ends the restarts that are over: the agent is back (its Pod
// Ready, its Lease renewed without the request, its probes not Down), or
// the grace ran out (the node is judged by the usual rules again: an
// agent still not Ready moves its roles). Run goroutine only.
func (c *Controller) endRestarts(now time.Time, pending map[string]struct{}) {
	for name, r := range c.rows {
		if r.RestartUntil.IsZero() {
			continue
		}
		back := r.AgentReady && r.Heartbeat != nil && r.Heartbeat.RestartGrace == 0 &&
			c.sessions[name].State != probe.StateDown
		expired := !now.Before(r.RestartUntil)
		if !back && !expired {
			continue
		}
		if back {
			c.log.Info("Agent back after its restart; nothing moved", "node", name, "took", now.Sub(r.RestartSince))
		} else {
			c.log.Warn("Agent not back within its restart grace: judging the node by the usual rules again",
				"node", name, "grace", r.RestartUntil.Sub(r.RestartSince), "agentReady", r.AgentReady)
		}
		r = c.row(name)
		r.RestartSince, r.RestartUntil = time.Time{}, time.Time{}
		c.storeRow(r, false, pending)
	}
}

// suspectCondition is the LivenessSuspect condition of a gateway whose
// decision is r, or nil when none of its candidates is held. Call with mu
// held.
func (c *Controller) suspectCondition(r selection.Result) *metav1.Condition {
	var held []string
	for _, cand := range r.Candidates {
		if c.held[cand.Node] {
			held = append(held, cand.Node)
		}
	}
	if len(held) == 0 {
		return nil
	}
	reason := v1alpha1.ReasonObserverSuspect
	if !c.heldWhy.ProbeSuspect {
		reason = v1alpha1.ReasonControlPlaneSuspect
	}
	return &metav1.Condition{Type: v1alpha1.ConditionLivenessSuspect, Status: metav1.ConditionTrue, Reason: reason,
		Message: fmt.Sprintf("not moving %s: %s", strings.Join(held, ", "), c.heldWhy.Why)}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
