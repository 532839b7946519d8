package cells

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	uhive "github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/hivetest"
	"github.com/cilium/hive/script"
	"github.com/cilium/hive/script/scripttest"
	"github.com/cilium/statedb"
	"github.com/spf13/pflag"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	datapathtables "github.com/cilium/cilium/pkg/datapath/tables"
	"github.com/cilium/cilium/pkg/hive"
	k8sFake "github.com/cilium/cilium/pkg/k8s/client/testutils"
	k8sTestutils "github.com/cilium/cilium/pkg/k8s/testutils"
	"github.com/cilium/cilium/pkg/kpr"
	"github.com/cilium/cilium/pkg/node"
	nodeTypes "github.com/cilium/cilium/pkg/node/types"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/client"
	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/internal/testcells"
)

const (
	heartbeatTestNode      = "node1"
	heartbeatTestNamespace = "kube-system"
)

var heartbeatSchemeOnce sync.Once

// registerHeartbeatTestScheme adds our CRD types to the scheme of Cilium's fake
// clientset, so `k8s/add` decodes EgressGateways and the "*" object
// tracker (the one behind CiliumFakeClientset, and so behind
// client.NewForFake) stores and lists them. It must run before the fake
// clientset is first used.
func registerHeartbeatTestScheme() {
	heartbeatSchemeOnce.Do(func() {
		if err := v1alpha1.AddToScheme(k8sTestutils.Scheme); err != nil {
			panic(err)
		}
	})
}

// TestHeartbeatScripts runs testdata/heartbeat*.txtar against agentCells, Cilium's fake
// clientset, a devices table filled with db/insert and a LocalNodeStore
// without a synchronizer whose labels test/set-node-labels sets.
func TestHeartbeatScripts(t *testing.T) {
	registerHeartbeatTestScheme()
	nodeTypes.SetName(heartbeatTestNode)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)

	scripttest.Test(t, ctx,
		func(t testing.TB, args []string) *script.Engine {
			log := hivetest.Logger(t)

			h := hive.New(
				k8sFake.FakeClientCell(),
				provideCiliumEndpointResource(),
				provideCiliumNodeResource(),
				node.LocalNodeStoreCell,
				cell.Provide(
					// The "*" object tracker, where k8s/add puts our types.
					func(fc *k8sFake.FakeClientset) *client.Clientset {
						return client.NewForFake(&fc.CiliumFakeClientset.Fake)
					},
					func() *option.DaemonConfig {
						dc, _ := testcells.GoodDaemonConfig()
						dc.K8sNamespace = heartbeatTestNamespace
						return dc
					},
					func() kpr.KPRConfig { _, k := testcells.GoodDaemonConfig(); return k },
					datapathtables.NewDeviceTable,
					statedb.RWTable[*datapathtables.Device].ToTable,
					newHeartbeatLeaseFaults,
					func(lns *node.LocalNodeStore, fc *k8sFake.FakeClientset, f *heartbeatLeaseFaults, st *heartbeat.Status) uhive.ScriptCmdsOut {
						return uhive.NewScriptCmds(heartbeatTestCommands{lns, fc, f, st}.cmds())
					},
				),
				cell.Invoke(statedb.RegisterTable[*datapathtables.Device]),
				cell.Invoke(func(fc *k8sFake.FakeClientset, f *heartbeatLeaseFaults) {
					fc.KubernetesFakeClientset.PrependReactor("*", "leases", f.react)
				}),
				provideDatapathDependencies(),
				provideNoPolicyMap(),
				agentCells,
			)

			return scriptEngine(t, h, log, args)
		},
		[]string{}, "testdata/heartbeat*.txtar")
}

// heartbeatLeaseFaults makes the fake API server fail Lease requests on demand.
type heartbeatLeaseFaults struct {
	mu        sync.Mutex
	err       error // returned for every get/create/update while set
	conflicts int   // the next this many updates fail with Conflict
}

func newHeartbeatLeaseFaults() *heartbeatLeaseFaults { return &heartbeatLeaseFaults{} }

func (f *heartbeatLeaseFaults) react(action k8stesting.Action) (bool, runtime.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	verb := action.GetVerb()
	if verb == "update" && f.conflicts > 0 {
		f.conflicts--
		return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"},
			heartbeat.LeaseName(heartbeatTestNode), fmt.Errorf("the object has been modified"))
	}
	if f.err != nil && (verb == "get" || verb == "create" || verb == "update") {
		return true, nil, f.err
	}
	return false, nil, nil
}

type heartbeatTestCommands struct {
	lns    *node.LocalNodeStore
	fc     *k8sFake.FakeClientset
	faults *heartbeatLeaseFaults
	status *heartbeat.Status
}

func (tc heartbeatTestCommands) cmds() map[string]script.Cmd {
	return map[string]script.Cmd{
		"test/set-node-labels": tc.setNodeLabels(),
		"test/lease":           tc.showLease(),
		"test/lease-renewed":   tc.leaseRenewed(),
		"test/lease-fault":     tc.leaseFault(),
		"test/valid-until":     tc.validUntil(),
	}
}

func (tc heartbeatTestCommands) setNodeLabels() script.Cmd {
	return script.Command(
		script.CmdUsage{Summary: "Set the local node's labels (replacing all of them)", Args: "key=value..."},
		func(s *script.State, args ...string) (script.WaitFunc, error) {
			labels := map[string]string{}
			for _, arg := range args {
				k, v, ok := strings.Cut(arg, "=")
				if !ok {
					return nil, fmt.Errorf("bad key=value: %q", arg)
				}
				labels[k] = v
			}
			tc.lns.Update(func(n *node.LocalNode) { n.Labels = labels })
			return nil, nil
		})
}

