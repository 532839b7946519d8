// Package leader elects the egressha operator leader among the operator
// replicas, with its own Lease and timings short enough for a takeover in
// seconds, independent of Cilium's operator leader election (15 s lease).
//
// Every replica runs the election (ElectionCell, client-go's
// leaderelection) on the operator's outer lifecycle; its informers are warm
// whether it leads or not. Leadership is the term of office the election
// hands out: the work that only the leader may do (deciding, writing
// status) runs in Leadership.Run, once per term, with a context that ends
// with the term. Losing the lease does not stop the process: the term ends
// and the replica stands for election again.
package leader

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cilium/hive/cell"

	"github.com/cilium/cilium/pkg/metrics"
	"github.com/cilium/cilium/pkg/metrics/metric"
)

// LeadershipCell provides the Leadership and its metric. An elector
// (ElectionCell, or a test's) begins and ends its terms.
var LeadershipCell = cell.Group(
	metrics.Metric(newMetrics),
	cell.Provide(newLeadership),
)

// Metrics of the election.
type Metrics struct {
	// Leader is 1 while this replica is the egressha operator leader.
	Leader metric.Gauge
}

func newMetrics() *Metrics {
	return &Metrics{
		Leader: metric.NewGauge(metric.GaugeOpts{
			ConfigName: "egressha_operator_leader",
			Namespace:  "egressha", Name: "operator_leader",
			Help: "1 while this operator replica is the egressha leader (it alone decides and writes status)",
		}),
	}
}

// Leadership is this replica's standing: leading in a term, or not. The
// zero value is not usable; NewLeadership creates one.
type Leadership struct {
	log     *slog.Logger
	metrics *Metrics

	mu sync.Mutex
	// term is the current term; nil while not leading.
	term *term
	// changed is closed and replaced when a term begins or ends.
	changed chan struct{}
	// terms counts the terms begun.
	terms uint64
	// closed refuses new terms (the replica is stopping).
	closed bool
}

type term struct {
	n        uint64
	identity string
	ctx      context.Context
	cancel   context.CancelFunc
	// running counts the Run callbacks inside this term; End waits for
	// them.
	running sync.WaitGroup
}

func newLeadership(log *slog.Logger, m *Metrics) *Leadership { return NewLeadership(log, m) }

// NewLeadership returns a Leadership that is not leading. m may be nil.
func NewLeadership(log *slog.Logger, m *Metrics) *Leadership {
	return &Leadership{log: log, metrics: m, changed: make(chan struct{})}
}

// Begin starts a term (the elector won the lease as identity). The term
// ends when ctx ends or End is called, whichever comes first. A ctx already
// done begins nothing: the elector's callback ran after it lost again.
func (l *Leadership) Begin(ctx context.Context, identity string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ctx.Err() != nil || l.term != nil || l.closed {
		return
	}
	l.terms++
	t := &term{n: l.terms, identity: identity}
	t.ctx, t.cancel = context.WithCancel(ctx)
	l.term = t
	l.notify()
	if l.metrics != nil {
		l.metrics.Leader.Set(1)
	}
	l.log.Info("became egressha leader", "identity", identity, "term", t.n)
}

// End ends the current term, if any, and returns once every Run callback
// of the term has returned: after End, this replica acts on nothing as
// leader. The elector calls it before the lease may pass to another
// replica (lost, or released on shutdown).
func (l *Leadership) End() {
	l.mu.Lock()
	t := l.term
	if t == nil {
		l.mu.Unlock()
		return
	}
	l.term = nil
	l.notify()
	if l.metrics != nil {
		l.metrics.Leader.Set(0)
	}
	l.mu.Unlock()
	t.cancel()
	t.running.Wait()
	l.log.Info("lost egressha leadership", "identity", t.identity, "term", t.n)
}

// Close ends the current term, as End, and refuses new ones: the replica
// is stopping.
func (l *Leadership) Close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.End()
}

func (l *Leadership) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// Leading says whether this replica leads now.
func (l *Leadership) Leading() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.term != nil
}

// RetryDelay is how long Run waits before calling fn again when fn
// failed while its term was still live.
var RetryDelay = time.Second

// Run calls fn once per term, with a context that ends with the term (or
// ctx), until ctx ends. fn returns when its context ends; should it fail
// earlier, Run logs the error and calls it again in the same term (a
// fresh start, as in a new term) after RetryDelay. End waits for fn to
// return.
func (l *Leadership) Run(ctx context.Context, name string, fn func(ctx context.Context, term uint64) error) {
	var last uint64
	for {
		l.mu.Lock()
		t, changed := l.term, l.changed
		if t != nil && t.n > last {
			t.running.Add(1)
		} else {
			t = nil
		}
		l.mu.Unlock()
		if t == nil {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				continue
			}
		}
		last = t.n
		l.runTerm(ctx, name, t, fn)
	}
}

// runTerm runs fn in term t until the term or ctx ends.
func (l *Leadership) runTerm(ctx context.Context, name string, t *term, fn func(ctx context.Context, term uint64) error) {
	defer t.running.Done()
	termCtx, cancel := context.WithCancel(t.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	for {
		err := fn(termCtx, t.n)
		if termCtx.Err() != nil {
			return
		}
		l.log.Error("leader work failed; starting it again", "work", name, "term", t.n, "error", err)
		select {
		case <-termCtx.Done():
			return
		case <-time.After(RetryDelay):
		}
	}
}
