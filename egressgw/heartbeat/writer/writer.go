package writer

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"math"
	"strconv"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"

	k8sClient "github.com/cilium/cilium/pkg/k8s/client"
	nodeTypes "github.com/cilium/cilium/pkg/node/types"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/reflectors"
	"github.com/egressha/egressha/egressgw/tables"
)

const (
	// heartbeatErrorLogInterval limits how often a failing renewal is
	// logged; health carries every failure.
	heartbeatErrorLogInterval = 10 * time.Second
	// heartbeatWriteAttempts bounds the immediate retries of one renewal
	// after a Conflict (or a Lease created or deleted behind our back);
	// after that the next tick tries again, forever.
	heartbeatWriteAttempts = 3
	// heartbeatMinWriteGap is the least time between two writes (a quarter
	// of the renew interval if that is shorter), so a flapping device
	// cannot hammer the API server; a change is written at most this late.
	heartbeatMinWriteGap = 100 * time.Millisecond
)

// LastWord connects the agent's stop hook (LastWordCell) to the running
// heartbeat loop, which writes the last renewal and then writes no more.
type LastWord struct {
	req chan chan struct{}
}

func newLastWord() *LastWord { return &LastWord{req: make(chan chan struct{})} }

// say asks the heartbeat loop for its last word and waits until it is
// written or ctx ends. A loop that is not running (not a candidate yet,
// disabled) has nothing to say.
func (lw *LastWord) say(ctx context.Context) {
	done := make(chan struct{})
	select {
	case lw.req <- done:
	case <-ctx.Done():
		return
	case <-time.After(100 * time.Millisecond):
		return // no loop waiting for it
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func registerLastWord(lc cell.Lifecycle, lw *LastWord, enabled config.Enabled) {
	if !enabled {
		return
	}
	lc.Append(cell.Hook{OnStop: func(ctx cell.HookContext) error {
		c, cancel := context.WithTimeout(ctx, stopWriteTimeout+time.Second)
		defer cancel()
		lw.say(c)
		return nil
	}})
}

type heartbeatParams struct {
	cell.In

	LastWord     *LastWord
	Log          *slog.Logger
	JobGroup     job.Group
	Enabled      config.Enabled
	Config       config.AgentConfig
	DaemonConfig *option.DaemonConfig
	Clientset    k8sClient.Clientset
	DB           *statedb.DB
	// LocalGateways are this node's facts per gateway: candidacy and
	// basic-mode interface checks.
	LocalGateways statedb.Table[*tables.LocalGateway]
	// CEGPs makes a node matching a CiliumEgressGatewayPolicy gateway
	// entry renew too (cegp.go).
	CEGPs     statedb.Table[*tables.CEGP] `optional:"true"`
	VIPs      statedb.Table[*tables.VirtualIP]
	LocalNode *reflectors.LocalNodeLabels
	Status    *heartbeat.Status
}

// registerHeartbeat adds the heartbeat job. Disabled, or with a
// configuration the start check refuses, there is no job at all.
func register(p heartbeatParams) {
	if !p.Enabled {
		return
	}
	h := &heartbeatJob{
		p:      p,
		log:    p.Log,
		renew:  p.Config.EgressGatewayHAHeartbeatRenewInterval,
		expiry: p.Config.EgressGatewayHAHeartbeatExpiry,
	}
	p.JobGroup.Add(job.OneShot("egress-gateway-ha-heartbeat", h.run))
}

// heartbeatJob is the state of the renewal loop; only run's goroutine
// touches it.
type heartbeatJob struct {
	p      heartbeatParams
	log    *slog.Logger
	renew  time.Duration
	expiry time.Duration

	node, namespace, name string
	leases                coordinationclient.LeaseInterface

	// lease is the Lease as last written (or read); nil when it must be
	// fetched again.
	lease *coordinationv1.Lease
	// written is the report the Lease carries since the last successful
	// write; nil when the node is not renewing.
	written heartbeat.Report
	// candidate is whether the last computed report was non-empty.
	candidate   bool
	lastAttempt time.Time
	// restartGrace, while the stopping agent writes its last renewal, is
	// the grace it asks for (RestartAnnotation); zero otherwise.
	restartGrace time.Duration

	failures      int // consecutive failed renewals
	lastErrorLog  time.Time
	unloggedFails int
	healthMsg     string // last OK message reported, "" after Degraded
}

func (h *heartbeatJob) run(ctx context.Context, health cell.Health) error {
	h.node = nodeTypes.GetName()
	h.namespace = h.p.DaemonConfig.CiliumNamespaceName()
	h.name = heartbeat.LeaseName(h.node)
	if h.namespace == "" {
		// Without a namespace there is no Lease to write; the node never
		// becomes eligible, which is safe, and health says why.
		err := errors.New("the heartbeat Lease lives in Cilium's namespace, which is not configured")
		health.Degraded("Heartbeat disabled: set --k8s-namespace (Helm sets it from the pod's namespace)", err)
		h.log.Error("egressha heartbeat cannot run: Cilium's namespace (--k8s-namespace) is not set; "+
			"this node will never be an eligible egress gateway", "lease", h.name)
		<-ctx.Done()
		return nil
	}
	h.leases = h.p.Clientset.CoordinationV1().Leases(h.namespace)

	if !h.waitForInputs(ctx, health) {
		return nil
	}
	h.log.Info("egressha heartbeat started",
		"lease", h.namespace+"/"+h.name, "renewInterval", h.renew, "expiry", h.expiry)

	ticker := time.NewTicker(h.renew)
	defer ticker.Stop()
	minGap := min(h.renew/4, heartbeatMinWriteGap)
	due := true
	for {
		txn := h.p.DB.ReadTxn()
		facts, factsChanged := h.p.LocalGateways.AllWatch(txn)
		vips, vipsChanged := h.p.VIPs.AllWatch(txn)
		labels, _, labelsChanged := h.p.LocalNode.Get()
		report := heartbeat.ReportFromFacts(tables.LocalFacts(statedb.Collect(facts)), vipStatuses(vips))
		cegpsChanged := h.addCEGPCandidacy(txn, labels, report)
		h.step(ctx, health, report, due)

		due = false
		urgent := false
		select {
		case <-ctx.Done():
			h.stopping()
			return nil
		case done := <-h.p.LastWord.req:
			// The agent stops: the last word, then nothing more (a later
			// renewal would take the restart request back).
			h.stopping()
			close(done)
			<-ctx.Done()
			return nil
		case <-ticker.C:
			due = true
		case <-factsChanged:
		case <-cegpsChanged:
		case <-labelsChanged:
		case <-vipsChanged:
			// A node that stopped announcing a VIP must say so at once: the
			// new active node waits for it before claiming.
			urgent = true
		}
		// Coalesce bursts of changes: at most one write per minGap.
		if wait := time.Until(h.lastAttempt.Add(minGap)); wait > 0 && !urgent {
			select {
			case <-ctx.Done():
				h.stopping()
				return nil
			case <-time.After(wait):
			}
		}
	}
}

// waitForInputs waits for the local node's labels and the initial list of
// EgressGateways: a report built earlier would say "not a candidate" or
// "interface missing" for a moment after every agent restart, and the
// operator would fail the active node over for nothing.
func (h *heartbeatJob) waitForInputs(ctx context.Context, health cell.Health) bool {
	health.OK("Waiting for the local node and the initial list of EgressGateways")
	for {
		txn := h.p.DB.ReadTxn()
		// egress-local-gateways is initialized once the gateways, the
		// devices and the node's labels are known.
		factsInit, factsWait := h.p.LocalGateways.Initialized(txn)
		cegpInit, cegpWait := h.cegpsInitialized(txn)
		// The VIP controller's first look at its gateways: without it a
		// restarted agent would report its VIPs "not set up yet".
		vipsInit, vipsWait := h.p.VIPs.Initialized(txn)
		_, seen, labelsChanged := h.p.LocalNode.Get()
		if factsInit && cegpInit && vipsInit && seen {
			return true
		}
		// The channel of an initialized table is closed: wait only for
		// what is still missing, or this loop spins until it is there.
		if factsInit {
			factsWait = nil
		}
		if cegpInit {
			cegpWait = nil
		}
		if vipsInit {
			vipsWait = nil
		}
		select {
		case <-ctx.Done():
			return false
		case <-factsWait:
		case <-cegpWait:
		case <-vipsWait:
		case <-labelsChanged:
		}
	}
}

// stopWriteTimeout bounds the last write when the agent stops.
const stopWriteTimeout = 2 * time.Second

// stopping is the last word of a candidate node's agent as it stops
// (SIGTERM: every rolling upgrade). With a restart grace it renews the
// Lease with the report as it stands and asks the operator to keep the
// node's roles while the node itself answers: the datapath keeps
// forwarding while the agent restarts, so nothing needs to move. Without
// one it withdraws (an empty report), so the roles move at once instead
// of when the node is found gone.
func (h *heartbeatJob) stopping() {
	if !h.candidate || h.written == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopWriteTimeout)
	defer cancel()
	report, grace := h.written, h.p.Config.EgressGatewayHARestartGrace
	if grace <= 0 {
		report = heartbeat.Report{}
	}
	h.restartGrace = grace
	err := h.renewLease(ctx, report)
	h.restartGrace = 0
	switch {
	case err != nil:
		h.log.Warn("Agent stopping: could not tell the operator (heartbeat Lease not written); "+
			"its roles move when the node is found not ready", "lease", h.namespace+"/"+h.name, "error", err)
	case grace > 0:
		h.log.Info("Agent stopping: heartbeat Lease marked restarting; the operator keeps this node's roles "+
			"while the node answers, for up to the grace", "lease", h.namespace+"/"+h.name, "grace", grace)
	default:
		h.log.Info("Agent stopping: withdrew from every EgressGateway (restart grace 0); its roles move now",
			"lease", h.namespace+"/"+h.name)
	}
}

// step renews the Lease if the node is a candidate and either the renewal
// is due or the report changed.
func (h *heartbeatJob) step(ctx context.Context, health cell.Health, report heartbeat.Report, due bool) {
	if len(report) == 0 {
		if h.candidate {
			// One last write with the empty report: a node that announced a
			// virtual IP says it no longer does, so the next node can claim
			// it now instead of waiting for this Lease to expire.
			h.lastAttempt = time.Now()
			err := h.renewLease(ctx, report)
			h.log.Info("Node is no longer a candidate of any EgressGateway; heartbeat Lease no longer renewed, it expires",
				"lease", h.namespace+"/"+h.name, "validUntil", h.p.Status.ValidUntil(), "withdrawalWritten", err == nil)
		}
		h.candidate, h.written, h.failures = false, nil, 0
		h.healthOK(health, "Not a candidate of any EgressGateway; heartbeat Lease not renewed")
		return
	}
	if !h.candidate {
		h.log.Info("Node is a candidate of EgressGateways; renewing its heartbeat Lease",
			"lease", h.namespace+"/"+h.name, "gateways", report.Summary())
		h.candidate = true
	}
	changed := h.written == nil || !maps.Equal(report, h.written)
	if !due && !changed {
		return
	}

	h.lastAttempt = time.Now()
	if err := h.renewLease(ctx, report); err != nil {
		if ctx.Err() != nil {
			return
		}
		h.renewFailed(health, err)
		return
	}
	if changed {
		h.logReportChange(report)
	}
	if h.failures > 0 {
		h.log.Info("Heartbeat Lease renewed again", "lease", h.namespace+"/"+h.name, "failedAttempts", h.failures)
	}
	h.written, h.failures, h.unloggedFails = report, 0, 0
	h.healthOK(health, fmt.Sprintf("Renewing Lease %s/%s every %s: %s", h.namespace, h.name, h.renew, report.Summary()))
}

// renewLease writes the Lease, refetching it after a Conflict. On success
// it records the renewal in Status.
func (h *heartbeatJob) renewLease(ctx context.Context, report heartbeat.Report) error {
	annotation, err := report.Encode()
	if err != nil {
		return err
	}
	// A renewal that lands after the lease it extends has expired is late
	// anyway; do not block the loop for longer than a lease lives.
	ctx, cancel := context.WithTimeout(ctx, h.expiry)
	defer cancel()
	for attempt := 1; ; attempt++ {
		// renewTime is taken before the request is sent, so ValidUntil is
		// never later than the expiry the operator computes.
		now := time.Now()
		l, err := h.writeLease(ctx, now, annotation)
		if err == nil {
			h.lease = l
			h.p.Status.Renewed(heartbeat.Renewal{RenewTime: now, ValidUntil: now.Add(h.expiry), Report: report})
			return nil
		}
		h.lease = nil
		retry := apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err)
		if !retry || attempt >= heartbeatWriteAttempts || ctx.Err() != nil {
			return err
		}
	}
}

