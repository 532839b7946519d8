package probe

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/egressha/egressha/internal/testcells"
)

// freePort returns a UDP port free on 127.0.0.1 at the time of the call.
func freePort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

// probePair is a real prober (replica "op-1", leader) and a real
// responder (node "lab-egress-a") talking UDP on the loopback, each with
// its own copy of the key.
type probePair struct {
	db                 *statedb.DB
	tbl                statedb.RWTable[*SessionRow]
	m                  *Metrics
	proberKey, nodeKey *Key
	port               uint16
	node               netip.Addr
	proberAddr         netip.AddrPort
	timing             Timing
	rsp                *Responder
	stopNode           context.CancelFunc
	nodeDone           chan struct{}
}

func startProbePair(t *testing.T) *probePair {
	t.Helper()
	log := hivetest.Logger(t, hivetest.LogLevel(slog.LevelWarn))
	pp := &probePair{db: statedb.New(), m: NewMetrics(), proberKey: &Key{}, nodeKey: &Key{}, port: freePort(t),
		node: netip.MustParseAddr("127.0.0.1"), timing: Timing{Interval: 20 * time.Millisecond, Multiplier: 3},
		nodeDone: make(chan struct{})}
	var err error
	if pp.tbl, err = NewSessionsTable(pp.db); err != nil {
		t.Fatal(err)
	}
	pp.proberKey.Set(testKey)
	pp.nodeKey.Set(testKey)
	proberConn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	pp.proberAddr = proberConn.LocalAddr().(*net.UDPAddr).AddrPort()
	pr := &Prober{Log: log, DB: pp.db, Table: pp.tbl, Metrics: pp.m, Leader: NewLeader(), Key: pp.proberKey, Timing: pp.timing,
		Port: pp.port, Self: "op-1", Conn: proberConn, Changed: make(chan struct{}),
		Targets: func() map[string]netip.Addr { return map[string]netip.Addr{"lab-egress-a": pp.node} }}
	pr.Leader.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go pr.Run(ctx, testcells.NopHealth{})
	pp.rsp = &Responder{Log: log, Metrics: pp.m, Key: pp.nodeKey, Node: "lab-egress-a", Port: pp.port, Fence: 50 * time.Millisecond,
		PeerInterval: time.Hour}
	pp.rsp.Init()
	var rspCtx context.Context
	rspCtx, pp.stopNode = context.WithCancel(ctx)
	go func() { _ = pp.rsp.Run(rspCtx, testcells.NopHealth{}); close(pp.nodeDone) }()
	return pp
}

func (pp *probePair) state() State {
	r, _, ok := pp.tbl.Get(pp.db.ReadTxn(), SessionByNode("lab-egress-a"))
	if !ok {
		return StateInit
	}
	return r.State
}

// TestForgedRepliesDoNotKeepADeadNodeUp runs a real prober and a real
// responder over UDP on the loopback: the node answers (Up), dies (Down),
// and then a host that is not the node (127.0.0.2) sends the prober every
// reply it could make: garbage, replies under a wrong key, the node's own
// genuine replies replayed, and freshly forged ones under the right key
// but from its own address. The session stays Down; each is counted.
func TestForgedRepliesDoNotKeepADeadNodeUp(t *testing.T) {
	pp := startProbePair(t)
	m, port, node, proberAddr, timing, rsp, stopNode, nodeDone, state := pp.m, pp.port, pp.node, pp.proberAddr, pp.timing,
		pp.rsp, pp.stopNode, pp.nodeDone, pp.state

	testcells.Eventually(t, "session Up while the node answers", func() bool { return state() == StateUp })
	testcells.Eventually(t, "the node hears the leader", func() bool { return rsp.Heard(time.Now()).Heard })

	// Capture a few genuine replies on their way: a second prober
	// socket would get different sequence numbers, so record what the
	// node sends by probing it once more ourselves.
	spy, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close()
	q := Packet{Type: TypeProbe, Flags: FlagLeader, Epoch: 5, Seq: 1, From: "op-1", To: "lab-egress-a"}
	b, _ := q.Encode(nil, testKey)
	if _, err := spy.WriteToUDPAddrPort(b, netip.AddrPortFrom(node, port)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, MaxLen)
	_ = spy.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := spy.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no genuine reply captured: %v", err)
	}
	genuine := append([]byte(nil), buf[:n]...)

	// The node dies.
	stopNode()
	<-nodeDone
	testcells.Eventually(t, "session Down once the node stopped answering", func() bool { return state() == StateDown })

	// The attacker holds the key and sees the prober's probes on the
	// wire (here: it binds the dead node's port and reads them), so it
	// knows the prober's epoch and sequence numbers; it answers each
	// probe at once, but from its own address, 127.0.0.2. It also sends
	// garbage, a reply under a wrong key and the genuine reply captured
	// earlier.
	sniff, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
	if err != nil {
		t.Fatal(err)
	}
	defer sniff.Close()
	attacker, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	wrongKey, _ := (&Packet{Type: TypeReply, Epoch: 1, Seq: 1, EchoEpoch: 0, EchoSeq: 1, From: "lab-egress-a", To: "op-1"}).Encode(nil, otherKey)
	nextProbe := func() Packet {
		t.Helper()
		_ = sniff.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := sniff.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("no probe seen: %v", err)
		}
		p, err := Decode(buf[:n], testKey)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	forge := func(q Packet) []byte {
		b, _ := (&Packet{Type: TypeReply, Epoch: 1, Seq: q.Seq, EchoEpoch: q.Epoch, EchoSeq: q.Seq, From: q.To, To: q.From}).Encode(nil, testKey)
		return b
	}
	for range 10 * timing.Multiplier {
		q := nextProbe()
		for _, d := range [][]byte{[]byte("garbage"), wrongKey, genuine, forge(q)} {
			_, _ = attacker.WriteToUDPAddrPort(d, proberAddr)
		}
		if st := state(); st != StateDown {
			t.Fatalf("forged replies from 127.0.0.2 made the dead node's session %s", st)
		}
	}
	testcells.Eventually(t, "the rejections counted", func() bool {
		return testutil.ToFloat64(m.Rejected.WithLabelValues("wrong-source")) > 0
	})
	if st := state(); st != StateDown {
		t.Fatalf("forged replies from 127.0.0.2 made the dead node's session %s", st)
	}
	// The same forged reply from the node's own address is taken: the
	// check above is what held the session Down.
	_, _ = sniff.WriteToUDPAddrPort(forge(nextProbe()), proberAddr)
	testcells.Eventually(t, "a reply from the node's address counts", func() bool { return state() == StateUp })

	rejected := func(reason string) float64 { return testutil.ToFloat64(m.Rejected.WithLabelValues(reason)) }
	if rejected("auth") == 0 || rejected("malformed") == 0 || rejected("wrong-source") == 0 {
		t.Errorf("rejections not counted: auth %v, malformed %v, wrong-source %v",
			rejected("auth"), rejected("malformed"), rejected("wrong-source"))
	}
}

