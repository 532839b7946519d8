// Package mapstest provides an in-memory egress policy map for tests of
// the reconciler and of the cells that wire it: it refuses inserts beyond
// its capacity the way the kernel's LPM trie does (ENOSPC).
package mapstest

import (
	"fmt"
	"maps"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/egressha/egressha/egressgw/egresspolicy"
)

// Map implements maps.PolicyMap in memory. Tests may read and set Entries
// directly while nothing else uses the map.
type Map struct {
	mu      sync.Mutex
	Max     int
	Entries map[egresspolicy.Key]egresspolicy.Value
	// OldKernel refuses replacing an entry while the map is full, as
	// kernels without the in-place update fix for full LPM tries do.
	OldKernel bool
	// UpdateErr, when set, fails every Update.
	UpdateErr error
}

// New returns an empty map holding at most max entries.
func New(max int) *Map {
	return &Map{Max: max, Entries: map[egresspolicy.Key]egresspolicy.Value{}}
}

// Update inserts or replaces an entry.
func (f *Map) Update(k egresspolicy.Key, v egresspolicy.Value) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.UpdateErr != nil {
		return f.UpdateErr
	}
	if _, ok := f.Entries[k]; (!ok || f.OldKernel) && len(f.Entries) >= f.Max {
		return fmt.Errorf("update map cilium_egress_gw_policy_v4: %w", unix.ENOSPC)
	}
	f.Entries[k] = v
	return nil
}

// UpdateBatch writes the entries in order until one fails, as the
// kernel's batch update does: it returns how many were written.
func (f *Map) UpdateBatch(keys []egresspolicy.Key, values []egresspolicy.Value) (int, error) {
	for i := range keys {
		if err := f.Update(keys[i], values[i]); err != nil {
			return i, err
		}
	}
	return len(keys), nil
}

// Delete removes an entry; a missing key is not an error.
func (f *Map) Delete(k egresspolicy.Key) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.Entries, k)
	return nil
}

// IterateWithCallback calls cb for a snapshot of the entries.
func (f *Map) IterateWithCallback(cb func(egresspolicy.Key, egresspolicy.Value)) error {
	for k, v := range f.Snapshot() {
		cb(k, v)
	}
	return nil
}

// MaxEntries is the capacity.
func (f *Map) MaxEntries() int { return f.Max }

// Snapshot copies the entries.
func (f *Map) Snapshot() map[egresspolicy.Key]egresspolicy.Value {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.Entries)
}
