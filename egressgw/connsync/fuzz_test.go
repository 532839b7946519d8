package connsync

import (
	"bytes"
	"testing"
)

// FuzzDecode: whatever arrives on the sync port, Decode neither panics nor
// accepts a datagram it did not authenticate; what it accepts re-encodes
// to the same bytes.
func FuzzDecode(f *testing.F) {
	for _, m := range []Message{
		{Full: true, Epoch: 7, Seq: 1, From: "node-a", VIP: [4]byte{203, 0, 113, 50},
			Entries: []Entry{entry(5, 100, 40000, 443, 40000, ProtoTCP)}},
		{Epoch: 9, Seq: 3, From: "b"},
	} {
		b, err := m.Encode(nil, testKey)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("EGS1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b, testKey)
		if err != nil {
			return
		}
		again, err := m.Encode(nil, testKey)
		if err != nil {
			t.Fatalf("accepted %+v does not encode: %v", m, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted datagram re-encodes differently")
		}
		if _, err := Decode(b, otherKey); err == nil {
			t.Fatal("accepted under two keys")
		}
	})
}