// TestPeerProbesKeepANodeHeardWithoutOperators: with no operator probing
// at all (every replica gone in an API server outage), a node keeps its
// VIPs while another candidate's peer probes reach it, and fences once
// they stop (the node is then cut off, as far as it can tell).
func TestPeerProbesKeepANodeHeardWithoutOperators(t *testing.T) {
	log := hivetest.Logger(t, hivetest.LogLevel(slog.LevelWarn))
	m := NewMetrics()
	key := &Key{}
	key.Set(testKey)
	port := freePort(t)
	newResponder := func(name, addr string) *Responder {
		r := &Responder{Log: log, Metrics: m, Key: key, Node: name, Port: port, Fence: 60 * time.Millisecond,
			PeerInterval: 10 * time.Millisecond, Listen: netip.MustParseAddr(addr)}
		r.Init()
		return r
	}
	a, b := newResponder("lab-egress-a", "127.0.0.1"), newResponder("lab-egress-b", "127.0.0.2")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx, testcells.NopHealth{})
	bCtx, stopB := context.WithCancel(ctx)
	bDone := make(chan struct{})
	go func() { _ = b.Run(bCtx, testcells.NopHealth{}); close(bDone) }()
	testcells.Eventually(t, "both listening", func() bool { return a.Started() && b.Started() })
	if v := a.Heard(time.Now()); v.Heard {
		t.Fatalf("heard before any probe: %+v", v)
	}
	b.SetPeers(map[string]netip.Addr{"lab-egress-a": netip.MustParseAddr("127.0.0.1")})
	testcells.Eventually(t, "a heard through b's peer probes", func() bool {
		v := a.Heard(time.Now())
		return v.Heard && strings.Contains(v.Why, "peer lab-egress-b")
	})
	if a.OperatorSeen() {
		t.Fatal("peer probes count as an operator's")
	}
	stopB()
	<-bDone
	testcells.Eventually(t, "a fenced once the peer is gone", func() bool { return !a.Heard(time.Now()).Heard })
}

// TestKeyChangeResetsSessions: when the prober's key changes (rotation,
// or the Secret deleted and recreated), replies under the old key stop
// counting. The session goes back to Init (the Lease decides), never to
// Down, which would move the node's roles; it is Up again once the node
// has the new key.
func TestKeyChangeResetsSessions(t *testing.T) {
	pp := startProbePair(t)
	testcells.Eventually(t, "session Up", func() bool { return pp.state() == StateUp })
	pp.proberKey.Set(otherKey)
	testcells.Eventually(t, "session back to Init after the key changed", func() bool { return pp.state() == StateInit })
	for range 10 {
		time.Sleep(pp.timing.Detect())
		if st := pp.state(); st != StateInit {
			t.Fatalf("with the node still on the old key, the session is %s, want Init", st)
		}
	}
	pp.nodeKey.Set(otherKey)
	testcells.Eventually(t, "session Up under the new key", func() bool { return pp.state() == StateUp })
}
