package cells

// Agent memory (issue 8, item 5: "agent RSS over stock Cilium with 100k
// entries programmed"), measured in process, not on two real agents.
//
// What is measured: for each side (egressha's agent cells, Cilium v1.18's
// egress gateway manager; the same harness and input as
// BenchmarkAgentScale), in a subprocess of its own (the test binary run
// again with EGRESSHA_SCALE_MEMORY_SIDE set, so one side's heap and
// garbage cannot pollute the other's), the growth from "started, policy and
// gateway known, map empty" to "N endpoints × 4 CIDRs programmed":
//
//   - heap-MB: runtime.MemStats.HeapInuse after two GCs, minus the same
//     before the endpoints are sent: the live state the side keeps;
//   - rss-MB: VmRSS from /proc/self/status after debug.FreeOSMemory, minus
//     the same before: what the kernel charges the process for it;
//   - peak-rss-MB: VmHWM at the end, the whole subprocess's peak RSS
//     (input, harness and the transient garbage of programming included).
//
// The input (the CiliumEndpoint objects, which the agent's shared informer
// holds whichever side runs, and for Cilium the identities its identity
// cache holds) is built before the first reading and kept alive to the
// end, so it is in neither delta.
//
// How it differs from whole-agent RSS: a real agent also holds everything
// else Cilium runs (the same in both deployments, so it cancels out of
// "over stock Cilium"), and the BPF map's memory is kernel memory, in
// neither process's RSS (the same map, the same entries, on both sides).
// What is not here: Cilium's informer for EgressGateways and policies
// (tiny), and egressha's heartbeat Lease and VIP cells (independent of
// the number of endpoints).

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
)

const scaleMemorySideEnv = "EGRESSHA_SCALE_MEMORY_SIDE"

// scaleMemory is what one subprocess measured, in bytes.
type scaleMemory struct {
	heap, rss, peakRSS float64
}

// readRSS returns VmRSS and VmHWM of this process in bytes.
func readRSS() (rss, hwm float64, err error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		kb, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return 0, 0, err
		}
		switch f[0] {
		case "VmRSS:":
			rss = kb * 1024
		case "VmHWM:":
			hwm = kb * 1024
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, fmt.Errorf("no VmRSS or VmHWM in /proc/self/status")
	}
	return rss, hwm, nil
}

// settledMemory collects garbage, returns freed pages to the kernel and
// reads HeapInuse and VmRSS.
func settledMemory() (heap, rss float64, err error) {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, _, err = readRSS()
	return float64(ms.HeapInuse), rss, err
}

