package connsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/statedb"

	"github.com/egressha/egressha/egressgw/probe"
)

// Syncer runs both roles on one UDP socket: for every VIP this node
// announces it sends the VIP's mappings to the gateway's other candidates;
// for every other VIP gateway it is a candidate of it installs what the
// announcing node sends. One goroutine (Run) owns all its state.
type Syncer struct {
	Log     *slog.Logger
	Metrics *Metrics
	Key     *probe.Key
	Node    string
	Port    uint16
	// Listen is the address to listen on (zero: every address; tests
	// use loopback addresses).
	Listen netip.Addr
	// Interval between two rounds of the sender; Refresh between two full
	// reports. An installed entry not reported for 3 Refresh periods is
	// deleted.
	Interval, Refresh time.Duration
	Range             NATPortRange
	// OpenMap opens Cilium's SNAT map (ErrNoSNATMap when it is not
	// pinned); retried every round until it works.
	OpenMap func() (*SNATMap, error)
	// View is this node's VIP gateways now.
	View func() View
	// Degraded, when set, is told when Cilium's SNAT map cannot be opened
	// (nil error: it can again).
	Degraded func(error)
	// DB and Table: egress-conn-sync, written every refresh period (nil:
	// not written).
	DB    *statedb.DB
	Table statedb.RWTable[*Row]

	snat    *SNATMap
	mapErr  string
	epoch   uint64
	seq     uint64
	replay  Replay
	sent    map[string]*sendState // gateway -> what was sent
	spare   map[[4]byte]map[Flow]uint16
	trk     map[[4]byte]*tracked // VIP -> what was installed
	heard   map[string]uint64    // sender -> epoch whose first datagram was logged
	lastLog map[string]time.Time // reason -> last rejection logged
}

type sendState struct {
	vip      [4]byte
	last     map[Flow]uint16
	nextFull time.Time
	// fullCount and fullAt: the latest full report.
	fullCount int
	fullAt    time.Time
}

type tracked struct {
	gateway  string
	inst     Installed
	from     string
	lastSync time.Time
}

// readBuffer is the receive buffer asked for.
const readBuffer = 8 << 20

// expiryPeriods is how many Refresh periods an installed entry survives
// without being reported.
const expiryPeriods = 3

type received struct {
	b   []byte
	src netip.Addr
	at  time.Time
}

// Run sends and receives until ctx ends.
func (s *Syncer) Run(ctx context.Context, ready func(string)) error {
	laddr := &net.UDPAddr{Port: int(s.Port)}
	if s.Listen.IsValid() {
		laddr.IP = s.Listen.AsSlice()
	}
	conn, err := net.ListenUDP("udp4", laddr)
	if err != nil {
		return fmt.Errorf("connection sync: listen on UDP port %d: %w", s.Port, err)
	}
	defer conn.Close()
	go func() { <-ctx.Done(); conn.Close() }()
	defer func() {
		if s.snat != nil {
			s.snat.Close()
		}
	}()
	// A full report of 100 000 mappings is about 1400 datagrams in a
	// burst: room for them in the socket (the kernel caps it at
	// net.core.rmem_max), and a reader that waits for the installer rather
	// than dropping.
	_ = conn.SetReadBuffer(readBuffer)
	s.init()
	rx := make(chan received, 1024)
	go func() {
		defer close(rx)
		for {
			b := make([]byte, MaxDatagram+64)
			n, src, err := conn.ReadFromUDPAddrPort(b)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			select {
			case rx <- received{b: b[:n], src: src.Addr(), at: time.Now()}:
			case <-ctx.Done():
				return
			}
		}
	}()
	if ready != nil {
		ready(fmt.Sprintf("syncing VIP connections on UDP port %d", s.Port))
	}
	round := time.NewTicker(s.Interval)
	defer round.Stop()
	expire := time.NewTicker(s.Refresh)
	defer expire.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-round.C:
			s.sendRound(conn, now)
		case now := <-expire.C:
			s.expire(now)
		case m, ok := <-rx:
			if !ok {
				return nil
			}
			s.receive(m)
		}
	}
}

func (s *Syncer) init() {
	// The epoch is the start time: a restarted sender's is later, so a
	// receiver refuses datagrams of its earlier runs (Replay).
	s.epoch = uint64(time.Now().UnixNano())
	s.replay.StaleAfter = expiryPeriods * s.Refresh
	s.sent = map[string]*sendState{}
	s.spare = map[[4]byte]map[Flow]uint16{}
	s.trk = map[[4]byte]*tracked{}
	s.heard = map[string]uint64{}
	s.lastLog = map[string]time.Time{}
}

// snatMap opens the map on first use; it reports a failure once per
// distinct error.
func (s *Syncer) snatMap() *SNATMap {
	if s.snat != nil {
		return s.snat
	}
	m, err := s.OpenMap()
	if err != nil {
		if err.Error() != s.mapErr {
			s.mapErr = err.Error()
			s.Log.Error("Connection sync cannot open Cilium's SNAT map: VIP connections will not survive a failover", "error", err)
			if s.Degraded != nil {
				s.Degraded(err)
			}
		}
		return nil
	}
	if s.mapErr != "" {
		s.Log.Info("Connection sync opened Cilium's SNAT map")
		if s.Degraded != nil {
			s.Degraded(nil)
		}
	}
	s.mapErr = ""
	s.snat = m
	return m
}

