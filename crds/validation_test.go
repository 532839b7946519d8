package crds_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	schemavalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"

	"github.com/egressha/egressha/crds"
	"github.com/egressha/egressha/internal/specexamples"
)

// validator runs, in process, the code kube-apiserver runs on a create of a
// custom resource: OpenAPI schema validation, unknown-field detection and
// the CEL rules (x-kubernetes-validations) with the server's cost limits.
type validator struct {
	structural *structuralschema.Structural
	schema     schemavalidation.SchemaValidator
	cel        *cel.Validator
}

func loadValidators(t *testing.T) map[string]*validator {
	t.Helper()
	all, err := crds.All()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*validator{}
	for _, v1crd := range all {
		internal := &apiextensions.CustomResourceDefinition{}
		if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(v1crd, internal, nil); err != nil {
			t.Fatal(err)
		}
		// The API server validates a CRD on create: structural schema,
		// CEL compilation and estimated cost. Fail here, not in a cluster.
		internal.Status.StoredVersions = []string{internal.Spec.Versions[0].Name}
		if errs := crdvalidation.ValidateCustomResourceDefinition(context.Background(), internal); len(errs) > 0 {
			t.Fatalf("CRD %s would be refused by the API server: %v", v1crd.Name, errs.ToAggregate())
		}
		if len(internal.Spec.Versions) != 1 {
			t.Fatalf("CRD %s: expected one version, got %d", v1crd.Name, len(internal.Spec.Versions))
		}
		props, err := apiextensions.GetSchemaForVersion(internal, internal.Spec.Versions[0].Name)
		if err != nil || props == nil {
			t.Fatalf("CRD %s: no schema: %v", v1crd.Name, err)
		}
		s, err := structuralschema.NewStructural(props.OpenAPIV3Schema)
		if err != nil {
			t.Fatal(err)
		}
		sv, _, err := schemavalidation.NewSchemaValidator(props.OpenAPIV3Schema)
		if err != nil {
			t.Fatal(err)
		}
		out[internal.Spec.Names.Kind] = &validator{
			structural: s,
			schema:     sv,
			cel:        cel.NewValidator(s, true, celconfig.PerCallLimit),
		}
	}
	if len(out) != 2 {
		t.Fatalf("expected the EgressGateway and EgressGatewayPolicy CRDs, got %d", len(out))
	}
	return out
}

func (v *validator) validate(t *testing.T, obj map[string]any) field.ErrorList {
	t.Helper()
	errs := schemavalidation.ValidateCustomResource(nil, obj, v.schema)
	for _, path := range pruning.PruneWithOptions(deepCopy(obj), v.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}) {
		errs = append(errs, field.Forbidden(field.NewPath(path), "unknown field"))
	}
	celErrs, _ := v.cel.Validate(context.Background(), nil, v.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	return append(errs, celErrs...)
}

func deepCopy(obj map[string]any) map[string]any {
	data, err := yaml.Marshal(obj)
	if err != nil {
		panic(err)
	}
	var out map[string]any
	if err := yaml.Unmarshal(data, &out); err != nil {
		panic(err)
	}
	return out
}

func decode(t *testing.T, data []byte) (string, map[string]any) {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal(data, &obj); err != nil {
		t.Fatal(err)
	}
	kind, _ := obj["kind"].(string)
	return kind, obj
}

// TestCRDValidationRejectsMalformed applies every object in
// testdata/invalid and requires the error each file's "# want:" lines name:
// the field path and a message a person can act on.
func TestCRDValidationRejectsMalformed(t *testing.T) {
	validators := loadValidators(t)
	files, err := filepath.Glob("testdata/invalid/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 15 {
		t.Fatalf("only %d malformed objects in testdata/invalid", len(files))
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var wants []string
			for _, line := range strings.Split(string(data), "\n") {
				if w, ok := strings.CutPrefix(line, "# want: "); ok {
					wants = append(wants, w)
				}
			}
			if len(wants) == 0 {
				t.Fatalf("%s has no '# want: <field>: <message>' line", file)
			}
			kind, obj := decode(t, data)
			v := validators[kind]
			if v == nil {
				t.Fatalf("no CRD for kind %q", kind)
			}
			errs := v.validate(t, obj)
			if len(errs) == 0 {
				t.Fatalf("accepted, want refusal with %q", wants)
			}
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			t.Logf("refused with:\n  %s", strings.Join(got, "\n  "))
			for _, w := range wants {
				found := false
				for _, g := range got {
					if strings.HasPrefix(g, strings.SplitN(w, ": ", 2)[0]+":") && strings.Contains(g, strings.SplitN(w, ": ", 2)[1]) {
						found = true
					}
				}
				if !found {
					t.Errorf("want error %q, got:\n  %s", w, strings.Join(got, "\n  "))
				}
			}
		})
	}
}

// TestCRDValidationAcceptsExamples applies every example of the user
// documentation and every object in testdata/valid; none may be refused.
func TestCRDValidationAcceptsExamples(t *testing.T) {
	validators := loadValidators(t)
	type doc struct {
		name string
		data []byte
	}
	var docs []doc
	_, examples := specexamples.MustLoad(t)
	for _, ex := range examples {
		docs = append(docs, doc{ex.String(), []byte(ex.YAML)})
	}
	files, _ := filepath.Glob("testdata/valid/*.yaml")
	sort.Strings(files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, doc{f, data})
	}
	if len(examples) == 0 || len(files) == 0 {
		t.Fatalf("nothing to validate: %d spec examples, %d files", len(examples), len(files))
	}
	for _, d := range docs {
		t.Run(d.name, func(t *testing.T) {
			kind, obj := decode(t, d.data)
			v := validators[kind]
			if v == nil {
				t.Fatalf("no CRD for kind %q", kind)
			}
			if errs := v.validate(t, obj); len(errs) > 0 {
				t.Fatalf("refused: %v\n%s", errs.ToAggregate(), d.data)
			}
		})
	}
}
