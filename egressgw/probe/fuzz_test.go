package probe

import (
	"bytes"
	"testing"
)

// FuzzDecode: whatever arrives on the probe port, Decode neither panics
// nor accepts a datagram it did not authenticate; what it accepts
// re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	for _, p := range []Packet{
		{Type: TypeProbe, Flags: FlagLeader | FlagHearYou, Epoch: 7, Seq: 1, From: "op", To: "node"},
		{Type: TypeReply, FenceMillis: 250, Epoch: 9, Seq: 3, EchoEpoch: 7, EchoSeq: 1, From: "node", To: "op"},
	} {
		b, err := p.Encode(nil, testKey)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("EGP1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b, testKey)
		if err != nil {
			return
		}
		again, err := p.Encode(nil, testKey)
		if err != nil {
			t.Fatalf("accepted %+v does not encode: %v", p, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted datagram re-encodes differently")
		}
		if _, err := Decode(b, otherKey); err == nil {
			t.Fatal("accepted under two keys")
		}
	})
}
