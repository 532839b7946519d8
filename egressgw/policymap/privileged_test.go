package policymap

import (
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb/reconciler"
	"golang.org/x/sys/unix"

	"github.com/cilium/cilium/pkg/bpf"
	"github.com/cilium/cilium/pkg/hive/health/types"
	"github.com/cilium/cilium/pkg/maps/egressmap"

	"github.com/egressha/egressha/egressgw/egresspolicy"
	"github.com/egressha/egressha/internal/privileged"
	"github.com/egressha/egressha/internal/testcells"
)

// requirePrivileged applies privileged.Require and lifts the memlock limit
// (older kernels charge maps to it).
func requirePrivileged(t *testing.T) {
	t.Helper()
	privileged.Require(t, "creates BPF maps")
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatalf("removing the memlock limit: %v", err)
	}
}

// newUnpinnedMap creates a real, unpinned cilium_egress_gw_policy_v4 with
// egressha's spec.
func newUnpinnedMap(t *testing.T, maxEntries int) *BPFPolicyMap {
	t.Helper()
	m := NewPolicyMap(maxEntries)
	if err := m.CreateUnpinned(); err != nil {
		t.Fatalf("creating the map: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// kernelMap opens the kernel's view of m (attributes as the kernel reports
// them, as ebpf.LoadPinnedMap would).
func kernelMap(t *testing.T, m *BPFPolicyMap) *ebpf.Map {
	t.Helper()
	fd, err := unix.Dup(m.FD())
	if err != nil {
		t.Fatal(err)
	}
	km, err := ebpf.NewMapFromFD(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { km.Close() })
	return km
}

// TestPrivilegedPolicyMapReconciler runs the reconciler against real,
// unpinned LPM trie maps created with the production spec.
func TestPrivilegedPolicyMapReconciler(t *testing.T) {
	requirePrivileged(t)

	t.Run("spec-accepted-by-loader-check", func(t *testing.T) {
		m := newUnpinnedMap(t, egressmap.DefaultPolicyConfig.EgressGatewayPolicyMapMax)
		km := kernelMap(t, m)
		// The check pkg/bpf.LoadCollection runs on the pinned map before
		// deciding to re-pin: first against our own spec (what the kernel
		// made of it), then against the C declaration when clang exists.
		if err := PolicyMapSpec(m.MaxEntries()).Compatible(km); err != nil {
			t.Fatalf("the kernel changed our spec: %v", err)
		}
		t.Run("against-C", func(t *testing.T) {
			if err := compiledPolicyMapSpec(t).Compatible(km); err != nil {
				t.Fatalf("the loader would re-pin the map: %v", err)
			}
		})
	})

	t.Run("pinned-map-survives-loader-and-restart", func(t *testing.T) {
		cSpec := compiledPolicyMapSpec(t) // the map as bpf_host.o declares it
		log := hivetest.Logger(t)
		inPrivateBPFFS(t, func(bpffs string) {
			pinDir := filepath.Join(bpffs, "tc", "globals")
			maxEntries := int(cSpec.MaxEntries)
			k, v := key("10.244.1.10", "192.0.2.0/24"), val("203.0.113.1", "172.18.0.2")

			m := NewPolicyMap(maxEntries)
			if err := m.openOrCreateIn(log, pinDir); err != nil {
				t.Errorf("opening the pinned map: %v", err)
				return
			}
			if err := m.Update(k, v); err != nil {
				t.Error(err)
				return
			}
			id := mapID(t, m.FD())

			// The datapath loader, as it loads bpf_host.o: Cilium's own
			// LoadCollection, which re-pins a map it finds incompatible.
			if got := loadAsLoader(t, log, cSpec, pinDir); got != id {
				t.Errorf("the loader replaced the pinned map (id %d -> %d): egressha's handle would be stale", id, got)
			}

			// An agent restart opens the same map, entries included.
			m.Close()
			m2 := NewPolicyMap(maxEntries)
			if err := m2.openOrCreateIn(log, pinDir); err != nil {
				t.Errorf("reopening the pinned map: %v", err)
				return
			}
			defer m2.Close()
			if got := mapID(t, m2.FD()); got != id {
				t.Errorf("reopening after a restart gave another map (id %d -> %d)", id, got)
			}
			if got, err := dump(m2); err != nil || !maps.Equal(got, map[egresspolicy.Key]egresspolicy.Value{k: v}) {
				t.Errorf("entries after the restart: %v %v", got, err)
			}

			// Control: a declaration that differs (one more entry) is
			// re-pinned, so the check above can fail.
			other := cSpec.Copy()
			other.MaxEntries++
			if got := loadAsLoader(t, log, other, pinDir); got == id {
				t.Error("control: the loader kept a pinned map of another size; the check above proves nothing")
			}
		})
	})

	t.Run("encoding-as-cilium-dbg-reads-it", func(t *testing.T) {
		m := newUnpinnedMap(t, 16)
		k, v := key("10.244.1.10", "192.0.2.77/24"), val("203.0.113.1", "172.18.0.2")
		if err := m.Update(k, v); err != nil {
			t.Fatal(err)
		}
		if err := m.Update(key("10.244.1.10", "198.51.100.0/24"), egresspolicy.ExcludedValue); err != nil {
			t.Fatal(err)
		}
		// cilium-dbg bpf egress list walks the map with egressmap's types.
		got := map[string]string{}
		var rk egressmap.EgressPolicyKey4
		var rv egressmap.EgressPolicyVal4
		it := kernelMap(t, m).Iterate()
		for it.Next(&rk, &rv) {
			got[rk.GetSourceIP().String()+" "+rk.GetDestCIDR().String()] = rv.GetEgressAddr().String() + " " + rv.GetGatewayAddr().String()
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{
			"10.244.1.10 192.0.2.0/24":    "203.0.113.1 172.18.0.2",
			"10.244.1.10 198.51.100.0/24": "0.0.0.0 0.0.0.1",
		}
		if !maps.Equal(got, want) {
			t.Fatalf("map as cilium-dbg reads it: %v, want %v", got, want)
		}
		// And the datapath's longest-prefix lookup (full /64 key) finds it.
		lk := egressmap.NewEgressPolicyKey4(k.Source, netip.MustParsePrefix("192.0.2.200/32"))
		var lv egressmap.EgressPolicyVal4
		if err := kernelMap(t, m).Lookup(&lk, &lv); err != nil || !lv.Match(v.EgressIP, v.GatewayIP) {
			t.Fatalf("LPM lookup of 192.0.2.200: %v %v", lv, err)
		}
	})

	t.Run("restart-incremental-resync", func(t *testing.T) { reconcilerScenario(t, newUnpinnedMap(t, 16)) })
	t.Run("map-full", func(t *testing.T) { mapFullScenario(t, newUnpinnedMap(t, 2), inPlaceUpdateWhenFull(t)) })
	t.Run("rows", func(t *testing.T) { rowsScenario(t, newUnpinnedMap(t, 6)) })
}

// inPlaceUpdateWhenFull probes whether this kernel replaces a value in a
// full LPM trie (newer kernels) or answers ENOSPC (older ones).
func inPlaceUpdateWhenFull(t *testing.T) bool {
	t.Helper()
	m := newUnpinnedMap(t, 1)
	k := key("10.0.0.1", "0.0.0.0/0")
	if err := m.Update(k, val("203.0.113.1", "172.18.0.2")); err != nil {
		t.Fatal(err)
	}
	err := m.Update(k, egresspolicy.DropValue)
	switch {
	case err == nil:
		return true
	case errors.Is(err, unix.ENOSPC):
		return false
	}
	t.Fatalf("replacing a value in a full trie: %v", err)
	return false
}

// inPrivateBPFFS runs fn with a fresh bpffs mounted at a temporary
// directory, in a mount namespace of its own: fn runs on a goroutine locked
// to an OS thread that unshared its mount namespace, so nothing is mounted
// on the host. fn is not on the test goroutine: it reports with t.Error.
func inPrivateBPFFS(t *testing.T, fn func(bpffs string)) {
	t.Helper()
	dir := t.TempDir()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Never unlocked: the thread ends with this goroutine, and its
		// mount namespace with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			t.Errorf("unshare(CLONE_NEWNS): %v", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			t.Errorf("making mounts private: %v", err)
			return
		}
		if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
			t.Errorf("mounting bpffs: %v", err)
			return
		}
		fn(dir)
	}()
	<-done
}

// mapID is the kernel's ID of the map behind fd.
func mapID(t *testing.T, fd int) ebpf.MapID {
	t.Helper()
	dup, err := unix.Dup(fd)
	if err != nil {
		t.Error(err)
		return 0
	}
	m, err := ebpf.NewMapFromFD(dup)
	if err != nil {
		t.Error(err)
		return 0
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		t.Error(err)
		return 0
	}
	id, _ := info.ID()
	return id
}

// loadAsLoader loads a collection holding ms the way the datapath loader
// loads bpf_host.o (pkg/bpf.LoadCollection, pins under pinDir, then the
// commit that replaces incompatible pins) and returns the ID of the map
// pinned afterwards.
func loadAsLoader(t *testing.T, log *slog.Logger, ms *ebpf.MapSpec, pinDir string) ebpf.MapID {
	t.Helper()
	spec := &ebpf.CollectionSpec{Maps: map[string]*ebpf.MapSpec{ms.Name: ms.Copy()}}
	coll, commit, err := bpf.LoadCollection(log, spec, &bpf.CollectionOptions{
		CollectionOptions: ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinDir}},
	})
	if err != nil {
		t.Errorf("loading: %v", err)
		return 0
	}
	defer coll.Close()
	if err := commit(); err != nil {
		t.Errorf("committing pins: %v", err)
		return 0
	}
	pinned, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, ms.Name), nil)
	if err != nil {
		t.Errorf("opening the pin: %v", err)
		return 0
	}
	defer pinned.Close()
	return mapID(t, pinned.FD())
}

