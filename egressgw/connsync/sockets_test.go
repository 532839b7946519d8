package connsync

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/statedb"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cilium/cilium/pkg/maps/nat"

	"github.com/egressha/egressha/egressgw/probe"
)

var (
	addrA = netip.MustParseAddr("127.0.0.1")
	addrB = netip.MustParseAddr("127.0.0.2")
	addrC = netip.MustParseAddr("127.0.0.3")
)

func freePort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

// startSyncer runs a Syncer on listen with its own SNAT map.
func startSyncer(t *testing.T, node string, listen netip.Addr, port uint16, key *probe.Key, view View) (*Syncer, *SNATMap) {
	t.Helper()
	snat, _ := newTestMap(t, 4096, 77)
	var mu sync.Mutex
	s := &Syncer{
		Log: slog.New(slog.DiscardHandler), Metrics: NewMetrics(), Key: key, Node: node, Port: port, Listen: listen,
		Interval: 20 * time.Millisecond, Refresh: 200 * time.Millisecond,
		Range:   NATPortRange{Min: 32768, Max: 65535},
		OpenMap: func() (*SNATMap, error) { return snat, nil },
		View:    func() View { mu.Lock(); defer mu.Unlock(); return view },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() { done <- s.Run(ctx, func(string) { close(started) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	select {
	case <-started:
	case err := <-done:
		t.Fatal(err)
	}
	return s, snat
}

func inMap(s *SNATMap, e Entry) bool {
	fk, fv, rk, rv := MapEntries(e, vip, 0)
	var v nat.NatEntry4
	if s.m.Lookup(&fk, &v) != nil || !sameXlate(&v, &fv) {
		return false
	}
	return s.m.Lookup(&rk, &v) == nil && sameXlate(&v, &rv)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting: %s", what)
}

// TestPrivilegedSyncOverUDP: node a announces the VIP, node b is a
// standby; a's mappings appear in b's map, forged and replayed datagrams
// and datagrams from a host that is not a candidate change nothing.
func TestPrivilegedSyncOverUDP(t *testing.T) {
	key := &probe.Key{}
	key.Set(testKey)
	port := freePort(t)
	_, mapA := startSyncer(t, "a", addrA, port, key, View{Gateways: []Gateway{
		{Name: "gw", VIP: vip, Announcing: true, Peers: map[string]netip.Addr{"b": addrB}}}})
	b, mapB := startSyncer(t, "b", addrB, port, key, View{Gateways: []Gateway{
		{Name: "gw", VIP: vip, Peers: map[string]netip.Addr{"a": addrA, "t": addrC}}}})

	// The datapath on a makes a mapping; it shows up on b.
	e1 := entry(5, 100, 41000, 443, 41000, ProtoTCP)
	if _, err := mapA.Install(Plan{Entry: e1}, vip, 123456); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a's mapping installed on b", func() bool { return inMap(mapB, e1) })

	send := func(from netip.Addr, m Message, k []byte) []byte {
		t.Helper()
		bs, err := m.Encode(nil, k)
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: from.AsSlice()}, &net.UDPAddr{IP: addrB.AsSlice(), Port: int(port)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(bs); err != nil {
			t.Fatal(err)
		}
		return bs
	}
	rejected := func(reason string) float64 { return testutil.ToFloat64(b.Metrics.Rejected.WithLabelValues(reason)) }

	// Forged: right format, wrong key.
	e2 := entry(6, 100, 42000, 443, 42000, ProtoTCP)
	send(addrC, Message{Epoch: 99, Seq: 1, From: "t", VIP: vip, Entries: []Entry{e2}}, []byte("not-the-cluster-key-0123"))
	eventually(t, "forged datagram refused", func() bool { return rejected("auth") == 1 })

	// With the key but not from the node's own address (a node of
	// another gateway speaking for a): refused.
	send(addrC, Message{Epoch: 99, Seq: 1, From: "a", VIP: vip, Entries: []Entry{e2}}, testKey)
	eventually(t, "datagram from a non-candidate refused", func() bool { return rejected("wrong-source") == 1 })

	// A good datagram of another candidate, t, installs ...
	good := send(addrC, Message{Epoch: 99, Seq: 1, From: "t", VIP: vip, Entries: []Entry{e2}}, testKey)
	eventually(t, "good datagram installed", func() bool { return inMap(mapB, e2) })
	// ... its replay, after the entries were lost, installs nothing.
	fk, _, rk, _ := MapEntries(e2, vip, 0)
	if err := mapB.m.Delete(&fk); err != nil {
		t.Fatal(err)
	}
	if err := mapB.m.Delete(&rk); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp4", &net.UDPAddr{IP: addrC.AsSlice()}, &net.UDPAddr{IP: addrB.AsSlice(), Port: int(port)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(good); err != nil {
		t.Fatal(err)
	}
	eventually(t, "replay refused", func() bool { return rejected("replayed") >= 1 })
	var v nat.NatEntry4
	if err := mapB.m.Lookup(&fk, &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("the replayed datagram installed its entry again: %v", err)
	}

	// An invalid entry is refused, the valid one beside it installed.
	bad := entry(7, 100, 43000, 443, 1000, ProtoTCP) // NAT port below the range
	e3 := entry(8, 100, 44000, 443, 44000, ProtoUDP)
	send(addrC, Message{Epoch: 99, Seq: 2, From: "t", VIP: vip, Entries: []Entry{bad, e3}}, testKey)
	eventually(t, "valid entry installed", func() bool { return inMap(mapB, e3) })
	if inMap(mapB, bad) || rejected("invalid") != 1 {
		t.Fatalf("invalid entry: installed %v, rejected %v", inMap(mapB, bad), rejected("invalid"))
	}

	// e2 and e3 are no longer reported (t is silent, a reports only e1): b deletes
	// them after 3 refresh periods, and keeps e1.
	eventually(t, "unreported mappings expired", func() bool { return !inMap(mapB, e3) })
	if !inMap(mapB, e1) {
		t.Fatal("the mapping a keeps reporting was deleted")
	}
	if got := testutil.ToFloat64(b.Metrics.Installed.WithLabelValues("gw")); got != 1 {
		t.Fatalf("installed gauge %v, want 1", got)
	}
}

// TestPrivilegedStandbyDecisions drives a standby's receive and expire
// directly: a changed NAT port replaces the mapping it installed, and
// once the node announces the VIP itself the entries it installed are
// left to the datapath instead of expiring.
func TestPrivilegedStandbyDecisions(t *testing.T) {
	key := &probe.Key{}
	key.Set(testKey)
	snat, _ := newTestMap(t, 4096, 77)
	announcing := false
	s := &Syncer{
		Log: slog.New(slog.DiscardHandler), Metrics: NewMetrics(), Key: key, Node: "b",
		Interval: 250 * time.Millisecond, Refresh: 5 * time.Second,
		Range:   NATPortRange{Min: 32768, Max: 65535},
		OpenMap: func() (*SNATMap, error) { return snat, nil },
		View: func() View {
			return View{Gateways: []Gateway{{Name: "gw", VIP: vip, Announcing: announcing, Peers: map[string]netip.Addr{"a": addrA}}}}
		},
	}
	s.init()
	t0 := time.Unix(5000, 0)
	var seq uint64
	deliver := func(at time.Time, entries ...Entry) {
		t.Helper()
		seq++
		m := Message{Epoch: 1, Seq: seq, From: "a", VIP: vip, Entries: entries}
		b, err := m.Encode(nil, testKey)
		if err != nil {
			t.Fatal(err)
		}
		s.receive(received{b: b, src: addrA, at: at})
	}
	e := entry(5, 100, 41000, 443, 41000, ProtoTCP)
	deliver(t0, e)
	if !inMap(snat, e) {
		t.Fatal("not installed")
	}
	fk, _, _, _ := MapEntries(e, vip, 0)
	var v nat.NatEntry4
	if err := snat.m.Lookup(&fk, &v); err != nil || v.Created != 77 {
		t.Fatalf("created %d (%v), want this node's clock 77", v.Created, err)
	}

	// The announcer mapped the flow again with another port: the old
	// reverse entry goes, the new mapping is installed.
	e2 := e
	e2.NATPort = 50000
	deliver(t0.Add(time.Second), e2)
	if !inMap(snat, e2) || inMap(snat, e) {
		t.Fatalf("after the port change: new %v, old %v; want only the new mapping", inMap(snat, e2), inMap(snat, e))
	}
	_, _, oldRK, _ := MapEntries(e, vip, 0)
	if err := snat.m.Lookup(&oldRK, &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("the old reverse entry is still there: %v", err)
	}

	// egress-conn-sync shows the standby's view of the gateway.
	db := statedb.New()
	tbl, err := NewTable(db)
	if err != nil {
		t.Fatal(err)
	}
	s.DB, s.Table = db, tbl
	s.publish(s.View())
	rows := statedb.Collect(tbl.All(db.ReadTxn()))
	if len(rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rows))
	}
	if got, want := strings.Join(rows[0].TableRow(), " "), "gw 203.0.113.50 Standby a 1 a "+t0.Add(time.Second).UTC().Format(time.RFC3339Nano); got != want {
		t.Fatalf("row %q, want %q", got, want)
	}

	// Reported within 3 refresh periods: kept.
	s.expire(t0.Add(15 * time.Second))
	if !inMap(snat, e2) {
		t.Fatal("expired before 3 refresh periods without a report")
	}
	// This node now announces the VIP: the entries are the datapath's.
	announcing = true
	s.expire(t0.Add(time.Minute))
	if !inMap(snat, e2) {
		t.Fatal("a synced entry was deleted after this node took the VIP over")
	}
	if len(s.trk) != 0 {
		t.Fatal("still tracking the VIP it announces")
	}
	// Entries its own datapath made (identical, not written by the
	// sync) are never taken over for expiry.
	announcing = false
	own := entry(9, 100, 45000, 443, 45000, ProtoTCP)
	if _, err := snat.Install(Plan{Entry: own}, vip, 1); err != nil {
		t.Fatal(err)
	}
	deliver(t0.Add(time.Minute), own)
	s.expire(t0.Add(2 * time.Minute))
	if !inMap(snat, own) {
		t.Fatal("an entry the sync did not write was expired")
	}
	// And once announcing it refuses syncs for the VIP.
	announcing = true
	deliver(t0.Add(time.Minute), entry(6, 100, 42000, 443, 42000, ProtoTCP))
	if got := testutil.ToFloat64(s.Metrics.Rejected.WithLabelValues("active")); got != 1 {
		t.Fatalf("rejected active %v, want 1", got)
	}
}

// TestPrivilegedAnnouncerRounds drives an announcer's rounds directly and
// reads what a peer receives: a full report first, nothing while nothing
// changes, only the new or changed mappings in a round, everything again
// when the refresh is due, in datagrams of at most MaxDatagram bytes.
func TestPrivilegedAnnouncerRounds(t *testing.T) {
	key := &probe.Key{}
	key.Set(testKey)
	snat, _ := newTestMap(t, 4096, 1)
	port := freePort(t)
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: addrB.AsSlice(), Port: int(port)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: addrA.AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := &Syncer{
		Log: slog.New(slog.DiscardHandler), Metrics: NewMetrics(), Key: key, Node: "a", Port: port,
		Interval: 250 * time.Millisecond, Refresh: 5 * time.Second,
		OpenMap: func() (*SNATMap, error) { return snat, nil },
		View: func() View {
			return View{Gateways: []Gateway{{Name: "gw", VIP: vip, Announcing: true, Peers: map[string]netip.Addr{"b": addrB}}}}
		},
	}
	s.init()
	// rounds returns what the peer got from one round: datagrams and entries.
	round := func(at time.Time) (full []bool, entries []Entry) {
		t.Helper()
		s.sendRound(conn, at)
		buf := make([]byte, 2*MaxDatagram)
		for {
			_ = peer.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			n, err := peer.Read(buf)
			if err != nil {
				return
			}
			if n > MaxDatagram {
				t.Fatalf("datagram of %d bytes", n)
			}
			m, err := Decode(buf[:n], testKey)
			if err != nil || m.From != "a" || m.VIP != vip {
				t.Fatalf("peer got %+v, %v", m, err)
			}
			full = append(full, m.Full)
			entries = append(entries, m.Entries...)
		}
	}
	var all []Entry
	for i := range 150 {
		e := entry(byte(i), 100, uint16(40000+i), 443, uint16(40000+i), ProtoTCP)
		all = append(all, e)
		if _, err := snat.Install(Plan{Entry: e}, vip, 1); err != nil {
			t.Fatal(err)
		}
	}
	// An ICMP echo mapping (id as the port) is not synced.
	icmp := entry(202, 100, 77, 0, 77, 1)
	if _, err := snat.Install(Plan{Entry: icmp}, vip, 1); err != nil {
		t.Fatal(err)
	}
	// A mapping to another address is not the VIP's: never sent.
	if _, err := snat.Install(Plan{Entry: entry(200, 1, 1000, 80, 40000, ProtoUDP)}, [4]byte{198, 18, 0, 11}, 1); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(9000, 0)
	full, got := round(t0)
	if len(full) != 2 || !full[0] || !full[1] || len(got) != 150 {
		t.Fatalf("first round: %d datagrams (full %v) with %d entries, want 2 full ones (90 fit in one) with 150", len(full), full, len(got))
	}
	if full, got := round(t0.Add(250 * time.Millisecond)); len(full) != 0 {
		t.Fatalf("nothing changed, yet %d datagrams with %v", len(full), got)
	}
	// One new mapping, one with a new NAT port.
	n1 := entry(201, 100, 1111, 443, 41111, ProtoUDP)
	c1 := all[7]
	c1.NATPort = 60000
	for _, e := range []Entry{n1, c1} {
		if _, err := snat.Install(Plan{Entry: e, Owned: true}, vip, 1); err != nil {
			t.Fatal(err)
		}
	}
	full, got = round(t0.Add(500 * time.Millisecond))
	slices.SortFunc(got, func(x, y Entry) int { return int(x.Pod[3]) - int(y.Pod[3]) })
	if len(full) != 1 || full[0] || !slices.Equal(got, []Entry{c1, n1}) {
		t.Fatalf("changes round: full %v, %v; want one datagram with %v and %v", full, got, c1, n1)
	}
	if full, got := round(t0.Add(5 * time.Second)); len(full) != 2 || !full[1] || len(got) != 151 {
		t.Fatalf("refresh round: %d datagrams (full %v) with %d entries, want 2 full ones with 151", len(full), full, len(got))
	}
	if rows := s.Rows(s.View()); len(rows) != 1 || rows[0].Role != "Announcing" || rows[0].Mappings != 151 ||
		!rows[0].LastSync.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("rows %+v, want the gateway announcing with 151 mappings in its latest full report", rows[0])
	}
	if got := testutil.ToFloat64(s.Metrics.Sent.WithLabelValues("gw")); got != 150+2+151 {
		t.Fatalf("sent %v entries, want %d", got, 150+2+151)
	}
}