// writeLease updates the Lease (fetching it when there is no cached copy)
// or creates it when it does not exist.
func (h *heartbeatJob) writeLease(ctx context.Context, now time.Time, annotation string) (*coordinationv1.Lease, error) {
	cur := h.lease
	if cur == nil {
		got, err := h.leases.Get(ctx, h.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return h.leases.Create(ctx, h.desiredLease(nil, now, annotation), metav1.CreateOptions{})
		}
		if err != nil {
			return nil, err
		}
		cur = got
	}
	return h.leases.Update(ctx, h.desiredLease(cur, now, annotation), metav1.UpdateOptions{})
}

// desiredLease is cur (nil: a new Lease) renewed at now. Labels and
// annotations others put on the Lease are kept.
func (h *heartbeatJob) desiredLease(cur *coordinationv1.Lease, now time.Time, annotation string) *coordinationv1.Lease {
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: h.name, Namespace: h.namespace}}
	if cur != nil {
		l = cur.DeepCopy()
	}
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[heartbeat.ComponentLabel] = heartbeat.ComponentValue
	// A node name may be longer than a label value can be; the label only
	// helps listing, the Lease name and holder identify the node.
	if len(validation.IsValidLabelValue(h.node)) == 0 {
		l.Labels[heartbeat.NodeLabel] = h.node
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[heartbeat.GatewaysAnnotation] = annotation
	if h.restartGrace > 0 {
		l.Annotations[heartbeat.RestartAnnotation] = strconv.FormatInt(int64(math.Ceil(h.restartGrace.Seconds())), 10)
	} else {
		// A restarted agent's first renewal says it is back.
		delete(l.Annotations, heartbeat.RestartAnnotation)
	}

	renewTime := metav1.NewMicroTime(now)
	if leaseExpired(cur, now) {
		l.Spec.AcquireTime = &renewTime
	}
	holder := h.node
	seconds := int32(math.Ceil(h.expiry.Seconds()))
	l.Spec.HolderIdentity = &holder
	l.Spec.LeaseDurationSeconds = &seconds
	l.Spec.RenewTime = &renewTime
	return l
}

