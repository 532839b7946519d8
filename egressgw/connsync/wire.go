// Package connsync keeps established connections of VirtualIPAddress
// gateways alive across a failover: the node that announces a gateway's
// VIP sends, every interval, the SNAT mappings Cilium's datapath made for
// the VIP (egress source = VIP) to the gateway's other candidates, and
// each of them installs both entries of every mapping (forward and
// reverse) into its own cilium_snat_v4_external. After a failover the new
// active node then reverse-translates a server's first packet and keeps
// the NAT port of every connection the old one reported.
//
// The package owns the wire format (this file), the pure decisions of
// sender and receiver (decide.go), the map I/O on Cilium's pinned SNAT map
// (natmap.go) and the cell that runs them (cell.go). It never writes an
// entry for a node's own VIP role (the datapath owns those) and deletes
// only entries it installed itself.
package connsync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/egressha/egressha/egressgw/probe"
)

// Port is the default UDP port of the sync receivers.
const Port = 4797

// Flow is one SNATed connection as the pod sees it.
type Flow struct {
	Pod, Dst         [4]byte
	PodPort, DstPort uint16 // host byte order
	Proto            uint8
}

// Entry is a Flow and the NAT port the active node gave it (its source
// address is the gateway's VIP).
type Entry struct {
	Flow
	NATPort uint16 // host byte order
}

func (f Flow) String() string {
	return fmt.Sprintf("%s %s:%d -> %s:%d", protoName(f.Proto), netip.AddrFrom4(f.Pod), f.PodPort, netip.AddrFrom4(f.Dst), f.DstPort)
}

func (e Entry) String() string { return fmt.Sprintf("%s nat %d", e.Flow, e.NATPort) }

func protoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	}
	return fmt.Sprintf("proto-%d", p)
}

// IP protocol numbers synced.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Message is one decoded datagram: part of what the sender, announcing
// VIP, reports.
type Message struct {
	// Full: the datagram belongs to a full report (every mapping), not
	// to the changes of one round.
	Full bool
	// Epoch identifies one run of the sender (random at start), Seq
	// counts its datagrams (from 1).
	Epoch, Seq uint64
	// From is the sender's node name.
	From    string
	VIP     [4]byte
	Entries []Entry
}

const (
	magic      = "EGS1"
	typeSync   = 1
	flagFull   = 1
	headerLen  = 4 + 1 + 1 + 2 + 8 + 8 + 4 // magic type flags count epoch seq vip
	entryLen   = 4 + 4 + 2 + 2 + 2 + 1
	maxNameLen = 253
	// MaxDatagram is the largest datagram sent: below a 1500-byte MTU
	// with IP, UDP and a tunnel's headers.
	MaxDatagram = 1400
)

// Errors of Decode; each rejected datagram matches one, the label of the
// rejection metric (RejectReason).
var (
	ErrShort  = errors.New("datagram too short")
	ErrMagic  = errors.New("not an egressha connection sync datagram (bad magic)")
	ErrType   = errors.New("unknown datagram type")
	ErrLength = errors.New("datagram length does not match its entry count")
	ErrName   = errors.New("bad sender name")
	// The key and MAC are the probes' (probe.MAC), and so are their
	// errors.
	ErrAuth     = probe.ErrAuth
	ErrShortKey = probe.ErrShortKey
)

// PerDatagram is how many entries fit in one datagram of a sender named
// from.
func PerDatagram(from string) int {
	return (MaxDatagram - headerLen - 1 - len(from) - probe.MACLen) / entryLen
}

// Encode appends the authenticated encoding of m to b. It refuses a
// message longer than MaxDatagram: chunk with PerDatagram.
func (m *Message) Encode(b, key []byte) ([]byte, error) {
	if len(key) < probe.MinKeyLen {
		return b, ErrShortKey
	}
	if len(m.From) == 0 || len(m.From) > maxNameLen {
		return b, fmt.Errorf("%w: must be 1..%d bytes, got %d", ErrName, maxNameLen, len(m.From))
	}
	if len(m.Entries) > PerDatagram(m.From) {
		return b, fmt.Errorf("%w: %d entries, at most %d fit", ErrLength, len(m.Entries), PerDatagram(m.From))
	}
	start := len(b)
	var flags byte
	if m.Full {
		flags |= flagFull
	}
	b = append(b, magic...)
	b = append(b, typeSync, flags)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Entries)))
	b = binary.BigEndian.AppendUint64(b, m.Epoch)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = append(b, m.VIP[:]...)
	b = append(b, byte(len(m.From)))
	b = append(b, m.From...)
	for _, e := range m.Entries {
		b = append(b, e.Pod[:]...)
		b = append(b, e.Dst[:]...)
		b = binary.BigEndian.AppendUint16(b, e.PodPort)
		b = binary.BigEndian.AppendUint16(b, e.DstPort)
		b = binary.BigEndian.AppendUint16(b, e.NATPort)
		b = append(b, e.Proto)
	}
	return append(b, probe.MAC(key, b[start:])...), nil
}

// Decode parses and authenticates a datagram; nothing of a datagram that
// fails is returned. Entries are not validated here (Validate).
func Decode(b, key []byte) (Message, error) {
	var m Message
	if len(key) < probe.MinKeyLen {
		return m, ErrShortKey
	}
	if len(b) < headerLen+2+probe.MACLen {
		return m, ErrShort
	}
	if string(b[:4]) != magic {
		return m, ErrMagic
	}
	if !probe.CheckMAC(b, key) {
		return m, ErrAuth
	}
	body := b[:len(b)-probe.MACLen]
	if body[4] != typeSync {
		return m, fmt.Errorf("%w %d", ErrType, body[4])
	}
	if body[5]&^flagFull != 0 {
		return m, fmt.Errorf("%w: unknown flags %#x", ErrType, body[5])
	}
	m.Full = body[5]&flagFull != 0
	n := int(binary.BigEndian.Uint16(body[6:]))
	m.Epoch = binary.BigEndian.Uint64(body[8:])
	m.Seq = binary.BigEndian.Uint64(body[16:])
	copy(m.VIP[:], body[24:28])
	rest := body[headerLen:]
	nl := int(rest[0])
	if nl == 0 || len(rest) < 1+nl {
		return Message{}, ErrName
	}
	m.From, rest = string(rest[1:1+nl]), rest[1+nl:]
	if len(rest) != n*entryLen {
		return Message{}, fmt.Errorf("%w: %d entries in %d bytes", ErrLength, n, len(rest))
	}
	m.Entries = make([]Entry, n)
	for i := range m.Entries {
		r := rest[i*entryLen:]
		e := &m.Entries[i]
		copy(e.Pod[:], r[0:4])
		copy(e.Dst[:], r[4:8])
		e.PodPort = binary.BigEndian.Uint16(r[8:])
		e.DstPort = binary.BigEndian.Uint16(r[10:])
		e.NATPort = binary.BigEndian.Uint16(r[12:])
		e.Proto = r[14]
	}
	return m, nil
}
