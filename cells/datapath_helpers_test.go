package cells

import (
	"github.com/cilium/hive/cell"

	"github.com/cilium/cilium/pkg/datapath/linux/sysctl"
	"github.com/cilium/cilium/pkg/maps/egressmap"

	"github.com/egressha/egressha/egressgw/policymap"
	"github.com/egressha/egressha/internal/testcells"
)

// provideDatapathDependencies stands in for what Cilium's datapath cells
// provide to ours: egressmap's PolicyConfig and a sysctl (in memory).
func provideDatapathDependencies() cell.Cell {
	return cell.Provide(
		func() egressmap.PolicyConfig { return egressmap.DefaultPolicyConfig },
		func() sysctl.Sysctl { return testcells.NewFakeSysctl() },
	)
}

// provideNoPolicyMap stands in for datapath.TakeoverCell in hives built
// from agentCells: egressha does not own the datapath, so the map
// reconciler and rp_filter stay off.
func provideNoPolicyMap() cell.Cell {
	return cell.Provide(func() policymap.PolicyMap { return nil })
}
