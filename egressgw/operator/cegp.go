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
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/k8s/resource"

	"github.com/egressha/egressha/egressgw/cegp"
	"github.com/egressha/egressha/egressgw/selection"
)

// CEGPRow is one row of the egress-cegp-selection table: the serving node
// of every gateway entry of one CiliumEgressGatewayPolicy.
type CEGPRow struct {
	Policy  string
	Entries []cegp.EntrySelection
	// Error says why the policy's gateway entries cannot be used.
	Error string
	// Upstream is set when the decision followed upstream's rule
	// (--egress-gateway-ha-cegp-upstream-selection).
	Upstream  bool
	DecidedAt time.Time
	// Status is the annotation's: the statedb reconciler
	// (cegpAnnotationOps) writes the decision into the policy's
	// annotation and records here whether it did.
	Status reconciler.Status
}

// Clone returns a shallow copy (rows are immutable; the reconciler sets
// the status of a copy).
func (r *CEGPRow) Clone() *CEGPRow { cp := *r; return &cp }

// GetStatus returns the annotation's reconciliation status.
func (r *CEGPRow) GetStatus() reconciler.Status { return r.Status }

// SetStatus sets the annotation's reconciliation status.
func (r *CEGPRow) SetStatus(st reconciler.Status) *CEGPRow { r.Status = st; return r }

// TableHeader implements statedb.TableWritable.
func (r *CEGPRow) TableHeader() []string {
	return []string{"Policy", "Entries", "Mode", "Annotation", "Error"}
}

// TableRow implements statedb.TableWritable.
func (r *CEGPRow) TableRow() []string {
	parts := make([]string, len(r.Entries))
	for i, e := range r.Entries {
		parts[i] = e.String()
	}
	mode := "failover"
	if r.Upstream {
		mode = "upstream"
	}
	ann := statusColumn(r.Status)
	errText := r.Error
	if errText == "" {
		errText = "-"
	}
	entries := strings.Join(parts, " | ")
	if entries == "" {
		entries = "-"
	}
	return []string{r.Policy, entries, mode, ann, errText}
}

var cegpPolicyIndex = statedb.Index[*CEGPRow, string]{
	Name:       "policy",
	FromObject: func(r *CEGPRow) index.KeySet { return index.NewKeySet(index.String(r.Policy)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// CEGPByPolicy queries egress-cegp-selection by policy name.
func CEGPByPolicy(name string) statedb.Query[*CEGPRow] { return cegpPolicyIndex.Query(name) }

// NewCEGPSelectionTable creates the egress-cegp-selection table.
func NewCEGPSelectionTable(db *statedb.DB) (statedb.RWTable[*CEGPRow], error) {
	tbl, err := statedb.NewTable("egress-cegp-selection", cegpPolicyIndex)
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}

// CEGPPatcher patches the metadata of a CiliumEgressGatewayPolicy, and
// reads it again when a patch was refused because it changed meanwhile.
type CEGPPatcher interface {
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (*ciliumv2.CiliumEgressGatewayPolicy, error)
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*ciliumv2.CiliumEgressGatewayPolicy, error)
}

// CEGPController chooses the serving node of every gateway entry of every
// CiliumEgressGatewayPolicy from the per-node facts of
// egress-gateway-nodes, and publishes the decision in the egressha.io/
// gateway-nodes annotation (read by every agent), in
// egress-cegp-selection, in GatewayNodeChanged Events and in the log.
type CEGPController struct {
	log      *slog.Logger
	db       *statedb.DB
	nodes    statedb.Table[*NodeRow]
	tbl      statedb.RWTable[*CEGPRow]
	patcher  CEGPPatcher
	clock    clock.WithTicker
	recorder record.EventRecorder
	policies resource.Resource[*ciliumv2.CiliumEgressGatewayPolicy]
	upstream bool

	// Owned by Run.
	decided map[string][]cegp.EntrySelection

	// Shared with the annotation reconciler's operations.
	mu   sync.Mutex
	objs map[string]*ciliumv2.CiliumEgressGatewayPolicy
}

// NewCEGPController creates the controller; Run drives it, and the
// statedb reconciler registered with AnnotationOps writes the annotations.
func NewCEGPController(log *slog.Logger, db *statedb.DB, nodes statedb.Table[*NodeRow], tbl statedb.RWTable[*CEGPRow],
	patcher CEGPPatcher, clk clock.WithTicker,
	policies resource.Resource[*ciliumv2.CiliumEgressGatewayPolicy], upstream bool) *CEGPController {
	return &CEGPController{
		log: log, db: db, nodes: nodes, tbl: tbl, patcher: patcher, clock: clk,
		policies: policies, upstream: upstream,
		decided: map[string][]cegp.EntrySelection{},
		objs:    map[string]*ciliumv2.CiliumEgressGatewayPolicy{},
	}
}

// Run decides until ctx ends. Nothing is decided before the policies have
// been listed and egress-gateway-nodes is initialized (the selection
// controller marks it so once Nodes, agent Pods and heartbeat Leases have
// synced): a new leader must not move a serving node on a partial view.
func (c *CEGPController) Run(ctx context.Context, recorder record.EventRecorder) error {
	c.recorder = recorder
	events := c.policies.Events(ctx)
	synced := false
	expiry := expiryTimer{clock: c.clock}
	for {
		txn := c.db.ReadTxn()
		nodesInit, initWatch := c.nodes.Initialized(txn)
		if nodesInit {
			// Closed once initialized: selecting on it would spin.
			initWatch = nil
		}
		rows, nodesWatch := c.nodes.AllWatch(txn)
		if synced && nodesInit {
			nodes := make([]*selection.Node, 0)
			for r := range rows {
				nodes = append(nodes, r.selectionNode())
			}
			c.recompute(nodes)
			// The same rule as the selection controller: an expiry the
			// clock passes while the timer is armed is acted on at once.
			expiry.Arm(func(now time.Time) time.Time { return nextExpiry(nodes, now) },
				func(time.Time) { c.recompute(nodes) })
		}
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return errors.New("CiliumEgressGatewayPolicy events closed")
			}
			c.onPolicy(ev, &synced)
		case <-nodesWatch:
		case <-initWatch:
		case <-expiry.C:
			expiry.Fired()
		}
	}
}

