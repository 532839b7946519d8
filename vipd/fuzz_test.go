package vipd

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

// recordingConn stands in for the AF_PACKET socket: it records what the
// responder sends.
type recordingConn struct {
	mu   sync.Mutex
	sent [][]byte
}

func (c *recordingConn) ReadFrom([]byte) (int, net.Addr, error) { return 0, nil, net.ErrClosed }
func (c *recordingConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, bytes.Clone(b))
	return len(b), nil
}
func (c *recordingConn) Close() error { return nil }

var (
	fuzzMAC       = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	fuzzPeer      = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	fuzzAnnounced = netip.MustParseAddr("192.0.2.10")  // announcing, fence open
	fuzzFenced    = netip.MustParseAddr("192.0.2.11")  // announcing, fence closed
	fuzzProbing   = netip.MustParseAddr("192.0.2.12")  // probing, not announcing
	fuzzStandby   = netip.MustParseAddr("192.0.2.13")  // registered, neither
	fuzzAsker     = netip.MustParseAddr("192.0.2.100") // a neighbour
)

// fuzzResponder is a responder on a fake interface with one VIP in each
// state a responder can hold.
func fuzzResponder() (*Responder, *recordingConn, *[]Duplicate) {
	conn := &recordingConn{}
	r := newResponder(&net.Interface{Name: "eth1", Index: 2, HardwareAddr: fuzzMAC}, conn, NopObserver{}, slog.New(slog.DiscardHandler))
	dups := &[]Duplicate{}
	onDup := func(d Duplicate) { *dups = append(*dups, d) }
	open, closed := func() bool { return true }, func() bool { return false }
	r.register(fuzzAnnounced, open, onDup)
	r.register(fuzzFenced, closed, onDup)
	r.register(fuzzProbing, open, onDup)
	r.register(fuzzStandby, open, onDup)
	r.set(fuzzAnnounced, func(e *vipEntry) { e.announce = true })
	r.set(fuzzFenced, func(e *vipEntry) { e.announce = true })
	r.set(fuzzProbing, func(e *vipEntry) { e.probing = true })
	return r, conn, dups
}

func arpFrame(t testing.TB, op arp.Operation, srcMAC net.HardwareAddr, srcIP netip.Addr, dstMAC net.HardwareAddr, dstIP netip.Addr) []byte {
	p, err := arp.NewPacket(op, srcMAC, srcIP, dstMAC, dstIP)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	fb, err := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: srcMAC, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return fb
}