// TestPrivilegedPinChanges replaces and removes the pin of the map under a
// running reconciler. The reconciler's goroutines must see the pin, so the
// bpffs is mounted in the test process's mount namespace (at a temporary
// directory, unmounted at the end) rather than in a private one.
func TestPrivilegedPinChanges(t *testing.T) {
	requirePrivileged(t)
	log := hivetest.Logger(t)
	const maxEntries = 16
	vA, vB := val("203.0.113.1", "172.18.0.2"), val("203.0.113.1", "172.18.0.3")
	a, b, c := key("10.244.1.10", "192.0.2.0/24"), key("10.244.1.11", "0.0.0.0/0"), key("10.244.1.12", "0.0.0.0/0")
	want := map[egresspolicy.Key]egresspolicy.Value{a: vA, b: vB}

	// start mounts a bpffs, opens the pinned map as the takeover does and
	// runs the reconciler with a and b programmed.
	start := func(t *testing.T) (h *harness, m *BPFPolicyMap, pinDir, pin string) {
		bpffs := t.TempDir()
		if err := unix.Mount("bpf", bpffs, "bpf", 0, ""); err != nil {
			t.Fatalf("mounting bpffs: %v", err)
		}
		t.Cleanup(func() {
			if err := unix.Unmount(bpffs, unix.MNT_DETACH); err != nil {
				t.Errorf("unmounting the test bpffs: %v", err)
			}
		})
		pinDir = filepath.Join(bpffs, "tc", "globals")
		m = NewPolicyMap(maxEntries)
		if err := m.openOrCreateIn(log, pinDir); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		h = newHarness(t, m)
		h.markInitialized()
		h.insert(entry(a, vA), entry(b, vB))
		h.waitStatus(a, reconciler.StatusKindDone)
		h.waitStatus(b, reconciler.StatusKindDone)
		// The resync that follows initialization checks the pin; no other
		// runs until the test triggers one (a pending one would race with
		// the test's changes to the pin).
		testcells.Eventually(t, "the pin reported as the map written", func() bool {
			s, ok := h.pinStatus()
			return ok && s.Level == types.LevelOK && strings.Contains(s.Message, "is the map written")
		})
		return h, m, pinDir, filepath.Join(pinDir, PolicyMapName)
	}
	pinnedID := func(t *testing.T, pin string) ebpf.MapID {
		pm, err := ebpf.LoadPinnedMap(pin, nil)
		if err != nil {
			t.Fatalf("opening the pin: %v", err)
		}
		defer pm.Close()
		id, err := idOf(pm)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}

	t.Run("replaced", func(t *testing.T) {
		h, m, pinDir, pin := start(t)
		oldID := mapID(t, m.FD())
		old := kernelMap(t, m) // the old map, to prove nothing writes it any more

		// Replace the pin with a new, empty map of the same spec, as a
		// loader that re-created it would.
		if err := os.Remove(pin); err != nil {
			t.Fatal(err)
		}
		nm, err := bpf.OpenOrCreateMap(log, PolicyMapSpec(maxEntries), pinDir)
		if err != nil {
			t.Fatal(err)
		}
		defer nm.Close()
		newID, err := idOf(nm)
		if err != nil || newID == oldID {
			t.Fatalf("the new map has id %d (old %d): %v", newID, oldID, err)
		}
		fresh := NewPolicyMap(maxEntries) // a reader of the new map
		fresh.m = nm
		if got, _ := dump(fresh); len(got) != 0 {
			t.Fatalf("the new map is not empty: %v", got)
		}

		h.r.Prune()
		h.waitMap(fresh, want)
		if got := mapID(t, m.FD()); got != newID {
			t.Errorf("the handle is map id %d, want the new pinned map %d", got, newID)
		}
		if got := pinnedID(t, pin); got != newID {
			t.Errorf("the pin is map id %d, want %d", got, newID)
		}
		testcells.Eventually(t, "the replacement counted", func() bool {
			return h.metrics.PinChanges.WithLabelValues("replaced").Get() == 1
		})
		testcells.Eventually(t, "health OK saying the map was replaced and reprogrammed", func() bool {
			s, ok := h.pinStatus()
			return ok && s.Level == types.LevelOK && strings.Contains(s.Message, "was replaced at") &&
				strings.Contains(s.Message, "every entry was reprogrammed")
		})

		// Later writes go to the new map only; another resync counts nothing.
		h.insert(entry(c, vA))
		h.waitStatus(c, reconciler.StatusKindDone)
		h.waitMap(fresh, map[egresspolicy.Key]egresspolicy.Value{a: vA, b: vB, c: vA})
		var v egressmap.EgressPolicyVal4
		ck, _ := bpfKey(c)
		if err := old.Lookup(&ck, &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Errorf("the old map was written after the swap: %v %v", v, err)
		}
		h.r.Prune()
		time.Sleep(200 * time.Millisecond)
		if n := h.metrics.PinChanges.WithLabelValues("replaced").Get(); n != 1 {
			t.Errorf("replacements counted: %v, want 1", n)
		}
		fresh.m = nil // nm is closed by its defer
	})

	t.Run("removed", func(t *testing.T) {
		h, m, _, pin := start(t)
		id := mapID(t, m.FD())
		if err := os.Remove(pin); err != nil {
			t.Fatal(err)
		}
		h.r.Prune()
		testcells.Eventually(t, "the pin restored", func() bool {
			_, err := os.Stat(pin)
			return err == nil
		})
		if got := pinnedID(t, pin); got != id {
			t.Errorf("the restored pin is map id %d, want the map in use %d", got, id)
		}
		h.waitMap(m, want)
		testcells.Eventually(t, "the removal counted", func() bool {
			return h.metrics.PinChanges.WithLabelValues("removed").Get() == 1
		})
		testcells.Eventually(t, "health OK saying the pin was removed and restored", func() bool {
			s, ok := h.pinStatus()
			return ok && s.Level == types.LevelOK && strings.Contains(s.Message, "was removed at")
		})
	})

	t.Run("incompatible", func(t *testing.T) {
		h, m, pinDir, pin := start(t)
		id := mapID(t, m.FD())
		if err := os.Remove(pin); err != nil {
			t.Fatal(err)
		}
		nm, err := bpf.OpenOrCreateMap(log, PolicyMapSpec(maxEntries*2), pinDir)
		if err != nil {
			t.Fatal(err)
		}
		defer nm.Close()
		h.r.Prune()
		testcells.Eventually(t, "health Degraded naming the other spec", func() bool {
			s, ok := h.pinStatus()
			return ok && s.Level == types.LevelDegraded && strings.Contains(s.Message, "has another spec") &&
				strings.Contains(s.Error, "MaxEntries")
		})
		if got := mapID(t, m.FD()); got != id {
			t.Errorf("the handle moved to the incompatible map (id %d -> %d)", id, got)
		}
		h.waitMap(m, want)
		h.r.Prune()
		time.Sleep(200 * time.Millisecond)
		if n := h.metrics.PinChanges.WithLabelValues("incompatible").Get(); n != 1 {
			t.Errorf("incompatible pins counted: %v, want 1 (once per map)", n)
		}
	})
}

