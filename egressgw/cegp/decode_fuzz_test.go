package cegp_test

import (
	"strings"
	"testing"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"

	"github.com/egressha/egressha/egressgw/cegp"
	"github.com/egressha/egressha/egressgw/tables"
)

// FuzzDecode: the decision annotation as any writer (or none) may leave
// it. Decode never panics; what it accepts is a decision (never nil) that
// survives Encode/Decode unchanged and that Values and String can use;
// what it refuses is an error naming the annotation, with no decision.
// And on an agent (tables.NewCEGP, tables.KeepDecision) a refused
// annotation never replaces the policy's last good decision, while an
// accepted one does.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`[]`,
		`[{"index":0,"node":"egress-2","internalIP":"192.168.0.22"},{"index":1,"node":"egress-1","internalIP":"192.168.0.21"}]`,
		`[{"index":0,"node":"egress-2","internalIP":"192.168.0.22"},{"index":1,"reason":"NoEligibleNode","skipped":[{"node":"egress-1","reasons":["HeartbeatExpired"]}]}]`,
		`[{"index":0,"reason":"NoMatchingNode"}]`,
		`[{"index":0,"node":"b","internalIP":"10.0.0.2","skipped":[{"node":"a","reasons":["NodeNotReady","NoInternalIPv4"]}],"future":true}]`,
		``, `null`, `{}`, `[null]`, `[{"index":-1}]`, `[{"index":0},{"index":0}]`, `[{"index":0,"node":"a"}]`,
		`[{"index":0,"node":"a","internalIP":"fe80::1%eth0"}]`, `[{"index":1e3}]`, `[{"index":0,"skipped":[{}]}]`,
		`[{"index":0,"node":"a","internalIP":"10.0.0.1"`, "[{\"index\":0,\"node\":\"\xff\",\"internalIP\":\"10.0.0.1\"}]",
		`[{"INDEX":0,"Node":"a","internalip":"10.0.0.1"}]`,
	} {
		f.Add(s)
	}
	good := []cegp.EntrySelection{{Index: 0, Node: "good", InternalIP: "10.9.9.9"}}
	obj := func(ann string) *ciliumv2.CiliumEgressGatewayPolicy {
		o := &ciliumv2.CiliumEgressGatewayPolicy{}
		o.Name, o.UID, o.ResourceVersion = "pol", "uid-1", "2"
		o.Annotations = map[string]string{cegp.Annotation: ann}
		return o
	}
	last := tables.NewCEGP(obj(cegp.Encode(good)))
	f.Fuzz(func(t *testing.T, s string) {
		sels, err := cegp.Decode(s)
		if err != nil {
			if sels != nil {
				t.Fatalf("refused %q (%v) but returned a decision %v", s, err, sels)
			}
			if !strings.HasPrefix(err.Error(), "annotation "+cegp.Annotation+": ") {
				t.Fatalf("error %q does not name the annotation", err)
			}
		} else {
			if sels == nil {
				t.Fatalf("accepted %q as no decision at all", s)
			}
			again, err := cegp.Decode(cegp.Encode(sels))
			if err != nil || !cegp.SelectionsEqual(sels, again) {
				t.Fatalf("round trip of %q: %v -> %s -> %v, %v", s, sels, cegp.Encode(sels), again, err)
			}
			for _, e := range sels {
				_ = e.String()
			}
			if vals, _ := cegp.Values(sels, nil, "", nil); len(vals) > len(sels) {
				t.Fatalf("%d values of %d entries", len(vals), len(sels))
			}
		}

		row, _ := tables.KeepDecision(last, tables.NewCEGP(obj(s)))
		switch {
		case err != nil && (!cegp.SelectionsEqual(row.Selection, good) || row.Kept == "" || !strings.Contains(row.Error, err.Error())):
			t.Fatalf("refused %q replaced the last good decision: selection %v kept %q error %q", s, row.Selection, row.Kept, row.Error)
		case err == nil && (!cegp.SelectionsEqual(row.Selection, sels) || row.Kept != ""):
			t.Fatalf("accepted %q did not replace the decision: selection %v kept %q", s, row.Selection, row.Kept)
		}
	})
}
