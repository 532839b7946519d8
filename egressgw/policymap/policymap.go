package policymap

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/cilium/cilium/pkg/bpf"
	"github.com/cilium/cilium/pkg/maps/egressmap"

	"github.com/egressha/egressha/egressgw/egresspolicy"
)

// PolicyMap is the IPv4 egress gateway policy map as the reconciler sees it:
// typed with egressha's own key and value, so the reconciler's operations
// can run against a fake in unprivileged tests.
type PolicyMap interface {
	// Update inserts or replaces the entry of k.
	Update(k egresspolicy.Key, v egresspolicy.Value) error
	// Delete removes the entry of k; a missing entry is not an error.
	Delete(k egresspolicy.Key) error
	// IterateWithCallback calls cb for every entry in the map.
	IterateWithCallback(cb func(egresspolicy.Key, egresspolicy.Value)) error
	// MaxEntries is the map's capacity.
	MaxEntries() int
}

// BatchWriter is a PolicyMap that can write many entries in one call.
type BatchWriter interface {
	// UpdateBatch writes keys[i] -> values[i] in order until one fails;
	// it returns how many were written and the failure (nil when all
	// were). A map that cannot write in batches writes one at a time.
	UpdateBatch(keys []egresspolicy.Key, values []egresspolicy.Value) (int, error)
}

// PolicyMapName is the name (and bpffs pin name) of Cilium's IPv4 egress
// gateway policy map.
const PolicyMapName = egressmap.PolicyMapName4

// PolicyMapSpec returns the spec egressha creates cilium_egress_gw_policy_v4
// with. It must equal what the datapath loader derives from the C
// declaration in bpf/lib/egress_gateway.h (Cilium v1.18.11):
//
//	struct {
//		__uint(type, BPF_MAP_TYPE_LPM_TRIE);
//		__type(key, struct egress_gw_policy_key);
//		__type(value, struct egress_gw_policy_entry);
//		__uint(pinning, LIBBPF_PIN_BY_NAME);
//		__uint(max_entries, EGRESS_POLICY_MAP_SIZE);
//		__uint(map_flags, BPF_F_NO_PREALLOC);
//	} cilium_egress_gw_policy_v4 __section_maps_btf;
//
// with struct egress_gw_policy_key { struct bpf_lpm_trie_key lpm_key;
// __u32 saddr; __u32 daddr; } (12 bytes) and struct egress_gw_policy_entry
// { __u32 egress_ip; __u32 gateway_ip; } (8 bytes) from bpf/lib/common.h,
// which egressmap.EgressPolicyKey4/EgressPolicyVal4 mirror (Cilium's
// alignchecker verifies that at agent start). EGRESS_POLICY_MAP_SIZE is the
// node define egressmap.Cell writes from --egress-gateway-policy-map-max,
// the same value the caller passes as maxEntries.
//
// Why it matters: when the loader loads bpf_host.o it opens the pinned map
// and checks it with ebpf.MapSpec.Compatible (type, key size, value size,
// max entries, flags). On ErrMapIncompatible, pkg/bpf.LoadCollection
// creates a new map and replaces the pin after attaching the programs, so
// the datapath would read a map nobody writes and our handle would be
// stale. Cilium's own egressmap passes flags 0 to pkg/bpf.NewMap, whose
// OpenOrCreate adds BPF_F_NO_PREALLOC for LPM tries
// (bpf.GetMapMemoryFlags); we call pkg/bpf.OpenOrCreateMap directly, so
// the flag must be in the spec (the kernel also refuses an LPM trie
// without it). The BTF of key and value is not compared, so a map created
// from Go without BTF is fine, as it is for Cilium's own egressmap.
//
// TestPolicyMapSpecMatchesCDeclaration compiles Cilium's bpf_host.c with
// ENABLE_EGRESS_GATEWAY and compares this spec with the one ebpf-go reads
// from the object; TestPrivilegedPolicyMapReconciler runs the loader's
// Compatible check against a map created from this spec.
func PolicyMapSpec(maxEntries int) *ebpf.MapSpec {
	return &ebpf.MapSpec{
		Name:       PolicyMapName,
		Type:       ebpf.LPMTrie,
		KeySize:    uint32(unsafe.Sizeof(egressmap.EgressPolicyKey4{})),
		ValueSize:  uint32(unsafe.Sizeof(egressmap.EgressPolicyVal4{})),
		MaxEntries: uint32(maxEntries),
		Flags:      unix.BPF_F_NO_PREALLOC,
		Pinning:    ebpf.PinByName,
	}
}

