// Package probe is egressha's liveness probing over the cluster network
// (issue 14): a BFD-style exchange of small authenticated UDP datagrams
// between every operator replica and each candidate gateway node, so that
// a crashed or cut-off node is detected in a few hundred milliseconds
// without the API server in the path, and so that a node knows by itself
// when it is no longer heard.
//
// The package holds the wire format (this file), the prober's session
// state machine (session.go) and the responder's record of who it hears
// (hearing.go). All three are pure: no sockets, no clock; the cells that
// own the sockets feed them bytes and times.
//
// Authentication: every datagram carries an HMAC-SHA256 (truncated to 16
// bytes) over its whole content, keyed by the cluster's probe key (a
// Secret only the operators and agents can read). A host on the node
// network without the key can neither fake a node's replies nor an
// operator's probes. Replay: a reply is accepted only for one of the
// prober's recent outstanding sequence numbers (session.go), and a probe
// only with a sequence number above the last one seen from the same sender
// epoch (hearing.go); the prober also checks that a reply comes from the
// node's own address.
package probe

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Port is the default UDP port of the responders.
const Port = 4796

// Type is a datagram's kind.
type Type uint8

const (
	// TypeProbe is sent by a prober (an operator replica) to a node.
	TypeProbe Type = 1
	// TypeReply is a node's answer to a probe.
	TypeReply Type = 2
)

// Flags carried by a datagram.
type Flags uint8

const (
	// FlagLeader (probe): the sender is the operator leader, the one
	// that can move a gateway's role.
	FlagLeader Flags = 1 << 0
	// FlagHearYou (probe): the sender's session to the receiver is Up,
	// i.e. it hears the receiver's replies. A node that receives probes
	// from the leader without it is not heard (its replies are lost).
	FlagHearYou Flags = 1 << 1
	// FlagPeer (probe): the sender is another gateway node, not an
	// operator replica. A peer's probe proves only that the cluster
	// network reaches the receiver; it never keeps a node in a role the
	// leader can see it lost.
	FlagPeer Flags = 1 << 2
)

// Packet is one decoded datagram.
type Packet struct {
	Type  Type
	Flags Flags
	// FenceMillis (reply) is the receiver's fence bound: how long after
	// it last heard the leader say "hear you" it stops answering for a
	// virtual IP. The leader waits that long before it hands the role to
	// another node.
	FenceMillis uint16
	// Epoch identifies one run of the sender (random at start), Seq
	// counts its datagrams.
	Epoch, Seq uint64
	// EchoEpoch and EchoSeq (reply) are the Epoch and Seq of the probe
	// answered.
	EchoEpoch, EchoSeq uint64
	// From and To are node names, or operator replica names.
	From, To string
}

const (
	magic      = "EGP1"
	headerLen  = 4 + 1 + 1 + 2 + 8*4
	macLen     = 16
	maxNameLen = 253
	// MaxLen is the longest datagram.
	MaxLen = headerLen + 2*(1+maxNameLen) + macLen
	// MinKeyLen is the shortest probe key accepted.
	MinKeyLen = 16
)

// Errors of Decode. Every rejected datagram matches exactly one of them,
// which is the label of the rejection metric.
var (
	ErrShort    = errors.New("datagram too short")
	ErrMagic    = errors.New("not an egressha probe (bad magic)")
	ErrType     = errors.New("unknown datagram type")
	ErrName     = errors.New("bad name field")
	ErrAuth     = errors.New("authentication failed (wrong key or altered datagram)")
	ErrShortKey = errors.New("probe key too short")
)

// Encode appends the authenticated encoding of p to b.
func (p *Packet) Encode(b []byte, key []byte) ([]byte, error) {
	if len(key) < MinKeyLen {
		return b, ErrShortKey
	}
	if len(p.From) == 0 || len(p.From) > maxNameLen || len(p.To) == 0 || len(p.To) > maxNameLen {
		return b, fmt.Errorf("%w: names must be 1..%d bytes (from %d, to %d)", ErrName, maxNameLen, len(p.From), len(p.To))
	}
	if p.Type != TypeProbe && p.Type != TypeReply {
		return b, fmt.Errorf("%w %d", ErrType, p.Type)
	}
	start := len(b)
	b = append(b, magic...)
	b = append(b, byte(p.Type), byte(p.Flags))
	b = binary.BigEndian.AppendUint16(b, p.FenceMillis)
	b = binary.BigEndian.AppendUint64(b, p.Epoch)
	b = binary.BigEndian.AppendUint64(b, p.Seq)
	b = binary.BigEndian.AppendUint64(b, p.EchoEpoch)
	b = binary.BigEndian.AppendUint64(b, p.EchoSeq)
	b = append(b, byte(len(p.From)))
	b = append(b, p.From...)
	b = append(b, byte(len(p.To)))
	b = append(b, p.To...)
	return append(b, mac(key, b[start:])...), nil
}

// Decode parses and authenticates a datagram. Nothing of a datagram that
// fails is returned.
func Decode(b []byte, key []byte) (Packet, error) {
	var p Packet
	if len(key) < MinKeyLen {
		return p, ErrShortKey
	}
	if len(b) < headerLen+2+2+macLen {
		return p, ErrShort
	}
	if string(b[:4]) != magic {
		return p, ErrMagic
	}
	body, sum := b[:len(b)-macLen], b[len(b)-macLen:]
	if !hmac.Equal(sum, mac(key, body)) {
		return p, ErrAuth
	}
	p.Type, p.Flags = Type(body[4]), Flags(body[5])
	if p.Type != TypeProbe && p.Type != TypeReply {
		return Packet{}, fmt.Errorf("%w %d", ErrType, p.Type)
	}
	p.FenceMillis = binary.BigEndian.Uint16(body[6:])
	p.Epoch = binary.BigEndian.Uint64(body[8:])
	p.Seq = binary.BigEndian.Uint64(body[16:])
	p.EchoEpoch = binary.BigEndian.Uint64(body[24:])
	p.EchoSeq = binary.BigEndian.Uint64(body[32:])
	rest := body[headerLen:]
	var ok bool
	if p.From, rest, ok = name(rest); !ok {
		return Packet{}, fmt.Errorf("%w: from", ErrName)
	}
	if p.To, rest, ok = name(rest); !ok || len(rest) != 0 {
		return Packet{}, fmt.Errorf("%w: to", ErrName)
	}
	return p, nil
}

func name(b []byte) (string, []byte, bool) {
	if len(b) < 1 {
		return "", nil, false
	}
	n := int(b[0])
	if n == 0 || len(b) < 1+n {
		return "", nil, false
	}
	return string(b[1 : 1+n]), b[1+n:], true
}

func mac(key, b []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(b)
	return h.Sum(nil)[:macLen]
}

// MACLen is the length of the authentication code that MAC appends.
const MACLen = macLen

// MAC is the probes' authentication code of b under key (HMAC-SHA256,
// truncated to MACLen bytes), for other datagrams authenticated as the
// probes are (egressgw/connsync).
func MAC(key, b []byte) []byte { return mac(key, b) }

// CheckMAC reports whether b ends with the authentication code (MAC) of
// the rest of b under key, comparing in constant time.
func CheckMAC(b, key []byte) bool {
	if len(b) < macLen {
		return false
	}
	body, sum := b[:len(b)-macLen], b[len(b)-macLen:]
	return hmac.Equal(sum, mac(key, body))
}
