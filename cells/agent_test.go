package cells

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/spf13/pflag"

	"github.com/cilium/cilium/pkg/hive"
	k8sFake "github.com/cilium/cilium/pkg/k8s/client/testutils"
	"github.com/cilium/cilium/pkg/kpr"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/internal/testcells"
)

func TestHeartbeatValidation(t *testing.T) {
	if err := config.DefaultAgentConfig.Validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for _, tc := range []struct {
		renew, expiry time.Duration
		want          string
	}{
		{0, 4 * time.Second, "must be positive"},
		{time.Second, 1500 * time.Millisecond, "at least twice"},
	} {
		c := config.AgentConfig{EgressGatewayHAEnabled: true, EgressGatewayHAHeartbeatRenewInterval: tc.renew, EgressGatewayHAHeartbeatExpiry: tc.expiry}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("renew %s expiry %s: want error %q, got %v", tc.renew, tc.expiry, tc.want, err)
		}
	}
}

// TestCellsRegisterFlags builds each module in a hive, as the binaries do,
// and checks that our flags are registered with the egress-gateway-ha- prefix
// and reach the config structs.
func TestCellsRegisterFlags(t *testing.T) {
	var agentCfg config.AgentConfig
	h := hive.New(Agent, cellInvoke(func(c config.AgentConfig) { agentCfg = c }), providePreconditionInputs(), provideAgentDependencies())
	flags := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	h.RegisterFlags(flags)
	for _, name := range []string{"egress-gateway-ha-enabled", "egress-gateway-ha-heartbeat-renew-interval", "egress-gateway-ha-heartbeat-expiry",
		"egress-gateway-ha-terminate-connections", "egress-gateway-ha-netns-dir"} {
		if flags.Lookup(name) == nil {
			t.Errorf("agent flag --%s not registered", name)
		}
	}
	if err := flags.Parse([]string{"--egress-gateway-ha-heartbeat-expiry=9s"}); err != nil {
		t.Fatal(err)
	}
	if err := h.Populate(hivetest.Logger(t)); err != nil {
		t.Fatal(err)
	}
	if agentCfg.EgressGatewayHAHeartbeatExpiry != 9*time.Second || !agentCfg.EgressGatewayHAEnabled {
		t.Fatalf("flags did not reach AgentConfig: %+v", agentCfg)
	}

	var opCfg config.OperatorConfig
	h = hive.New(Operator, k8sFake.FakeClientCell(),
		cell.Provide(func() *option.DaemonConfig { return &option.DaemonConfig{K8sNamespace: "kube-system"} }),
		cellInvoke(func(c config.OperatorConfig) { opCfg = c }))
	flags = pflag.NewFlagSet("operator", pflag.ContinueOnError)
	h.RegisterFlags(flags)
	if err := flags.Parse([]string{"--egress-gateway-ha-enabled=false"}); err != nil {
		t.Fatal(err)
	}
	if err := h.Populate(hivetest.Logger(t)); err != nil {
		t.Fatal(err)
	}
	if opCfg.EgressGatewayHAEnabled {
		t.Fatal("--egress-gateway-ha-enabled=false did not reach OperatorConfig")
	}
}

// TestAgentRefusesToStart runs the agent module's start hook against a
// configuration egressha cannot work with: the hive must not start, and the
// error must say what to change. Disabled, the same configuration starts.
func TestAgentRefusesToStart(t *testing.T) {
	bad := cell.Provide(
		func() *option.DaemonConfig {
			dc, _ := testcells.GoodDaemonConfig()
			dc.EnableEgressGateway = true
			return dc
		},
		func() kpr.KPRConfig { _, k := testcells.GoodDaemonConfig(); return k },
	)
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{nil, "enable-egress-gateway=true"},
		{[]string{"--egress-gateway-ha-heartbeat-renew-interval=8s"}, "must be at least twice"},
		{[]string{"--egress-gateway-ha-probe-fence=1ms"}, "must be within 20ms..1m"},
		{[]string{"--egress-gateway-ha-enabled=false"}, ""},
	} {
		h := hive.New(Agent, bad, provideAgentDependencies())
		flags := pflag.NewFlagSet("agent", pflag.ContinueOnError)
		h.RegisterFlags(flags)
		if err := flags.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		log := hivetest.Logger(t)
		err := h.Start(log, context.Background())
		if tc.wantErr == "" {
			if err != nil {
				t.Fatalf("%v: start failed: %v", tc.args, err)
			}
			if err := h.Stop(log, context.Background()); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Fatalf("%v: want start to fail with %q, got %v", tc.args, tc.wantErr, err)
		}
	}
}