// sendRound reports the announced VIPs' mappings: the changes since the
// last round, everything when a full report is due.
func (s *Syncer) sendRound(conn *net.UDPConn, now time.Time) {
	view := s.View()
	vips := view.Announced()
	for name, st := range s.sent {
		if !vips[st.vip] {
			delete(s.sent, name)
		}
	}
	key := s.Key.Get()
	if len(vips) == 0 || key == nil {
		return
	}
	m := s.snatMap()
	if m == nil {
		return
	}
	// The maps of the previous round are reused (cleared) for this one:
	// with 100 000 mappings a fresh map every 250 ms is megabytes of garbage.
	cur := map[[4]byte]map[Flow]uint16{}
	for v := range vips {
		m := s.spare[v]
		if m == nil {
			m = map[Flow]uint16{}
		}
		clear(m)
		cur[v] = m
	}
	clear(s.spare)
	if err := m.Scan(vips, func(v [4]byte, e Entry) { cur[v][e.Flow] = e.NATPort }); err != nil {
		s.Log.Warn("Connection sync cannot read Cilium's SNAT map", "error", err)
		return
	}
	var out []byte
	for _, g := range view.Gateways {
		if !g.Announcing {
			continue
		}
		st := s.sent[g.Name]
		if st == nil || st.vip != g.VIP {
			st = &sendState{vip: g.VIP}
			s.sent[g.Name] = st
		}
		full := !now.Before(st.nextFull)
		var entries []Entry
		if full {
			entries = make([]Entry, 0, len(cur[g.VIP]))
			for f, p := range cur[g.VIP] {
				entries = append(entries, Entry{Flow: f, NATPort: p})
			}
			st.nextFull = now.Add(s.Refresh)
			st.fullCount, st.fullAt = len(entries), now
		} else {
			entries = Changes(st.last, cur[g.VIP])
		}
		if st.last != nil {
			s.spare[g.VIP] = st.last
		}
		st.last = cur[g.VIP]
		if !full && len(entries) == 0 {
			continue
		}
		for _, c := range Chunks(Message{Full: full, Epoch: s.epoch, From: s.Node, VIP: g.VIP}, entries) {
			s.seq++
			c.Seq = s.seq
			var err error
			if out, err = c.Encode(out[:0], key); err != nil {
				s.Log.Error("Connection sync cannot encode a datagram", "error", err)
				return
			}
			for _, a := range g.Peers {
				if _, err := conn.WriteToUDPAddrPort(out, netip.AddrPortFrom(a, s.Port)); err == nil {
					s.Metrics.Sent.WithLabelValues(g.Name).Add(float64(len(c.Entries)))
				}
			}
		}
	}
}

// receive installs what an announcing peer reports.
func (s *Syncer) receive(r received) {
	key := s.Key.Get()
	if key == nil {
		s.reject("no-key", nil)
		return
	}
	m, err := Decode(r.b, key)
	if err != nil {
		s.reject(RejectReason(err), err)
		return
	}
	g, err := s.View().Admit(r.src, m.From, m.VIP)
	if err != nil {
		s.reject(RejectReason(err), err)
		return
	}
	if !s.replay.Accept(m.From, m.Epoch, m.Seq, r.at) {
		s.reject("replayed", fmt.Errorf("%w: %s epoch %x seq %d", ErrReplayed, m.From, m.Epoch, m.Seq))
		return
	}
	if s.heard[m.From] != m.Epoch {
		s.heard[m.From] = m.Epoch
		s.Log.Info("First connection sync from the VIP's announcer", "gateway", g.Name, "node", m.From, "address", r.src,
			"vip", netip.AddrFrom4(m.VIP), "entries", len(m.Entries))
	}
	t := s.trk[m.VIP]
	if t == nil || t.gateway != g.Name {
		t = &tracked{gateway: g.Name}
		s.trk[m.VIP] = t
	}
	t.lastSync, t.from = r.at, m.From
	s.Metrics.LastSync.WithLabelValues(g.Name).Set(0)
	s.Metrics.Received.WithLabelValues(g.Name).Add(float64(len(m.Entries)))
	valid := m.Entries[:0]
	for _, e := range m.Entries {
		if err := s.Range.Validate(e); err != nil {
			s.reject("invalid", err)
			continue
		}
		valid = append(valid, e)
	}
	snat := s.snatMap()
	if snat == nil {
		return
	}
	created, err := snat.Now()
	if err != nil {
		s.reject("map-error", err)
		return
	}
	for _, p := range t.inst.Report(valid) {
		if p.Stale != nil {
			if _, err := snat.Remove(*p.Stale, m.VIP); err != nil {
				s.Log.Warn("Connection sync cannot remove a mapping it installed", "entry", p.Stale, "error", err)
			}
		}
		res, err := snat.Install(p, m.VIP, created)
		if err != nil {
			s.reject(RejectReason(err), err)
			if p.Owned {
				t.inst.Forget(p.Entry.Flow)
			}
			continue
		}
		if res.ReplacedReverse {
			s.Log.Debug("Connection sync replaced a stale reverse SNAT entry", "gateway", g.Name, "entry", p.Entry)
		}
		// Both entries already there as they should be, and not ours:
		// this node's datapath made them (an earlier term of its own), so
		// they stay its datapath's and are not tracked for expiry.
		if !p.Owned && !res.WroteForward && !res.WroteReverse {
			continue
		}
		t.inst.Written(r.at, p.Entry)
	}
	s.Metrics.Installed.WithLabelValues(g.Name).Set(float64(t.inst.Len()))
}