// FuzzReceive feeds arbitrary frames to a responder's frame handling. Whatever
// the bytes, the responder never panics and sends nothing but ARP replies
// from its own MAC, with a VIP it announces behind an open fence as sender,
// to the MAC and address that asked for exactly that VIP.
func FuzzReceive(f *testing.F) {
	zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	for _, seed := range [][]byte{
		arpFrame(f, arp.OperationRequest, fuzzPeer, fuzzAsker, zero, fuzzAnnounced),                    // answered
		arpFrame(f, arp.OperationRequest, fuzzPeer, fuzzAsker, zero, fuzzFenced),                       // fence closed: silent
		arpFrame(f, arp.OperationRequest, fuzzPeer, fuzzAsker, zero, fuzzStandby),                      // standby: silent
		arpFrame(f, arp.OperationRequest, fuzzPeer, netip.IPv4Unspecified(), zero, fuzzProbing),        // simultaneous probe
		arpFrame(f, arp.OperationReply, fuzzPeer, fuzzAnnounced, fuzzPeer, fuzzAnnounced),              // another MAC's GARP: duplicate
		arpFrame(f, arp.OperationRequest, fuzzMAC, fuzzAnnounced, zero, fuzzAnnounced),                 // our own GARP looped back
		arpFrame(f, arp.OperationRequest, fuzzPeer, fuzzAsker, zero, netip.MustParseAddr("192.0.2.9")), // not ours
		{}, {0xff}, make([]byte, 14), make([]byte, 60),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		r, conn, _ := fuzzResponder()
		r.receive(frame, time.Unix(0, 0))
		if len(conn.sent) == 0 {
			return
		}
		if len(conn.sent) > 1 {
			t.Fatalf("one frame in, %d frames out", len(conn.sent))
		}
		var in ethernet.Frame
		var req arp.Packet
		if in.UnmarshalBinary(frame) != nil || req.UnmarshalBinary(in.Payload) != nil {
			t.Fatal("answered a frame that is not ARP")
		}
		var out ethernet.Frame
		var rep arp.Packet
		if err := out.UnmarshalBinary(conn.sent[0]); err != nil {
			t.Fatalf("sent a malformed frame: %v", err)
		}
		if err := rep.UnmarshalBinary(out.Payload); err != nil {
			t.Fatalf("sent a malformed ARP packet: %v", err)
		}
		switch {
		case req.Operation != arp.OperationRequest:
			t.Fatalf("answered ARP operation %v", req.Operation)
		case rep.Operation != arp.OperationReply:
			t.Fatalf("sent ARP operation %v, want a reply", rep.Operation)
		case !bytes.Equal(out.Source, fuzzMAC) || !bytes.Equal(rep.SenderHardwareAddr, fuzzMAC):
			t.Fatalf("sent from %s / %s, not the interface's MAC", out.Source, rep.SenderHardwareAddr)
		case rep.SenderIP != fuzzAnnounced || req.TargetIP != fuzzAnnounced:
			t.Fatalf("answered for %s (asked %s): only %s is announced behind an open fence", rep.SenderIP, req.TargetIP, fuzzAnnounced)
		case !bytes.Equal(out.Destination, req.SenderHardwareAddr) || !bytes.Equal(rep.TargetHardwareAddr, req.SenderHardwareAddr) || rep.TargetIP != req.SenderIP:
			t.Fatalf("reply to %s/%s, but %s/%s asked", rep.TargetHardwareAddr, rep.TargetIP, req.SenderHardwareAddr, req.SenderIP)
		case bytes.Equal(req.SenderHardwareAddr, fuzzMAC):
			t.Fatal("answered its own frame")
		}
	})
}

// TestReceiveDecisions pins what the seeds exercise: which frames are
// answered and which are reported as another host claiming a VIP.
func TestReceiveDecisions(t *testing.T) {
	zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	for _, tc := range []struct {
		name    string
		frame   []byte
		replies int
		dup     string
	}{
		{"request for the announced VIP", arpFrame(t, arp.OperationRequest, fuzzPeer, fuzzAsker, zero, fuzzAnnounced), 1, ""},
		{"fence closed", arpFrame(t, arp.OperationRequest, fuzzPeer, fuzzAsker, zero, fuzzFenced), 0, ""},
		{"standby", arpFrame(t, arp.OperationRequest, fuzzPeer, fuzzAsker, zero, fuzzStandby), 0, ""},
		{"probe while probing", arpFrame(t, arp.OperationRequest, fuzzPeer, netip.IPv4Unspecified(), zero, fuzzProbing), 0, DuplicateProbe},
		{"another MAC's GARP reply", arpFrame(t, arp.OperationReply, fuzzPeer, fuzzAnnounced, fuzzPeer, fuzzAnnounced), 0, DuplicateReply},
		{"another MAC's GARP request", arpFrame(t, arp.OperationRequest, fuzzPeer, fuzzAnnounced, zero, fuzzAnnounced), 1, DuplicateRequest},
		{"our own GARP looped back", arpFrame(t, arp.OperationRequest, fuzzMAC, fuzzAnnounced, zero, fuzzAnnounced), 0, ""},
		{"a standby's VIP from another MAC", arpFrame(t, arp.OperationReply, fuzzPeer, fuzzStandby, fuzzPeer, fuzzStandby), 0, ""},
		{"truncated", arpFrame(t, arp.OperationRequest, fuzzPeer, fuzzAsker, zero, fuzzAnnounced)[:30], 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, conn, dups := fuzzResponder()
			r.receive(tc.frame, time.Unix(0, 0))
			if len(conn.sent) != tc.replies {
				t.Errorf("%d frames sent, want %d", len(conn.sent), tc.replies)
			}
			var kinds []string
			for _, d := range *dups {
				kinds = append(kinds, d.Kind)
			}
			if (tc.dup == "" && len(kinds) != 0) || (tc.dup != "" && (len(kinds) != 1 || kinds[0] != tc.dup)) {
				t.Errorf("duplicates %v, want %q", kinds, tc.dup)
			}
		})
	}
}
