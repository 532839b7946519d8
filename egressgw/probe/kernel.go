package probe

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Kernel echo: besides the authenticated probes the agent answers, every
// operator replica sends ICMP echo requests to each candidate node. The
// node's kernel answers them whatever its cilium-agent does, so they tell
// a node that lives on (its datapath keeps forwarding) while its agent
// restarts from a node that is gone (crash, power off, reboot, a cut
// link). The operator reads them only while a node's agent has declared
// a graceful restart (issue 15); otherwise the agent's probes decide.
//
// Forgery: a reply counts only if it carries the MAC this replica put in
// the request (HMAC-SHA256 under a secret that never leaves the process,
// over the node's address and the probe's sequence number), comes from
// the node's address and answers one of the last probes in time. Only a
// host on the path between the replica and the node, which sees the
// request, can answer for a node that is gone; the agent's own probes
// (HMAC under the cluster's probe key) keep the stronger guarantee for
// everything but a declared restart.

// echoPayloadLen is the echo data: the probe's sequence number (8 bytes)
// and the MAC (16 bytes).
const echoPayloadLen = 8 + macLen

// errEchoForged: the echo data is not what this replica sent.
var errEchoForged = errors.New("kernel echo reply not signed by this prober")

// echoSigner signs and checks echo data.
type echoSigner struct{ secret [32]byte }

func newEchoSigner() (*echoSigner, error) {
	e := &echoSigner{}
	if _, err := rand.Read(e.secret[:]); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *echoSigner) mac(dst netip.Addr, seq uint64) []byte {
	m := hmac.New(sha256.New, e.secret[:])
	a := dst.As16()
	m.Write(a[:])
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	m.Write(b[:])
	return m.Sum(nil)[:macLen]
}

// payload is the echo data of probe seq to dst.
func (e *echoSigner) payload(dst netip.Addr, seq uint64) []byte {
	out := make([]byte, 8, echoPayloadLen)
	binary.BigEndian.PutUint64(out, seq)
	return append(out, e.mac(dst, seq)...)
}

// check returns the sequence number of echo data received from src, or
// errEchoForged when this replica did not send it to src.
func (e *echoSigner) check(src netip.Addr, data []byte) (uint64, error) {
	if len(data) != echoPayloadLen {
		return 0, errEchoForged
	}
	seq := binary.BigEndian.Uint64(data[:8])
	if !hmac.Equal(data[8:], e.mac(src.Unmap(), seq)) {
		return 0, errEchoForged
	}
	return seq, nil
}

// echoConn is an ICMP socket: raw (CAP_NET_RAW) or, failing that, an
// unprivileged ping socket (net.ipv4.ping_group_range).
type echoConn struct {
	*icmp.PacketConn
	udp bool
}

func listenEcho() (*echoConn, error) {
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err == nil {
		return &echoConn{PacketConn: c}, nil
	}
	c, err2 := icmp.ListenPacket("udp4", "0.0.0.0")
	if err2 == nil {
		return &echoConn{PacketConn: c, udp: true}, nil
	}
	return nil, fmt.Errorf("kernel echo needs a raw ICMP socket (%v) or a ping socket (%v)", err, err2)
}

// send sends echo request seq to dst.
func (c *echoConn) send(e *echoSigner, id int, dst netip.Addr, seq uint64) error {
	m := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: int(uint16(seq)), Data: e.payload(dst, seq)}}
	b, err := m.Marshal(nil)
	if err != nil {
		return err
	}
	var to net.Addr = &net.IPAddr{IP: dst.AsSlice()}
	if c.udp {
		to = &net.UDPAddr{IP: dst.AsSlice()}
	}
	_, err = c.WriteTo(b, to)
	return err
}

// echoReply is one echo reply read from the socket.
type echoReply struct {
	src  netip.Addr
	id   int
	data []byte
	at   time.Time
}

// readEcho reads echo replies into rx until the socket is closed. A raw
// socket sees every ICMP message of the host: only echo replies pass.
func readEcho(c *echoConn, rx chan<- echoReply) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		at := time.Now()
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		if !ok {
			continue
		}
		var src netip.Addr
		switch a := from.(type) {
		case *net.IPAddr:
			src, _ = netip.AddrFromSlice(a.IP)
		case *net.UDPAddr:
			src, _ = netip.AddrFromSlice(a.IP)
		}
		select {
		case rx <- echoReply{src: src.Unmap(), id: echo.ID, data: append([]byte(nil), echo.Data...), at: at}:
		default:
		}
	}
}
