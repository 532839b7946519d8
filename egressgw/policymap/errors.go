package policymap

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrMapFull matches (errors.Is) every MapFullError.
var ErrMapFull = errors.New("map full")

// MaxEntriesFlag is Cilium's flag that sizes the egress gateway policy map
// (registered by egressmap.Cell; Helm egressGateway.maxPolicyEntries).
const MaxEntriesFlag = "egress-gateway-policy-map-max"

// MapFullError is a write the kernel refused because the map already holds
// its maximum number of entries. The entry is not in the map: its traffic
// is not steered to a gateway until the map is enlarged.
type MapFullError struct {
	// MaxEntries is the map's current capacity.
	MaxEntries int
	// Err is the error from the kernel.
	Err error
}

func (e *MapFullError) Error() string {
	return fmt.Sprintf("map full: raise %s (now %d)", MaxEntriesFlag, e.MaxEntries)
}

// Is makes errors.Is(err, ErrMapFull) true.
func (e *MapFullError) Is(target error) bool { return target == ErrMapFull }

// Unwrap returns the kernel's error.
func (e *MapFullError) Unwrap() error { return e.Err }

// classifyUpdateError turns the kernel's "no room" answers into a
// MapFullError and leaves every other error as it is.
//
// An LPM trie insert returns ENOSPC when n_entries == max_entries
// (kernel/bpf/lpm_trie.c, trie_update_elem / trie_check_add_elem). Older
// kernels check this before looking for the key, so on them a full trie
// refuses even replacing an existing entry's value (newer ones, e.g. the
// 6.18 the privileged test ran on, replace in place): there a value change
// on a map at capacity is reported as map full too, and the old entry
// stays as it was, which is exactly what the row's status then says. Hash
// maps say E2BIG for the same condition; it is classified too so the
// classification does not depend on the map type. ENOMEM is not "full":
// the kernel failed to allocate the node (memory pressure or the memory
// cgroup limit), raising max entries would not help, and a retry may
// succeed.
func classifyUpdateError(err error, maxEntries int) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.E2BIG) {
		return &MapFullError{MaxEntries: maxEntries, Err: err}
	}
	return err
}