// nextExpiry is the earliest future heartbeat expiry: a decision may change
// then without any table changing.
func nextExpiry(nodes []*selection.Node, now time.Time) time.Time {
	var next time.Time
	for _, n := range nodes {
		if n.Heartbeat == nil {
			continue
		}
		if e := n.Heartbeat.Expiry(); e.After(now) && (next.IsZero() || e.Before(next)) {
			next = e
		}
	}
	return next
}

func (c *CEGPController) onPolicy(ev resource.Event[*ciliumv2.CiliumEgressGatewayPolicy], synced *bool) {
	defer ev.Done(nil)
	switch ev.Kind {
	case resource.Sync:
		*synced = true
		c.log.Info("CiliumEgressGatewayPolicies listed: deciding serving nodes", "policies", len(c.objs),
			"upstreamSelection", c.upstream)
		return
	case resource.Delete:
		c.mu.Lock()
		delete(c.objs, ev.Key.Name)
		c.mu.Unlock()
		delete(c.decided, ev.Key.Name)
		txn := c.db.WriteTxn(c.tbl)
		_, _, _ = c.tbl.Delete(txn, &CEGPRow{Policy: ev.Key.Name})
		txn.Commit()
		return
	}
	c.mu.Lock()
	c.objs[ev.Key.Name] = ev.Object
	c.mu.Unlock()
	// The annotation may have been changed or removed by someone else:
	// let the reconciler compare it with the decision again.
	txn := c.db.WriteTxn(c.tbl)
	if row, _, ok := c.tbl.Get(txn, CEGPByPolicy(ev.Key.Name)); ok {
		_, _, _ = c.tbl.Insert(txn, row.Clone().SetStatus(reconciler.StatusPending()))
	}
	txn.Commit()
}

// recompute decides every policy and publishes what changed.
func (c *CEGPController) recompute(nodes []*selection.Node) {
	now := c.clock.Now()
	c.mu.Lock()
	objs := maps.Clone(c.objs)
	c.mu.Unlock()
	var txn statedb.WriteTxn
	for _, name := range slices.Sorted(maps.Keys(objs)) {
		obj := objs[name]
		entries, err := cegp.GatewayEntries(&obj.Spec)
		var sels []cegp.EntrySelection
		if err == nil {
			sels = cegp.Select(entries, nodes, now, c.upstream)
		}
		errText := ""
		if err != nil {
			errText = err.Error()
		}
		prev, had := c.decided[name]
		if had && cegp.SelectionsEqual(prev, sels) {
			if row, _, ok := c.tbl.Get(c.db.ReadTxn(), CEGPByPolicy(name)); ok && row.Error == errText {
				continue
			}
		}
		if !had {
			// A new leader continues from the annotation it finds, so it
			// does not announce changes that happened before it.
			if old, derr := cegp.Decode(obj.Annotations[cegp.Annotation]); derr == nil {
				prev = old
			}
		}
		c.decided[name] = sels
		c.announce(obj, prev, sels, errText)
		if txn == nil {
			txn = c.db.WriteTxn(c.tbl)
		}
		_, _, _ = c.tbl.Insert(txn, &CEGPRow{Policy: name, Entries: sels, Error: errText, Upstream: c.upstream, DecidedAt: now,
			Status: reconciler.StatusPending()})
	}
	if txn != nil {
		txn.Commit()
	}
}

