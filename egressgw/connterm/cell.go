package connterm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/cilium/cilium/pkg/ipcache"
	"github.com/cilium/cilium/pkg/metrics"

	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/egresspolicy"
	"github.com/egressha/egressha/egressgw/tables"
)

// Cell runs the connection termination on this node: it follows
// egress-policy-entries (and egress-endpoints for which pods are local,
// egress-local-gateways for this node's own basic-mode addresses) and
// destroys the TCP sockets of local pods whose egress source changed.
var Cell = cell.Module(
	"egress-gateway-ha-connterm",
	"Terminates pod connections whose egress source address changed",

	cell.Config(DefaultConfig),
	metrics.Metric(newMetrics),
	cell.Invoke(register),
)

type params struct {
	cell.In

	Log           *slog.Logger
	DB            *statedb.DB
	JobGroup      job.Group
	Enabled       config.Enabled
	Config        Config
	Metrics       *Metrics
	Entries       statedb.Table[*tables.SourceEntries]
	Endpoints     statedb.Table[*tables.Endpoint]
	LocalGateways statedb.Table[*tables.LocalGateway]
	// IPCache tells cluster destinations apart; optional so test hives
	// can do without it (then every destination is outside).
	IPCache *ipcache.IPCache `optional:"true"`
}

func register(p params) {
	if !bool(p.Enabled) || !p.Config.EgressGatewayHATerminateConnections {
		return
	}
	t := &Terminator{Log: p.Log, NetnsDir: p.Config.EgressGatewayHANetnsDir}
	if p.IPCache != nil {
		ipc := p.IPCache
		t.ClusterDestination = func(a netip.Addr) bool {
			id, ok := ipc.LookupSecIDByIP(a)
			return ok && id.ID.IsCluster()
		}
	}
	j := newJob(p, t.Terminate)
	p.JobGroup.Add(job.OneShot("connection-termination", j.run))
}

// maxHold is how long decided terminations wait for the map reconciler to
// program the new entries: the pods' reconnects must meet the new
// gateway, not the old one, but a row that never becomes Done (no
// reconciler, a stuck map) must not keep dead connections forever.
const maxHold = time.Second

type ctJob struct {
	params
	terminate func([]Termination) (Result, error)
	tracker   *Tracker
	// local are the IPs of this node's pods (egress-endpoints rows of
	// origin local): only their sockets are on this node, and only they
	// are remembered, so memory follows the node's pods, not the cluster's.
	local map[netip.Addr]bool
	// pending are the terminations decided and not yet done, per pod IP,
	// with when the first was decided.
	pending map[netip.Addr][]Termination
	since   map[netip.Addr]time.Time
	now     func() time.Time
}

func newJob(p params, terminate func([]Termination) (Result, error)) *ctJob {
	return &ctJob{
		params: p, terminate: terminate, tracker: NewTracker(),
		local: map[netip.Addr]bool{}, pending: map[netip.Addr][]Termination{}, since: map[netip.Addr]time.Time{},
		now: time.Now,
	}
}

func (j *ctJob) run(ctx context.Context, health cell.Health) error {
	err := j.loop(ctx, health)
	if !errors.Is(err, ErrUnsupported) {
		return err
	}
	j.Log.Warn("egressha: cannot terminate the connections of pods whose egress source changed; "+
		"they hang until the server resets them or tcp_retries2 expires. Terminating is off until the agent restarts",
		"error", err)
	health.Degraded("Connection termination unsupported by the kernel", err)
	// The change iterators are gone with loop (their finalizer closes
	// them), so the tables keep no deleted rows for this job.
	<-ctx.Done()
	return nil
}

// loop follows the tables and terminates until ctx ends or the kernel
// turns out not to support it (ErrUnsupported).
func (j *ctJob) loop(ctx context.Context, health cell.Health) error {
	wtxn := j.DB.WriteTxn(j.Entries, j.Endpoints)
	entries, err := j.Entries.Changes(wtxn)
	if err != nil {
		wtxn.Abort()
		return err
	}
	endpoints, err := j.Endpoints.Changes(wtxn)
	if err != nil {
		wtxn.Abort()
		return err
	}
	wtxn.Commit()
	health.OK("Watching egress-policy-entries")
	for {
		rtxn := j.DB.ReadTxn()
		watches := j.step(rtxn, entries, endpoints)
		var timer <-chan time.Time
		ready := j.due()
		if len(ready) > 0 {
			if err := j.execute(ready); errors.Is(err, ErrUnsupported) {
				return err
			}
			health.OK("Watching egress-policy-entries")
		}
		if d, ok := j.nextDue(); ok {
			timer = time.After(d)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-watches[0]:
		case <-watches[1]:
		case <-timer:
		}
	}
}