// TestPrivilegedNoSNATMap: without Cilium's pinned SNAT map (BPF masquerading off)
// the syncer says so once, installs and sends nothing, and recovers when
// the map appears.
func TestPrivilegedNoSNATMap(t *testing.T) {
	var reported []error
	opens := 0
	path := t.TempDir() + "/" + SNATMapName
	s := &Syncer{
		Log: slog.New(slog.DiscardHandler), Metrics: NewMetrics(), Key: &probe.Key{},
		OpenMap: func() (*SNATMap, error) {
			opens++
			return OpenSNATMap(path, nil)
		},
		Degraded: func(err error) { reported = append(reported, err) },
	}
	s.init()
	for range 3 {
		if s.snatMap() != nil {
			t.Fatal("opened a map that is not there")
		}
	}
	if opens != 3 || len(reported) != 1 || !errors.Is(reported[0], ErrNoSNATMap) {
		t.Fatalf("%d opens, reported %v; want a retry every time and one ErrNoSNATMap", opens, reported)
	}
	snat, _ := newTestMap(t, 16, 1)
	s.OpenMap = func() (*SNATMap, error) { return snat, nil }
	if s.snatMap() != snat || len(reported) != 2 || reported[1] != nil {
		t.Fatalf("the map appeared: reported %v, want a recovery (nil)", reported)
	}
}
