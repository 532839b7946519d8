// Package testcells holds what the tests of several packages use to stand
// in for cilium-agent around egressha's cells: a Cilium configuration the
// start check accepts, a sysctl in memory, gateway rows. Only tests import
// it.
package testcells

import (
	"github.com/cilium/hive/cell"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cilium/cilium/pkg/datapath/linux/sysctl"
	datapathtables "github.com/cilium/cilium/pkg/datapath/tables"
	"github.com/cilium/cilium/pkg/kpr"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/tables"
)

// GoodDaemonConfig is a Cilium configuration the agent's start check
// accepts.
func GoodDaemonConfig() (*option.DaemonConfig, kpr.KPRConfig) {
	return &option.DaemonConfig{
			EnableIPv4:             true,
			EnableIPv4Masquerade:   true,
			EnableBPFMasquerade:    true,
			IdentityAllocationMode: option.IdentityAllocationModeCRD,
		}, kpr.KPRConfig{
			KubeProxyReplacement: option.KubeProxyReplacementTrue,
			EnableNodePort:       true,
		}
}

// BasicGateway is a PrimaryIPFromEgressGatewayNodeInterface gateway row.
func BasicGateway(name, iface string, selector map[string]string) *tables.EgressGateway {
	return tables.NewEgressGateway(&v1alpha1.EgressGateway{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.EgressGatewaySpec{
			NodeSelector: selector,
			SourceIP: v1alpha1.SourceIP{Mode: v1alpha1.SourceIPModePrimaryIP,
				PrimaryIPFromEgressGatewayNodeInterface: &v1alpha1.PrimaryIPFromEgressGatewayNodeInterface{InterfaceName: v1alpha1.InterfaceName(iface)}},
		},
	})
}

// VIPGateway is a VirtualIPAddress gateway row (VIP 198.51.100.10).
func VIPGateway(name string, ifaces []v1alpha1.InterfaceName, selector map[string]string) *tables.EgressGateway {
	return tables.NewEgressGateway(&v1alpha1.EgressGateway{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.EgressGatewaySpec{
			NodeSelector: selector,
			SourceIP: v1alpha1.SourceIP{Mode: v1alpha1.SourceIPModeVirtualIP,
				VirtualIPAddress: &v1alpha1.VirtualIPAddress{IP: "198.51.100.10", Interfaces: ifaces}},
		},
	})
}

// FakeSysctl is a sysctl.Sysctl in memory. Parameters of interfaces in
// missing do not exist, as after the interface was deleted.
type FakeSysctl struct {
	mu      sync.Mutex
	values  map[string]string
	missing map[string]bool
	writes  int
}

var _ sysctl.Sysctl = (*FakeSysctl)(nil)

func NewFakeSysctl() *FakeSysctl {
	return &FakeSysctl{values: map[string]string{}, missing: map[string]bool{}}
}

func (f *FakeSysctl) exists(name []string) bool {
	return !(len(name) > 3 && f.missing[name[3]])
}

func (f *FakeSysctl) Write(name []string, val string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if f.exists(name) {
		f.values[strings.Join(name, ".")] = val
	}
	return nil
}

func (f *FakeSysctl) Disable(name []string) error { return f.Write(name, "0") }
func (f *FakeSysctl) Enable(name []string) error  { return f.Write(name, "1") }
func (f *FakeSysctl) WriteInt(name []string, val int64) error {
	return f.Write(name, strconv.FormatInt(val, 10))
}

// ApplySettings ignores errors as the reconciling sysctl does for
// IgnoreErr settings, the only ones egressha writes.
func (f *FakeSysctl) ApplySettings(s []datapathtables.Sysctl) error {
	for _, x := range s {
		if err := f.Write(x.Name, x.Val); err != nil {
			return err
		}
	}
	return nil
}

func (f *FakeSysctl) Read(name []string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.exists(name) {
		return "", &sysctlError{strings.Join(name, ".")}
	}
	return f.values[strings.Join(name, ".")], nil
}

func (f *FakeSysctl) ReadInt(name []string) (int64, error) {
	v, err := f.Read(name)
	if err != nil {
		return -1, err
	}
	return strconv.ParseInt(v, 10, 64)
}

// Snapshot returns the values written.
func (f *FakeSysctl) Snapshot() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.values)
}

type sysctlError struct{ name string }

func (e *sysctlError) Error() string { return "no such sysctl " + e.name }

// Eventually polls cond every 10 ms until it holds, and fails the test if
// it does not within 10 s (a liveness bound, not a timing assertion).
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// NopHealth is a cell.Health that discards every report, for jobs run
// outside a hive in tests.
type NopHealth struct{}

func (NopHealth) OK(string)                     {}
func (NopHealth) Stopped(string)                {}
func (NopHealth) Degraded(string, error)        {}
func (h NopHealth) NewScope(string) cell.Health { return h }
func (NopHealth) Close()                        {}
