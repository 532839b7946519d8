package reflectors

import (
	"context"
	"maps"
	"sync"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"

	"github.com/cilium/cilium/pkg/node"

	"github.com/egressha/egressha/egressgw/config"
)

// LocalNodeLabels are this node's labels as Cilium's LocalNodeStore last
// emitted them: the one place the agent's cells read them from (the
// heartbeat, the VIP controller, rp_filter and the CEGP nodeSelector of
// local endpoints).
type LocalNodeLabels struct {
	mu      sync.Mutex
	labels  map[string]string
	seen    bool
	changed chan struct{} // closed and replaced on every change
}

// Get returns the labels (never to be modified), whether the store has
// emitted them yet, and a channel closed when they change.
func (l *LocalNodeLabels) Get() (labels map[string]string, seen bool, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.labels, l.seen, l.changed
}

// set records the labels. The store calls it while holding its lock, so
// it never blocks.
func (l *LocalNodeLabels) set(labels map[string]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen && maps.Equal(l.labels, labels) {
		return
	}
	l.labels, l.seen = maps.Clone(labels), true
	close(l.changed)
	l.changed = make(chan struct{})
}

type localNodeLabelsParams struct {
	cell.In

	JobGroup job.Group
	Enabled  config.Enabled
	// LocalNode is optional so test hives can do without it: then the
	// node has no labels, and they count as seen.
	LocalNode *node.LocalNodeStore `optional:"true"`
}

func newLocalNodeLabels(p localNodeLabelsParams) *LocalNodeLabels {
	l := &LocalNodeLabels{changed: make(chan struct{})}
	switch {
	case p.LocalNode == nil:
		l.set(nil)
	case bool(p.Enabled):
		p.JobGroup.Add(job.OneShot("local-node-labels", func(ctx context.Context, health cell.Health) error {
			p.LocalNode.Observe(ctx, func(n node.LocalNode) { l.set(n.Labels) }, func(error) {})
			health.OK("Following the local node's labels")
			<-ctx.Done()
			return nil
		}))
	}
	return l
}

// NewStaticLocalNodeLabels returns labels already seen that never change,
// for callers without a LocalNodeStore (tests).
func NewStaticLocalNodeLabels(labels map[string]string) *LocalNodeLabels {
	l := &LocalNodeLabels{changed: make(chan struct{})}
	l.set(labels)
	return l
}
