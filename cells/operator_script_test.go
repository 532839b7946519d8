package cells

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"testing"
	"time"

	uhive "github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/cilium/hive/script"
	"github.com/cilium/hive/script/scripttest"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/cilium/cilium/pkg/hive"
	k8sFake "github.com/cilium/cilium/pkg/k8s/client/testutils"
	k8sTestutils "github.com/cilium/cilium/pkg/k8s/testutils"
	"github.com/cilium/cilium/pkg/k8s/version"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/client"
	"github.com/egressha/egressha/egressgw/leader"
)

// The fake clientset decodes k8s/add files with this scheme; it must know
// our types before its decoder is first built.
func init() {
	if err := v1alpha1.AddToScheme(k8sTestutils.Scheme); err != nil {
		panic(err)
	}
}

// scriptEpoch is "now" when a script starts; heartbeat Leases in the
// scripts are renewed at it, and clock/advance moves time on.
var scriptEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// TestOperatorScripts runs testdata/operator/*.txtar against the operator
// cells with a fake API server and a fake clock: every scenario of the
// spec's maintenance section, as executable documentation.
func TestOperatorScripts(t *testing.T) {
	version.Force(k8sTestutils.DefaultVersion)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)

	scripttest.Test(t, ctx, func(t testing.TB, args []string) *script.Engine {
		log := hivetest.Logger(t)
		clk := clocktesting.NewFakeClock(scriptEpoch)
		h := hive.New(
			k8sFake.FakeClientCell(),
			cell.Provide(
				func(fc *k8sFake.FakeClientset) *client.Clientset {
					return client.NewForFake(&fc.CiliumFakeClientset.Fake)
				},
				func() *option.DaemonConfig { return &option.DaemonConfig{K8sNamespace: "kube-system"} },
				func() clock.WithTicker { return clk },
				func(cs *client.Clientset, l *leader.Leadership) uhive.ScriptCmdsOut {
					cmds := clockCommands(clk)
					cmds["test/policy-reason"] = policyReasonCmd(cs)
					maps.Copy(cmds, leaderCommands(l))
					return uhive.NewScriptCmds(cmds)
				},
			),
			cell.Module("egress-gateway-ha-operator", "egressha operator under test", operatorCells,
				// The election is the one part that needs several
				// replicas: this replica leads from the start, and
				// leader/lose and leader/win end and begin its terms.
				leader.LeadershipCell,
				cell.Invoke(func(lc cell.Lifecycle, l *leader.Leadership) {
					lc.Append(cell.Hook{
						OnStart: func(cell.HookContext) error { l.Begin(context.Background(), "test"); return nil },
						OnStop:  func(cell.HookContext) error { l.Close(); return nil },
					})
				}),
			),
		)
		return scriptEngine(t, h, log, args)
	}, []string{}, "testdata/operator/*.txtar")
}

// clockCommands move the fake clock: heartbeats expire only when a script
// says time has passed, so the scenarios are exact and fast.
func clockCommands(clk *clocktesting.FakeClock) map[string]script.Cmd {
	return map[string]script.Cmd{
		"clock/advance": script.Command(
			script.CmdUsage{Summary: "Advance the fake clock", Args: "duration"},
			func(s *script.State, args ...string) (script.WaitFunc, error) {
				if len(args) != 1 {
					return nil, script.ErrUsage
				}
				d, err := time.ParseDuration(args[0])
				if err != nil {
					return nil, err
				}
				clk.Step(d)
				return nil, nil
			}),
		"clock/now": script.Command(
			script.CmdUsage{Summary: "Print the fake clock's time"},
			func(s *script.State, args ...string) (script.WaitFunc, error) {
				return func(*script.State) (string, string, error) {
					return fmt.Sprintln(clk.Now().UTC().Format(time.RFC3339)), "", nil
				}, nil
			}),
	}
}

// leaderCommands end and begin this replica's terms of leadership, as the
// election does when the Lease is lost or won.
func leaderCommands(l *leader.Leadership) map[string]script.Cmd {
	return map[string]script.Cmd{
		"leader/lose": script.Command(
			script.CmdUsage{Summary: "End this replica's term of leadership (returns once its work stopped)"},
			func(s *script.State, args ...string) (script.WaitFunc, error) {
				l.End()
				return nil, nil
			}),
		"leader/win": script.Command(
			script.CmdUsage{Summary: "Begin a term of leadership"},
			func(s *script.State, args ...string) (script.WaitFunc, error) {
				l.Begin(context.Background(), "test")
				return nil, nil
			}),
	}
}

// policyReasonCmd waits until a policy's Ready condition has the reason:
// policy status is written after the gateway's, so a one-shot k8s/get
// could race it.
func policyReasonCmd(cs *client.Clientset) script.Cmd {
	return script.Command(
		script.CmdUsage{Summary: "Wait until an EgressGatewayPolicy's Ready condition has a reason", Args: "name reason"},
		func(s *script.State, args ...string) (script.WaitFunc, error) {
			if len(args) != 2 {
				return nil, script.ErrUsage
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				p, err := cs.Policies.Get(s.Context(), args[0])
				got := ""
				if err == nil {
					if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); c != nil {
						got = c.Reason
						if got == args[1] {
							return nil, nil
						}
					}
				}
				if time.Now().After(deadline) {
					return nil, fmt.Errorf("policy %s: Ready reason %q, want %q (error %v)", args[0], got, args[1], err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
}

// scriptEngine turns a test hive into a script engine: it parses the
// script's flags (the txtar's #! line) into the hive, stops the hive when
// the test ends, and serves the hive's commands plus the default ones.
func scriptEngine(t testing.TB, h *hive.Hive, log *slog.Logger, args []string) *script.Engine {
	t.Helper()
	flags := pflag.NewFlagSet("", pflag.ContinueOnError)
	h.RegisterFlags(flags)
	if err := flags.Parse(args); err != nil {
		t.Fatalf("flags.Parse(%v): %v", args, err)
	}
	t.Cleanup(func() {
		if err := h.Stop(log, context.TODO()); err != nil {
			t.Errorf("hive stop: %v", err)
		}
	})
	cmds, err := h.ScriptCommands(log)
	if err != nil {
		t.Fatalf("ScriptCommands: %v", err)
	}
	maps.Insert(cmds, maps.All(script.DefaultCmds()))
	return &script.Engine{Cmds: cmds, RetryInterval: 20 * time.Millisecond, MaxRetryInterval: 200 * time.Millisecond}
}
