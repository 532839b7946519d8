package cells

import (
	"github.com/cilium/hive/cell"

	"github.com/cilium/cilium/pkg/kpr"
	"github.com/cilium/cilium/pkg/option"
)

func cellInvoke[T any](f func(T)) cell.Cell { return cell.Invoke(f) }

// providePreconditionInputs stands in for the daemon configuration that
// cilium-agent's own cells provide.
func providePreconditionInputs() cell.Cell {
	return cell.Provide(
		func() *option.DaemonConfig { dc, _ := goodDaemonConfig(); return dc },
		func() kpr.KPRConfig { _, k := goodDaemonConfig(); return k },
	)
}
