package probe

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressha/egressha/internal/testcells"
)

func TestEchoSignerRefusesWhatItDidNotSend(t *testing.T) {
	e, err := newEchoSigner()
	if err != nil {
		t.Fatal(err)
	}
	node, other := netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("198.18.0.12")
	data := e.payload(node, 42)
	if seq, err := e.check(node, data); err != nil || seq != 42 {
		t.Fatalf("own echo from the node: seq %d, %v; want 42, nil", seq, err)
	}
	// The same data coming back from another address: forged.
	if _, err := e.check(other, data); err != errEchoForged {
		t.Fatalf("echo from another address: %v, want errEchoForged", err)
	}
	// A changed sequence number, or data of another prober.
	bad := append([]byte(nil), data...)
	bad[7]++
	if _, err := e.check(node, bad); err != errEchoForged {
		t.Fatalf("tampered sequence: %v, want errEchoForged", err)
	}
	e2, _ := newEchoSigner()
	if _, err := e2.check(node, data); err != errEchoForged {
		t.Fatalf("another prober's echo: %v, want errEchoForged", err)
	}
	if _, err := e.check(node, data[:10]); err != errEchoForged {
		t.Fatalf("short data: %v, want errEchoForged", err)
	}
}

func TestEchoReplyAnswersOnlyRecentProbes(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tm := Timing{Interval: 100 * time.Millisecond, Multiplier: 3}
	addr := netip.MustParseAddr("198.18.0.11")
	s := NewSession("op", 1, "n", addr, tm, t0)
	seq := s.Probe(t0, false).Seq
	if _, err := s.EchoReply(seq, netip.MustParseAddr("198.18.0.12"), t0.Add(time.Millisecond)); err != ErrWrongSource {
		t.Fatalf("reply from another address: %v", err)
	}
	if _, err := s.EchoReply(seq+1, addr, t0.Add(time.Millisecond)); err != ErrStale {
		t.Fatalf("reply to a probe not sent: %v", err)
	}
	if _, err := s.EchoReply(seq, addr, t0.Add(time.Second)); err != ErrStale {
		t.Fatalf("reply after the detection time: %v", err)
	}
	if ch, err := s.EchoReply(seq, addr, t0.Add(time.Millisecond)); err != nil || !ch || s.Status().State != StateUp {
		t.Fatalf("valid reply: changed %v, %v, state %s", ch, err, s.Status().State)
	}
	if !s.Tick(t0.Add(301*time.Millisecond)) || s.Status().State != StateDown {
		t.Fatalf("no reply for the detection time: state %s, want Down", s.Status().State)
	}
}

// TestKernelEchoOverRealSockets runs a prober with kernel echo on: the
// loopback's kernel answers for 127.0.0.1 (Up, with no agent and no probe
// key at all), while an address nobody answers stays Init.
func TestKernelEchoOverRealSockets(t *testing.T) {
	if c, err := listenEcho(); err != nil {
		t.Fatalf("this test needs an ICMP socket (root or ping_group_range): %v", err)
	} else {
		c.Close()
	}
	// An address nobody answers: an unreachable route for the test.
	gone := netip.MustParseAddr("198.51.100.254")
	rt := &netlink.Route{Dst: &net.IPNet{IP: gone.AsSlice(), Mask: net.CIDRMask(32, 32)}, Type: unix.RTN_UNREACHABLE}
	if err := netlink.RouteAdd(rt); err != nil {
		t.Fatalf("adding an unreachable route for %s: %v", gone, err)
	}
	t.Cleanup(func() { _ = netlink.RouteDel(rt) })
	log := hivetest.Logger(t, hivetest.LogLevel(slog.LevelWarn))
	db := statedb.New()
	tbl, err := NewSessionsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	pr := &Prober{Log: log, DB: db, Table: tbl, Metrics: NewMetrics(), Leader: NewLeader(), Key: &Key{},
		Timing: Timing{Interval: 20 * time.Millisecond, Multiplier: 3}, Port: freePort(t), Self: "op-1", Conn: conn,
		Changed: make(chan struct{}), Kernel: true,
		Targets: func() map[string]netip.Addr {
			return map[string]netip.Addr{"alive": netip.MustParseAddr("127.0.0.1"), "gone": gone}
		}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go pr.Run(ctx, testcells.NopHealth{})
	kernel := func(node string) State {
		r, _, ok := tbl.Get(db.ReadTxn(), SessionByNode(node))
		if !ok {
			return StateInit
		}
		return r.Kernel
	}
	deadline := time.Now().Add(10 * time.Second)
	for kernel("alive") != StateUp {
		if time.Now().After(deadline) {
			t.Fatalf("kernel echo of 127.0.0.1 never came Up (state %s)", kernel("alive"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	r, _, _ := tbl.Get(db.ReadTxn(), SessionByNode("alive"))
	if r.State != StateInit {
		t.Fatalf("probe state %s with no agent and no key, want Init: kernel echo must not count as the agent's answer", r.State)
	}
	// Give the other session as many probes again as "alive" needed.
	time.Sleep(200 * time.Millisecond)
	if k := kernel("gone"); k != StateInit {
		t.Fatalf("kernel echo of an address nobody answers: %s, want Init", k)
	}
}
