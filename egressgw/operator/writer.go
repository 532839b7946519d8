package operator

import (
	"context"
	"iter"
	"log/slog"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	corev1 "k8s.io/api/core/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	k8sClient "github.com/cilium/cilium/pkg/k8s/client"

	"github.com/egressha/egressha/egressgw/client"
)

// writeOps are the operations of the operator's writers to the API server,
// each a statedb reconciler over one of its tables (EgressGateway status,
// EgressGatewayPolicy status, the CEGP annotation). Update writes one
// row's object with write, which compares first and writes only what
// differs; a row is deleted together with its object, and an object
// without a row is not the operator's to change, so Delete and Prune do
// nothing.
type writeOps[Obj any] struct {
	log   *slog.Logger
	what  string // what is written, for the log
	name  func(Obj) string
	write func(ctx context.Context, row Obj) error
}

func (o writeOps[Obj]) Update(ctx context.Context, _ statedb.ReadTxn, _ statedb.Revision, row Obj) error {
	err := o.write(ctx, row)
	if err != nil && ctx.Err() == nil {
		o.log.Warn(o.what+" write failed; retrying", "object", o.name(row), "error", err)
	}
	return err
}

func (writeOps[Obj]) Delete(context.Context, statedb.ReadTxn, statedb.Revision, Obj) error {
	return nil
}

func (writeOps[Obj]) Prune(context.Context, statedb.ReadTxn, iter.Seq2[Obj, statedb.Revision]) error {
	return nil
}

// registerStatusReconciler registers a statedb reconciler that writes the
// rows of tbl to the API with ops: incremental only (no pruning: objects
// without a row are not ours to change), no refresh on a timer (the
// controllers mark a row pending on every event of its object), retries
// from 50 ms doubling to 10 s. The operator's three writers (gateway
// status, policy status, CEGP annotation) use it.
func registerStatusReconciler[Obj comparable](p reconciler.Params, tbl statedb.RWTable[Obj],
	clone func(Obj) Obj, setStatus func(Obj, reconciler.Status) Obj, getStatus func(Obj) reconciler.Status,
	ops reconciler.Operations[Obj]) error {
	_, err := reconciler.Register(p, tbl, clone, setStatus, getStatus, ops, nil,
		reconciler.WithoutPruning(),
		reconciler.WithRefreshing(0, nil),
		reconciler.WithRetry(50*time.Millisecond, 10*time.Second),
	)
	return err
}

// eventSpamQPS is the rate at which client-go's spam filter lets Events of
// one object (and type) through once its burst of 25 is used up; its
// default, one per 5 minutes, would silently drop the Events of a real
// failover after a flap. The controllers bound their own Events below it
// (changeEvents: at most six a minute per EgressGateway).
const eventSpamQPS = 1. / 5

// withEventRecorder runs run with a recorder of the operator's Events,
// sent to the API server until run returns.
func withEventRecorder(ctx context.Context, cs k8sClient.Clientset, run func(record.EventRecorder) error) error {
	broadcaster := record.NewBroadcaster(record.WithContext(ctx),
		record.WithCorrelatorOptions(record.CorrelatorOptions{QPS: eventSpamQPS}))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	return run(broadcaster.NewRecorder(client.Scheme, corev1.EventSource{Component: "egressha-operator"}))
}
