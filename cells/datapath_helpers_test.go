package cells

import (
	"maps"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/hive/cell"

	"github.com/cilium/cilium/pkg/datapath/linux/sysctl"
	datapathtables "github.com/cilium/cilium/pkg/datapath/tables"
	"github.com/cilium/cilium/pkg/maps/egressmap"

	egressmaps "github.com/egressha/egressha/egressgw/maps"
)

// provideDatapathDependencies stands in for what Cilium's datapath cells
// provide to ours: egressmap's PolicyConfig and a sysctl (in memory).
func provideDatapathDependencies() cell.Cell {
	return cell.Provide(
		func() egressmap.PolicyConfig { return egressmap.DefaultPolicyConfig },
		func() sysctl.Sysctl { return newFakeSysctl() },
	)
}

// provideNoPolicyMap stands in for datapathTakeoverCell in hives built
// from agentCells: egressha does not own the datapath, so the map
// reconciler and rp_filter stay off.
func provideNoPolicyMap() cell.Cell {
	return cell.Provide(func() egressmaps.PolicyMap { return nil })
}

// fakeSysctl is a sysctl.Sysctl in memory. Parameters of interfaces in
// missing do not exist, as after the interface was deleted.
type fakeSysctl struct {
	mu      sync.Mutex
	values  map[string]string
	missing map[string]bool
	writes  int
}

var _ sysctl.Sysctl = (*fakeSysctl)(nil)

func newFakeSysctl() *fakeSysctl {
	return &fakeSysctl{values: map[string]string{}, missing: map[string]bool{}}
}

func (f *fakeSysctl) exists(name []string) bool {
	return !(len(name) > 3 && f.missing[name[3]])
}

func (f *fakeSysctl) Write(name []string, val string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if f.exists(name) {
		f.values[strings.Join(name, ".")] = val
	}
	return nil
}

func (f *fakeSysctl) Disable(name []string) error { return f.Write(name, "0") }
func (f *fakeSysctl) Enable(name []string) error  { return f.Write(name, "1") }
func (f *fakeSysctl) WriteInt(name []string, val int64) error {
	return f.Write(name, strconv.FormatInt(val, 10))
}

// ApplySettings ignores errors as the reconciling sysctl does for
// IgnoreErr settings, the only ones egressha writes.
func (f *fakeSysctl) ApplySettings(s []datapathtables.Sysctl) error {
	for _, x := range s {
		if err := f.Write(x.Name, x.Val); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeSysctl) Read(name []string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.exists(name) {
		return "", &fakeSysctlError{strings.Join(name, ".")}
	}
	return f.values[strings.Join(name, ".")], nil
}

func (f *fakeSysctl) ReadInt(name []string) (int64, error) {
	v, err := f.Read(name)
	if err != nil {
		return -1, err
	}
	return strconv.ParseInt(v, 10, 64)
}

func (f *fakeSysctl) snapshot() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.values)
}

type fakeSysctlError struct{ name string }

func (e *fakeSysctlError) Error() string { return "no such sysctl " + e.name }
