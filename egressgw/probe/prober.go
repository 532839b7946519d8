package probe

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/egressha/egressha/egressgw/heartbeat"
)

// Leader says whether this operator replica is the egressha leader: the
// operator sets it for each term of egressgw/leader's election, the
// prober puts it in every probe.
type Leader struct{ atomic.Bool }

// NewLeader returns a Leader that is not leading.
func NewLeader() *Leader { return &Leader{} }

// target is a node to probe: it has a heartbeat Lease (it is a candidate
// of some gateway) and a Node object with an InternalIP.
type target struct {
	addr      netip.Addr
	lease     bool
	hasObject bool
}

// targets is the prober's view of the nodes, fed by two informers.
type targets struct {
	mu      sync.Mutex
	nodes   map[string]*target
	changed chan struct{}
}

func (t *targets) update(name string, f func(*target)) {
	t.mu.Lock()
	tg := t.nodes[name]
	if tg == nil {
		tg = &target{}
		t.nodes[name] = tg
	}
	f(tg)
	if !tg.lease && !tg.hasObject {
		delete(t.nodes, name)
	}
	t.mu.Unlock()
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// snapshot returns the nodes to probe and their addresses.
func (t *targets) snapshot() map[string]netip.Addr {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]netip.Addr, len(t.nodes))
	for name, tg := range t.nodes {
		if tg.lease && tg.addr.IsValid() {
			out[name] = tg.addr
		}
	}
	return out
}

// NodeAddress is the Node's first IPv4 InternalIP, else ExternalIP: the
// address Cilium tunnels to, the only one a reply may come from, and the
// operator's InternalIP of a node (zero when it has none).
func NodeAddress(n *corev1.Node) netip.Addr {
	for _, t := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP} {
		for _, a := range n.Status.Addresses {
			if a.Type != t {
				continue
			}
			if addr, err := netip.ParseAddr(a.Address); err == nil && addr.Is4() {
				return addr
			}
		}
	}
	return netip.Addr{}
}

func informer[T runtime.Object](ctx context.Context, lw cache.ListerWatcher, obj T, set func(name string, o T), del func(name string)) {
	_, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    obj,
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { set(o.(metav1.Object).GetName(), o.(T)) },
			UpdateFunc: func(_, o any) { set(o.(metav1.Object).GetName(), o.(T)) },
			DeleteFunc: func(o any) {
				if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
					o = d.Obj
				}
				if m, ok := o.(metav1.Object); ok {
					del(m.GetName())
				}
			},
		},
	})
	go ctrl.Run(ctx.Done())
}

// watchTargets starts the informers that feed t.
func watchTargets(ctx context.Context, cs kubernetes.Interface, ns string, t *targets) {
	informer(ctx, &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.CoreV1().Nodes().List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return cs.CoreV1().Nodes().Watch(ctx, o)
		},
	}, &corev1.Node{}, func(name string, n *corev1.Node) {
		addr := NodeAddress(n)
		t.update(name, func(tg *target) { tg.addr, tg.hasObject = addr, true })
	}, func(name string) {
		t.update(name, func(tg *target) { tg.addr, tg.hasObject = netip.Addr{}, false })
	})
	sel := heartbeat.ComponentLabel + "=" + heartbeat.ComponentValue
	informer(ctx, &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = sel
			return cs.CoordinationV1().Leases(ns).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = sel
			return cs.CoordinationV1().Leases(ns).Watch(ctx, o)
		},
	}, &coordinationv1.Lease{}, func(name string, _ *coordinationv1.Lease) {
		if node, ok := strings.CutPrefix(name, heartbeat.LeasePrefix); ok && node != "" {
			t.update(node, func(tg *target) { tg.lease = true })
		}
	}, func(name string) {
		if node, ok := strings.CutPrefix(name, heartbeat.LeasePrefix); ok && node != "" {
			t.update(node, func(tg *target) { tg.lease = false })
		}
	})
}

// received is one datagram read from the socket.
type received struct {
	b   []byte
	src netip.AddrPort
	at  time.Time
}

