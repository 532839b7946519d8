package tables

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"

	"github.com/egressha/egressha/egressgw/cegp"
)

func cegpObj(uid, rv string, ann *string) *ciliumv2.CiliumEgressGatewayPolicy {
	o := &ciliumv2.CiliumEgressGatewayPolicy{}
	o.Name, o.UID, o.ResourceVersion = "pol", types.UID(uid), rv
	o.Spec.EgressGateway = &ciliumv2.EgressGateway{}
	if ann != nil {
		o.Annotations = map[string]string{cegp.Annotation: *ann}
	}
	return o
}

// TestKeepDecision: a missing or malformed annotation keeps the decision
// of the same policy's previous row, and says so; a valid annotation, a
// new policy of the same name (another UID) or no previous decision keep
// nothing.
func TestKeepDecision(t *testing.T) {
	good := cegp.Encode([]cegp.EntrySelection{{Index: 0, Node: "a", InternalIP: "10.0.0.1"}})
	other := cegp.Encode([]cegp.EntrySelection{{Index: 0, Node: "b", InternalIP: "10.0.0.2"}})
	bad := `[{"index":`
	withGood := NewCEGP(cegpObj("u1", "7", &good))
	for _, tc := range []struct {
		name     string
		old, cur *CEGP
		wantNode string // serving node of entry 0 in the result; "" = no decision
		wantKept string
		logged   bool
	}{
		{"first row", nil, NewCEGP(cegpObj("u1", "7", &good)), "a", "", false},
		{"annotation missing", withGood, NewCEGP(cegpObj("u1", "8", nil)), "a",
			"annotation missing: keeping the decision of resourceVersion 7", true},
		{"annotation malformed", withGood, NewCEGP(cegpObj("u1", "8", &bad)), "a",
			"annotation malformed: keeping the decision of resourceVersion 7", true},
		{"still missing: kept again, not logged again", func() *CEGP {
			r, _ := KeepDecision(withGood, NewCEGP(cegpObj("u1", "8", nil)))
			return r
		}(), NewCEGP(cegpObj("u1", "9", nil)), "a", "annotation missing: keeping the decision of resourceVersion 7", false},
		{"new decision replaces", withGood, NewCEGP(cegpObj("u1", "8", &other)), "b", "", false},
		{"another policy of the same name", withGood, NewCEGP(cegpObj("u2", "8", nil)), "", "", false},
		{"no earlier decision", NewCEGP(cegpObj("u1", "6", nil)), NewCEGP(cegpObj("u1", "8", nil)), "", "", false},
	} {
		got, logged := KeepDecision(tc.old, tc.cur)
		node := ""
		if got.Selection != nil {
			node = got.Selection[0].Node
		}
		if node != tc.wantNode || got.Kept != tc.wantKept || logged != tc.logged {
			t.Errorf("%s: node %q kept %q logged %v, want %q %q %v", tc.name, node, got.Kept, logged, tc.wantNode, tc.wantKept, tc.logged)
		}
		if got.Object != tc.cur.Object {
			t.Errorf("%s: the row must be of the current object", tc.name)
		}
	}
	// A malformed annotation is reported in Error, kept or not.
	if r, _ := KeepDecision(withGood, NewCEGP(cegpObj("u1", "8", &bad))); r.Error == "" {
		t.Error("malformed annotation: no Error")
	}
}
