package probe

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// State is a probe session's state.
type State uint8

const (
	// StateInit: no valid reply yet since the session started. The
	// prober has no opinion; the heartbeat Lease (slow path) decides.
	StateInit State = iota
	// StateUp: a valid reply arrived within the detection time.
	StateUp
	// StateDown: the session was Up and no valid reply arrived for the
	// detection time.
	StateDown
)

func (s State) String() string {
	switch s {
	case StateUp:
		return "Up"
	case StateDown:
		return "Down"
	}
	return "Init"
}

// Timing is a session's timing: a probe every Interval, Down after
// Multiplier intervals without a valid reply.
type Timing struct {
	Interval   time.Duration
	Multiplier int
}

// DefaultTiming is 100 ms × 3, Kube-OVN's BFD default: a dead node is
// declared Down 300 ms after its last reply.
var DefaultTiming = Timing{Interval: 100 * time.Millisecond, Multiplier: 3}

// Detect is the detection time.
func (t Timing) Detect() time.Duration { return t.Interval * time.Duration(t.Multiplier) }

// Validate returns an error naming the bad field.
func (t Timing) Validate() error {
	if t.Interval < 10*time.Millisecond {
		return fmt.Errorf("probe interval %s is below 10ms", t.Interval)
	}
	if t.Multiplier < 2 || t.Multiplier > outstanding {
		return fmt.Errorf("probe detect multiplier %d is outside 2..%d", t.Multiplier, outstanding)
	}
	return nil
}

// outstanding is how many recent probes a reply may answer.
const outstanding = 16

// Errors of Session.Reply: why a reply was not taken.
var (
	ErrNotReply    = errors.New("not a reply")
	ErrWrongPeer   = errors.New("reply names another node or prober")
	ErrWrongSource = errors.New("reply from an address that is not the node's")
	ErrStale       = errors.New("reply to no recent probe (replayed, late or forged)")
)

// Session is a prober's view of one node: the probes it sent, the last
// valid reply, and the state. It is not safe for concurrent use.
type Session struct {
	// Node and Addr are the node probed and its cluster address (the
	// Node object's InternalIP: only replies from there count).
	Node string
	Addr netip.Addr

	timing  Timing
	self    string
	epoch   uint64
	seq     uint64
	sent    [outstanding]sentProbe
	state   State
	since   time.Time
	lastRx  time.Time
	rtt     time.Duration
	fence   time.Duration
	changes uint64
}

type sentProbe struct {
	seq uint64
	at  time.Time
}

// NewSession starts a session of prober self (epoch: its run) to node at
// addr.
func NewSession(self string, epoch uint64, node string, addr netip.Addr, t Timing, now time.Time) *Session {
	return &Session{Node: node, Addr: addr, timing: t, self: self, epoch: epoch, since: now}
}

// Probe returns the next probe to send at now. leader says whether the
// prober is the operator leader; the probe tells the node whether the
// prober hears it.
func (s *Session) Probe(now time.Time, leader bool) Packet {
	s.seq++
	s.sent[s.seq%outstanding] = sentProbe{seq: s.seq, at: now}
	var f Flags
	if leader {
		f |= FlagLeader
	}
	if s.state == StateUp {
		f |= FlagHearYou
	}
	return Packet{Type: TypeProbe, Flags: f, Epoch: s.epoch, Seq: s.seq, From: s.self, To: s.Node}
}

// Reply takes an authenticated reply received from src at now. It
// returns an error (one of the Err* above) when the reply does not count,
// and whether the state changed.
func (s *Session) Reply(p Packet, src netip.Addr, now time.Time) (changed bool, err error) {
	switch {
	case p.Type != TypeReply:
		return false, ErrNotReply
	case p.From != s.Node || p.To != s.self:
		return false, ErrWrongPeer
	case p.EchoEpoch != s.epoch:
		return false, ErrStale
	}
	sp, err := s.answered(p.EchoSeq, src, now)
	if err != nil {
		return false, err
	}
	s.fence = time.Duration(p.FenceMillis) * time.Millisecond
	return s.up(sp, now), nil
}

// EchoReply takes a kernel echo reply (kernel.go) to probe seq, received
// from src at now; the echo's authenticity was checked by the caller. It
// returns an error when the reply does not count, and whether the state
// changed.
func (s *Session) EchoReply(seq uint64, src netip.Addr, now time.Time) (changed bool, err error) {
	sp, err := s.answered(seq, src, now)
	if err != nil {
		return false, err
	}
	return s.up(sp, now), nil
}

// answered checks that a reply from src at now answers the recent probe
// seq, in time.
func (s *Session) answered(seq uint64, src netip.Addr, now time.Time) (sentProbe, error) {
	switch {
	case src.Unmap() != s.Addr:
		return sentProbe{}, ErrWrongSource
	case seq == 0 || seq > s.seq || seq+outstanding <= s.seq:
		return sentProbe{}, ErrStale
	}
	sp := s.sent[seq%outstanding]
	if sp.seq != seq || now.Sub(sp.at) > s.timing.Detect() {
		return sentProbe{}, ErrStale
	}
	return sp, nil
}

// up records a valid reply to sp at now.
func (s *Session) up(sp sentProbe, now time.Time) bool {
	s.rtt = now.Sub(sp.at)
	if now.After(s.lastRx) {
		s.lastRx = now
	}
	return s.set(StateUp, now)
}

// Tick moves an Up session to Down when no valid reply arrived for the
// detection time; it reports whether the state changed. Call it at least
// every interval.
func (s *Session) Tick(now time.Time) bool {
	if s.state == StateUp && now.Sub(s.lastRx) >= s.timing.Detect() {
		return s.set(StateDown, s.lastRx.Add(s.timing.Detect()))
	}
	return false
}

// Reset forgets what the session knew (back to Init: no opinion, the
// Lease decides), e.g. when the probe key changed and replies under the
// old key no longer count. It reports whether the state changed.
func (s *Session) Reset(now time.Time) bool {
	s.sent = [outstanding]sentProbe{}
	return s.set(StateInit, now)
}

func (s *Session) set(st State, at time.Time) bool {
	if s.state == st {
		return false
	}
	s.state, s.since = st, at
	s.changes++
	return true
}

// Status is a snapshot of a session.
type Status struct {
	Node  string
	Addr  netip.Addr
	State State
	// Since is when the state began: for Down, the instant the detection
	// time ran out after the last reply.
	Since time.Time
	// LastReply is when the last valid reply arrived (zero: never).
	LastReply time.Time
	// RTT is the round-trip time of the last valid reply.
	RTT time.Duration
	// Fence is the fence bound the node reported in its last reply.
	Fence time.Duration
	// Transitions counts state changes.
	Transitions uint64
	// Kernel is the node kernel's answer to ICMP echo (kernel.go): Up
	// while the node itself lives, whatever its agent does; Init when
	// kernel echo is off or never answered. KernelSince is when it began.
	Kernel      State
	KernelSince time.Time
}

// Status returns a snapshot.
func (s *Session) Status() Status {
	return Status{Node: s.Node, Addr: s.Addr, State: s.state, Since: s.since, LastReply: s.lastRx,
		RTT: s.rtt, Fence: s.fence, Transitions: s.changes}
}