// Prober probes every candidate node from this operator replica and
// keeps egress-probe-sessions, its only writer.
type Prober struct {
	Log     *slog.Logger
	DB      *statedb.DB
	Table   statedb.RWTable[*SessionRow]
	Metrics *Metrics
	Leader  *Leader
	Key     *Key
	Timing  Timing
	Port    uint16
	// Self names this replica in probes (its Pod name).
	Self string
	// Targets yields the nodes to probe; changed is signalled when it
	// may have changed.
	Targets func() map[string]netip.Addr
	Changed <-chan struct{}
	// Conn, when set, is the socket to use (tests); otherwise Run opens
	// one on an ephemeral port.
	Conn *net.UDPConn
	// Kernel turns on kernel echo (kernel.go) beside the probes.
	Kernel bool
}

// Run probes until ctx ends.
func (p *Prober) Run(ctx context.Context, health cell.Health) error {
	conn := p.Conn
	if conn == nil {
		var err error
		if conn, err = net.ListenUDP("udp4", nil); err != nil {
			return fmt.Errorf("liveness prober: %w", err)
		}
	}
	defer conn.Close()
	go func() { <-ctx.Done(); conn.Close() }()
	rx := make(chan received, 1024)
	go readLoop(conn, rx, p.Metrics)

	epoch := randomEpoch()
	sessions := map[string]*Session{}
	// Kernel echo sessions, by node, and the node of each address.
	kernel := map[string]*Session{}
	byAddr := map[netip.Addr]string{}
	echoRx := make(chan echoReply, 1024)
	var echo *echoConn
	var signer *echoSigner
	echoID := int(uint16(epoch))
	if p.Kernel {
		var err error
		if signer, err = newEchoSigner(); err == nil {
			echo, err = listenEcho()
		}
		if err != nil {
			p.Log.Warn("Kernel echo is off: an agent restart will be judged like a failed agent and move its roles",
				"error", err)
		} else {
			defer echo.Close()
			go func() { <-ctx.Done(); echo.Close() }()
			go readEcho(echo, echoRx)
		}
	}
	tick := time.NewTicker(p.Timing.Interval)
	defer tick.Stop()
	var buf, lastKey []byte
	noKey := false
	sync := func() {
		now := time.Now()
		want := p.Targets()
		txn := p.DB.WriteTxn(p.Table)
		for name, s := range sessions {
			if addr, ok := want[name]; !ok || addr != s.Addr {
				delete(sessions, name)
				delete(kernel, name)
				delete(byAddr, s.Addr)
				p.Table.Delete(txn, &SessionRow{Status: Status{Node: name}})
				p.Metrics.SessionState.DeleteLabelValues(name)
			}
		}
		for name, addr := range want {
			if _, ok := sessions[name]; !ok {
				s := NewSession(p.Self, epoch, name, addr, p.Timing, now)
				sessions[name] = s
				if echo != nil {
					kernel[name] = NewSession(p.Self, epoch, name, addr, p.Timing, now)
					byAddr[addr] = name
				}
				p.Table.Insert(txn, &SessionRow{Status: s.Status()})
				p.Metrics.SessionState.WithLabelValues(name).Set(0)
			}
		}
		txn.Commit()
	}
	// status is a node's probe session with its kernel echo state.
	status := func(s *Session) Status {
		st := s.Status()
		if k := kernel[s.Node]; k != nil {
			ks := k.Status()
			st.Kernel, st.KernelSince = ks.State, ks.Since
		}
		return st
	}
	publish := func(s *Session, why string) {
		st := status(s)
		txn := p.DB.WriteTxn(p.Table)
		p.Table.Insert(txn, &SessionRow{Status: st})
		txn.Commit()
		p.Metrics.SessionState.WithLabelValues(st.Node).Set(float64(st.State))
		p.Metrics.Transitions.WithLabelValues(st.Node, st.State.String()).Inc()
		p.Log.Info("Liveness probe session changed", "node", st.Node, "address", st.Addr, "state", st.State,
			"since", st.Since, "lastReply", st.LastReply, "rtt", st.RTT, "fence", st.Fence, "kernel", st.Kernel, "why", why)
	}
	sync()
	health.OK(fmt.Sprintf("probing every %s, Down after %d misses", p.Timing.Interval, p.Timing.Multiplier))
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.Changed:
			sync()
		case <-tick.C:
			now := time.Now()
			key := p.Key.Get()
			if !bytes.Equal(key, lastKey) {
				// No key, or a new one: what the sessions knew was
				// under the old key; back to Init (the Lease decides)
				// rather than Down, which would move every role.
				for _, s := range sessions {
					if s.Reset(now) {
						publish(s, "probe key missing or changed")
					}
				}
				lastKey = key
			}
			if key == nil {
				if !noKey {
					health.Degraded("liveness probing paused", errNoKey)
					noKey = true
				}
			} else if noKey {
				health.OK(fmt.Sprintf("probing every %s, Down after %d misses", p.Timing.Interval, p.Timing.Multiplier))
				noKey = false
			}
			leader := p.Leader.Load()
			for _, s := range sessions {
				if s.Tick(now) {
					publish(s, fmt.Sprintf("no valid reply for %s", p.Timing.Detect()))
				}
				if key == nil {
					continue
				}
				q := s.Probe(now, leader)
				var err error
				buf, err = q.Encode(buf[:0], key)
				if err != nil {
					continue
				}
				// A send error (no route while a link is down) is a
				// missed probe: the session's timer judges it.
				_, _ = conn.WriteToUDPAddrPort(buf, netip.AddrPortFrom(s.Addr, p.Port))
			}
			for name, k := range kernel {
				if k.Tick(now) {
					publish(sessions[name], fmt.Sprintf("kernel echo: no reply for %s", p.Timing.Detect()))
				}
				_ = echo.send(signer, echoID, k.Addr, k.Probe(now, false).Seq)
			}
		case r := <-echoRx:
			if !echo.udp && r.id != echoID {
				continue // another program's ping
			}
			seq, err := signer.check(r.src, r.data)
			if err != nil {
				p.Metrics.Rejected.WithLabelValues("kernel-forged").Inc()
				continue
			}
			name, ok := byAddr[r.src]
			if !ok {
				p.Metrics.Rejected.WithLabelValues("unknown-node").Inc()
				continue
			}
			changed, err := kernel[name].EchoReply(seq, r.src, r.at)
			if err != nil {
				p.Metrics.Rejected.WithLabelValues(RejectReason(err)).Inc()
				continue
			}
			if changed {
				publish(sessions[name], "kernel echo reply")
			}
		case r := <-rx:
			key := p.Key.Get()
			if key == nil {
				p.Metrics.Rejected.WithLabelValues("no-key").Inc()
				continue
			}
			pkt, err := Decode(r.b, key)
			if err != nil {
				p.Metrics.Rejected.WithLabelValues(RejectReason(err)).Inc()
				continue
			}
			s := sessions[pkt.From]
			if s == nil {
				p.Metrics.Rejected.WithLabelValues("unknown-node").Inc()
				continue
			}
			before := s.Status()
			changed, err := s.Reply(pkt, r.src.Addr(), r.at)
			if err != nil {
				p.Metrics.Rejected.WithLabelValues(RejectReason(err)).Inc()
				continue
			}
			after := s.Status()
			p.Metrics.RTT.WithLabelValues().Observe(after.RTT.Seconds())
			if changed || before.Fence != after.Fence {
				publish(s, "valid reply")
			}
		}
	}
}

func readLoop(conn *net.UDPConn, rx chan<- received, m *Metrics) {
	buf := make([]byte, MaxLen+1)
	for {
		n, src, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		at := time.Now()
		if n > MaxLen {
			m.Rejected.WithLabelValues("malformed").Inc()
			continue
		}
		select {
		case rx <- received{b: append([]byte(nil), buf[:n]...), src: src, at: at}:
		default:
			m.Rejected.WithLabelValues("overflow").Inc()
		}
	}
}

func randomEpoch() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return uint64(time.Now().UnixNano())
	}
	return binary.BigEndian.Uint64(b[:])
}

// replicaName is this operator replica's name in probes: its Pod name
// (the chart sets it in the environment), else the host name.
func replicaName() string {
	for _, env := range []string{"CILIUM_OPERATOR_POD_NAME", "POD_NAME"} {
		if v := os.Getenv(env); v != "" {
			return v
		}
	}
	h, _ := os.Hostname()
	return h
}
