package crds

import (
	"log/slog"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	k8sconst "github.com/cilium/cilium/pkg/k8s/apis/cilium.io"
	ciliumclient "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/client"
	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/k8s/apis/crdhelpers"
	"github.com/cilium/cilium/pkg/versioncheck"
)

// RegisterCEGP installs the CiliumEgressGatewayPolicy CRD exactly as
// Cilium's operator does when its egress gateway is on (same manifest,
// same schema-version label and update rule).
func RegisterCEGP(log *slog.Logger, cs apiextensionsclient.Interface) error {
	tmpl := ciliumclient.GetPregeneratedCRD(log, ciliumclient.CEGPCRDName)
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{
			Name:   ciliumv2.CEGPName,
			Labels: map[string]string{k8sconst.CustomResourceDefinitionSchemaVersionKey: k8sconst.CustomResourceDefinitionSchemaVersion},
		},
		Spec: tmpl.Spec,
	}
	crd.Spec.Group = k8sconst.CustomResourceDefinitionGroup
	return crdhelpers.CreateUpdateCRD(log, cs, crd, crdhelpers.NewDefaultPoller(),
		k8sconst.CustomResourceDefinitionSchemaVersionKey,
		versioncheck.MustVersion(k8sconst.CustomResourceDefinitionSchemaVersion))
}
