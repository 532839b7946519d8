package crds_test

import (
	"testing"

	"github.com/egressha/egressha/crds"
)

// TestSchemaVersionBumped fails when the generated CRDs change without a
// new SchemaVersion: clusters would otherwise keep the old schema, because
// the operator updates a CRD only when our version is newer.
func TestSchemaVersionBumped(t *testing.T) {
	got, err := crds.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got != crds.SchemaDigest {
		t.Fatalf("the generated CRDs changed: raise crds.SchemaVersion (now %s) and set crds.SchemaDigest = %q",
			crds.SchemaVersion, got)
	}
}

func TestAllLabelsEveryCRD(t *testing.T) {
	all, err := crds.All()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, crd := range all {
		names[crd.Name] = true
		if crd.Labels[crds.SchemaVersionLabel] != crds.SchemaVersion {
			t.Errorf("%s: label %s=%q, want %q", crd.Name, crds.SchemaVersionLabel, crd.Labels[crds.SchemaVersionLabel], crds.SchemaVersion)
		}
		if crd.Spec.Scope != "Cluster" {
			t.Errorf("%s: scope %s, want Cluster", crd.Name, crd.Spec.Scope)
		}
		if v := crd.Spec.Versions; len(v) != 1 || v[0].Subresources == nil || v[0].Subresources.Status == nil {
			t.Errorf("%s: want one version with the status subresource", crd.Name)
		}
	}
	for _, want := range []string{"egressgateways.network.deckhouse.io", "egressgatewaypolicies.network.deckhouse.io"} {
		if !names[want] {
			t.Errorf("CRD %s not embedded", want)
		}
	}
}
