package reflectors

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"

	"github.com/cilium/cilium/pkg/endpoint"
	"github.com/cilium/cilium/pkg/endpointmanager"
	"github.com/cilium/cilium/pkg/k8s/resource"
	k8sTypes "github.com/cilium/cilium/pkg/k8s/types"
	nodeTypes "github.com/cilium/cilium/pkg/node/types"

	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/tables"
)

const (
	// ciliumEndpointsInitializer marks egress-endpoints initialized once
	// the CiliumEndpoint resource has delivered its initial listing.
	ciliumEndpointsInitializer = "ciliumendpoints"

	// cepBatchSize bounds the CiliumEndpoint events written in one
	// transaction.
	cepBatchSize = 1000
	// cepBatchGap is how long a batch waits for the next CiliumEndpoint
	// event before it is written. The resource hands events over one at a
	// time, so without it a listing of 100,000 CiliumEndpoints became
	// ~100,000 write transactions, each cloning the tree path it touched
	// (most of the agent's CPU and garbage at scale); with it they come in
	// batches of cepBatchSize. A lone event waits this long: CiliumEndpoints
	// are the remote pods' path (the local pods' comes from the endpoint
	// manager), which the API server already delays far more.
	cepBatchGap = time.Millisecond
	// localResyncInterval is how often the labels of every local endpoint
	// are read again, to follow relabelled pods.
	localResyncInterval = time.Second
	// localFastPoll is how often a new local endpoint is polled while its
	// labels are not known yet; after localFastPollWindow it is only read
	// at localResyncInterval (e.g. a pod whose labels cannot be fetched).
	localFastPoll       = 10 * time.Millisecond
	localFastPollWindow = 30 * time.Second
)

type endpointsParams struct {
	cell.In

	DB              *statedb.DB
	JobGroup        job.Group
	Enabled         config.Enabled
	CiliumEndpoints resource.Resource[*k8sTypes.CiliumEndpoint]
	// EndpointManager is optional so test hives can do without it.
	EndpointManager endpointmanager.EndpointManager `optional:"true"`
}

// newEndpointsTableAndSources creates egress-endpoints and registers its
// two sources as jobs. Disabled (or without Kubernetes) the table stays
// empty; egress-policy-entries then never initializes anyway.
func newEndpointsTableAndSources(p endpointsParams) (statedb.RWTable[*tables.Endpoint], error) {
	tbl, err := tables.NewEndpointsTable(p.DB)
	if err != nil {
		return nil, err
	}
	if !p.Enabled {
		return tbl, nil
	}
	if p.CiliumEndpoints == nil {
		return nil, errors.New("egressha: Cilium's CiliumEndpoint resource is not available")
	}
	w := tables.NewEndpointWriter(p.DB, tbl)
	wtxn := p.DB.WriteTxn(tbl)
	synced := tbl.RegisterInitializer(wtxn, ciliumEndpointsInitializer)
	wtxn.Commit()

	ceps := &cepSource{res: p.CiliumEndpoints, w: w, synced: synced, labels: tables.NewIdentityLabelCache()}
	p.JobGroup.Add(job.OneShot("ciliumendpoints", ceps.run))
	if p.EndpointManager != nil {
		local := newLocalEndpoints(p.EndpointManager, w)
		p.JobGroup.Add(job.OneShot("local-endpoints", local.run))
	}
	return tbl, nil
}

// cepSource writes CiliumEndpoints into egress-endpoints. It subscribes to
// the agent's shared CiliumEndpoint resource (the informer Cilium's own
// CiliumEndpoint watcher uses), so it adds no watch on the API server.
type cepSource struct {
	res    resource.Resource[*k8sTypes.CiliumEndpoint]
	w      *tables.EndpointWriter
	synced func(statedb.WriteTxn)
	// labels shares the label maps of endpoints with the same identity.
	labels *tables.IdentityLabelCache
}

