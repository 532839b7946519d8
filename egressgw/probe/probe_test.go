package probe

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var (
	testKey  = []byte("0123456789abcdef0123456789abcdef")
	otherKey = []byte("fedcba9876543210fedcba9876543210")
	t0       = time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	nodeAddr = netip.MustParseAddr("198.18.0.11")
)

func TestWireRoundTrip(t *testing.T) {
	for _, p := range []Packet{
		{Type: TypeProbe, Flags: FlagLeader | FlagHearYou, Epoch: 7, Seq: 1, From: "cilium-operator-0", To: "lab-egress-a"},
		{Type: TypeReply, FenceMillis: 250, Epoch: 9, Seq: 3, EchoEpoch: 7, EchoSeq: 1, From: "lab-egress-a", To: "cilium-operator-0"},
		{Type: TypeProbe, Flags: FlagPeer, Epoch: 1<<63 + 5, Seq: 1<<64 - 1, From: strings.Repeat("n", 253), To: "x"},
	} {
		b, err := p.Encode(nil, testKey)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > MaxLen {
			t.Fatalf("encoded %d bytes > MaxLen %d", len(b), MaxLen)
		}
		got, err := Decode(b, testKey)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if got != p {
			t.Fatalf("round trip: got %+v, want %+v", got, p)
		}
	}
}