// leaseExpired reports whether l (nil: none) is not a live lease at now,
// so that renewing it acquires it anew.
func leaseExpired(l *coordinationv1.Lease, now time.Time) bool {
	if l == nil || l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return true
	}
	return !now.Before(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second))
}

// renewFailed reports a failed renewal: every failure to health, at most
// one log line per heartbeatErrorLogInterval.
func (h *heartbeatJob) renewFailed(health cell.Health, err error) {
	h.failures++
	reason := apierrors.ReasonForError(err)
	if reason == metav1.StatusReasonUnknown {
		reason = "Unknown"
	}
	health.Degraded(fmt.Sprintf("Cannot renew heartbeat Lease %s/%s (%s)", h.namespace, h.name, reason), err)
	h.healthMsg = ""
	if now := time.Now(); now.Sub(h.lastErrorLog) >= heartbeatErrorLogInterval {
		h.log.Warn("Cannot renew heartbeat Lease; while the operators probes are answered nothing moves, without probing the node loses its roles once the Lease expires",
			"lease", h.namespace+"/"+h.name,
			"reason", reason,
			"error", err,
			"consecutiveFailures", h.failures,
			"failuresNotLogged", h.unloggedFails,
			"validUntil", h.p.Status.ValidUntil())
		h.lastErrorLog, h.unloggedFails = now, 0
	} else {
		h.unloggedFails++
	}
}

