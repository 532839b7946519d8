package connsync

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/cilium/cilium/pkg/maps/nat"
	"github.com/cilium/cilium/pkg/tuple"

	"github.com/egressha/egressha/internal/privileged"
)

var vip = [4]byte{203, 0, 113, 50}

// newTestMap creates a real LRU hash map with cilium_snat_v4_external's
// spec, and a SNATMap on it whose clock reads created.
func newTestMap(tb testing.TB, maxEntries uint32, created uint64) (*SNATMap, *ebpf.Map) {
	tb.Helper()
	privileged.Require(tb, "creates BPF maps")
	if err := rlimit.RemoveMemlock(); err != nil {
		tb.Fatal(err)
	}
	m, err := ebpf.NewMap(SNATMapSpec(maxEntries))
	if err != nil {
		tb.Fatalf("creating the map: %v", err)
	}
	tb.Cleanup(func() { m.Close() })
	s, err := NewSNATMap(m, func() (uint64, error) { return created, nil })
	if err != nil {
		tb.Fatal(err)
	}
	return s, m
}

// rawLookup returns the value bytes of the raw key bytes.
func rawLookup(t *testing.T, m *ebpf.Map, key []byte) []byte {
	t.Helper()
	v := make([]byte, m.ValueSize())
	if err := m.Lookup(key, v); err != nil {
		t.Fatalf("lookup %x: %v", key, err)
	}
	return v
}

// cKey is struct ipv4_ct_tuple as bpf/lib/common.h lays it out (__packed):
// daddr, saddr, dport, sport (network order), nexthdr, flags.
func cKey(daddr, saddr [4]byte, dport, sport uint16, nexthdr, flags uint8) []byte {
	b := append(daddr[:], saddr[:]...)
	b = binary.BigEndian.AppendUint16(b, dport)
	b = binary.BigEndian.AppendUint16(b, sport)
	return append(b, nexthdr, flags)
}

// cValue is struct ipv4_nat_entry: created, needs_ct, pad1, pad2 (host
// order u64), then to_saddr/to_daddr and to_sport/to_dport (network order),
// 2 bytes of padding.
func cValue(created, needsCT uint64, addr [4]byte, port uint16) []byte {
	b := binary.NativeEndian.AppendUint64(nil, created)
	b = binary.NativeEndian.AppendUint64(b, needsCT)
	b = append(b, make([]byte, 16)...)
	b = append(b, addr[:]...)
	b = binary.BigEndian.AppendUint16(b, port)
	return append(b, 0, 0)
}

