package cells

import (
	"testing"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb"
	"github.com/spf13/pflag"

	"github.com/cilium/cilium/pkg/hive"

	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/datapath"
	"github.com/egressha/egressha/egressgw/localgateways"
	"github.com/egressha/egressha/egressgw/reflectors"
	"github.com/egressha/egressha/egressgw/tables"
)

// TestAgentDatapathFlags: the resync flag is registered, and a
// non-positive value refuses to build the hive when egressha owns the
// datapath.
func TestAgentDatapathFlags(t *testing.T) {
	var cfg datapath.Config
	build := func(args ...string) error {
		h := hive.New(
			cell.Module("egressha-datapath-flags-test", "datapath cells as in the agent",
				config.AgentCell,
				reflectors.LocalNodeCell,
				localgateways.Cell,
				datapath.Cell,
				datapath.TakeoverCell,
				cell.Provide(tables.NewEgressGatewaysTable, statedb.RWTable[*tables.EgressGateway].ToTable),
			),
			providePreconditionInputs(), provideAgentDependencies(),
			cellInvoke(func(c datapath.Config) { cfg = c }))
		flags := pflag.NewFlagSet("agent", pflag.ContinueOnError)
		h.RegisterFlags(flags)
		if flags.Lookup("egress-gateway-ha-map-resync-interval") == nil {
			t.Fatal("--egress-gateway-ha-map-resync-interval not registered")
		}
		if err := flags.Parse(args); err != nil {
			t.Fatal(err)
		}
		return h.Populate(hivetest.Logger(t))
	}
	if err := build("--egress-gateway-ha-map-resync-interval=30s"); err != nil {
		t.Fatal(err)
	}
	if cfg.EgressGatewayHAMapResyncInterval != 30*time.Second {
		t.Fatalf("flag did not reach datapath.Config: %+v", cfg)
	}
	if err := build("--egress-gateway-ha-map-resync-interval=0"); err == nil {
		t.Fatal("a zero resync interval was accepted")
	}
	if err := build("--egress-gateway-ha-map-resync-interval=0", "--egress-gateway-ha-enabled=false"); err != nil {
		t.Fatalf("disabled, the interval must not matter: %v", err)
	}
}