// BPFPolicyMap is cilium_egress_gw_policy_v4, created with PolicyMapSpec.
// Create it with NewPolicyMap, then open it with OpenOrCreate (pinned, the
// agent) or CreateUnpinned (tests). Keys and values are Cilium's
// egressmap.EgressPolicyKey4/EgressPolicyVal4, the types cilium-dbg reads
// the map with.
//
// It is built on cilium/ebpf rather than pkg/bpf.Map: pkg/bpf.Map resolves
// its pin path even for an unpinned map, which needs a mounted bpffs and
// would keep the privileged test from running on a host without one. The
// pinned map is opened with pkg/bpf.OpenOrCreateMap, the function
// pkg/bpf.Map.OpenOrCreate (and so Cilium's own egressmap) uses.
type BPFPolicyMap struct {
	spec *ebpf.MapSpec

	// mu is held for reading by every operation on m and for writing by
	// CheckPin, so no write reaches the old map once CheckPin swapped it.
	mu sync.RWMutex
	m  *ebpf.Map
	// pinDir is where m is pinned, "" when it is not (CreateUnpinned).
	pinDir string
	// noBatchUpdate is set once the kernel refused a batch update.
	noBatchUpdate atomic.Bool
}

var (
	_ PolicyMap   = (*BPFPolicyMap)(nil)
	_ BatchWriter = (*BPFPolicyMap)(nil)
)

// errNotOpen is returned before OpenOrCreate or CreateUnpinned succeeded.
var errNotOpen = errors.New(PolicyMapName + " is not open")

// NewPolicyMap returns the map, not yet opened.
func NewPolicyMap(maxEntries int) *BPFPolicyMap {
	return &BPFPolicyMap{spec: PolicyMapSpec(maxEntries)}
}

// OpenOrCreate opens the pinned map at <bpffs>/tc/globals/<name>, or
// creates and pins it. A pinned map with another spec (e.g. after
// --egress-gateway-policy-map-max changed) is unpinned and replaced by an
// empty one, as Cilium does; the reconciler then writes every entry again.
func (p *BPFPolicyMap) OpenOrCreate(log *slog.Logger) error {
	return p.openOrCreateIn(log, bpf.TCGlobalsPath())
}

// openOrCreateIn is OpenOrCreate with the pin directory of a test's bpffs.
func (p *BPFPolicyMap) openOrCreateIn(log *slog.Logger, pinDir string) error {
	m, err := bpf.OpenOrCreateMap(log, p.spec, pinDir)
	if err != nil {
		return fmt.Errorf("opening %s: %w", PolicyMapName, err)
	}
	if err := p.set(m); err != nil {
		return err
	}
	p.mu.Lock()
	p.pinDir = pinDir
	p.mu.Unlock()
	return nil
}

// CreateUnpinned creates the map without pinning it (tests).
func (p *BPFPolicyMap) CreateUnpinned() error {
	spec := p.spec.Copy()
	spec.Pinning = ebpf.PinNone
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return fmt.Errorf("creating %s: %w", PolicyMapName, err)
	}
	return p.set(m)
}

func (p *BPFPolicyMap) set(m *ebpf.Map) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m != nil {
		m.Close()
		return errors.New(PolicyMapName + " is already open")
	}
	p.m = m
	return nil
}

// Close releases the map's file descriptor; the pin stays, and with it the
// entries the datapath uses.
func (p *BPFPolicyMap) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		return nil
	}
	err := p.m.Close()
	p.m = nil
	p.pinDir = ""
	return err
}

// FD is the map's file descriptor, -1 when it is not open (tests compare
// the kernel object with the C declaration through it).
func (p *BPFPolicyMap) FD() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.m == nil {
		return -1
	}
	return p.m.FD()
}

// MaxEntries implements PolicyMap.
func (p *BPFPolicyMap) MaxEntries() int { return int(p.spec.MaxEntries) }

// with runs do on the open map.
func (p *BPFPolicyMap) with(do func(m *ebpf.Map) error) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.m == nil {
		return errNotOpen
	}
	return do(p.m)
}

// Update implements PolicyMap.
func (p *BPFPolicyMap) Update(k egresspolicy.Key, v egresspolicy.Value) error {
	key, err := bpfKey(k)
	if err != nil {
		return err
	}
	if !v.EgressIP.Is4() || !v.GatewayIP.Is4() {
		return fmt.Errorf("value %s of %s is not IPv4", v, k)
	}
	val := egressmap.NewEgressPolicyVal4(v.EgressIP, v.GatewayIP)
	return p.with(func(m *ebpf.Map) error {
		if err := m.Update(&key, &val, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("update %s: %w", PolicyMapName, err)
		}
		return nil
	})
}

// updateBatchMax bounds the entries of one BPF_MAP_UPDATE_BATCH.
const updateBatchMax = 4096