func (c *cepSource) run(ctx context.Context, health cell.Health) error {
	health.OK("Waiting for the CiliumEndpoint listing")
	events := c.res.Events(ctx)
	batch := make([]resource.Event[*k8sTypes.CiliumEndpoint], 0, cepBatchSize)
	gap := time.NewTimer(cepBatchGap)
	defer gap.Stop()
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			batch = append(batch, ev)
		}
		// Gather what follows closely (a Sync ends the batch: it marks
		// the table initialized, which should not wait).
		closed := false
	gather:
		for len(batch) < cepBatchSize && batch[len(batch)-1].Kind != resource.Sync {
			gap.Reset(cepBatchGap)
			select {
			case ev, ok := <-events:
				if !ok {
					closed = true
					break gather
				}
				batch = append(batch, ev)
			case <-gap.C:
				break gather
			case <-ctx.Done():
				break gather
			}
		}
		gotSync := false
		c.w.Update(func(t *tables.EndpointTxn) {
			for _, ev := range batch {
				switch ev.Kind {
				case resource.Sync:
					c.synced(t.WriteTxn())
					gotSync = true
				case resource.Upsert:
					t.Set(tables.CiliumEndpointSource(ev.Key.Namespace, ev.Key.Name),
						tables.EndpointsFromCiliumEndpoint(ev.Object, c.labels)...)
				case resource.Delete:
					t.Set(tables.CiliumEndpointSource(ev.Key.Namespace, ev.Key.Name))
				}
			}
		})
		for _, ev := range batch {
			ev.Done(nil)
		}
		if gotSync {
			health.OK("Synced")
		}
		if closed {
			return nil
		}
	}
}

// localEndpoints writes the endpoints of this node into egress-endpoints
// from Cilium's endpoint manager.
//
// The endpoint manager calls EndpointCreated when the CNI ADD inserts the
// endpoint, before its labels are fetched and its identity allocated, so
// the endpoint is polled every localFastPoll until its identity labels are
// known and written then; the CNI ADD returns only after the endpoint's
// first regeneration, which comes after that, so the pod is normally
// covered before it can send. Every localResyncInterval all local
// endpoints are read again to follow relabelled pods. The callbacks only
// record the endpoint and wake the job: they run under the endpoint
// manager's lock.
type localEndpoints struct {
	em endpointmanager.EndpointManager
	w  *tables.EndpointWriter

	mu      sync.Mutex
	tracked map[*endpoint.Endpoint]time.Time // endpoint -> when first seen
	removed []*endpoint.Endpoint
	wake    chan struct{}

	// Owned by run.
	known map[*endpoint.Endpoint]localState
	seq   uint64
}

// localState is what was written for one local endpoint.
type localState struct {
	source string
	row    *tables.Endpoint // nil: nothing written
}

func newLocalEndpoints(em endpointmanager.EndpointManager, w *tables.EndpointWriter) *localEndpoints {
	return &localEndpoints{
		em:      em,
		w:       w,
		tracked: map[*endpoint.Endpoint]time.Time{},
		wake:    make(chan struct{}, 1),
		known:   map[*endpoint.Endpoint]localState{},
	}
}

// EndpointCreated implements endpointmanager.Subscriber.
func (l *localEndpoints) EndpointCreated(ep *endpoint.Endpoint) { l.track(ep) }

// EndpointRestored implements endpointmanager.Subscriber.
func (l *localEndpoints) EndpointRestored(ep *endpoint.Endpoint) { l.track(ep) }

// EndpointDeleted implements endpointmanager.Subscriber.
func (l *localEndpoints) EndpointDeleted(ep *endpoint.Endpoint, _ endpoint.DeleteConfig) {
	l.mu.Lock()
	delete(l.tracked, ep)
	l.removed = append(l.removed, ep)
	l.mu.Unlock()
	l.poke()
}

func (l *localEndpoints) track(ep *endpoint.Endpoint) {
	l.mu.Lock()
	if _, ok := l.tracked[ep]; !ok {
		l.tracked[ep] = time.Now()
	}
	l.mu.Unlock()
	l.poke()
}

