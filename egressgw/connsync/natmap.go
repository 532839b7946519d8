package connsync

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/cilium/cilium/pkg/byteorder"
	"github.com/cilium/cilium/pkg/maps/nat"
	"github.com/cilium/cilium/pkg/tuple"
	"github.com/cilium/cilium/pkg/types"
	"github.com/cilium/cilium/pkg/u8proto"
)

// SNATMapName is Cilium's IPv4 SNAT map (bpf/lib/nat.h), pinned under
// <bpffs>/tc/globals when BPF masquerading is on.
const SNATMapName = nat.MapNameSnat4Global

// SNATMapSpec is the spec of cilium_snat_v4_external as the datapath
// declares it (bpf/lib/nat.h):
//
//	struct {
//		__uint(type, BPF_MAP_TYPE_LRU_HASH);
//		__type(key, struct ipv4_ct_tuple);     // 14 bytes, __packed
//		__type(value, struct ipv4_nat_entry);  // 40 bytes
//		__uint(pinning, LIBBPF_PIN_BY_NAME);
//		__uint(max_entries, SNAT_MAPPING_IPV4_SIZE);
//		__uint(map_flags, LRU_MEM_FLAVOR);     // 0 unless BPF_F_NO_COMMON_LRU
//	} cilium_snat_v4_external;
//
// Cilium's Go types nat.NatKey4 and nat.NatEntry4 mirror the key and the
// value (its alignchecker verifies them at agent start). Tests create a map
// with it.
func SNATMapSpec(maxEntries uint32) *ebpf.MapSpec {
	return &ebpf.MapSpec{
		Name:       SNATMapName,
		Type:       ebpf.LRUHash,
		KeySize:    uint32(nat.SizeofNatKey4),
		ValueSize:  uint32(unsafe.Sizeof(nat.NatEntry4{})),
		MaxEntries: maxEntries,
	}
}

// ErrNoSNATMap: the map is not pinned (BPF masquerading off, or the
// datapath not loaded yet).
var ErrNoSNATMap = errors.New("the SNAT map " + SNATMapName + " is not pinned (BPF masquerading off?)")

// SNATMap reads and writes Cilium's IPv4 SNAT map.
type SNATMap struct {
	m *ebpf.Map
	// now is bpf_mono_now() of the datapath (timestamp.GetCTCurTime).
	now func() (uint64, error)

	keys []nat.NatKey4
	vals []nat.NatEntry4
}

// OpenSNATMap opens the pinned map at path; ErrNoSNATMap when absent.
func OpenSNATMap(path string, now func() (uint64, error)) (*SNATMap, error) {
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoSNATMap, path)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return NewSNATMap(m, now)
}

// NewSNATMap wraps m after checking its key and value sizes.
func NewSNATMap(m *ebpf.Map, now func() (uint64, error)) (*SNATMap, error) {
	spec := SNATMapSpec(0)
	if m.KeySize() != spec.KeySize || m.ValueSize() != spec.ValueSize || m.Type() != spec.Type {
		return nil, fmt.Errorf("%s: type %s key %d value %d bytes, want %s %d %d (another Cilium version?)",
			SNATMapName, m.Type(), m.KeySize(), m.ValueSize(), spec.Type, spec.KeySize, spec.ValueSize)
	}
	return &SNATMap{m: m, now: now}, nil
}

// Close releases the map.
func (s *SNATMap) Close() error { return s.m.Close() }

const batchSize = 4096

// Scan calls fn for every forward (TUPLE_F_OUT) TCP or UDP mapping whose
// translated source address is in vips, with its VIP (ICMP echo mappings
// are not synced). It reads the map in batches
// (one syscall per batchSize entries); an LRU map can change during the
// walk, so a mapping made meanwhile may be missed until the next scan.
func (s *SNATMap) Scan(vips map[[4]byte]bool, fn func(vip [4]byte, e Entry)) error {
	if len(s.keys) == 0 {
		s.keys = make([]nat.NatKey4, batchSize)
		s.vals = make([]nat.NatEntry4, batchSize)
	}
	var cursor ebpf.MapBatchCursor
	for {
		n, err := s.m.BatchLookup(&cursor, s.keys, s.vals, nil)
		for i := range n {
			k, v := &s.keys[i], &s.vals[i]
			if k.Flags&tuple.TUPLE_F_IN != 0 || !vips[v.Addr] ||
				(k.NextHeader != u8proto.TCP && k.NextHeader != u8proto.UDP) {
				continue
			}
			fn(v.Addr, entryOf(k, v))
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return nil
		case errors.Is(err, unix.ENOSPC) && len(s.keys) < 1<<20:
			// A hash bucket larger than the batch: retry with more room.
			s.keys = make([]nat.NatKey4, 2*len(s.keys))
			s.vals = make([]nat.NatEntry4, 2*len(s.vals))
			cursor = ebpf.MapBatchCursor{}
		case err != nil:
			return fmt.Errorf("reading %s: %w", SNATMapName, err)
		}
	}
}

// entryOf converts a forward mapping (ports in network order, as in the
// map) into an Entry.
func entryOf(k *nat.NatKey4, v *nat.NatEntry4) Entry {
	return Entry{
		Flow: Flow{
			Pod: k.SourceAddr, Dst: k.DestAddr,
			PodPort: byteorder.NetworkToHost16(k.SourcePort),
			DstPort: byteorder.NetworkToHost16(k.DestPort),
			Proto:   uint8(k.NextHeader),
		},
		NATPort: byteorder.NetworkToHost16(v.Port),
	}
}