func TestWireRejects(t *testing.T) {
	p := Packet{Type: TypeProbe, Flags: FlagLeader, Epoch: 7, Seq: 1, From: "op", To: "node"}
	good, err := p.Encode(nil, testKey)
	if err != nil {
		t.Fatal(err)
	}
	// Every single-bit change of the datagram is refused: an attacker
	// without the key cannot turn a probe into another one.
	for i := range good {
		for bit := range 8 {
			b := append([]byte(nil), good...)
			b[i] ^= 1 << bit
			if _, err := Decode(b, testKey); err == nil {
				t.Fatalf("byte %d bit %d flipped: accepted", i, bit)
			}
		}
	}
	for name, tc := range map[string]struct {
		b    []byte
		key  []byte
		want error
	}{
		"wrong key":    {good, otherKey, ErrAuth},
		"short":        {good[:20], testKey, ErrShort},
		"empty":        {nil, testKey, ErrShort},
		"truncated":    {good[:len(good)-1], testKey, ErrAuth},
		"bad magic":    {append([]byte("XXXX"), good[4:]...), testKey, ErrMagic},
		"short key":    {good, []byte("short"), ErrShortKey},
		"trailing mac": {append(append([]byte(nil), good...), 0), testKey, ErrAuth},
	} {
		if _, err := Decode(tc.b, tc.key); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	// Names are checked before sending.
	for _, bad := range []Packet{
		{Type: TypeProbe, From: "", To: "n"},
		{Type: TypeProbe, From: "o", To: strings.Repeat("n", 254)},
		{Type: 9, From: "o", To: "n"},
	} {
		if _, err := bad.Encode(nil, testKey); err == nil {
			t.Errorf("%+v encoded", bad)
		}
	}
}

// reply is what a node answers to probe q.
func reply(q Packet) Packet {
	return Packet{Type: TypeReply, FenceMillis: 250, Epoch: 99, Seq: q.Seq, EchoEpoch: q.Epoch, EchoSeq: q.Seq, From: q.To, To: q.From}
}

func TestSessionStates(t *testing.T) {
	tm := DefaultTiming
	s := NewSession("op-1", 42, "lab-egress-a", nodeAddr, tm, t0)
	now := t0
	if st := s.Status(); st.State != StateInit {
		t.Fatalf("new session %s", st.State)
	}
	// Never answered: stays Init (the Lease decides), however long.
	for range 10 {
		now = now.Add(tm.Interval)
		s.Probe(now, true)
		if s.Tick(now) {
			t.Fatal("Init session changed without replies")
		}
	}
	q := s.Probe(now, true)
	if q.Flags&FlagHearYou != 0 {
		t.Fatal("an Init session says it hears the node")
	}
	now = now.Add(time.Millisecond)
	if changed, err := s.Reply(reply(q), nodeAddr, now); err != nil || !changed {
		t.Fatalf("first reply: changed %v err %v", changed, err)
	}
	if st := s.Status(); st.State != StateUp || st.RTT != time.Millisecond || st.Fence != 250*time.Millisecond {
		t.Fatalf("after reply: %+v", st)
	}
	if q := s.Probe(now, true); q.Flags&FlagHearYou == 0 || q.Flags&FlagLeader == 0 {
		t.Fatalf("Up session's probe flags %b", q.Flags)
	}
	last := now
	// Just under the detection time: still Up.
	if s.Tick(last.Add(tm.Detect() - time.Nanosecond)) {
		t.Fatal("Down before the detection time")
	}
	if !s.Tick(last.Add(tm.Detect())) {
		t.Fatal("not Down at the detection time")
	}
	st := s.Status()
	if st.State != StateDown || !st.Since.Equal(last.Add(tm.Detect())) || st.Transitions != 2 {
		t.Fatalf("after loss: %+v", st)
	}
	// A fresh reply brings it back.
	now = last.Add(time.Second)
	q = s.Probe(now, false)
	if q.Flags&(FlagHearYou|FlagLeader) != 0 {
		t.Fatalf("Down session, non-leader: flags %b", q.Flags)
	}
	if changed, err := s.Reply(reply(q), nodeAddr, now.Add(2*time.Millisecond)); err != nil || !changed {
		t.Fatalf("recovery: %v %v", changed, err)
	}
	// A key change resets it to Init (no opinion), and replies to the
	// probes sent before no longer count.
	if !s.Reset(now) || s.Status().State != StateInit {
		t.Fatalf("after Reset: %+v", s.Status())
	}
	if _, err := s.Reply(reply(q), nodeAddr, now.Add(3*time.Millisecond)); err == nil {
		t.Fatal("a reply to a probe sent before the reset counted")
	}
	if s.Tick(now.Add(time.Hour)) {
		t.Fatal("an Init session went Down")
	}
}

func TestSessionRefusesReplies(t *testing.T) {
	tm := DefaultTiming
	s := NewSession("op-1", 42, "lab-egress-a", nodeAddr, tm, t0)
	old := s.Probe(t0, true)
	now := t0
	for range outstanding {
		now = now.Add(tm.Interval)
		s.Probe(now, true)
	}
	q := s.Probe(now, true)
	other := netip.MustParseAddr("198.18.0.99")
	wrongEpoch := reply(q)
	wrongEpoch.EchoEpoch = 41
	future := reply(q)
	future.EchoSeq = q.Seq + 1
	fromOther := reply(q)
	fromOther.From = "lab-egress-b"
	toOther := reply(q)
	toOther.To = "op-2"
	probe := q
	for name, tc := range map[string]struct {
		p    Packet
		src  netip.Addr
		at   time.Time
		want error
	}{
		"forged source address": {reply(q), other, now, ErrWrongSource},
		"another node's name":   {fromOther, nodeAddr, now, ErrWrongPeer},
		"another prober":        {toOther, nodeAddr, now, ErrWrongPeer},
		"previous epoch":        {wrongEpoch, nodeAddr, now, ErrStale},
		"never sent":            {future, nodeAddr, now, ErrStale},
		"replayed old reply":    {reply(old), nodeAddr, now, ErrStale},
		"late reply":            {reply(q), nodeAddr, now.Add(tm.Detect() + time.Millisecond), ErrStale},
		"a probe":               {probe, nodeAddr, now, ErrNotReply},
	} {
		if _, err := s.Reply(tc.p, tc.src, tc.at); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	if st := s.Status(); st.State != StateInit || !st.LastReply.IsZero() {
		t.Fatalf("refused replies changed the session: %+v", st)
	}
	// An IPv4-mapped IPv6 source is the same address.
	if _, err := s.Reply(reply(q), netip.AddrFrom16(nodeAddr.As16()), now); err != nil {
		t.Fatalf("mapped source: %v", err)
	}
}

func TestHearingReplay(t *testing.T) {
	h := NewHearing("lab-egress-a")
	p := Packet{Type: TypeProbe, Flags: FlagLeader | FlagHearYou, Epoch: 1, Seq: 5, From: "op-1", To: "lab-egress-a"}
	if err := h.Observe(p, t0); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mut  func(*Packet)
		want error
	}{
		"same seq":   {func(p *Packet) {}, ErrReplayed},
		"older seq":  {func(p *Packet) { p.Seq = 4 }, ErrReplayed},
		"other node": {func(p *Packet) { p.To = "lab-egress-b" }, ErrNotForMe},
		"a reply":    {func(p *Packet) { p.Type = TypeReply }, ErrNotProbe},
	} {
		q := p
		tc.mut(&q)
		if err := h.Observe(q, t0.Add(time.Second)); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	if !h.OperatorSeen() {
		t.Fatal("an operator probe was taken but OperatorSeen is false")
	}
	// A replay does not refresh the sender: a second later nothing is heard.
	if v := h.Verdict(t0.Add(time.Second), 250*time.Millisecond); v.Heard {
		t.Fatalf("replayed probe kept the node heard: %+v", v)
	}
	// A restarted prober (new epoch) is taken.
	q := p
	q.Epoch, q.Seq = 2, 1
	if err := h.Observe(q, t0.Add(time.Second)); err != nil {
		t.Fatalf("new epoch: %v", err)
	}
}

func TestHearingBounded(t *testing.T) {
	h := NewHearing("n")
	defer func() {
		if h.OperatorSeen() {
			t.Error("peer probes made OperatorSeen true")
		}
	}()
	for i := range MaxSenders + 10 {
		p := Packet{Type: TypeProbe, Flags: FlagPeer, Epoch: 1, Seq: 1, From: string(rune('A' + i)), To: "n"}
		if err := h.Observe(p, t0.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	if len(h.senders) != MaxSenders {
		t.Fatalf("%d senders kept", len(h.senders))
	}
	if _, ok := h.senders["A"]; ok {
		t.Fatal("the oldest sender was not evicted")
	}
}

func TestHearingVerdict(t *testing.T) {
	const f = 250 * time.Millisecond
	type rx struct {
		from  string
		flags Flags
		ago   time.Duration
	}
	for _, tc := range []struct {
		name  string
		rx    []rx
		heard bool
		why   string
	}{
		{"nothing", nil, false, "no probe received"},
		{"leader hears us", []rx{{"op-1", FlagLeader | FlagHearYou, 50 * time.Millisecond}}, true, "heard by the operator leader"},
		{"leader does not hear us", []rx{{"op-1", FlagLeader, 50 * time.Millisecond}}, false, "does not hear"},
		{"leader does not hear us, replica does", []rx{{"op-1", FlagLeader, 50 * time.Millisecond}, {"op-2", FlagHearYou, 10 * time.Millisecond}}, false, "does not hear"},
		{"two leaders in a handover, one deaf", []rx{{"op-1", FlagLeader | FlagHearYou, 50 * time.Millisecond}, {"op-2", FlagLeader, 10 * time.Millisecond}}, false, "op-2 does not hear"},
		{"leader silent for the fence bound", []rx{{"op-1", FlagLeader | FlagHearYou, f}}, false, "no probe received"},
		{"leader gone, replica hears us", []rx{{"op-1", FlagLeader | FlagHearYou, time.Second}, {"op-2", FlagHearYou, 90 * time.Millisecond}}, true, "nobody can move the role"},
		{"operators gone, a peer probes us", []rx{{"lab-egress-b", FlagPeer, 90 * time.Millisecond}}, true, "peer lab-egress-b"},
		{"replica does not hear us either", []rx{{"op-2", 0, 90 * time.Millisecond}}, false, "no replica hears"},
		{"peer but leader deaf", []rx{{"lab-egress-b", FlagPeer, 10 * time.Millisecond}, {"op-1", FlagLeader, 10 * time.Millisecond}}, false, "does not hear"},
		{"peer too old", []rx{{"lab-egress-b", FlagPeer, f + time.Millisecond}}, false, "no probe received"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHearing("me")
			now := t0.Add(time.Hour)
			for i, r := range tc.rx {
				if err := h.Observe(Packet{Type: TypeProbe, Flags: r.flags, Epoch: 1, Seq: uint64(i + 1), From: r.from, To: "me"}, now.Add(-r.ago)); err != nil {
					t.Fatal(err)
				}
			}
			v := h.Verdict(now, f)
			if v.Heard != tc.heard || !strings.Contains(v.Why, tc.why) {
				t.Fatalf("got %+v, want heard=%v and %q in the reason", v, tc.heard, tc.why)
			}
		})
	}
}

func TestTimingValidate(t *testing.T) {
	if err := DefaultTiming.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Timing{{time.Millisecond, 3}, {100 * time.Millisecond, 1}, {100 * time.Millisecond, outstanding + 1}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
