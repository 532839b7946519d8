package policymap

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/statedb/reconciler"

	"github.com/cilium/cilium/pkg/hive/health/types"

	"github.com/egressha/egressha/egressgw/egresspolicy"
	"github.com/egressha/egressha/egressgw/policymap/mapstest"
	"github.com/egressha/egressha/internal/testcells"
)

func TestDecidePin(t *testing.T) {
	incompatible := errors.New("MaxEntries: 32 changed to 16")
	for _, tc := range []struct {
		name         string
		held         ebpf.MapID
		exists       bool
		pinned       ebpf.MapID
		incompatible error
		want         PinAction
	}{
		{"pin is the map held", 7, true, 7, nil, PinKept},
		{"pin replaced by a compatible map", 7, true, 9, nil, PinReopened},
		{"pin replaced by an incompatible map", 7, true, 9, incompatible, PinIncompatible},
		{"pin removed", 7, false, 0, nil, PinRestored},
		// An error comparing the same map cannot happen; the ID decides.
		{"same map, spec error ignored", 7, true, 7, incompatible, PinKept},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decidePin(tc.held, tc.exists, tc.pinned, tc.incompatible); got != tc.want {
				t.Fatalf("decidePin = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestPinActionString(t *testing.T) {
	// The strings are the values of the cause label of
	// egressha_policy_map_replaced_total.
	for a, want := range map[PinAction]string{
		PinKept: "kept", PinReopened: "replaced", PinRestored: "removed", PinIncompatible: "incompatible",
	} {
		if got := a.String(); got != want {
			t.Errorf("%d: %q, want %q", int(a), got, want)
		}
	}
}

// pinnedFake is an in-memory map behind a pin that the test replaces: the
// next CheckPin reports the replacement and swaps to the new map, as
// BPFPolicyMap does. TestPrivilegedPinChanges does the same on bpffs.
type pinnedFake struct {
	mu      sync.Mutex
	cur     *mapstest.Map
	id      ebpf.MapID
	next    *mapstest.Map
	nextID  ebpf.MapID
	checked int
}

func (f *pinnedFake) held() *mapstest.Map {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur
}

func (f *pinnedFake) Update(k egresspolicy.Key, v egresspolicy.Value) error {
	return f.held().Update(k, v)
}
func (f *pinnedFake) Delete(k egresspolicy.Key) error { return f.held().Delete(k) }
func (f *pinnedFake) IterateWithCallback(cb func(egresspolicy.Key, egresspolicy.Value)) error {
	return f.held().IterateWithCallback(cb)
}
func (f *pinnedFake) MaxEntries() int { return f.held().MaxEntries() }

func (f *pinnedFake) replace(m *mapstest.Map, id ebpf.MapID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next, f.nextID = m, id
}

func (f *pinnedFake) CheckPin() (PinCheck, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checked++
	res := PinCheck{Action: PinKept, Path: "/sys/fs/bpf/tc/globals/" + PolicyMapName, HeldID: f.id, PinnedID: f.id}
	if f.next != nil {
		res.Action, res.PinnedID = PinReopened, f.nextID
		f.cur, f.id, f.next = f.next, f.nextID, nil
	}
	return res, nil
}

// TestPinReplacedReporting: the pin health stays Degraded while the new map
// cannot take every entry, and turns OK, saying when the map was replaced,
// only once a resync wrote them all.
func TestPinReplacedReporting(t *testing.T) {
	f := &pinnedFake{cur: mapstest.New(16), id: 7}
	h := newHarness(t, f)
	h.markInitialized()
	vA, vB := val("203.0.113.1", "172.18.0.2"), val("203.0.113.1", "172.18.0.3")
	a, b := key("10.244.1.10", "192.0.2.0/24"), key("10.244.1.11", "0.0.0.0/0")
	h.insert(entry(a, vA), entry(b, vB))
	h.waitStatus(a, reconciler.StatusKindDone)
	h.waitStatus(b, reconciler.StatusKindDone)
	h.r.Prune()
	testcells.Eventually(t, "the pin reported as the map written", func() bool {
		s, ok := h.pinStatus()
		return ok && s.Level == types.LevelOK && strings.Contains(s.Message, "is the map written (id 7)")
	})

	// Replaced by a map with room for one entry only: the resync cannot
	// write both, so the pin stays Degraded.
	small := mapstest.New(1)
	f.replace(small, 9)
	h.r.Prune()
	testcells.Eventually(t, "pin health Degraded naming both IDs", func() bool {
		s, ok := h.pinStatus()
		return ok && s.Level == types.LevelDegraded && strings.Contains(s.Message, "was replaced (map id 7 -> 9)")
	})
	if n := h.metrics.PinChanges.WithLabelValues("replaced").Get(); n != 1 {
		t.Fatalf("replacements counted: %v, want 1", n)
	}
	h.r.Prune()
	testcells.Eventually(t, "a second resync", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.checked >= 3
	})
	time.Sleep(100 * time.Millisecond)
	if s, _ := h.pinStatus(); s.Level != types.LevelDegraded {
		t.Fatalf("pin health %s (%s) while an entry is still missing from the new map", s.Level, s.Message)
	}

	// Room: b is no longer desired; the next resync completes the repair
	// (it writes a if the full map took b instead).
	h.delete(b)
	h.r.Prune()
	h.waitMap(small, map[egresspolicy.Key]egresspolicy.Value{a: vA})
	testcells.Eventually(t, "pin health OK saying the map was replaced", func() bool {
		s, ok := h.pinStatus()
		return ok && s.Level == types.LevelOK && strings.Contains(s.Message, "was replaced at") &&
			strings.Contains(s.Message, "(map id 7 -> 9); every entry was reprogrammed")
	})
	if n := h.metrics.PinChanges.WithLabelValues("replaced").Get(); n != 1 {
		t.Fatalf("replacements counted: %v, want 1", n)
	}
}
