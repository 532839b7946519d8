package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// The echo server answers GET / with the source address it saw. With the
// query parameter l2 (GET /?l2=1) it answers "ADDR MAC": the address and
// the Ethernet source address of the frames that carried the request onto
// the public bridge, i.e. the eth1 of the node the traffic left through.
// The address alone cannot tell two gateway nodes apart when both SNAT to
// the same virtual IP; the MAC can (see EchoPeer and LinkMAC).

// peerMACs records, from an AF_PACKET socket on br1, the Ethernet source
// of the TCP segments sent to the echo server, by their source ip:port.
type peerMACs struct {
	mu   sync.Mutex
	seen map[netip.AddrPort]macSeen
}

type macSeen struct {
	mac net.HardwareAddr
	at  time.Time
}

// peerMACTTL bounds how long a source ip:port is remembered; ports are
// reused, the latest frame wins anyway.
const peerMACTTL = 30 * time.Second

// startPeerCapture opens the capture socket inside lab-echo, bound to br1,
// and records frames until ctx ends.
func startPeerCapture(ctx context.Context) (*peerMACs, error) {
	var fd int
	err := inNetns(EchoNetns, func() error {
		ifi, err := net.InterfaceByName("br1")
		if err != nil {
			return err
		}
		s, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_IP)))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		if err := syscall.Bind(s, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_IP), Ifindex: ifi.Index}); err != nil {
			syscall.Close(s)
			return fmt.Errorf("binding the capture to br1: %w", err)
		}
		// A receive timeout lets the loop notice ctx ending.
		tv := syscall.NsecToTimeval(int64(200 * time.Millisecond))
		if err := syscall.SetsockoptTimeval(s, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
			syscall.Close(s)
			return err
		}
		fd = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	p := &peerMACs{seen: map[netip.AddrPort]macSeen{}}
	go func() {
		defer syscall.Close(fd)
		buf := make([]byte, 2048)
		lastPrune := time.Now()
		for ctx.Err() == nil {
			n, _, err := syscall.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // EAGAIN on the receive timeout, EINTR
			}
			if src, mac, ok := parseToEcho(buf[:n]); ok {
				now := time.Now()
				p.mu.Lock()
				p.seen[src] = macSeen{mac: mac, at: now}
				if now.Sub(lastPrune) > peerMACTTL {
					for k, v := range p.seen {
						if now.Sub(v.at) > peerMACTTL {
							delete(p.seen, k)
						}
					}
					lastPrune = now
				}
				p.mu.Unlock()
			}
		}
	}()
	return p, nil
}

// parseToEcho returns the source ip:port and MAC of an Ethernet frame that
// carries a TCP segment to the echo server.
func parseToEcho(f []byte) (netip.AddrPort, net.HardwareAddr, bool) {
	const eth = 14
	if len(f) < eth+20 || binary.BigEndian.Uint16(f[12:14]) != syscall.ETH_P_IP || f[eth]>>4 != 4 {
		return netip.AddrPort{}, nil, false
	}
	ihl := int(f[eth]&0x0f) * 4
	if f[eth+9] != syscall.IPPROTO_TCP || len(f) < eth+ihl+4 {
		return netip.AddrPort{}, nil, false
	}
	dst := netip.AddrFrom4([4]byte(f[eth+16 : eth+20]))
	dport := binary.BigEndian.Uint16(f[eth+ihl+2:])
	if dst != EchoAddr.Addr() || dport != EchoPort {
		return netip.AddrPort{}, nil, false
	}
	src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(f[eth+12:eth+16])), binary.BigEndian.Uint16(f[eth+ihl:]))
	return src, net.HardwareAddr(append([]byte(nil), f[6:12]...)), true
}

// lookup waits briefly for the capture to have recorded src: the frame
// reaches the socket before the TCP stack, but the reader may lag (by
// more than 200 ms while two agents start on this machine's two cores).
func (p *peerMACs) lookup(src netip.AddrPort) net.HardwareAddr {
	for deadline := time.Now().Add(time.Second); ; {
		p.mu.Lock()
		s, ok := p.seen[src]
		p.mu.Unlock()
		if ok {
			return s.mac
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// StreamPath is the echo server's streaming endpoint: GET /stream answers
// with one line "SEQ SOURCE\n" every StreamEvery, flushed at once, until
// the client goes away: a server that pushes on a long-lived connection
// (issue 17's server-push kind). The server keeps writing whatever the
// client does, so after a failover the server, not the client, sends first.
const (
	StreamPath  = "/stream"
	StreamEvery = 50 * time.Millisecond
)

// echoHandler answers with the source address it saw and, when asked
// (?l2), the Ethernet source address that carried it ("-" if unknown);
// StreamPath streams.
func echoHandler(macs *peerMACs) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == StreamPath {
			stream(w, r)
			return
		}
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		addr := ap.Addr().Unmap().String()
		if !r.URL.Query().Has("l2") {
			io.WriteString(w, addr)
			return
		}
		mac := "-"
		if macs != nil {
			if m := macs.lookup(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())); m != nil {
				mac = m.String()
			}
		}
		io.WriteString(w, addr+" "+mac)
	}
}

func stream(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	tick := time.NewTicker(StreamEvery)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		if _, err := fmt.Fprintf(w, "%d %s\n", seq, r.RemoteAddr); err != nil {
			return
		}
		flusher.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

// serveUDPEcho answers every datagram on EchoAddr:EchoPort/udp with its
// payload followed by " SOURCE" (the address:port it came from), as a
// DNS-like request/response service on a fixed port.
func serveUDPEcho(ctx context.Context) error {
	var pc net.PacketConn
	err := inNetns(EchoNetns, func() error {
		c, err := net.ListenPacket("udp4", net.JoinHostPort(EchoAddr.Addr().String(), fmt.Sprint(EchoPort)))
		pc = c
		return err
	})
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		pc.Close()
	}()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			reply := append(append(append([]byte(nil), buf[:n]...), ' '), from.String()...)
			_, _ = pc.WriteTo(reply, from)
		}
	}()
	return nil
}

// EchoL2URL is the echo server's URL that also reports the sender's MAC.
func EchoL2URL() string { return EchoURL() + "/?l2=1" }

// LinkMAC returns the MAC address of dev inside the node's namespace.
func LinkMAC(n Node, dev string) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := inNetns(n.Name, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr
		return nil
	})
	return mac, err
}
