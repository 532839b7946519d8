package cells

import (
	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"

	datapathtables "github.com/cilium/cilium/pkg/datapath/tables"
	k8sFake "github.com/cilium/cilium/pkg/k8s/client/testutils"
	"github.com/cilium/cilium/pkg/kpr"
	"github.com/cilium/cilium/pkg/node"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/internal/testcells"
)

func cellInvoke[T any](f func(T)) cell.Cell { return cell.Invoke(f) }

// providePreconditionInputs stands in for the daemon configuration that
// cilium-agent's own cells provide.
func providePreconditionInputs() cell.Cell {
	return cell.Provide(
		func() *option.DaemonConfig { dc, _ := testcells.GoodDaemonConfig(); return dc },
		func() kpr.KPRConfig { _, k := testcells.GoodDaemonConfig(); return k },
	)
}

// provideAgentDependencies stands in for the rest of what cilium-agent
// provides to our cells: a Kubernetes clientset (fake), the local node,
// the devices table, egressmap's config and sysctl.
func provideAgentDependencies() cell.Cell {
	return cell.Group(
		k8sFake.FakeClientCell(),
		provideDatapathDependencies(),
		provideCiliumEndpointResource(),
		provideCiliumNodeResource(),
		cell.Provide(
			func() *node.LocalNodeStore { return node.NewTestLocalNodeStore(node.LocalNode{}) },
			datapathtables.NewDeviceTable,
			statedb.RWTable[*datapathtables.Device].ToTable,
		),
		cell.Invoke(statedb.RegisterTable[*datapathtables.Device]),
	)
}
