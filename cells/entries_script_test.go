package cells

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/cilium/cilium/pkg/hive"
	"github.com/cilium/cilium/pkg/k8s"
	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	k8sClient "github.com/cilium/cilium/pkg/k8s/client"
	k8sFake "github.com/cilium/cilium/pkg/k8s/client/testutils"
	"github.com/cilium/cilium/pkg/k8s/resource"
	k8sTypes "github.com/cilium/cilium/pkg/k8s/types"
	"github.com/cilium/cilium/pkg/k8s/utils"

	"github.com/egressha/egressha/egressgw/cegp"
	"github.com/egressha/egressha/egressgw/client"
	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/entries"
	"github.com/egressha/egressha/egressgw/reflectors"
	"github.com/egressha/egressha/egressgw/tables"
)

// TestEntriesScripts runs testdata/entries/*.txtar: the desired-entry
// computation of the agent (egress-gateways, egress-policies and
// egress-endpoints in, egress-policy-entries out) against Cilium's fake
// clientset. EgressGateways are added with their status, as the operator
// would have written it; endpoints come from CiliumEndpoints (the local
// endpoint manager is not part of this hive; see TestNewLocalEndpoint in
// egressgw/tables for that conversion).
func TestEntriesScripts(t *testing.T) {
	registerHeartbeatTestScheme()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)

	scripttest.Test(t, ctx,
		func(t testing.TB, args []string) *script.Engine {
			log := hivetest.Logger(t)
			faults := &listFaults{failing: map[string]bool{}}
			h := hive.New(
				k8sFake.FakeClientCell(),
				provideCiliumEndpointResource(),
				provideCiliumNodeResource(),
				cell.Provide(
					func(fc *k8sFake.FakeClientset) *client.Clientset {
						return client.NewForFake(&fc.CiliumFakeClientset.Fake)
					},
					// In the agent the map reconciler's cell provides the
					// table; this hive has no datapath.
					tables.NewPolicyEntriesTable,
					func(db *statedb.DB, entries statedb.RWTable[*tables.SourceEntries]) (uhive.ScriptCmdsOut, error) {
						wtxn := db.WriteTxn(entries)
						changes, err := entries.Changes(wtxn)
						wtxn.Commit()
						if err != nil {
							return uhive.ScriptCmdsOut{}, err
						}
						return uhive.NewScriptCmds(map[string]script.Cmd{
							"test/list-fault":     faults.cmd(),
							"test/entries-writes": entriesWritesCmd(db, changes),
							"test/entries-cmp":    entriesCmpCmd(db, entries),
						}), nil
					},
				),
				cell.Invoke(func(fc *k8sFake.FakeClientset) {
					fc.CiliumFakeClientset.PrependReactor("list", "*", faults.react)
				}),
				// This node is egress-1; it resolves every CEGP entry it
				// serves to 172.18.18.21 (the real agent asks netlink).
				cell.Provide(func() *entries.CEGPLocal {
					return &entries.CEGPLocal{NodeName: func() string { return "egress-1" },
						Resolve: func(cegp.GatewayEntry) (netip.Addr, error) { return netip.MustParseAddr("172.18.18.21"), nil }}
				}),
				config.AgentCell,
				reflectors.Cell,
				entries.Cell,
			)

			return scriptEngine(t, h, log, args)
		},
		[]string{}, "testdata/entries/*.txtar")
}

// provideCiliumEndpointResource provides a CiliumEndpoint resource built as
// k8s.CiliumSlimEndpointResource builds the agent's (same lister-watcher,
// same transform) but without its local-node index, which reads the
// process-global LocalNodeStore that parallel test hives would share.
func provideCiliumEndpointResource() cell.Cell {
	return cell.Provide(func(lc cell.Lifecycle, cs k8sClient.Clientset) resource.Resource[*k8sTypes.CiliumEndpoint] {
		lw := utils.ListerWatcherFromTyped[*ciliumv2.CiliumEndpointList](cs.CiliumV2().CiliumEndpoints(""))
		return resource.New[*k8sTypes.CiliumEndpoint](lc, lw,
			resource.WithLazyTransform(func() runtime.Object { return &ciliumv2.CiliumEndpoint{} }, k8s.TransformToCiliumEndpoint),
			resource.WithMetric("CiliumEndpoint"))
	})
}

// provideCiliumNodeResource provides the CiliumNode resource as the agent
// does (daemon/k8s.ResourcesCell provides k8s.CiliumNodeResource).
func provideCiliumNodeResource() cell.Cell {
	return cell.Provide(k8s.CiliumNodeResource)
}

// listFaults makes the fake API server fail the list requests of chosen
// resources, so a script can hold back the initial sync of an input.
type listFaults struct {
	mu      sync.Mutex
	failing map[string]bool
}

