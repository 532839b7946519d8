package operator

import (
	"context"
	"errors"
	"iter"
	"sync/atomic"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
)

// errNotLeading is what the status writers return while this replica does
// not lead: nothing is written. The rows are deleted when a term ends, and
// the next term publishes its own.
var errNotLeading = errors.New("not the egressha operator leader: nothing written")

// termWriter is one term's writer for a status reconciler: the term's
// controller's operations, and the term's context.
type termWriter[Obj any] struct {
	ctx context.Context
	ops reconciler.Operations[Obj]
}

// leaderOps are the operations of a status reconciler, which lives as long
// as the process, delegated to the writer of the current term (cur): they
// write nothing while no term is running or once its context ended, and a
// write in flight is cancelled when its term ends.
type leaderOps[Obj any] struct {
	cur *atomic.Pointer[termWriter[Obj]]
}

func (o leaderOps[Obj]) Update(ctx context.Context, txn statedb.ReadTxn, rev statedb.Revision, row Obj) error {
	t := o.cur.Load()
	if t == nil || t.ctx.Err() != nil {
		return errNotLeading
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(t.ctx, cancel)()
	err := t.ops.Update(ctx, txn, rev, row)
	if err != nil && t.ctx.Err() != nil {
		return errNotLeading
	}
	return err
}

func (leaderOps[Obj]) Delete(context.Context, statedb.ReadTxn, statedb.Revision, Obj) error {
	return nil
}

func (leaderOps[Obj]) Prune(context.Context, statedb.ReadTxn, iter.Seq2[Obj, statedb.Revision]) error {
	return nil
}

// deleteAll deletes every row of tbl.
func deleteAll[Obj any](txn statedb.WriteTxn, tbl statedb.RWTable[Obj]) {
	if err := tbl.DeleteAll(txn); err != nil {
		panic(err) // only if tbl is not locked by txn: a programming error
	}
}
