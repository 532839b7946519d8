package vipd

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netns"

	"github.com/egressha/egressha/internal/privileged"
)

func requirePrivileged(t *testing.T) {
	t.Helper()
	privileged.Require(t, "creates network namespaces")
}

// l2 is a small Ethernet segment: a bridge in its own namespace, and one
// namespace per host, each with a veth ("eth0") plugged into the bridge.
type l2 struct {
	t      *testing.T
	prefix string
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newL2(t *testing.T) *l2 {
	requirePrivileged(t)
	n := &l2{t: t, prefix: fmt.Sprintf("vipdt%d-", os.Getpid()%100000)}
	run(t, "ip", "netns", "add", n.ns("br"))
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.ns("br")).Run() })
	run(t, "ip", "-n", n.ns("br"), "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", n.ns("br"), "link", "set", "br0", "up")
	return n
}

func (n *l2) ns(host string) string { return n.prefix + host }

// host adds a namespace with eth0 = addr/24 on the segment and returns its
// MAC.
func (n *l2) host(name, addr string) net.HardwareAddr {
	t := n.t
	run(t, "ip", "netns", "add", n.ns(name))
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.ns(name)).Run() })
	run(t, "ip", "-n", n.ns("br"), "link", "add", "port-"+name, "type", "veth", "peer", "name", "eth0", "netns", n.ns(name))
	run(t, "ip", "-n", n.ns("br"), "link", "set", "port-"+name, "master", "br0", "up")
	run(t, "ip", "-n", n.ns(name), "addr", "add", addr+"/24", "dev", "eth0")
	run(t, "ip", "-n", n.ns(name), "link", "set", "eth0", "up")
	run(t, "ip", "-n", n.ns(name), "link", "set", "lo", "up")
	var mac net.HardwareAddr
	n.in(name, func() {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		mac = ifi.HardwareAddr
	})
	return mac
}

// in runs f on a thread inside the host's namespace. Sockets opened there
// stay in that namespace after f returns.
func (n *l2) in(host string, f func()) {
	n.t.Helper()
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// The thread is not unlocked: it dies with the goroutine instead of
		// going back to the pool in the wrong namespace.
		var target netns.NsHandle
		target, err = netns.GetFromName(n.ns(host))
		if err != nil {
			return
		}
		defer target.Close()
		if err = netns.Set(target); err != nil {
			return
		}
		f()
	}()
	<-done
	if err != nil {
		n.t.Fatalf("entering %s: %v", host, err)
	}
}

// announcer returns an announcer with eth0 of host.
func (n *l2) announcer(host string, cfg Config) *Announcer {
	var a *Announcer
	n.in(host, func() {
		a = NewAnnouncer(cfg, NopObserver{}, slog.New(slog.NewTextHandler(os.Stderr, nil)).With("host", host))
		if errs := a.SyncInterfaces([]string{"eth0"}); len(errs) > 0 {
			n.t.Fatalf("%s: %v", host, errs)
		}
	})
	n.t.Cleanup(a.Close)
	return a
}

// neighbour is the MAC in host's neighbour table for ip ("" if none or
// not resolved).
func (n *l2) neighbour(host, ip string) string {
	out := run(n.t, "ip", "-n", n.ns(host), "neigh", "show", ip, "dev", "eth0")
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// resolve makes the host's kernel ARP for ip by sending it a datagram and
// waits until the neighbour table has a MAC for it.
func (n *l2) resolve(host, ip string, within time.Duration) string {
	n.in(host, func() {
		c, err := net.Dial("udp4", ip+":9")
		if err != nil {
			n.t.Fatal(err)
		}
		c.Write([]byte("x"))
		c.Close()
	})
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if mac := n.neighbour(host, ip); mac != "" {
			return mac
		}
		time.Sleep(5 * time.Millisecond)
	}
	return ""
}

// arpRequests counts the ARP requests that host sends, seen from the bridge
// port it is plugged into.
type arpRequests struct {
	conn  *packet.Conn
	count atomic.Int64
	done  chan struct{}
}

