package connsync

import (
	"bytes"
	"errors"
	"testing"
)

var (
	testKey  = []byte("0123456789abcdef0123456789abcdef")
	otherKey = []byte("fedcba9876543210fedcba9876543210")
)

func entry(pod, dst byte, podPort, dstPort, natPort uint16, proto uint8) Entry {
	return Entry{Flow: Flow{Pod: [4]byte{10, 0, 1, pod}, Dst: [4]byte{203, 0, 113, dst},
		PodPort: podPort, DstPort: dstPort, Proto: proto}, NATPort: natPort}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	m := Message{Full: true, Epoch: 0xdeadbeef, Seq: 42, From: "lab-egress-a", VIP: [4]byte{203, 0, 113, 50},
		Entries: []Entry{entry(5, 100, 40000, 443, 40000, ProtoTCP), entry(6, 101, 1234, 53, 33000, ProtoUDP)}}
	b, err := m.Encode(nil, testKey)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b, testKey)
	if err != nil {
		t.Fatal(err)
	}
	if got.Full != m.Full || got.Epoch != m.Epoch || got.Seq != m.Seq || got.From != m.From || got.VIP != m.VIP ||
		len(got.Entries) != 2 || got.Entries[0] != m.Entries[0] || got.Entries[1] != m.Entries[1] {
		t.Fatalf("decoded %+v, want %+v", got, m)
	}
	// Ports are big-endian on the wire: pod port 40000 = 0x9c40 right after the addresses.
	off := headerLen + 1 + len(m.From) + 8
	if b[off] != 0x9c || b[off+1] != 0x40 {
		t.Fatalf("pod port bytes %x, want 9c40", b[off:off+2])
	}
}

func TestDecodeRejects(t *testing.T) {
	m := Message{Epoch: 1, Seq: 1, From: "a", VIP: [4]byte{1, 2, 3, 4}, Entries: []Entry{entry(1, 1, 1, 1, 40000, ProtoTCP)}}
	good, err := m.Encode(nil, testKey)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 1; return b }
	for _, tc := range []struct {
		name string
		b    []byte
		key  []byte
		want error
	}{
		{"other key", good, otherKey, ErrAuth},
		{"altered entry", flip(len(good) - 20), testKey, ErrAuth},
		{"altered seq", flip(20), testKey, ErrAuth},
		{"altered mac", flip(len(good) - 1), testKey, ErrAuth},
		{"truncated", good[:len(good)-1], testKey, ErrAuth},
		{"short", good[:10], testKey, ErrShort},
		{"magic", append([]byte("EGP1"), good[4:]...), testKey, ErrMagic},
		{"short key", good, testKey[:8], ErrShortKey},
	} {
		if _, err := Decode(tc.b, tc.key); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestChunksFitADatagram(t *testing.T) {
	name := string(bytes.Repeat([]byte("n"), maxNameLen))
	for _, from := range []string{"a", "lab-egress-a", name} {
		var entries []Entry
		for i := range 1000 {
			entries = append(entries, entry(byte(i), byte(i>>8), uint16(i+1), 443, uint16(33000+i), ProtoTCP))
		}
		chunks := Chunks(Message{From: from, Epoch: 1}, entries)
		total := 0
		for i, c := range chunks {
			c.Seq = uint64(i + 1)
			b, err := c.Encode(nil, testKey)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > MaxDatagram {
				t.Fatalf("from %d bytes: datagram of %d bytes", len(from), len(b))
			}
			if i < len(chunks)-1 && len(b)+entryLen <= MaxDatagram {
				t.Fatalf("from %d bytes: chunk %d (%d bytes) could hold one more entry", len(from), i, len(b))
			}
			total += len(c.Entries)
		}
		if total != len(entries) {
			t.Fatalf("chunks hold %d entries, want %d", total, len(entries))
		}
	}
	if c := Chunks(Message{From: "a"}, nil); len(c) != 1 || len(c[0].Entries) != 0 {
		t.Fatalf("no entries: %d chunks, want one empty (a full report of nothing)", len(c))
	}
	over := Message{From: "a", Entries: make([]Entry, PerDatagram("a")+1)}
	if _, err := over.Encode(nil, testKey); !errors.Is(err, ErrLength) {
		t.Fatalf("oversized message: %v", err)
	}
}