// getLease reads the Lease from the object tracker directly, past the
// faults injected into the clientset.
func (tc heartbeatTestCommands) getLease() (*coordinationv1.Lease, error) {
	obj, err := tc.fc.KubernetesFakeClientset.Tracker().Get(coordinationv1.SchemeGroupVersion.WithResource("leases"),
		heartbeatTestNamespace, heartbeat.LeaseName(heartbeatTestNode))
	if err != nil {
		return nil, err
	}
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return nil, fmt.Errorf("tracker returned %T, want a Lease", obj)
	}
	return l, nil
}

// heartbeatLeaseView is the stable part of the heartbeat Lease (no times or
// resource versions), decoded as the operator decodes it.
type heartbeatLeaseView struct {
	Name                 string            `json:"name"`
	Holder               string            `json:"holder"`
	LeaseDurationSeconds int32             `json:"leaseDurationSeconds"`
	HasRenewTime         bool              `json:"hasRenewTime"`
	Labels               map[string]string `json:"labels"`
	Gateways             heartbeat.Report  `json:"gateways"`
}

func (tc heartbeatTestCommands) showLease() script.Cmd {
	return script.Command(
		script.CmdUsage{
			Summary: "Show the heartbeat Lease of " + heartbeatTestNode + " (fails if there is none)",
			Flags: func(fs *pflag.FlagSet) {
				fs.StringP("out", "o", "", "File to write to instead of stdout")
			},
		},
		func(s *script.State, args ...string) (script.WaitFunc, error) {
			file, err := s.Flags.GetString("out")
			if err != nil {
				return nil, err
			}
			l, err := tc.getLease()
			if err != nil {
				return nil, err
			}
			hb, err := heartbeat.FromLease(l)
			if err != nil {
				return nil, err
			}
			v := heartbeatLeaseView{Name: l.Namespace + "/" + l.Name, Labels: l.Labels, HasRenewTime: !hb.RenewTime.IsZero(),
				LeaseDurationSeconds: int32(hb.Duration / time.Second), Gateways: hb.Gateways}
			if l.Spec.HolderIdentity != nil {
				v.Holder = *l.Spec.HolderIdentity
			}
			b, err := yaml.Marshal(v)
			if err != nil {
				return nil, err
			}
			if file != "" {
				return nil, os.WriteFile(s.Path(file), b, 0o644)
			}
			return func(*script.State) (string, string, error) { return string(b), "", nil }, nil
		})
}

func (tc heartbeatTestCommands) leaseRenewed() script.Cmd {
	return script.Command(
		script.CmdUsage{
			Summary: "Succeed once the Lease's renewTime moves, fail if it does not within the duration",
			Args:    "duration",
		},
		func(s *script.State, args ...string) (script.WaitFunc, error) {
			if len(args) != 1 {
				return nil, script.ErrUsage
			}
			within, err := time.ParseDuration(args[0])
			if err != nil {
				return nil, err
			}
			renewTime := func() time.Time {
				if l, err := tc.getLease(); err == nil && l.Spec.RenewTime != nil {
					return l.Spec.RenewTime.Time
				}
				return time.Time{}
			}
			first := renewTime()
			deadline := time.Now().Add(within)
			for time.Now().Before(deadline) {
				if t := renewTime(); !t.IsZero() && !t.Equal(first) {
					return nil, nil
				}
				time.Sleep(10 * time.Millisecond)
			}
			return nil, fmt.Errorf("heartbeat Lease not renewed within %s (renewTime %v)", within, first)
		})
}

func (tc heartbeatTestCommands) leaseFault() script.Cmd {
	return script.Command(
		script.CmdUsage{
			Summary: "Make the fake API server fail Lease requests",
			Args:    "forbidden|off|conflicts N|pending",
			Detail: []string{
				"forbidden: every get, create and update fails with Forbidden until 'off'",
				"conflicts N: the next N updates fail with Conflict",
				"pending: print the number of conflicts not served yet",
			},
		},
		func(s *script.State, args ...string) (script.WaitFunc, error) {
			if len(args) == 0 {
				return nil, script.ErrUsage
			}
			f := tc.faults
			f.mu.Lock()
			defer f.mu.Unlock()
			switch args[0] {
			case "forbidden":
				f.err = apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"},
					heartbeat.LeaseName(heartbeatTestNode), fmt.Errorf("RBAC: cilium-agent may not update leases"))
			case "off":
				f.err, f.conflicts = nil, 0
			case "conflicts":
				if len(args) != 2 {
					return nil, script.ErrUsage
				}
				n, err := strconv.Atoi(args[1])
				if err != nil {
					return nil, err
				}
				f.conflicts = n
			case "pending":
				out := fmt.Sprintf("conflicts pending: %d\n", f.conflicts)
				return func(*script.State) (string, string, error) { return out, "", nil }, nil
			default:
				return nil, script.ErrUsage
			}
			return nil, nil
		})
}

func (tc heartbeatTestCommands) validUntil() script.Cmd {
	return script.Command(
		script.CmdUsage{
			Summary: "Check heartbeat.Status: 'fresh' (ValidUntil in the future) or 'expired'",
			Args:    "fresh|expired",
		},
		func(s *script.State, args ...string) (script.WaitFunc, error) {
			if len(args) != 1 {
				return nil, script.ErrUsage
			}
			vu := tc.status.ValidUntil()
			fresh := time.Now().Before(vu)
			switch {
			case args[0] == "fresh" && !fresh, args[0] == "expired" && fresh:
				return nil, fmt.Errorf("ValidUntil %v is not %s", vu, args[0])
			case args[0] != "fresh" && args[0] != "expired":
				return nil, script.ErrUsage
			}
			return nil, nil
		})
}