// TestPrivilegedBatches: UpdateBatch writes in batches of updateBatchMax
// and IterateWithCallback reads in batches of iterateBatch; a map of
// several batches (and a partial last one) gets and yields every entry
// exactly once, with its value. A batch that does not fit stops at the
// first entry without room and says how many it wrote.
func TestPrivilegedBatches(t *testing.T) {
	requirePrivileged(t)
	const n = 2*max(iterateBatch, updateBatchMax) + 123
	m := newUnpinnedMap(t, n)
	want := map[egresspolicy.Key]egresspolicy.Value{}
	var keys []egresspolicy.Key
	var vals []egresspolicy.Value
	for i := range n {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		k := egresspolicy.Key{Source: src, Dest: netip.MustParsePrefix("192.0.2.0/24")}
		v := egresspolicy.Value{EgressIP: netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), GatewayIP: netip.MustParseAddr("172.18.0.2")}
		keys, vals = append(keys, k), append(vals, v)
		want[k] = v
	}
	if written, err := m.UpdateBatch(keys, vals); err != nil || written != n {
		t.Fatalf("UpdateBatch: %d of %d written: %v", written, n, err)
	}
	got := map[egresspolicy.Key]egresspolicy.Value{}
	calls := 0
	if err := m.IterateWithCallback(func(k egresspolicy.Key, v egresspolicy.Value) {
		calls++
		got[k] = v
	}); err != nil {
		t.Fatal(err)
	}
	if calls != n || !maps.Equal(got, want) {
		t.Fatalf("%d callbacks, %d distinct entries, want %d (equal: %v)", calls, len(got), n, maps.Equal(got, want))
	}
	// An empty map: no callback, no error.
	small := newUnpinnedMap(t, 3)
	if err := small.IterateWithCallback(func(egresspolicy.Key, egresspolicy.Value) { t.Fatal("callback on an empty map") }); err != nil {
		t.Fatal(err)
	}
	// 5 entries into a map of 3.
	written, err := small.UpdateBatch(keys[:5], vals[:5])
	if written != 3 || !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("5 entries into a map of 3: %d written, error %v; want 3 and ENOSPC", written, err)
	}
	got, err = dump(small)
	if err != nil || len(got) != 3 || got[keys[0]] != vals[0] || got[keys[2]] != vals[2] {
		t.Fatalf("map of 3 after the batch: %v %v", got, err)
	}
}
