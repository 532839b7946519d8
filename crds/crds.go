// Package crds embeds the CustomResourceDefinitions that controller-gen
// generates from egressgw/api (`make generate`) and installs them the way
// Cilium installs its own: create, or update when the schema version label
// in the cluster is older than ours.
package crds

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"

	"github.com/blang/semver/v4"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"sigs.k8s.io/yaml"

	"github.com/cilium/cilium/pkg/k8s/apis/crdhelpers"
)

//go:embed *.yaml
var files embed.FS

const (
	// SchemaVersionLabel carries the CRD schema version in the cluster.
	SchemaVersionLabel = "egressha.io/crd-schema-version"
	// SchemaVersion must be raised whenever a generated CRD changes, or
	// running clusters keep the old schema. TestSchemaVersionBumped
	// enforces it through SchemaDigest.
	SchemaVersion = "1.3.0"
	// SchemaDigest is the sha256 of the generated CRD files, in name order,
	// for which SchemaVersion was set.
	SchemaDigest = "7e5887f9bb3bdafe164200a31a5c0ca08ae6f8f1ce85a1df5d3a0e72c51a29f1"
)

// All returns the embedded CRDs, labelled with SchemaVersion, in name order.
func All() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	names, err := fs.Glob(files, "*.yaml")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]*apiextensionsv1.CustomResourceDefinition, 0, len(names))
	for _, name := range names {
		data, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(data, crd); err != nil {
			return nil, fmt.Errorf("decoding embedded CRD %s: %w", name, err)
		}
		if crd.Labels == nil {
			crd.Labels = map[string]string{}
		}
		crd.Labels[SchemaVersionLabel] = SchemaVersion
		out = append(out, crd)
	}
	return out, nil
}

// Digest returns the sha256 of the embedded CRD files in name order.
func Digest() (string, error) {
	names, err := fs.Glob(files, "*.yaml")
	if err != nil {
		return "", err
	}
	sort.Strings(names)
	h := sha256.New()
	for _, name := range names {
		data, err := files.ReadFile(name)
		if err != nil {
			return "", err
		}
		h.Write([]byte(name))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Register creates or updates every embedded CRD and waits until each is
// established.
func Register(log *slog.Logger, cs apiextensionsclient.Interface) error {
	all, err := All()
	if err != nil {
		return err
	}
	minVersion := semver.MustParse(SchemaVersion)
	for _, crd := range all {
		if err := crdhelpers.CreateUpdateCRD(log, cs, crd, crdhelpers.NewDefaultPoller(), SchemaVersionLabel, minVersion); err != nil {
			return fmt.Errorf("installing CRD %s: %w", crd.Name, err)
		}
	}
	return nil
}