// expire deletes the installed entries the announcer stopped reporting,
// and hands the entries of a VIP this node now announces to the datapath;
// then it publishes egress-conn-sync.
func (s *Syncer) expire(now time.Time) {
	view := s.View()
	defer s.publish(view)
	vips := view.Announced()
	for vip, t := range s.trk {
		if !t.lastSync.IsZero() {
			s.Metrics.LastSync.WithLabelValues(t.gateway).Set(now.Sub(t.lastSync).Seconds())
		}
		if vips[vip] {
			s.Log.Info("This node announces the VIP now: the connections synced to it belong to the datapath",
				"gateway", t.gateway, "vip", netip.AddrFrom4(vip), "entries", t.inst.Len())
			delete(s.trk, vip)
			s.Metrics.Installed.WithLabelValues(t.gateway).Set(0)
			continue
		}
		gone := t.inst.Expired(now, expiryPeriods*s.Refresh)
		if len(gone) == 0 {
			continue
		}
		snat := s.snatMap()
		if snat == nil {
			continue
		}
		deleted := 0
		for _, e := range gone {
			n, err := snat.Remove(e, vip)
			if err != nil {
				s.Log.Warn("Connection sync cannot remove a mapping it installed", "entry", e, "error", err)
			}
			deleted += n
		}
		s.Log.Debug("Connection sync removed mappings the announcer no longer reports", "gateway", t.gateway,
			"mappings", len(gone), "entries", deleted)
		s.Metrics.Installed.WithLabelValues(t.gateway).Set(float64(t.inst.Len()))
	}
}

// reject counts a rejection and logs it at most every 10 s per reason.
func (s *Syncer) reject(reason string, err error) {
	s.Metrics.Rejected.WithLabelValues(reason).Inc()
	if err == nil {
		return
	}
	now := time.Now()
	if now.Sub(s.lastLog[reason]) < 10*time.Second {
		return
	}
	s.lastLog[reason] = now
	s.Log.Warn("Connection sync refused a datagram or entry (further ones of this reason for 10s are only counted)",
		"reason", reason, "error", err)
}

// RejectReason is the metric label of a rejection.
func RejectReason(err error) string {
	switch {
	case errors.Is(err, ErrAuth):
		return "auth"
	case errors.Is(err, ErrShortKey):
		return "no-key"
	case errors.Is(err, ErrReplayed):
		return "replayed"
	case errors.Is(err, ErrWrongSource):
		return "wrong-source"
	case errors.Is(err, ErrActive):
		return "active"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, ErrShort), errors.Is(err, ErrMagic), errors.Is(err, ErrType), errors.Is(err, ErrLength), errors.Is(err, ErrName):
		return "malformed"
	}
	return "map-error"
}

// Rows are the rows of egress-conn-sync for view.
func (s *Syncer) Rows(view View) []*Row {
	out := make([]*Row, 0, len(view.Gateways))
	for _, g := range view.Gateways {
		r := &Row{Gateway: g.Name, VIP: netip.AddrFrom4(g.VIP), Role: "Standby"}
		r.Peers = slices.Sorted(maps.Keys(g.Peers))
		if g.Announcing {
			r.Role = "Announcing"
			if st := s.sent[g.Name]; st != nil && st.vip == g.VIP {
				r.Mappings, r.LastSync = st.fullCount, st.fullAt
			}
		} else if t := s.trk[g.VIP]; t != nil && t.gateway == g.Name {
			r.Mappings, r.From, r.LastSync = t.inst.Len(), t.from, t.lastSync
		}
		out = append(out, r)
	}
	return out
}

// publish replaces egress-conn-sync's rows with those of view.
func (s *Syncer) publish(view View) {
	if s.DB == nil || s.Table == nil {
		return
	}
	wtxn := s.DB.WriteTxn(s.Table)
	defer wtxn.Abort()
	rows := s.Rows(view)
	keep := map[string]bool{}
	for _, r := range rows {
		keep[r.Gateway] = true
		_, _, _ = s.Table.Insert(wtxn, r)
	}
	for r := range s.Table.All(wtxn) {
		if !keep[r.Gateway] {
			_, _, _ = s.Table.Delete(wtxn, r)
		}
	}
	wtxn.Commit()
}