// MapEntries are the two entries Cilium's datapath creates for a mapping
// of e to vip (snat_v4_new_mapping in bpf/lib/nat.h): the forward entry
// (the pod's tuple, TUPLE_F_OUT) translating the source to vip:NAT port,
// and the reverse entry (the reply's tuple, TUPLE_F_IN: saddr=dst,
// daddr=vip, sport=dst port, dport=NAT port) translating the destination
// back to pod:port. Ports are in network byte order, as in the map;
// created is bpf_mono_now() of this node and needs_ct is 1, as the gateway
// node sets for a remote pod's connection (snat_v4_needs_masquerade).
func MapEntries(e Entry, vip [4]byte, created uint64) (fk nat.NatKey4, fv nat.NatEntry4, rk nat.NatKey4, rv nat.NatEntry4) {
	fk.SourceAddr, fk.DestAddr = types.IPv4(e.Pod), types.IPv4(e.Dst)
	fk.SourcePort, fk.DestPort = byteorder.HostToNetwork16(e.PodPort), byteorder.HostToNetwork16(e.DstPort)
	fk.NextHeader, fk.Flags = u8proto.U8proto(e.Proto), tuple.TUPLE_F_OUT
	fv = nat.NatEntry4{Created: created, NeedsCT: 1, Addr: types.IPv4(vip), Port: byteorder.HostToNetwork16(e.NATPort)}

	rk.SourceAddr, rk.DestAddr = types.IPv4(e.Dst), types.IPv4(vip)
	rk.SourcePort, rk.DestPort = byteorder.HostToNetwork16(e.DstPort), byteorder.HostToNetwork16(e.NATPort)
	rk.NextHeader, rk.Flags = u8proto.U8proto(e.Proto), tuple.TUPLE_F_IN
	rv = nat.NatEntry4{Created: created, NeedsCT: 1, Addr: types.IPv4(e.Pod), Port: byteorder.HostToNetwork16(e.PodPort)}
	return
}

// sameXlate: both values translate to the same address and port with the
// same needs_ct (created differs between writers).
func sameXlate(a, b *nat.NatEntry4) bool {
	return a.Addr == b.Addr && a.Port == b.Port && a.NeedsCT == b.NeedsCT
}

// Now is the datapath's bpf_mono_now(), the created stamp of the entries
// Install writes: seconds of CLOCK_MONOTONIC, or jiffies >> 8 with
// Cilium's jiffies clock source (timestamp.GetCTCurTime). Read it once per
// batch: with jiffies it reads /proc/schedstat.
func (s *SNATMap) Now() (uint64, error) {
	t, err := s.now()
	if err != nil {
		return 0, fmt.Errorf("reading the datapath's clock: %w", err)
	}
	return t, nil
}

// InstallResult says what Install did.
type InstallResult struct {
	// WroteForward, WroteReverse: an entry was missing or different and
	// was written.
	WroteForward, WroteReverse bool
	// ReplacedReverse: the reverse tuple held another translation (a
	// stale entry); the synced one replaced it.
	ReplacedReverse bool
}

// Install makes both entries of the mapping p.Entry -> vip exist. The
// forward entry is written when missing, or replaced when this node wrote
// it (p.Owned) or it translates to vip (a leftover of this node's own term
// as the VIP's announcer); any other forward entry for the flow is left
// alone (ErrConflict). The reverse entry is written when missing or
// different: the active node's mapping is the truth for the VIP's tuple.
func (s *SNATMap) Install(p Plan, vip [4]byte, created uint64) (InstallResult, error) {
	var res InstallResult
	fk, fv, rk, rv := MapEntries(p.Entry, vip, created)
	var cur nat.NatEntry4
	switch err := s.m.Lookup(&fk, &cur); {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		res.WroteForward = true
	case err != nil:
		return res, fmt.Errorf("looking up %s: %w", p.Entry.Flow, err)
	case sameXlate(&cur, &fv):
	case p.Owned || cur.Addr == types.IPv4(vip):
		res.WroteForward = true
	default:
		return res, fmt.Errorf("%w: %s translates to %s:%d here", ErrConflict, p.Entry.Flow, cur.Addr, byteorder.NetworkToHost16(cur.Port))
	}
	switch err := s.m.Lookup(&rk, &cur); {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		res.WroteReverse = true
	case err != nil:
		return res, fmt.Errorf("looking up the reverse entry of %s: %w", p.Entry, err)
	case sameXlate(&cur, &rv):
	default:
		res.WroteReverse, res.ReplacedReverse = true, true
	}
	// Reverse first, as the datapath does: a forward entry without its
	// reverse entry would translate packets whose replies cannot return.
	if res.WroteReverse {
		if err := s.m.Update(&rk, &rv, ebpf.UpdateAny); err != nil {
			return res, fmt.Errorf("writing the reverse entry of %s: %w", p.Entry, err)
		}
	}
	if res.WroteForward {
		if err := s.m.Update(&fk, &fv, ebpf.UpdateAny); err != nil {
			return res, fmt.Errorf("writing the forward entry of %s: %w", p.Entry, err)
		}
	}
	return res, nil
}

// Remove deletes the entries of the mapping e -> vip that still hold the
// translation this node wrote; entries the datapath replaced (another
// NAT port, another address) are left alone. It returns how many it
// deleted.
func (s *SNATMap) Remove(e Entry, vip [4]byte) (int, error) {
	fk, fv, rk, rv := MapEntries(e, vip, 0)
	n := 0
	var errs []error
	for _, kv := range []struct {
		k *nat.NatKey4
		v *nat.NatEntry4
	}{{&fk, &fv}, {&rk, &rv}} {
		var cur nat.NatEntry4
		err := s.m.Lookup(kv.k, &cur)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !sameXlate(&cur, kv.v) {
			continue
		}
		if err := s.m.Delete(kv.k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