func (h *heartbeatJob) healthOK(health cell.Health, msg string) {
	if msg != h.healthMsg {
		health.OK(msg)
		h.healthMsg = msg
	}
}

// logReportChange logs what changed for each gateway, in the words the
// operator will use in the EgressGateway status.
func (h *heartbeatJob) logReportChange(report heartbeat.Report) {
	for _, name := range report.Candidates() {
		g := report[name]
		if old, ok := h.written[name]; ok && old == g {
			continue
		}
		if g.Ready {
			h.log.Info("Node is ready to serve EgressGateway", "gateway", name, "egressIP", g.EgressIP)
		} else {
			h.log.Info("Node cannot serve EgressGateway", "gateway", name, "reason", g.Reason, "message", g.Message)
		}
	}
	for name := range h.written {
		if _, ok := report[name]; !ok {
			h.log.Info("Node is no longer a candidate of EgressGateway", "gateway", name)
		}
	}
}

// vipStatuses are the VIP controller's rows for heartbeat.ReportFromFacts.
func vipStatuses(rows iter.Seq2[*tables.VirtualIP, statedb.Revision]) map[string]heartbeat.VIPStatus {
	out := map[string]heartbeat.VIPStatus{}
	for v := range rows {
		out[v.Gateway] = v.Status()
	}
	return out
}
