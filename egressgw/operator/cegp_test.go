package operator

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/statedb/reconciler"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"

	"github.com/egressha/egressha/egressgw/cegp"
)

// fakePatcher records patches. With server set it is an API server of
// one object: a merge patch whose metadata.resourceVersion is not the
// object's is refused with Conflict, as the real one does; otherwise the
// annotations are applied and the resourceVersion advances.
type fakePatcher struct {
	patches []string
	gets    int
	err     error
	server  *ciliumv2.CiliumEgressGatewayPolicy
}

func (f *fakePatcher) Patch(_ context.Context, name string, _ types.PatchType, data []byte, _ metav1.PatchOptions, _ ...string) (*ciliumv2.CiliumEgressGatewayPolicy, error) {
	f.patches = append(f.patches, name+" "+string(data))
	if f.err != nil {
		return nil, f.err
	}
	if f.server == nil {
		o := &ciliumv2.CiliumEgressGatewayPolicy{}
		o.Name = name
		return o, nil
	}
	var p struct {
		Metadata struct {
			ResourceVersion string            `json:"resourceVersion"`
			Annotations     map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if rv := p.Metadata.ResourceVersion; rv != "" && rv != f.server.ResourceVersion {
		return nil, apierrors.NewConflict(schema.GroupResource{Group: "cilium.io", Resource: "ciliumegressgatewaypolicies"}, name,
			errors.New("the object has been modified"))
	}
	f.bump(p.Metadata.Annotations)
	return f.server.DeepCopy(), nil
}

func (f *fakePatcher) Get(_ context.Context, name string, _ metav1.GetOptions) (*ciliumv2.CiliumEgressGatewayPolicy, error) {
	f.gets++
	if f.server == nil {
		return nil, apierrors.NewNotFound(schema.GroupResource{Group: "cilium.io", Resource: "ciliumegressgatewaypolicies"}, name)
	}
	return f.server.DeepCopy(), nil
}

// bump is a write to the server's object: annotations set, next version.
func (f *fakePatcher) bump(ann map[string]string) {
	if f.server.Annotations == nil {
		f.server.Annotations = map[string]string{}
	}
	maps.Copy(f.server.Annotations, ann)
	rv, _ := strconv.Atoi(f.server.ResourceVersion)
	f.server.ResourceVersion = strconv.Itoa(rv + 1)
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

// TestCEGPAnnotationStaleResourceVersion: a decision written against an
// object the writer no longer has the newest version of is refused by the
// API server (resourceVersion precondition) instead of overwriting what
// another writer put there; the writer reads the policy again and its
// retry compares with what is there now: it writes nothing when the
// annotation already holds its decision, and otherwise writes against the
// new resourceVersion.
func TestCEGPAnnotationStaleResourceVersion(t *testing.T) {
	ours := []cegp.EntrySelection{{Index: 0, Node: "b", InternalIP: "10.0.0.2"}}
	theirs := []cegp.EntrySelection{{Index: 0, Node: "c", InternalIP: "10.0.0.3"}}
	server := &ciliumv2.CiliumEgressGatewayPolicy{}
	server.Name, server.ResourceVersion = "pol", "10"
	server.Annotations = map[string]string{cegp.Annotation: cegp.Encode([]cegp.EntrySelection{{Index: 0, Node: "a", InternalIP: "10.0.0.1"}})}
	p := &fakePatcher{server: server}
	c := NewCEGPController(slog.New(slog.DiscardHandler), nil, nil, nil, p, nil, nil, false)
	c.objs["pol"] = server.DeepCopy() // this operator's view: resourceVersion 10
	ops := c.AnnotationOps()
	row := &CEGPRow{Policy: "pol", Entries: ours}

	// Another writer's decision lands first (resourceVersion 11).
	p.bump(map[string]string{cegp.Annotation: cegp.Encode(theirs)})
	err := ops.Update(context.Background(), nil, 0, row)
	if !apierrors.IsConflict(err) {
		t.Fatalf("write against resourceVersion 10 of an object now at 11: err %v, want a Conflict", err)
	}
	if got := server.Annotations[cegp.Annotation]; got != cegp.Encode(theirs) {
		t.Fatalf("the stale write overwrote the newer decision: %s", got)
	}
	if p.gets != 1 || c.objs["pol"].ResourceVersion != "11" {
		t.Fatalf("after the Conflict the policy must be read again: gets %d, known resourceVersion %s", p.gets, c.objs["pol"].ResourceVersion)
	}
	if got, want := p.patches[0], `"resourceVersion":"10"`; !strings.Contains(got, want) {
		t.Fatalf("patch %q carries no precondition %s", got, want)
	}

	// The retry compares with the object as it is now and writes
	// against its resourceVersion.
	if err := ops.Update(context.Background(), nil, 0, row); err != nil {
		t.Fatalf("retry after reading again: %v", err)
	}
	if got := server.Annotations[cegp.Annotation]; got != cegp.Encode(ours) || server.ResourceVersion != "12" {
		t.Fatalf("retry: annotation %s at resourceVersion %s", got, server.ResourceVersion)
	}
	if got, want := p.patches[1], `"resourceVersion":"11"`; !strings.Contains(got, want) {
		t.Fatalf("retry patch %q, want precondition %s", got, want)
	}

	// A retry that finds its decision already there writes nothing.
	c.objs["pol"] = server.DeepCopy()
	c.objs["pol"].ResourceVersion = "5"
	c.objs["pol"].Annotations = nil
	if err := ops.Update(context.Background(), nil, 0, row); !apierrors.IsConflict(err) {
		t.Fatalf("stale view: err %v, want a Conflict", err)
	}
	n := len(p.patches)
	if err := ops.Update(context.Background(), nil, 0, row); err != nil || len(p.patches) != n {
		t.Fatalf("annotation already holds the decision: err %v, %d more patches", err, len(p.patches)-n)
	}
}
