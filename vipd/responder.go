package vipd

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Observer receives vipd's counters. Calls come from the responders' read
// goroutines and from speakers: implementations must be cheap and safe for
// concurrent use.
type Observer interface {
	// RequestReceived: an ARP request for a VIP we announce or claim.
	RequestReceived(vip netip.Addr, iface string)
	// ReplySent: we answered such a request.
	ReplySent(vip netip.Addr, iface string)
	// GARPSent: one gratuitous ARP frame (either form) left the interface.
	GARPSent(vip netip.Addr, iface string)
	// DuplicateSeen: another MAC claimed a VIP we announce or probe for.
	DuplicateSeen(d Duplicate)
}

// NopObserver counts nothing.
type NopObserver struct{}

func (NopObserver) RequestReceived(netip.Addr, string) {}
func (NopObserver) ReplySent(netip.Addr, string)       {}
func (NopObserver) GARPSent(netip.Addr, string)        {}
func (NopObserver) DuplicateSeen(Duplicate)            {}

// Kinds of duplicate evidence.
const (
	// DuplicateReply: an ARP reply (or a GARP) with the VIP as sender IP.
	DuplicateReply = "reply"
	// DuplicateRequest: an ARP request sent from the VIP (a GARP in request
	// form, or a host that uses the VIP as its own address).
	DuplicateRequest = "request"
	// DuplicateProbe: another host probed for the VIP while we probed
	// (RFC 5227 simultaneous probe).
	DuplicateProbe = "probe"
)

// Duplicate is evidence that another MAC claims a VIP.
type Duplicate struct {
	VIP       netip.Addr
	Interface string
	MAC       net.HardwareAddr
	Kind      string
	At        time.Time
}

func (d Duplicate) String() string {
	return fmt.Sprintf("%s claimed by %s on %s (%s)", d.VIP, d.MAC, d.Interface, d.Kind)
}

// Fence reports whether the caller may announce right now. It is checked
// immediately before every reply and every gratuitous ARP.
type Fence func() bool

// vipEntry is what a responder knows about one VIP.
type vipEntry struct {
	announce bool // answer requests (and allow GARPs)
	probing  bool // a probe is in flight: other probers are conflicts
	fence    Fence
	onDup    func(Duplicate)
}

// frameConn is the part of an AF_PACKET socket (*packet.Conn) a responder
// uses: raw Ethernet frames in and out.
type frameConn interface {
	ReadFrom(b []byte) (int, net.Addr, error)
	WriteTo(b []byte, addr net.Addr) (int, error)
	Close() error
}

// Responder reads ARP on one interface and answers requests for the VIPs it
// announces. It is created by an Announcer.
type Responder struct {
	name  string
	index int
	mac   net.HardwareAddr
	conn  frameConn
	log   *slog.Logger
	obs   Observer

	mu   sync.RWMutex
	vips map[netip.Addr]*vipEntry

	done    chan struct{}
	closing atomic.Bool
	errMu   sync.Mutex
	readErr error
}

// ErrNotARPCapable is returned for interfaces vipd cannot answer ARP on.
var ErrNotARPCapable = errors.New("interface cannot carry ARP")

// CheckInterface reports why ARP cannot be answered on ifi, or nil.
func CheckInterface(ifi *net.Interface) error {
	switch {
	case ifi.Flags&net.FlagLoopback != 0:
		return fmt.Errorf("%s is a loopback interface: %w", ifi.Name, ErrNotARPCapable)
	case len(ifi.HardwareAddr) != 6:
		return fmt.Errorf("%s has no Ethernet address: %w", ifi.Name, ErrNotARPCapable)
	case ifi.Flags&net.FlagBroadcast == 0:
		return fmt.Errorf("%s does not broadcast: %w", ifi.Name, ErrNotARPCapable)
	case noARP(ifi):
		return fmt.Errorf("%s has ARP disabled (NOARP): %w", ifi.Name, ErrNotARPCapable)
	case ifi.Flags&net.FlagUp == 0:
		return fmt.Errorf("%s is down", ifi.Name)
	}
	return nil
}

// noARP reads IFF_NOARP, which package net does not expose. It asks the
// kernel through netlink in the calling thread's network namespace.
func noARP(ifi *net.Interface) bool {
	l, err := netlink.LinkByIndex(ifi.Index)
	return err == nil && l.Attrs().RawFlags&unix.IFF_NOARP != 0
}

func listen(ifi *net.Interface, obs Observer, log *slog.Logger) (*Responder, error) {
	if err := CheckInterface(ifi); err != nil {
		return nil, err
	}
	conn, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
	if err != nil {
		return nil, fmt.Errorf("ARP socket on %s: %w", ifi.Name, err)
	}
	r := newResponder(ifi, conn, obs, log)
	go r.readLoop()
	return r, nil
}

func newResponder(ifi *net.Interface, conn frameConn, obs Observer, log *slog.Logger) *Responder {
	return &Responder{
		name:  ifi.Name,
		index: ifi.Index,
		mac:   append(net.HardwareAddr(nil), ifi.HardwareAddr...),
		conn:  conn,
		log:   log.With("interface", ifi.Name),
		obs:   obs,
		vips:  map[netip.Addr]*vipEntry{},
		done:  make(chan struct{}),
	}
}

// Name is the interface name.
func (r *Responder) Name() string { return r.name }

// HardwareAddr is the MAC the responder answers with.
func (r *Responder) HardwareAddr() net.HardwareAddr { return r.mac }

// Err is the error that stopped the read loop, nil while it runs.
func (r *Responder) Err() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.readErr
}

func (r *Responder) close() {
	r.mu.Lock()
	for _, e := range r.vips {
		e.announce = false
	}
	r.mu.Unlock()
	r.closing.Store(true)
	r.conn.Close()
	<-r.done
}