func (n *l2) countRequests(host string, mac net.HardwareAddr) *arpRequests {
	c := &arpRequests{done: make(chan struct{})}
	n.in("br", func() {
		ifi, err := net.InterfaceByName("port-" + host)
		if err != nil {
			n.t.Fatal(err)
		}
		c.conn, err = packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
		if err != nil {
			n.t.Fatal(err)
		}
	})
	go func() {
		defer close(c.done)
		buf := make([]byte, 1500)
		for {
			nr, _, err := c.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			var f ethernet.Frame
			var p arp.Packet
			if f.UnmarshalBinary(buf[:nr]) != nil || p.UnmarshalBinary(f.Payload) != nil {
				continue
			}
			if p.Operation == arp.OperationRequest && bytes.Equal(p.SenderHardwareAddr, mac) {
				c.count.Add(1)
			}
		}
	}()
	n.t.Cleanup(func() { c.conn.Close(); <-c.done })
	return c
}

type dupLog struct {
	mu   sync.Mutex
	seen []Duplicate
}

func (d *dupLog) add(x Duplicate) {
	d.mu.Lock()
	d.seen = append(d.seen, x)
	d.mu.Unlock()
}

func (d *dupLog) macs() map[string]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := map[string]bool{}
	for _, x := range d.seen {
		m[x.MAC.String()] = true
	}
	return m
}

var (
	vipText = "192.0.2.100"
	vip     = netip.MustParseAddr(vipText)
	allow   = Fence(func() bool { return true })
)

// testConfig keeps the re-announce loop out of the way (each test asks for
// what it needs) and probes quickly.
var testConfig = Config{ProbeCount: 2, ProbeInterval: 30 * time.Millisecond, GARPCount: 3, GARPInterval: 50 * time.Millisecond}

