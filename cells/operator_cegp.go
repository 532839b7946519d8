package cells

import (
	"context"
	"log/slog"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	k8sconst "github.com/cilium/cilium/pkg/k8s/apis/cilium.io"
	ciliumclient "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/client"
	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/k8s/apis/crdhelpers"
	k8sClient "github.com/cilium/cilium/pkg/k8s/client"
	"github.com/cilium/cilium/pkg/k8s/resource"
	"github.com/cilium/cilium/pkg/k8s/utils"
	"github.com/cilium/cilium/pkg/versioncheck"

	"github.com/egressha/egressha/egressgw/client"
	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/operator"
)

// cegpOperatorCells choose the serving node of every gateway entry of every
// CiliumEgressGatewayPolicy and publish it in the policy's
// egressha.io/gateway-nodes annotation; `db/show egress-cegp-selection`
// prints the decisions.
var cegpOperatorCells = cell.Group(
	cell.ProvidePrivate(operator.NewCEGPSelectionTable),
	cell.Provide(statedb.RWTable[*operator.CEGPRow].ToTable),
	cell.Invoke(registerCEGPController),
)

// registerCEGPCRD installs the CiliumEgressGatewayPolicy CRD exactly as
// Cilium's operator does when its egress gateway is on (same manifest,
// same schema-version label and update rule).
func registerCEGPCRD(log *slog.Logger, cs apiextensionsclient.Interface) error {
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

type cegpControllerParams struct {
	cell.In

	Log       *slog.Logger
	Lifecycle cell.Lifecycle
	Enabled   config.OperatorEnabled
	Config    config.OperatorConfig
	Jobs      job.Group
	DB        *statedb.DB
	Nodes     statedb.Table[*operator.NodeRow]
	Table     statedb.RWTable[*operator.CEGPRow]
	Clientset k8sClient.Clientset
	Clock     clock.WithTicker
}

func registerCEGPController(p cegpControllerParams) {
	if !p.Enabled {
		return
	}
	cegps := p.Clientset.CiliumV2().CiliumEgressGatewayPolicies()
	res := resource.New[*ciliumv2.CiliumEgressGatewayPolicy](p.Lifecycle,
		utils.ListerWatcherFromTyped[*ciliumv2.CiliumEgressGatewayPolicyList](cegps),
		resource.WithName("egressha-cegps"))
	p.Jobs.Add(job.OneShot("egress-cegp-selection", func(ctx context.Context, _ cell.Health) error {
		broadcaster := record.NewBroadcaster(record.WithContext(ctx))
		broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: p.Clientset.CoreV1().Events("")})
		defer broadcaster.Shutdown()
		recorder := broadcaster.NewRecorder(client.Scheme, corev1.EventSource{Component: "egressha-operator"})
		c := operator.NewCEGPController(p.Log, p.DB, p.Nodes, p.Table, cegps, p.Clock, recorder, res,
			p.Config.EgressGatewayHACEGPUpstreamSelection)
		return c.Run(ctx)
	}))
}