func TestPrivilegedInstallMatchesTheDatapath(t *testing.T) {
	s, m := newTestMap(t, 1024, 123456)
	e := entry(5, 100, 41000, 443, 50123, ProtoTCP)
	res, err := s.Install(Plan{Entry: e}, vip, 123456)
	if err != nil {
		t.Fatal(err)
	}
	if !res.WroteForward || !res.WroteReverse || res.ReplacedReverse {
		t.Fatalf("result %+v, want both written", res)
	}
	// What snat_v4_new_mapping writes for the pod's tuple (saddr=pod,
	// daddr=dst, sport=pod port, dport=dst port, TUPLE_F_OUT) ...
	fk := cKey(e.Dst, e.Pod, e.DstPort, e.PodPort, ProtoTCP, tuple.TUPLE_F_OUT)
	if got, want := rawLookup(t, m, fk), cValue(123456, 1, vip, 50123); !bytes.Equal(got, want) {
		t.Fatalf("forward value\n got %x\nwant %x", got, want)
	}
	// ... and for the reply's tuple (saddr=dst, daddr=VIP, sport=dst port,
	// dport=NAT port, TUPLE_F_IN).
	rk := cKey(vip, e.Dst, 50123, e.DstPort, ProtoTCP, tuple.TUPLE_F_IN)
	if got, want := rawLookup(t, m, rk), cValue(123456, 1, e.Pod, 41000); !bytes.Equal(got, want) {
		t.Fatalf("reverse value\n got %x\nwant %x", got, want)
	}
	// `cilium-dbg bpf nat list` prints them as Cilium's datapath entries.
	var sb strings.Builder
	cb := func(k, v []byte) {
		var key nat.NatKey4
		var val nat.NatEntry4
		if err := binary.Read(bytes.NewReader(k), binary.NativeEndian, &key); err != nil {
			t.Fatal(err)
		}
		if err := binary.Read(bytes.NewReader(v), binary.NativeEndian, &val); err != nil {
			t.Fatal(err)
		}
		key.ToHost().Dump(&sb, false)
		sb.WriteString(val.ToHost().Dump(&key, func(uint64) string { return "x" }))
	}
	cb(fk, rawLookup(t, m, fk))
	cb(rk, rawLookup(t, m, rk))
	want := "TCP OUT 10.0.1.5:41000 -> 203.0.113.100:443 XLATE_SRC 203.0.113.50:50123 Created=x NeedsCT=1\n" +
		"TCP IN 203.0.113.100:443 -> 203.0.113.50:50123 XLATE_DST 10.0.1.5:41000 Created=x NeedsCT=1\n"
	if sb.String() != want {
		t.Fatalf("nat list\n%s\nwant\n%s", sb.String(), want)
	}

	// Scan finds the forward mapping again, and only for a VIP asked for.
	var got []Entry
	if err := s.Scan(map[[4]byte]bool{vip: true}, func(v [4]byte, e Entry) { got = append(got, e) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != e {
		t.Fatalf("scan %v, want [%v]", got, e)
	}
	got = nil
	_ = s.Scan(map[[4]byte]bool{{1, 2, 3, 4}: true}, func(v [4]byte, e Entry) { got = append(got, e) })
	if len(got) != 0 {
		t.Fatalf("scan for another VIP found %v", got)
	}

	// The same again writes nothing.
	if res, err := s.Install(Plan{Entry: e, Owned: true}, vip, 123456); err != nil || res.WroteForward || res.WroteReverse {
		t.Fatalf("again: %+v %v, want nothing written", res, err)
	}
}

func TestPrivilegedInstallRespectsOthersEntries(t *testing.T) {
	s, m := newTestMap(t, 1024, 7)
	e := entry(5, 100, 41000, 443, 50123, ProtoTCP)
	other := [4]byte{198, 18, 0, 11}
	// The flow is SNATed to another address on this node (say a basic-mode
	// gateway): not ours, never overwritten.
	fk := cKey(e.Dst, e.Pod, e.DstPort, e.PodPort, ProtoTCP, tuple.TUPLE_F_OUT)
	theirs := cValue(1, 1, other, 41000)
	if err := m.Put(fk, theirs); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Install(Plan{Entry: e}, vip, 123456); !errors.Is(err, ErrConflict) {
		t.Fatalf("got %v, want ErrConflict", err)
	}
	if got := rawLookup(t, m, fk); !bytes.Equal(got, theirs) {
		t.Fatal("a foreign forward entry was overwritten")
	}
	rk := cKey(vip, e.Dst, 50123, e.DstPort, ProtoTCP, tuple.TUPLE_F_IN)
	var v nat.NatEntry4
	if err := m.Lookup(rk, &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("a reverse entry was written for a refused flow: %v", err)
	}

	// A stale reverse entry for the VIP's tuple (another pod): replaced.
	e2 := entry(6, 100, 42000, 443, 50200, ProtoTCP)
	rk2 := cKey(vip, e2.Dst, 50200, e2.DstPort, ProtoTCP, tuple.TUPLE_F_IN)
	if err := m.Put(rk2, cValue(1, 1, [4]byte{10, 0, 9, 9}, 999)); err != nil {
		t.Fatal(err)
	}
	res, err := s.Install(Plan{Entry: e2}, vip, 123456)
	if err != nil || !res.ReplacedReverse {
		t.Fatalf("%+v %v, want the stale reverse entry replaced", res, err)
	}
	if got, want := rawLookup(t, m, rk2), cValue(123456, 1, e2.Pod, 42000); !bytes.Equal(got, want) {
		t.Fatalf("reverse value %x, want %x", got, want)
	}

	// Remove deletes what it wrote, and nothing the datapath changed since.
	if n, err := s.Remove(e2, vip); err != nil || n != 2 {
		t.Fatalf("remove: %d %v, want 2 entries", n, err)
	}
	if n, err := s.Remove(e, vip); err != nil || n != 0 {
		t.Fatalf("remove of a flow held by another translation: deleted %d (%v), want 0", n, err)
	}
	if got := rawLookup(t, m, fk); !bytes.Equal(got, theirs) {
		t.Fatal("the foreign forward entry was deleted")
	}
	// An entry whose reverse entry the datapath re-made for another pod
	// port keeps it.
	e3 := entry(7, 100, 43000, 443, 50300, ProtoUDP)
	if _, err := s.Install(Plan{Entry: e3}, vip, 123456); err != nil {
		t.Fatal(err)
	}
	rk3 := cKey(vip, e3.Dst, 50300, e3.DstPort, ProtoUDP, tuple.TUPLE_F_IN)
	datapaths := cValue(9, 1, e3.Pod, 43001)
	if err := m.Put(rk3, datapaths); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Remove(e3, vip); err != nil || n != 1 {
		t.Fatalf("remove: %d %v, want only the forward entry", n, err)
	}
	if got := rawLookup(t, m, rk3); !bytes.Equal(got, datapaths) {
		t.Fatal("the datapath's reverse entry was deleted")
	}
}

// BenchmarkScan reads a map with cilium_snat_v4_external's default size
// (524288) holding n mappings (2n entries), a tenth of them for the VIP.
func BenchmarkScan(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprintf("mappings=%d", n), func(b *testing.B) { benchmarkScan(b, n) })
	}
}

func benchmarkScan(b *testing.B, mappings int) {
	s, _ := newTestMap(b, 524288, 1)
	var n int
	for i := range mappings {
		v := [4]byte{198, 18, 0, 11}
		if i%10 == 0 {
			v = vip
		}
		e := entry(byte(i), byte(i>>8), uint16(1024+i%60000), 443, uint16(32768+i%30000), ProtoTCP)
		e.Pod[2] = byte(i >> 16)
		if _, err := s.Install(Plan{Entry: e}, v, 123456); err != nil {
			b.Fatal(err)
		}
		if v == vip {
			n++
		}
	}
	vips := map[[4]byte]bool{vip: true}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		got := 0
		if err := s.Scan(vips, func([4]byte, Entry) { got++ }); err != nil {
			b.Fatal(err)
		}
		if got != n {
			b.Fatalf("scan found %d, want %d", got, n)
		}
	}
}

// BenchmarkInstallUnchanged is a standby's cost per mapping of a full
// report that changes nothing (two lookups, no write).
func BenchmarkInstallUnchanged(b *testing.B) {
	s, _ := newTestMap(b, 524288, 1)
	e := entry(5, 100, 41000, 443, 50123, ProtoTCP)
	if _, err := s.Install(Plan{Entry: e}, vip, 1); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		res, err := s.Install(Plan{Entry: e, Owned: true}, vip, 2)
		if err != nil || res.WroteForward || res.WroteReverse {
			b.Fatal(res, err)
		}
	}
}
