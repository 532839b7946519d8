package operator

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/cilium/statedb/reconciler"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"

	"github.com/egressha/egressha/egressgw/cegp"
)

type fakePatcher struct {
	patches []string
	err     error
}

func (f *fakePatcher) Patch(_ context.Context, name string, _ types.PatchType, data []byte, _ metav1.PatchOptions, _ ...string) (*ciliumv2.CiliumEgressGatewayPolicy, error) {
	f.patches = append(f.patches, name+" "+string(data))
	if f.err != nil {
		return nil, f.err
	}
	o := &ciliumv2.CiliumEgressGatewayPolicy{}
	o.Name = name
	return o, nil
}

// TestCEGPAnnotationOps: the annotation reconciler's Update patches only
// the annotation and only when it differs from the decision; a policy
// gone meanwhile is not an error; other errors go back to the reconciler
// (which retries) and show in the row.
func TestCEGPAnnotationOps(t *testing.T) {
	p := &fakePatcher{}
	c := NewCEGPController(slog.New(slog.DiscardHandler), nil, nil, nil, p, nil, nil, false)
	sels := []cegp.EntrySelection{{Index: 0, Node: "a", InternalIP: "10.0.0.1"}}
	want := cegp.Encode(sels)
	obj := &ciliumv2.CiliumEgressGatewayPolicy{}
	obj.Name = "pol"
	obj.Annotations = map[string]string{cegp.Annotation: want}
	c.objs["pol"] = obj
	ops := c.AnnotationOps()
	row := &CEGPRow{Policy: "pol", Entries: sels}

	if err := ops.Update(context.Background(), nil, 0, row); err != nil || len(p.patches) != 0 {
		t.Fatalf("annotation already equal: err %v, patches %q", err, p.patches)
	}
	obj2 := obj.DeepCopy()
	obj2.Annotations = nil
	c.objs["pol"] = obj2
	if err := ops.Update(context.Background(), nil, 0, row); err != nil || len(p.patches) != 1 {
		t.Fatalf("annotation missing: err %v, patches %q", err, p.patches)
	}
	if got, wantPatch := p.patches[0], `pol {"metadata":{"annotations":{"`+cegp.Annotation+`":`; got[:len(wantPatch)] != wantPatch {
		t.Fatalf("patch %q, want the annotation only", got)
	}
	if _, ok := c.objs["pol"]; !ok {
		t.Fatal("the written object replaced the known one")
	}

	c.objs["pol"] = obj2
	p.err = apierrors.NewNotFound(schema.GroupResource{Group: "cilium.io", Resource: "ciliumegressgatewaypolicies"}, "pol")
	if err := ops.Update(context.Background(), nil, 0, row); err != nil {
		t.Fatalf("a deleted policy is not an error: %v", err)
	}
	p.err = errors.New("forbidden")
	if err := ops.Update(context.Background(), nil, 0, row); err == nil {
		t.Fatal("a failed patch must be reported to the reconciler")
	}

	// The Annotation column follows the reconciler's status.
	for _, tc := range []struct {
		st   reconciler.Status
		want string
	}{
		{reconciler.StatusPending(), "pending"},
		{reconciler.StatusDone(), "written"},
		{reconciler.StatusError(errors.New("forbidden")), "error: forbidden"},
	} {
		r := row.Clone().SetStatus(tc.st)
		if got := r.TableRow()[3]; got != tc.want {
			t.Errorf("status %v: Annotation column %q, want %q", tc.st, got, tc.want)
		}
	}
}