func (f *listFaults) react(action k8stesting.Action) (bool, runtime.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if res := action.GetResource().Resource; f.failing[res] {
		return true, nil, apierrors.NewServiceUnavailable("test/list-fault: listing " + res + " fails")
	}
	return false, nil, nil
}

func (f *listFaults) cmd() script.Cmd {
	return script.Command(
		script.CmdUsage{
			Summary: "Make the fake API server fail (on) or serve (off) list requests of a resource",
			Args:    "resource on|off",
			Detail:  []string{"resource is the tracker's plural, e.g. ciliumendpoints, egressgatewaies, egressgatewaypolicies"},
		},
		func(s *script.State, args ...string) (script.WaitFunc, error) {
			if len(args) != 2 || (args[1] != "on" && args[1] != "off") {
				return nil, script.ErrUsage
			}
			f.mu.Lock()
			f.failing[args[0]] = args[1] == "on"
			f.mu.Unlock()
			return nil, nil
		})
}

// entriesWritesCmd prints how many rows of egress-policy-entries (one per
// endpoint IP) were inserted or updated ("written") and deleted since the
// previous call, so a script can check that unchanged rows are not
// rewritten and that a failover replaces rows instead of deleting them.
func entriesWritesCmd(db *statedb.DB, changes statedb.ChangeIterator[*tables.SourceEntries]) script.Cmd {
	return script.Command(
		script.CmdUsage{Summary: "Print the writes and deletes of egress-policy-entries since the last call"},
		func(s *script.State, args ...string) (script.WaitFunc, error) {
			written, deleted := 0, 0
			seq, _ := changes.Next(db.ReadTxn())
			for c := range seq {
				if c.Deleted {
					deleted++
				} else {
					written++
				}
			}
			out := fmt.Sprintf("written=%d deleted=%d\n", written, deleted)
			return func(*script.State) (string, string, error) { return out, "", nil }, nil
		})
}

// entriesCmpCmd compares the map entries egress-policy-entries asks for,
// one line per map key in the columns of `cilium-dbg bpf egress list`
// (Source IP, Destination CIDR, Egress IP, Gateway IP) plus the owning
// policy, against a file, retrying until they match or the timeout
// passes. The rows (one per source IP) are expanded to their keys so the
// files say exactly which entries the map gets; the reconciler's status
// is left out. Runs of blanks compare equal, so the file can be aligned
// freely.
func entriesCmpCmd(db *statedb.DB, entries statedb.Table[*tables.SourceEntries]) script.Cmd {
	return script.Command(
		script.CmdUsage{
			Summary: "Compare egress-policy-entries (all columns but Status) with a file",
			Args:    "file",
			Flags: func(fs *pflag.FlagSet) {
				fs.Duration("timeout", 5*time.Second, "How long to wait for the table to match")
			},
		},
		func(s *script.State, args ...string) (script.WaitFunc, error) {
			if len(args) != 1 {
				return nil, script.ErrUsage
			}
			timeout, err := s.Flags.GetDuration("timeout")
			if err != nil {
				return nil, err
			}
			data, err := os.ReadFile(s.Path(args[0]))
			if err != nil {
				return nil, err
			}
			want := normalizeLines(string(data))
			render := func() ([]string, <-chan struct{}) {
				rows, watch := entries.AllWatch(db.ReadTxn())
				out := []string{}
				for row := range rows {
					if len(out) == 0 {
						out = append(out, "Source IP     Destination CIDR   Egress IP      Gateway IP     Policy")
					}
					for e := range row.Entries() {
						gw := e.GatewayIP.String()
						switch {
						case e.IsExcluded():
							gw = "Excluded CIDR"
						case e.IsDrop():
							gw = "Not Found"
						}
						out = append(out, strings.Join([]string{e.Source.String(), e.Dest.String(), e.EgressIP.String(), gw, e.Policy}, " "))
					}
				}
				return normalizeLines(strings.Join(out, "\n")), watch
			}
			deadline := time.After(timeout)
			for {
				got, watch := render()
				if slices.Equal(got, want) {
					return nil, nil
				}
				select {
				case <-watch:
				case <-deadline:
					return nil, fmt.Errorf("egress-policy-entries differ from %s:\n got:\n  %s\n want:\n  %s",
						args[0], strings.Join(got, "\n  "), strings.Join(want, "\n  "))
				case <-s.Context().Done():
					return nil, s.Context().Err()
				}
			}
		})
}

// normalizeLines splits text into lines with runs of blanks collapsed and
// empty lines dropped.
func normalizeLines(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			out = append(out, strings.Join(f, " "))
		}
	}
	return out
}