func (l *localEndpoints) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *localEndpoints) run(ctx context.Context, health cell.Health) error {
	// Subscribe before listing so no endpoint falls in between; one seen
	// twice is harmless, one deleted in between is dropped by the
	// liveness check in sync.
	l.em.Subscribe(l)
	defer l.em.Unsubscribe(l)
	for _, ep := range l.em.GetEndpoints() {
		l.track(ep)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	reported := -1
	var lastFull time.Time
	for {
		now := time.Now()
		full := now.Sub(lastFull) >= localResyncInterval
		if full {
			lastFull = now
		}
		next := localResyncInterval - now.Sub(lastFull)
		if l.sync(now, full) {
			next = min(next, localFastPoll)
		}
		if n := l.rows(); n != reported {
			health.OK(fmt.Sprintf("%d local pod endpoints with identity labels", n))
			reported = n
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return nil
		case <-l.wake:
		case <-timer.C:
		}
	}
}

// rows counts the local endpoints that have a row.
func (l *localEndpoints) rows() int {
	n := 0
	for _, st := range l.known {
		if st.row != nil {
			n++
		}
	}
	return n
}

// sync processes deletions, reads the tracked endpoints that have no row
// yet (all of them if full) and writes what changed. It reports whether a
// young endpoint is still waiting for its labels.
func (l *localEndpoints) sync(now time.Time, full bool) (waiting bool) {
	l.mu.Lock()
	removed := l.removed
	l.removed = nil
	tracked := maps.Clone(l.tracked)
	l.mu.Unlock()

	type change struct {
		source string
		row    *tables.Endpoint
	}
	var changes []change
	forget := func(ep *endpoint.Endpoint) {
		if st, ok := l.known[ep]; ok {
			if st.row != nil {
				changes = append(changes, change{source: st.source})
			}
			delete(l.known, ep)
		}
	}
	// Deletions first: a deleted endpoint's IP may already belong to a new
	// one (each endpoint has its own source key, so they never collide).
	for _, ep := range removed {
		forget(ep)
	}
	node := nodeTypes.GetName()
	for ep, since := range tracked {
		st, seen := l.known[ep]
		if seen && st.row != nil && !full {
			continue
		}
		// Host, health and IPv6-only endpoints never get a row (their
		// pod name and addresses are fixed at creation); nor do endpoints
		// being deleted.
		candidate := ep.GetK8sNamespace() != "" && ep.GetK8sPodName() != "" && ep.GetIPv4Address() != ""
		if state := ep.GetState(); !candidate || state == endpoint.StateDisconnecting || state == endpoint.StateDisconnected {
			l.mu.Lock()
			delete(l.tracked, ep)
			l.mu.Unlock()
			forget(ep)
			continue
		}
		row, ok := localEndpointRow(ep, node)
		if !seen {
			l.seq++
			st.source = tables.LocalEndpointSource(ep.GetID16(), l.seq)
		}
		if !ok {
			if st.row != nil {
				changes = append(changes, change{source: st.source})
			}
			st.row = nil
			l.known[ep] = st
			if now.Sub(since) < localFastPollWindow {
				waiting = true
			}
			continue
		}
		if st.row == nil || !st.row.Equal(row) {
			changes = append(changes, change{source: st.source, row: row})
			st.row = row
		}
		l.known[ep] = st
	}
	if len(changes) > 0 {
		l.w.Update(func(t *tables.EndpointTxn) {
			for _, c := range changes {
				if c.row == nil {
					t.Set(c.source)
				} else {
					t.Set(c.source, c.row)
				}
			}
		})
	}
	return waiting
}

// localEndpointRow is the row of a local endpoint (see
// tables.NewLocalEndpoint for which endpoints have none).
func localEndpointRow(ep *endpoint.Endpoint, node string) (*tables.Endpoint, bool) {
	row, ok := tables.NewLocalEndpoint(ep.GetIPv4Address(), ep.GetK8sNamespace(), ep.GetK8sPodName(), node, ep.GetOpLabels())
	if ok {
		row.UID = string(ep.GetCiliumEndpointUID())
	}
	return row, ok
}
