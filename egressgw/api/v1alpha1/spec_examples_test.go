package v1alpha1_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/internal/specexamples"
)

// TestSpecExamplesDecodeWithoutLoss decodes every EgressGateway and
// EgressGatewayPolicy example of the user documentation into our types,
// refusing unknown fields, and checks that encoding the typed object gives
// back exactly the fields and values of the example.
func TestSpecExamplesDecodeWithoutLoss(t *testing.T) {
	dir, examples := specexamples.MustLoad(t)
	kinds := map[string]int{}
	for _, ex := range examples {
		t.Run(ex.String(), func(t *testing.T) {
			var obj runtime.Object
			switch ex.Kind {
			case "EgressGateway":
				obj = &v1alpha1.EgressGateway{}
			case "EgressGatewayPolicy":
				obj = &v1alpha1.EgressGatewayPolicy{}
			default:
				t.Fatalf("unexpected kind %q in %s", ex.Kind, ex)
			}
			kinds[ex.Kind]++
			orig, err := yaml.YAMLToJSON([]byte(ex.YAML))
			if err != nil {
				t.Fatalf("not YAML: %v\n%s", err, ex.YAML)
			}
			dec := json.NewDecoder(bytes.NewReader(orig))
			dec.DisallowUnknownFields()
			if err := dec.Decode(obj); err != nil {
				t.Fatalf("does not decode into %T: %v\n%s", obj, err, ex.YAML)
			}
			back, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			var want, got map[string]any
			if err := json.Unmarshal(orig, &want); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(back, &got); err != nil {
				t.Fatal(err)
			}
			dropEncodingArtefacts(got)
			if !reflect.DeepEqual(want, got) {
				t.Fatalf("round trip through %T changed the object\nexample: %s\ntyped:   %s", obj, orig, back)
			}
		})
	}
	// The documents hold basic-mode and VIP-mode gateways and a policy; if
	// extraction ever finds none of a kind, the test above proved nothing.
	if kinds["EgressGateway"] < 2 || kinds["EgressGatewayPolicy"] < 1 {
		t.Fatalf("too few examples extracted from %s: %v", dir, kinds)
	}
}

// dropEncodingArtefacts removes what encoding a typed object adds to any
// example: a null creationTimestamp and an empty status.
func dropEncodingArtefacts(obj map[string]any) {
	if md, ok := obj["metadata"].(map[string]any); ok && md["creationTimestamp"] == nil {
		delete(md, "creationTimestamp")
	}
	if st, ok := obj["status"].(map[string]any); ok && len(st) == 0 {
		delete(obj, "status")
	}
}