// announce logs and records an Event for every entry whose serving node
// changed.
func (c *CEGPController) announce(obj *ciliumv2.CiliumEgressGatewayPolicy, prev, cur []cegp.EntrySelection, errText string) {
	if errText != "" {
		c.log.Warn("CiliumEgressGatewayPolicy has no usable gateway entry; its traffic is dropped",
			"policy", obj.Name, "error", errText)
	}
	ref := &corev1.ObjectReference{APIVersion: "cilium.io/v2", Kind: "CiliumEgressGatewayPolicy", Name: obj.Name, UID: obj.UID}
	for _, e := range cur {
		from := ""
		for _, p := range prev {
			if p.Index == e.Index {
				from = p.Node
			}
		}
		if from == e.Node {
			continue
		}
		reason := cegp.ChangeReason(from, e)
		if e.Node == "" {
			reason = e.Reason
			if s := e.Skipped; from != "" && len(s) > 0 && s[0].Node == from {
				reason = s[0].Reasons[0]
			}
		}
		evType := corev1.EventTypeNormal
		if e.Node == "" {
			evType = corev1.EventTypeWarning
		}
		c.recorder.Eventf(ref, evType, "GatewayNodeChanged", "gateway entry %d: %s -> %s (%s); %s",
			e.Index, orNone(from), orNone(e.Node), reason, e.String())
		c.log.Info("CiliumEgressGatewayPolicy serving node decided",
			"policy", obj.Name, "entry", e.Index, "from", orNone(from), "to", orNone(e.Node), "reason", reason,
			"decision", e.String(), "upstreamSelection", c.upstream)
	}
}

// AnnotationOps are the operations of the statedb reconciler that writes
// each row's decision into its policy's egressha.io/gateway-nodes
// annotation (writeAnnotation).
func (c *CEGPController) AnnotationOps() reconciler.Operations[*CEGPRow] {
	return writeOps[*CEGPRow]{log: c.log, what: "CiliumEgressGatewayPolicy annotation",
		name: func(r *CEGPRow) string { return r.Policy }, write: c.writeAnnotation}
}

// writeAnnotation patches the annotation, and only it, when it differs
// from the row's decision.
//
// The patch carries the resourceVersion of the object the decision was
// compared with, so the API server refuses it (Conflict) when the object
// changed since: a writer never overwrites an annotation it has not seen
// (another operator's decision written meanwhile, an object replaced by
// GitOps). On Conflict the policy is read again, the error goes back to
// the reconciler, and its retry compares the decision with the object as
// it now is: nothing is written when the annotation already says it.
func (c *CEGPController) writeAnnotation(ctx context.Context, row *CEGPRow) error {
	c.mu.Lock()
	obj, ok := c.objs[row.Policy]
	c.mu.Unlock()
	want := cegp.Encode(row.Entries)
	if !ok || obj.Annotations[cegp.Annotation] == want {
		return nil
	}
	patch := annotationPatch(obj.ResourceVersion, want)
	written, err := c.patcher.Patch(ctx, row.Policy, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil // the policy is gone; its row goes with its Delete event
		}
		if apierrors.IsConflict(err) {
			fresh, gerr := c.patcher.Get(ctx, row.Policy, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(gerr):
				return nil
			case gerr != nil:
				return fmt.Errorf("%w; reading it again: %w", err, gerr)
			}
			c.mu.Lock()
			if cur, ok := c.objs[row.Policy]; ok && cur.ResourceVersion == obj.ResourceVersion {
				c.objs[row.Policy] = fresh
			}
			c.mu.Unlock()
			return fmt.Errorf("policy changed since resourceVersion %s (now %s): not overwritten, comparing again: %w",
				obj.ResourceVersion, fresh.ResourceVersion, err)
		}
		return err
	}
	c.mu.Lock()
	if cur, ok := c.objs[row.Policy]; ok && cur.ResourceVersion == obj.ResourceVersion {
		c.objs[row.Policy] = written
	}
	c.mu.Unlock()
	return nil
}

// annotationPatch is the merge patch that sets the decision annotation
// with resourceVersion as a precondition (none when it is empty).
func annotationPatch(resourceVersion, value string) []byte {
	if resourceVersion == "" {
		return fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, cegp.Annotation, value)
	}
	return fmt.Appendf(nil, `{"metadata":{"resourceVersion":%q,"annotations":{%q:%q}}}`, resourceVersion, cegp.Annotation, value)
}