// TestAnnounceAndHandover: a neighbour ARPing the VIP gets the active
// node's MAC; after a handover its neighbour table holds the new MAC
// through the new node's gratuitous ARP, without a request of its own.
func TestAnnounceAndHandover(t *testing.T) {
	n := newL2(t)
	macA := n.host("a", "192.0.2.1")
	macB := n.host("b", "192.0.2.2")
	macN := n.host("n", "192.0.2.3")
	a, b := n.announcer("a", testConfig), n.announcer("b", testConfig)

	var dupA, dupB dupLog
	spA := a.NewSpeaker(vip, []string{"eth0"}, allow, dupA.add)
	if d, err := spA.Probe(context.Background()); err != nil || len(d) != 0 {
		t.Fatalf("probe on a free segment: duplicates %v, error %v", d, err)
	}
	spA.Start()
	if got := n.resolve("n", vipText, 2*time.Second); got != macA.String() {
		t.Fatalf("neighbour resolved %s to %q, want a's MAC %s", vipText, got, macA)
	}

	requests := n.countRequests("n", macN)
	spA.Stop()
	spB := b.NewSpeaker(vip, []string{"eth0"}, allow, dupB.add)
	start := time.Now()
	if d, err := spB.Probe(context.Background()); err != nil || len(d) != 0 {
		t.Fatalf("probe after a withdrew: duplicates %v, error %v", d, err)
	}
	spB.Start()
	var moved time.Duration
	for time.Since(start) < time.Second {
		if n.neighbour("n", vipText) == macB.String() {
			moved = time.Since(start)
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if moved == 0 {
		t.Fatalf("neighbour still has %q for %s 1s after the handover, want b's MAC %s", n.neighbour("n", vipText), vipText, macB)
	}
	if got := requests.count.Load(); got != 0 {
		t.Fatalf("neighbour sent %d ARP requests during the handover; the new MAC must arrive by GARP alone", got)
	}
	t.Logf("neighbour table moved to the new MAC %s after the handover (probe %d x %s included), without ARP requests",
		moved.Round(time.Millisecond), testConfig.ProbeCount, testConfig.ProbeInterval)
	if len(dupA.macs())+len(dupB.macs()) != 0 {
		t.Fatalf("duplicates reported in a clean handover: a %v, b %v", dupA.macs(), dupB.macs())
	}
}

// TestDuplicateDetection: a second responder claiming a VIP that is already
// announced is detected, by the prober (the owner answers its probe) and by
// the owner (the intruder's GARPs, and the owner's own duplicate probe).
func TestDuplicateDetection(t *testing.T) {
	n := newL2(t)
	macA := n.host("a", "192.0.2.1")
	macB := n.host("b", "192.0.2.2")
	cfg := testConfig
	cfg.ReannounceInterval = 100 * time.Millisecond
	a, b := n.announcer("a", cfg), n.announcer("b", cfg)

	var dupA, dupB dupLog
	spA := a.NewSpeaker(vip, []string{"eth0"}, allow, dupA.add)
	spA.Start()
	t.Cleanup(spA.Close)

	// b probes: a defends, b must see a's MAC.
	spB := b.NewSpeaker(vip, []string{"eth0"}, allow, dupB.add)
	t.Cleanup(spB.Close)
	d, err := spB.Probe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(d) == 0 || d[0].MAC.String() != macA.String() || d[0].Interface != "eth0" {
		t.Fatalf("probe while a announces: got %v, want a duplicate from %s", d, macA)
	}

	// b starts anyway (a rogue responder): a must report b.
	spB.Start()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && !(dupA.macs()[macB.String()] && dupB.macs()[macA.String()]) {
		time.Sleep(10 * time.Millisecond)
	}
	if !dupA.macs()[macB.String()] {
		t.Fatalf("a announces %s and b claims it too, but a reported %v", vipText, dupA.macs())
	}
	if !dupB.macs()[macA.String()] {
		t.Fatalf("b's re-announce probe did not reveal a: %v", dupB.macs())
	}
}

// TestFence: a closed fence stops replies at once; the neighbour cannot
// resolve the VIP although the speaker is started.
func TestFence(t *testing.T) {
	n := newL2(t)
	macA := n.host("a", "192.0.2.1")
	n.host("n", "192.0.2.3")
	a := n.announcer("a", testConfig)
	var open atomic.Bool
	open.Store(true)
	sp := a.NewSpeaker(vip, []string{"eth0"}, func() bool { return open.Load() }, nil)
	sp.Start()
	t.Cleanup(sp.Close)
	if got := n.resolve("n", vipText, 2*time.Second); got != macA.String() {
		t.Fatalf("open fence: neighbour resolved %q, want %s", got, macA)
	}
	open.Store(false)
	run(t, "ip", "-n", n.ns("n"), "neigh", "flush", "dev", "eth0")
	if got := n.resolve("n", vipText, 500*time.Millisecond); got != "" {
		t.Fatalf("closed fence: neighbour still resolved %s to %s", vipText, got)
	}
	// Stop is as good as a closed fence.
	open.Store(true)
	sp.Stop()
	run(t, "ip", "-n", n.ns("n"), "neigh", "flush", "dev", "eth0")
	if got := n.resolve("n", vipText, 500*time.Millisecond); got != "" {
		t.Fatalf("stopped speaker: neighbour resolved %s to %s", vipText, got)
	}
}

// TestInterfaceChecks: interfaces that cannot carry ARP are refused with a
// reason, and a re-created interface gets a new responder.
func TestInterfaceChecks(t *testing.T) {
	n := newL2(t)
	n.host("a", "192.0.2.1")
	n.in("a", func() {
		a := NewAnnouncer(testConfig, NopObserver{}, slog.Default())
		defer a.Close()
		errs := a.SyncInterfaces([]string{"eth0", "lo", "nosuch0"})
		if errs["eth0"] != nil {
			t.Errorf("eth0: %v", errs["eth0"])
		}
		if errs["lo"] == nil || !strings.Contains(errs["lo"].Error(), "loopback") {
			t.Errorf("lo: got %v, want a loopback refusal", errs["lo"])
		}
		if errs["nosuch0"] == nil {
			t.Errorf("nosuch0: missing interface accepted")
		}
		r1, ok := a.Responder("eth0")
		if !ok {
			t.Fatal("no responder on eth0")
		}
		run(t, "ip", "-n", n.ns("a"), "link", "set", "eth0", "arp", "off")
		if errs := a.SyncInterfaces([]string{"eth0"}); errs["eth0"] == nil || !strings.Contains(errs["eth0"].Error(), "NOARP") {
			t.Errorf("eth0 with arp off: got %v", errs["eth0"])
		}
		run(t, "ip", "-n", n.ns("a"), "link", "set", "eth0", "arp", "on")
		if errs := a.SyncInterfaces([]string{"eth0"}); len(errs) != 0 {
			t.Errorf("eth0 back: %v", errs)
		}
		if r2, ok := a.Responder("eth0"); !ok || r2 == r1 {
			t.Errorf("after a refusal the responder must be re-opened (got same=%v ok=%v)", r2 == r1, ok)
		}
	})
}
