package probe

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/hive/cell"
)

// Responder answers the operators' probes on this node and records who
// hears it (Hearing), from which the VIP controller takes its fence
// (Heard). It also sends one-way peer probes to the other VIP candidates
// (SetPeers), whose arrival tells them the cluster network still reaches
// them when no operator probes.
type Responder struct {
	Log     *slog.Logger
	Metrics *Metrics
	Key     *Key
	Node    string
	Port    uint16
	// Fence is the fence bound this node applies and reports.
	Fence time.Duration
	// PeerInterval is how often peer probes are sent.
	PeerInterval time.Duration
	// Listen is the address to listen on (zero: every address; tests
	// run several responders on loopback addresses).
	Listen netip.Addr

	mu      sync.Mutex
	hearing *Hearing
	peers   map[string]netip.Addr
	// reportFence is the fence bound put in replies: Fence while this node
	// may answer for a virtual IP, 0 otherwise (the operator then need not
	// wait before handing a role on).
	reportFence atomic.Int64
	changed     chan struct{}
	started     atomic.Bool
}

// Started reports whether the responder is listening.
func (r *Responder) Started() bool { return r.started.Load() }

// SetVIPCandidate says whether this node may answer for a virtual IP (the
// VIP controller has a gateway it is a candidate of).
func (r *Responder) SetVIPCandidate(on bool) {
	var f int64
	if on {
		f = int64(r.Fence)
	}
	r.reportFence.Store(f)
}

// SetPeers sets the other candidate nodes to send peer probes to.
func (r *Responder) SetPeers(peers map[string]netip.Addr) {
	r.mu.Lock()
	r.peers = peers
	r.mu.Unlock()
}

// Heard applies the fence rule at now (Hearing.Verdict).
func (r *Responder) Heard(now time.Time) Verdict {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hearing == nil {
		return Verdict{Why: "liveness probe responder not started"}
	}
	return r.hearing.Verdict(now, r.Fence)
}

// OperatorSeen reports whether an operator's probe arrived since start
// (Hearing.OperatorSeen); until then the Lease-based fence applies.
func (r *Responder) OperatorSeen() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hearing != nil && r.hearing.OperatorSeen()
}

// Changed is signalled (without blocking) when a probe arrived that may
// change the verdict: the first from a sender, or one whose flags differ
// from that sender's previous one.
func (r *Responder) Changed() <-chan struct{} { return r.changed }

// Init prepares the responder; call before Run and before the first Heard.
func (r *Responder) Init() {
	r.hearing = NewHearing(r.Node)
	r.changed = make(chan struct{}, 1)
}

// Run answers probes until ctx ends.
func (r *Responder) Run(ctx context.Context, health cell.Health) error {
	laddr := &net.UDPAddr{Port: int(r.Port)}
	if r.Listen.IsValid() {
		laddr.IP = r.Listen.AsSlice()
	}
	conn, err := net.ListenUDP("udp4", laddr)
	if err != nil {
		health.Degraded("liveness probe responder cannot listen", err)
		return fmt.Errorf("liveness probe responder: listen on UDP port %d: %w", r.Port, err)
	}
	defer conn.Close()
	go func() { <-ctx.Done(); conn.Close() }()
	rx := make(chan received, 1024)
	go readLoop(conn, rx, r.Metrics)
	r.started.Store(true)
	health.OK(fmt.Sprintf("answering liveness probes on UDP port %d", r.Port))

	epoch := randomEpoch()
	var seq uint64
	var out []byte
	peerTick := time.NewTicker(r.PeerInterval)
	defer peerTick.Stop()
	fenceTick := time.NewTicker(r.Fence / 2)
	defer fenceTick.Stop()
	lastHeard := -1
	report := func(now time.Time) {
		v := r.Heard(now)
		h := 0
		if v.Heard {
			h = 1
		}
		if h != lastHeard {
			r.Metrics.Heard.WithLabelValues().Set(float64(h))
			r.Log.Info("Liveness: fence verdict changed", "heard", v.Heard, "why", v.Why)
			lastHeard = h
			r.signal()
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-fenceTick.C:
			report(now)
		case <-peerTick.C:
			key := r.Key.Get()
			if key == nil {
				continue
			}
			r.mu.Lock()
			peers := r.peers
			r.mu.Unlock()
			for name, addr := range peers {
				seq++
				q := Packet{Type: TypeProbe, Flags: FlagPeer, Epoch: epoch, Seq: seq, From: r.Node, To: name}
				if out, err = q.Encode(out[:0], key); err == nil {
					_, _ = conn.WriteToUDPAddrPort(out, netip.AddrPortFrom(addr, r.Port))
				}
			}
		case m := <-rx:
			key := r.Key.Get()
			if key == nil {
				r.Metrics.Rejected.WithLabelValues("no-key").Inc()
				continue
			}
			p, err := Decode(m.b, key)
			if err == nil {
				err = r.observe(p, m.at)
			}
			if err != nil {
				r.Metrics.Rejected.WithLabelValues(RejectReason(err)).Inc()
				continue
			}
			if p.Flags&FlagPeer != 0 {
				report(m.at)
				continue
			}
			seq++
			reply := Packet{Type: TypeReply, FenceMillis: uint16(min(time.Duration(r.reportFence.Load())/time.Millisecond, 65535)),
				Epoch: epoch, Seq: seq, EchoEpoch: p.Epoch, EchoSeq: p.Seq, From: r.Node, To: p.From}
			if out, err = reply.Encode(out[:0], key); err == nil {
				_, _ = conn.WriteToUDPAddrPort(out, m.src)
			}
			report(m.at)
		}
	}
}

func (r *Responder) observe(p Packet, at time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hearing.Observe(p, at)
}

func (r *Responder) signal() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}