// step takes the changes of one read transaction: which pods are local,
// then the decisions for the entries that changed. Decided terminations
// wait in pending until the row is reconciled (see due).
func (j *ctJob) step(rtxn statedb.ReadTxn, entries statedb.ChangeIterator[*tables.SourceEntries],
	endpoints statedb.ChangeIterator[*tables.Endpoint]) [2]<-chan struct{} {
	localEgress := map[netip.Addr]bool{}
	for g := range j.LocalGateways.All(rtxn) {
		if a, err := netip.ParseAddr(g.LocalEgressIP()); err == nil {
			localEgress[a] = true
		}
	}
	epChanges, epWatch := endpoints.Next(rtxn)
	for c := range epChanges {
		ip := c.Object.IP
		isLocal := !c.Deleted && c.Object.Origin == tables.OriginLocal
		switch {
		case isLocal && !j.local[ip]:
			j.local[ip] = true
			// Start from the pod's row as it is: nothing of it changed
			// while this node watched.
			if row, _, ok := j.Entries.Get(rtxn, tables.SourceEntriesByIP(ip)); ok {
				j.tracker.Update(ip, row.Targets, localEgress)
			}
		case !isLocal && j.local[ip]:
			delete(j.local, ip)
			j.tracker.Forget(ip)
			delete(j.pending, ip)
			delete(j.since, ip)
		}
	}
	changes, entriesWatch := entries.Next(rtxn)
	for c := range changes {
		ip := c.Object.Source
		if !j.local[ip] {
			continue
		}
		var targets []egresspolicy.Target
		if !c.Deleted {
			targets = c.Object.Targets
		}
		if ts := j.tracker.Update(ip, targets, localEgress); len(ts) > 0 {
			if _, ok := j.since[ip]; !ok {
				j.since[ip] = j.now()
			}
			j.pending[ip] = merge(j.pending[ip], ts)
			if len(j.pending[ip]) == 0 {
				delete(j.pending, ip)
				delete(j.since, ip)
			}
		}
		if len(j.pending[ip]) > 0 && (c.Deleted || reconciled(c.Object)) {
			j.since[ip] = time.Time{} // due now
		}
	}
	return [2]<-chan struct{}{epWatch, entriesWatch}
}

// merge adds the terminations ts to the pending ones of the same pod. A
// destination that moves again before the first move was programmed keeps
// its first source (the one its connections have); one that moved back to
// it has nothing left to terminate.
func merge(pending, ts []Termination) []Termination {
	for _, t := range ts {
		i := slices.IndexFunc(pending, func(p Termination) bool { return p.Dest == t.Dest })
		if i < 0 {
			pending = append(pending, t)
			continue
		}
		t.From = pending[i].From
		if t.From.Same(t.To) {
			pending = slices.Delete(pending, i, i+1)
		} else {
			pending[i] = t
		}
	}
	return pending
}

// reconciled reports whether the row's entries are in the BPF map (or
// failed to be: waiting longer would not help).
func reconciled(e *tables.SourceEntries) bool {
	return e.Status.Kind == reconciler.StatusKindDone || e.Status.Kind == reconciler.StatusKindError
}

// due takes the pending terminations that are due: their row is
// reconciled, or they waited maxHold.
func (j *ctJob) due() []Termination {
	var out []Termination
	now := j.now()
	for ip, ts := range j.pending {
		if s := j.since[ip]; s.IsZero() || now.Sub(s) >= maxHold {
			out = append(out, ts...)
			delete(j.pending, ip)
			delete(j.since, ip)
		}
	}
	slices.SortFunc(out, func(a, b Termination) int {
		return cmp.Or(a.Source.Compare(b.Source), a.Dest.Addr().Compare(b.Dest.Addr()), a.Dest.Bits()-b.Dest.Bits())
	})
	return out
}

// nextDue is how long until the oldest pending termination is due.
func (j *ctJob) nextDue() (time.Duration, bool) {
	var first time.Time
	for _, s := range j.since {
		if s.IsZero() {
			return 0, true
		}
		if first.IsZero() || s.Before(first) {
			first = s
		}
	}
	if first.IsZero() {
		return 0, false
	}
	return max(0, maxHold-j.now().Sub(first)), true
}

// execute runs one pass for terms and logs and counts what it did, one
// line per decision (pods with the same destination and change share it).
func (j *ctJob) execute(terms []Termination) error {
	start := j.now()
	res, err := j.terminate(terms)
	total := 0
	for _, n := range res.Destroyed {
		total += n
	}
	j.Metrics.Terminated.Add(float64(total))
	for reason, n := range res.Failed {
		j.Metrics.Failures.WithLabelValues(reason).Add(float64(n))
	}
	for _, g := range group(terms, res.Destroyed) {
		j.Log.Info(fmt.Sprintf("egressha: terminated %d TCP connections of pod IP %s to %s: %s",
			g.n, g.sources, g.dest, g.reason), "namespaces", res.Namespaces, "duration", j.now().Sub(start))
	}
	if len(res.Failed) > 0 {
		j.Log.Warn("egressha: some pod connections could not be terminated", "failures", res.Failed)
	}
	return err
}

type decisionGroup struct {
	dest, reason, sources string
	n                     int
}

// group merges the terminations that share destination, exceptions and
// change, listing their pod IPs (at most 10, then how many more).
func group(terms []Termination, destroyed []int) []decisionGroup {
	type key struct{ dest, reason string }
	idx := map[key]int{}
	var out []decisionGroup
	var ips [][]string
	for i, t := range terms {
		dest := t.Dest.String()
		if len(t.Except) > 0 {
			ex := make([]string, len(t.Except))
			for k, e := range t.Except {
				ex[k] = e.String()
			}
			dest += " (except " + strings.Join(ex, ",") + ")"
		}
		k := key{dest, t.Reason()}
		n, ok := idx[k]
		if !ok {
			n = len(out)
			idx[k] = n
			out = append(out, decisionGroup{dest: dest, reason: k.reason})
			ips = append(ips, nil)
		}
		out[n].n += destroyed[i]
		ips[n] = append(ips[n], t.Source.String())
	}
	for n := range out {
		list := slices.Compact(ips[n])
		if len(list) > 10 {
			list = append(list[:10:10], fmt.Sprintf("and %d more", len(list)-10))
		}
		out[n].sources = strings.Join(list, ",")
	}
	return out
}