// UpdateBatch implements BatchWriter with BPF_MAP_UPDATE_BATCH (the
// kernel's generic batch operation for LPM tries: the same updates, one
// system call per updateBatchMax entries). On a kernel without it, it
// writes one entry at a time from then on.
func (p *BPFPolicyMap) UpdateBatch(keys []egresspolicy.Key, values []egresspolicy.Value) (int, error) {
	if len(keys) != len(values) {
		return 0, fmt.Errorf("%d keys for %d values", len(keys), len(values))
	}
	n := min(len(keys), updateBatchMax)
	ks := make([]egressmap.EgressPolicyKey4, n)
	vs := make([]egressmap.EgressPolicyVal4, n)
	written := 0
	for written < len(keys) {
		n = min(len(keys)-written, updateBatchMax)
		for i := range n {
			k, v := keys[written+i], values[written+i]
			var err error
			if ks[i], err = bpfKey(k); err != nil {
				return written + i, err
			}
			if !v.EgressIP.Is4() || !v.GatewayIP.Is4() {
				return written + i, fmt.Errorf("value %s of %s is not IPv4", v, k)
			}
			vs[i] = egressmap.NewEgressPolicyVal4(v.EgressIP, v.GatewayIP)
		}
		if p.noBatchUpdate.Load() {
			for i := range n {
				if err := p.Update(keys[written+i], values[written+i]); err != nil {
					return written + i, err
				}
			}
			written += n
			continue
		}
		var done int
		err := p.with(func(m *ebpf.Map) error {
			var err error
			done, err = m.BatchUpdate(ks[:n], vs[:n], &ebpf.BatchOptions{ElemFlags: uint64(ebpf.UpdateAny)})
			return err
		})
		if err != nil && done == 0 && written == 0 && (errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EINVAL)) {
			// No batch operations for this map on this kernel.
			p.noBatchUpdate.Store(true)
			continue
		}
		written += done
		if err != nil {
			return written, fmt.Errorf("update %s: %w", PolicyMapName, err)
		}
	}
	return written, nil
}

// Delete implements PolicyMap.
func (p *BPFPolicyMap) Delete(k egresspolicy.Key) error {
	key, err := bpfKey(k)
	if err != nil {
		return err
	}
	return p.with(func(m *ebpf.Map) error {
		if err := m.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from %s: %w", PolicyMapName, err)
		}
		return nil
	})
}

// iterateBatch is how many entries IterateWithCallback reads per system
// call (12 + 8 bytes each: 80 KiB of buffers per walk).
const iterateBatch = 4096

// IterateWithCallback implements PolicyMap. It reads the map in batches
// (BPF_MAP_LOOKUP_BATCH, which LPM tries support through the kernel's
// generic batch operations): one system call per iterateBatch entries
// instead of two per entry. A kernel without batch operations for the
// map gets the entry-by-entry walk instead.
func (p *BPFPolicyMap) IterateWithCallback(cb func(egresspolicy.Key, egresspolicy.Value)) error {
	return p.with(func(m *ebpf.Map) error {
		keys := make([]egressmap.EgressPolicyKey4, iterateBatch)
		vals := make([]egressmap.EgressPolicyVal4, iterateBatch)
		var cursor ebpf.MapBatchCursor
		delivered := false
		for {
			n, err := m.BatchLookup(&cursor, keys, vals, nil)
			if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				if !delivered && n == 0 {
					return iterate(m, cb)
				}
				return fmt.Errorf("reading %s in batches: %w", PolicyMapName, err)
			}
			for i := range n {
				cb(fromBPFKey(&keys[i]), fromBPFValue(&vals[i]))
			}
			delivered = delivered || n > 0
			if err != nil { // ErrKeyNotExist: the walk is complete
				return nil
			}
		}
	})
}

// iterate walks m one entry at a time.
func iterate(m *ebpf.Map, cb func(egresspolicy.Key, egresspolicy.Value)) error {
	var k egressmap.EgressPolicyKey4
	var v egressmap.EgressPolicyVal4
	it := m.Iterate()
	for it.Next(&k, &v) {
		cb(fromBPFKey(&k), fromBPFValue(&v))
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterating %s: %w", PolicyMapName, err)
	}
	return nil
}

// bpfKey converts k, masking the destination's host bits: the trie matches
// only the prefix, but it stores and dumps the bits as written.
func bpfKey(k egresspolicy.Key) (egressmap.EgressPolicyKey4, error) {
	if !k.Source.Is4() || !k.Dest.IsValid() || !k.Dest.Addr().Is4() {
		return egressmap.EgressPolicyKey4{}, fmt.Errorf("key %s is not IPv4", k)
	}
	return egressmap.NewEgressPolicyKey4(k.Source, k.Dest.Masked()), nil
}

// fromBPFKey converts a key read from the map. Both writers (Cilium's
// manager and egressha) always match the whole source address, so the
// prefix length is at least 32.
func fromBPFKey(k *egressmap.EgressPolicyKey4) egresspolicy.Key {
	bits := int(k.PrefixLen) - int(egressmap.PolicyStaticPrefixBits4)
	return egresspolicy.Key{
		Source: k.SourceIP.Addr(),
		Dest:   netip.PrefixFrom(k.DestCIDR.Addr(), bits).Masked(),
	}
}

