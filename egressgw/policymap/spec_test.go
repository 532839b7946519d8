package policymap

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/cilium/cilium/pkg/maps/egressmap"
)

// compiledPolicyMapSpec compiles Cilium's bpf_host.c (from the module
// cache, the exact version we link) with ENABLE_EGRESS_GATEWAY, as the
// loader does on a node where egressha provides that define, and returns
// the map spec clang and ebpf-go derive from the C declaration. It skips
// the test when no clang is installed (`make lab-deps` installs clang-19).
// The object is compiled once per test binary.
func compiledPolicyMapSpec(t *testing.T) *ebpf.MapSpec {
	t.Helper()
	compiled.once.Do(compileBPFHost)
	if compiled.skip != "" {
		t.Skip(compiled.skip)
	}
	if compiled.err != nil {
		t.Fatal(compiled.err)
	}
	return compiled.spec.Copy()
}

var compiled struct {
	once sync.Once
	spec *ebpf.MapSpec
	skip string
	err  error
}

func compileBPFHost() {
	clang := ""
	for _, c := range []string{"clang-19", "clang"} {
		if p, err := exec.LookPath(c); err == nil {
			clang = p
			break
		}
	}
	if clang == "" {
		compiled.skip = "clang not found: cannot compile Cilium's bpf_host.c to compare the map spec with the C declaration " +
			"(install clang-19, e.g. `make lab-deps`)"
		return
	}
	bpfDir := ciliumBPFDir()
	if _, err := os.Stat(filepath.Join(bpfDir, "bpf_host.c")); err != nil {
		compiled.skip = "cannot read Cilium's BPF sources to compare the map spec with the C declaration: " + err.Error()
		return
	}
	tmp, err := os.MkdirTemp("", "egressha-bpf-host-")
	if err != nil {
		compiled.err = err
		return
	}
	defer os.RemoveAll(tmp)
	obj := filepath.Join(tmp, "bpf_host.o")
	cmd := exec.Command(clang,
		"-I"+bpfDir, "-I"+filepath.Join(bpfDir, "include"),
		"-O2", "-g", "--target=bpf", "-std=gnu89", "-nostdinc", "-mcpu=v2",
		"-Wno-address-of-packed-member", "-Wno-unknown-warning-option", "-Wno-gnu-variable-sized-type-not-at-end",
		// What a node running egressha compiles bpf_host with, as far as
		// the map declaration is concerned; the rest of node_config.h
		// (including EGRESS_POLICY_MAP_SIZE 16384) is Cilium's default.
		"-DENABLE_IPV4", "-DENABLE_NODEPORT", "-DENABLE_MASQUERADE_IPV4", "-DENCAP_IFINDEX=1",
		"-DENABLE_EGRESS_GATEWAY",
		"-c", filepath.Join(bpfDir, "bpf_host.c"), "-o", obj)
	if b, err := cmd.CombinedOutput(); err != nil {
		compiled.err = fmt.Errorf("compiling bpf_host.c: %w\n%s", err, b)
		return
	}
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		compiled.err = fmt.Errorf("loading %s: %w", obj, err)
		return
	}
	ms, ok := spec.Maps[PolicyMapName]
	if !ok {
		compiled.err = fmt.Errorf("bpf_host.o compiled with ENABLE_EGRESS_GATEWAY declares no %s", PolicyMapName)
		return
	}
	compiled.spec = ms
}

// ciliumBPFDir is bpf/ of the Cilium module this test is linked with: the
// directory of a compiled-in Cilium source file, or else what `go list`
// says.
func ciliumBPFDir() string {
	const suffix = "/pkg/maps/egressmap/policy.go"
	fn := runtime.FuncForPC(reflect.ValueOf(egressmap.NewEgressPolicyKey4).Pointer())
	file, _ := fn.FileLine(fn.Entry())
	if strings.HasSuffix(file, suffix) && filepath.IsAbs(file) {
		return filepath.Join(strings.TrimSuffix(file, suffix), "bpf")
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cilium/cilium").Output()
	if err != nil {
		return ""
	}
	return filepath.Join(strings.TrimSpace(string(out)), "bpf")
}

// TestPolicyMapSpecMatchesCDeclaration compares PolicyMapSpec with the
// spec of the C declaration: every attribute the loader's compatibility
// check looks at, plus the pinning that makes it look.
func TestPolicyMapSpecMatchesCDeclaration(t *testing.T) {
	ours := PolicyMapSpec(egressmap.DefaultPolicyConfig.EgressGatewayPolicyMapMax)
	c := compiledPolicyMapSpec(t)
	if c.Name != ours.Name || c.Type != ours.Type || c.KeySize != ours.KeySize || c.ValueSize != ours.ValueSize ||
		c.MaxEntries != ours.MaxEntries || c.Flags != ours.Flags || c.Pinning != ours.Pinning {
		t.Fatalf("spec differs from the C declaration:\n ours %s %s key %d value %d max %d flags %#x pinning %v\n    C %s %s key %d value %d max %d flags %#x pinning %v",
			ours.Name, ours.Type, ours.KeySize, ours.ValueSize, ours.MaxEntries, ours.Flags, ours.Pinning,
			c.Name, c.Type, c.KeySize, c.ValueSize, c.MaxEntries, c.Flags, c.Pinning)
	}
}
