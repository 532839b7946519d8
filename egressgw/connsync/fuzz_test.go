package connsync

import (
	"bytes"
	"testing"

	"github.com/egressha/egressha/egressgw/probe"
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

// FuzzDecodeSigned: a datagram signed with the key (as a compromised or
// buggy candidate could send) is parsed without panicking, and what is
// accepted re-encodes to the same bytes: the parser after the MAC check is
// exercised too.
func FuzzDecodeSigned(f *testing.F) {
	m := Message{Full: true, Epoch: 7, Seq: 1, From: "node-a", VIP: [4]byte{203, 0, 113, 50},
		Entries: []Entry{entry(5, 100, 40000, 443, 40000, ProtoTCP)}}
	b, err := m.Encode(nil, testKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b[:len(b)-probe.MACLen])
	f.Add([]byte("EGS1\x01\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, body []byte) {
		signed := append(bytes.Clone(body), probe.MAC(testKey, body)...)
		m, err := Decode(signed, testKey)
		if err != nil {
			return
		}
		again, err := m.Encode(nil, testKey)
		if err != nil {
			t.Fatalf("accepted %+v does not encode: %v", m, err)
		}
		if !bytes.Equal(again, signed) {
			t.Fatalf("accepted datagram re-encodes differently:\n%x\n%x", signed, again)
		}
	})
}