// TestScaleMemoryChild is the subprocess of BenchmarkAgentScaleMemory; it
// does nothing unless EGRESSHA_SCALE_MEMORY_SIDE names a side. With
// EGRESSHA_SCALE_MEMORY_PROFILE=file it also writes a heap profile of the
// programmed state there.
func TestScaleMemoryChild(t *testing.T) {
	name := os.Getenv(scaleMemorySideEnv)
	if name == "" {
		// Not the benchmark's subprocess: check that the subprocess
		// machinery works end to end at a small size, for both sides, so
		// `make bench` cannot be the first to find it broken.
		requirePrivilegedBench(t)
		for _, side := range []string{scaleSideEgressha, scaleSideCilium} {
			m, err := runScaleMemoryChild(context.Background(), side, 200)
			if err != nil {
				t.Fatal(err)
			}
			if m.rss <= 0 && m.heap <= 0 {
				t.Errorf("%s side: no memory growth measured for 800 programmed entries: %+v", side, m)
			}
		}
		return
	}
	requirePrivilegedBench(t)
	var side scaleSide
	in := newScaleInput(scaleEndpoints(t))
	switch name {
	case scaleSideEgressha:
		side = newEgresshaScaleSide(in)
	case scaleSideCilium:
		cs := newCiliumScaleSide(in).(*ciliumScale)
		ids, err := newScaleIdentities(in)
		if err != nil {
			t.Fatal(err)
		}
		cs.ids = ids // the identity cache is input too
		side = cs
	default:
		t.Fatalf("%s=%q: want %s or %s", scaleMemorySideEnv, name, scaleSideEgressha, scaleSideCilium)
	}
	ctx, cancel := context.WithTimeout(context.Background(), scaleTimeout)
	defer cancel()
	side.start(ctx, t)
	defer side.close(t)
	heap0, rss0, err := settledMemory()
	if err != nil {
		t.Fatal(err)
	}
	if err := side.programAll(ctx); err != nil {
		t.Fatal(err)
	}
	side.settle(ctx, t)
	if got := side.mapEntries(t); got != scaleEntries(len(in.endpoints)) {
		t.Fatalf("%d entries in the map, want %d", got, scaleEntries(len(in.endpoints)))
	}
	heap1, rss1, err := settledMemory()
	if err != nil {
		t.Fatal(err)
	}
	_, hwm, err := readRSS()
	if err != nil {
		t.Fatal(err)
	}
	if path := os.Getenv("EGRESSHA_SCALE_MEMORY_PROFILE"); path != "" {
		// What the side holds, for a look with `go tool pprof -sample_index=inuse_space`.
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	runtime.KeepAlive(in)
	fmt.Printf("scale-memory side=%s heap=%.0f rss=%.0f peak-rss=%.0f\n", name, heap1-heap0, rss1-rss0, hwm)
}

// runScaleMemoryChild runs TestScaleMemoryChild for one side with n
// endpoints and parses its result line.
func runScaleMemoryChild(ctx context.Context, side string, n int) (scaleMemory, error) {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestScaleMemoryChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), scaleMemorySideEnv+"="+side, "EGRESSHA_SCALE_ENDPOINTS="+strconv.Itoa(n))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return scaleMemory{}, fmt.Errorf("%s side: %w\n%s", side, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		var m scaleMemory
		var got string
		if _, err := fmt.Sscanf(line, "scale-memory side=%s heap=%g rss=%g peak-rss=%g", &got, &m.heap, &m.rss, &m.peakRSS); err == nil && got == side {
			return m, nil
		}
	}
	return scaleMemory{}, fmt.Errorf("%s side: no result line in\n%s", side, out)
}

// BenchmarkAgentScaleMemory reports the memory each side keeps for N
// endpoints × 4 CIDRs programmed (default 100,000 endpoints), and their
// ratio, egressha / Cilium (see the file comment for what is measured).
// Each op is one subprocess per side; ns/op is not reported.
func BenchmarkAgentScaleMemory(b *testing.B) {
	requirePrivilegedBench(b)
	n := scaleEndpoints(b)
	ctx, cancel := context.WithTimeout(context.Background(), 2*scaleTimeout)
	defer cancel()
	const mb = 1 << 20
	results := map[string]scaleMemory{}
	for _, side := range []string{scaleSideEgressha, scaleSideCilium} {
		b.Run(side, func(b *testing.B) {
			var sum scaleMemory
			for range b.N {
				m, err := runScaleMemoryChild(ctx, side, n)
				if err != nil {
					b.Fatal(err)
				}
				sum.heap += m.heap
				sum.rss += m.rss
				sum.peakRSS = max(sum.peakRSS, m.peakRSS)
			}
			r := scaleMemory{heap: sum.heap / float64(b.N), rss: sum.rss / float64(b.N), peakRSS: sum.peakRSS}
			results[side] = r
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(r.heap/mb, "heap-MB")
			b.ReportMetric(r.rss/mb, "rss-MB")
			b.ReportMetric(r.peakRSS/mb, "peak-rss-MB")
		})
	}
	b.Run("ratio", func(b *testing.B) {
		ours, ok1 := results[scaleSideEgressha]
		theirs, ok2 := results[scaleSideCilium]
		if !ok1 || !ok2 {
			b.Skip("the egressha and cilium memory benchmarks did not both run; a ratio needs both in the same run")
		}
		for range b.N {
		}
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(ours.heap/theirs.heap, "heap-ratio")
		b.ReportMetric(ours.rss/theirs.rss, "rss-ratio")
		b.ReportMetric((ours.rss-theirs.rss)/mb, "rss-over-cilium-MB")
		b.ReportMetric(ours.peakRSS/theirs.peakRSS, "peak-rss-ratio")
	})
}