func fromBPFValue(v *egressmap.EgressPolicyVal4) egresspolicy.Value {
	return egresspolicy.Value{EgressIP: v.EgressIP.Addr(), GatewayIP: v.GatewayIP.Addr()}
}

// PinAction is what CheckPin found at the pin path and did about it.
type PinAction int

const (
	// PinKept: the pin is the map held; nothing to do.
	PinKept PinAction = iota
	// PinReopened: the pin holds another map with egressha's spec (someone
	// replaced it, e.g. a loader that re-created it). The held handle was
	// swapped for that map; it must be reprogrammed, as it holds none or
	// other entries.
	PinReopened
	// PinRestored: nothing was pinned. The held map, which the attached
	// programs still use and which holds every entry, was pinned again so
	// the next program load finds it.
	PinRestored
	// PinIncompatible: the pin holds another map whose spec differs from
	// egressha's (type, key or value size, max entries or flags). The held
	// map is kept: egressha cannot write that map correctly, and Cilium's
	// loader would replace it anyway.
	PinIncompatible
)

func (a PinAction) String() string {
	switch a {
	case PinKept:
		return "kept"
	case PinReopened:
		return "replaced"
	case PinRestored:
		return "removed"
	case PinIncompatible:
		return "incompatible"
	}
	return fmt.Sprintf("PinAction(%d)", int(a))
}

// PinCheck is the outcome of CheckPin.
type PinCheck struct {
	Action PinAction
	// Path is the pin path.
	Path string
	// HeldID is the ID of the map held before the check; PinnedID the ID
	// of the map pinned after it (HeldID again when restored).
	HeldID, PinnedID ebpf.MapID
	// Incompatible says how the pinned map differs (PinIncompatible).
	Incompatible error
}

// decidePin decides what to do about the pin: pinExists says whether a map
// is pinned at the path, pinnedID is its ID, incompatible how its spec
// differs from egressha's (nil if it does not).
func decidePin(heldID ebpf.MapID, pinExists bool, pinnedID ebpf.MapID, incompatible error) PinAction {
	switch {
	case !pinExists:
		return PinRestored
	case pinnedID == heldID:
		return PinKept
	case incompatible != nil:
		return PinIncompatible
	}
	return PinReopened
}

// CheckPin compares the map pinned at <pinDir>/cilium_egress_gw_policy_v4
// with the map held (by kernel map ID) and repairs a difference: a
// compatible replacement is reopened (the handle is swapped while no
// operation runs, and the old one closed), a removed pin is restored by
// pinning the held map again. It does nothing for an unpinned or closed
// map. The caller reprograms the map after PinReopened.
func (p *BPFPolicyMap) CheckPin() (PinCheck, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil || p.pinDir == "" {
		return PinCheck{Action: PinKept}, nil
	}
	res := PinCheck{Path: filepath.Join(p.pinDir, p.spec.Name)}
	var err error
	if res.HeldID, err = idOf(p.m); err != nil {
		return res, fmt.Errorf("reading the ID of the %s held: %w", PolicyMapName, err)
	}
	pinned, err := ebpf.LoadPinnedMap(res.Path, nil)
	exists := err == nil
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return res, fmt.Errorf("opening the pin %s: %w", res.Path, err)
	default:
		defer func() {
			if pinned != nil {
				pinned.Close()
			}
		}()
		if res.PinnedID, err = idOf(pinned); err != nil {
			return res, fmt.Errorf("reading the ID of the map pinned at %s: %w", res.Path, err)
		}
		res.Incompatible = p.spec.Compatible(pinned)
	}
	res.Action = decidePin(res.HeldID, exists, res.PinnedID, res.Incompatible)
	switch res.Action {
	case PinReopened:
		old := p.m
		p.m, pinned = pinned, nil
		old.Close()
	case PinRestored:
		// A clone has no pin path of its own, so Pin really pins (Pin on
		// the held map would be a no-op: it believes it is pinned there).
		c, err := p.m.Clone()
		if err != nil {
			return res, fmt.Errorf("restoring the pin %s: %w", res.Path, err)
		}
		defer c.Close()
		if err := c.Pin(res.Path); err != nil {
			return res, fmt.Errorf("restoring the pin %s: %w", res.Path, err)
		}
		res.PinnedID = res.HeldID
	}
	return res, nil
}

// idOf is the kernel's ID of m.
func idOf(m *ebpf.Map) (ebpf.MapID, error) {
	info, err := m.Info()
	if err != nil {
		return 0, err
	}
	id, ok := info.ID()
	if !ok {
		return 0, errors.New("the kernel does not report map IDs")
	}
	return id, nil
}