func (r *Responder) readLoop() {
	defer close(r.done)
	buf := make([]byte, 1500)
	for {
		n, _, err := r.conn.ReadFrom(buf)
		if err != nil {
			r.errMu.Lock()
			r.readErr = err
			r.errMu.Unlock()
			// Nothing may be answered from a broken socket.
			r.mu.Lock()
			for _, e := range r.vips {
				e.announce = false
			}
			r.mu.Unlock()
			if !r.closing.Load() {
				r.log.Warn("ARP responder stopped: reading the interface failed", "error", err)
			}
			return
		}
		r.receive(buf[:n], time.Now())
	}
}

// receive handles one frame read from the interface: anything that is not
// a well-formed Ethernet/IPv4 ARP frame is ignored. Whatever the bytes, it
// sends at most a reply from this interface's MAC, for a VIP it announces
// behind an open fence, to the MAC that asked (FuzzReceive).
func (r *Responder) receive(frame []byte, now time.Time) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil || f.EtherType != ethernet.EtherTypeARP {
		return
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		return
	}
	r.handle(&p, now)
}

func (r *Responder) handle(p *arp.Packet, now time.Time) {
	if bytes.Equal(p.SenderHardwareAddr, r.mac) {
		return // our own frame, looped back
	}
	r.mu.RLock()
	defer r.mu.RUnlock()

	// Another MAC speaking as the VIP: a reply, a GARP, or a request sent
	// from the VIP. Only evidence while we announce or probe; a standby
	// sees the active node's GARPs and that is fine.
	if e, ok := r.vips[p.SenderIP]; ok && (e.announce || e.probing) {
		kind := DuplicateReply
		if p.Operation == arp.OperationRequest {
			kind = DuplicateRequest
		}
		r.duplicate(e, Duplicate{VIP: p.SenderIP, Interface: r.name, MAC: p.SenderHardwareAddr, Kind: kind, At: now})
	}
	if p.Operation != arp.OperationRequest {
		return
	}
	e, ok := r.vips[p.TargetIP]
	if !ok || !(e.announce || e.probing) {
		return
	}
	r.obs.RequestReceived(p.TargetIP, r.name)
	if p.SenderIP.IsUnspecified() && e.probing && !e.announce {
		// Both probing for the same address: neither may take it.
		r.duplicate(e, Duplicate{VIP: p.TargetIP, Interface: r.name, MAC: p.SenderHardwareAddr, Kind: DuplicateProbe, At: now})
		return
	}
	if !e.announce || !e.fence() {
		return
	}
	reply, err := arp.NewPacket(arp.OperationReply, r.mac, p.TargetIP, p.SenderHardwareAddr, p.SenderIP)
	if err != nil {
		return
	}
	if err := r.send(reply, p.SenderHardwareAddr); err != nil {
		r.log.Debug("ARP reply not sent", "vip", p.TargetIP, "to", p.SenderHardwareAddr, "error", err)
		return
	}
	r.obs.ReplySent(p.TargetIP, r.name)
}

func (r *Responder) duplicate(e *vipEntry, d Duplicate) {
	r.obs.DuplicateSeen(d)
	if e.onDup != nil {
		e.onDup(d)
	}
}

func (r *Responder) send(p *arp.Packet, dst net.HardwareAddr) error {
	pb, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	f := ethernet.Frame{Destination: dst, Source: r.mac, EtherType: ethernet.EtherTypeARP, Payload: pb}
	fb, err := f.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = r.conn.WriteTo(fb, &packet.Addr{HardwareAddr: dst})
	return err
}

var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// garp sends both gratuitous forms for vip, each only if the fence allows
// at the moment it is sent (the read lock keeps Stop from completing while
// a frame is on its way).
func (r *Responder) garp(vip netip.Addr) error {
	// Request form: sender IP = target IP, target MAC unknown.
	req, err := arp.NewPacket(arp.OperationRequest, r.mac, vip, zeroMAC, vip)
	if err != nil {
		return err
	}
	// Reply form: Linux treats a reply as gratuitous (and lets it override a
	// neighbour entry updated less than locktime ago) only when the target
	// MAC equals the sender MAC.
	rep, err := arp.NewPacket(arp.OperationReply, r.mac, vip, r.mac, vip)
	if err != nil {
		return err
	}
	for _, p := range []*arp.Packet{req, rep} {
		sent, err := r.sendIfAnnouncing(vip, p, ethernet.Broadcast)
		if err != nil || !sent {
			return err
		}
		r.obs.GARPSent(vip, r.name)
	}
	return nil
}

func (r *Responder) sendIfAnnouncing(vip netip.Addr, p *arp.Packet, dst net.HardwareAddr) (bool, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.vips[vip]
	if !ok || !e.announce || !e.fence() {
		return false, nil
	}
	return true, r.send(p, dst)
}

// probe sends one RFC 5227 probe for vip: sender IP 0.0.0.0, so that no
// neighbour caches anything from it.
func (r *Responder) probe(vip netip.Addr) error {
	p, err := arp.NewPacket(arp.OperationRequest, r.mac, netip.IPv4Unspecified(), zeroMAC, vip)
	if err != nil {
		return err
	}
	return r.send(p, ethernet.Broadcast)
}

func (r *Responder) register(vip netip.Addr, fence Fence, onDup func(Duplicate)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.vips[vip] = &vipEntry{fence: fence, onDup: onDup}
}

func (r *Responder) unregister(vip netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.vips, vip)
}

func (r *Responder) set(vip netip.Addr, f func(e *vipEntry)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.vips[vip]; ok {
		f(e)
	}
}
