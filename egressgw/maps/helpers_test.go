package maps

import (
	"fmt"
	"maps"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/egressha/egressha/egressgw/policy"
)

func key(src, dst string) policy.Key {
	return policy.Key{Source: netip.MustParseAddr(src), Dest: netip.MustParsePrefix(dst)}
}

func val(egress, gw string) policy.Value {
	return policy.Value{EgressIP: netip.MustParseAddr(egress), GatewayIP: netip.MustParseAddr(gw)}
}

// fakeMap is a PolicyMap in memory that refuses inserts beyond max entries
// the way the kernel's LPM trie does (ENOSPC).
type fakeMap struct {
	mu      sync.Mutex
	max     int
	entries map[policy.Key]policy.Value
	// oldKernel refuses replacing an entry while the map is full, as
	// kernels without the in-place update fix for full LPM tries do.
	oldKernel bool
	// updateErr, when set, fails every Update.
	updateErr error
}

var _ PolicyMap = (*fakeMap)(nil)

func newFakeMap(max int) *fakeMap {
	return &fakeMap{max: max, entries: map[policy.Key]policy.Value{}}
}

func (f *fakeMap) Update(k policy.Key, v policy.Value) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.updateErr != nil {
		return f.updateErr
	}
	if _, ok := f.entries[k]; (!ok || f.oldKernel) && len(f.entries) >= f.max {
		return fmt.Errorf("update map %s: %w", PolicyMapName, unix.ENOSPC)
	}
	f.entries[k] = v
	return nil
}

func (f *fakeMap) Delete(k policy.Key) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.entries, k)
	return nil
}

func (f *fakeMap) IterateWithCallback(cb func(policy.Key, policy.Value)) error {
	f.mu.Lock()
	snapshot := maps.Clone(f.entries)
	f.mu.Unlock()
	for k, v := range snapshot {
		cb(k, v)
	}
	return nil
}

func (f *fakeMap) MaxEntries() int { return f.max }

// op is one call a recordingMap saw.
type op struct {
	Delete bool
	Key    policy.Key
	Value  policy.Value
}

// recordingMap passes every call to a PolicyMap and records the writes, so
// a test can prove that an entry was never deleted or rewritten.
type recordingMap struct {
	PolicyMap
	mu  sync.Mutex
	ops []op
}

func (r *recordingMap) Update(k policy.Key, v policy.Value) error {
	r.mu.Lock()
	r.ops = append(r.ops, op{Key: k, Value: v})
	r.mu.Unlock()
	return r.PolicyMap.Update(k, v)
}

func (r *recordingMap) Delete(k policy.Key) error {
	r.mu.Lock()
	r.ops = append(r.ops, op{Delete: true, Key: k})
	r.mu.Unlock()
	return r.PolicyMap.Delete(k)
}

func (r *recordingMap) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops)
}

// writesTo returns the recorded writes of k.
func (r *recordingMap) writesTo(k policy.Key) []op {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []op
	for _, o := range r.ops {
		if o.Key == k {
			out = append(out, o)
		}
	}
	return out
}

// dump reads the whole map.
func dump(m PolicyMap) (map[policy.Key]policy.Value, error) {
	out := map[policy.Key]policy.Value{}
	err := m.IterateWithCallback(func(k policy.Key, v policy.Value) { out[k] = v })
	return out, err
}
