package probe

import (
	"errors"
	"fmt"
	"time"
)

// Errors of Hearing.Observe: why a probe was not taken.
var (
	ErrNotProbe  = errors.New("not a probe")
	ErrNotForMe  = errors.New("probe for another node")
	ErrReplayed  = errors.New("probe sequence not above the last one of its sender (replayed)")
	ErrTooManyTx = errors.New("too many probe senders")
)

// MaxSenders bounds how many senders a node remembers (operator replicas
// and peers); a new sender beyond it evicts the one heard least recently.
const MaxSenders = 64

type sender struct {
	epoch, seq uint64
	at         time.Time
	flags      Flags
}

// Hearing is a node's record of the probes it received: who probes it,
// whether the operator leader hears it. It decides the node's fence
// (Verdict). It is not safe for concurrent use.
type Hearing struct {
	self    string
	senders map[string]*sender
	// operatorSeen: a probe from an operator replica arrived since start.
	operatorSeen bool
}

// OperatorSeen reports whether any operator replica's probe arrived since
// the record started. Until one has, probing may be blocked on the way
// (a firewall, the operators not probing yet) and the node keeps the
// Lease-based fence, as the operator keeps judging it by its Lease.
func (h *Hearing) OperatorSeen() bool { return h.operatorSeen }

// NewHearing returns the record of node self.
func NewHearing(self string) *Hearing {
	return &Hearing{self: self, senders: map[string]*sender{}}
}

// Observe takes an authenticated probe received at now. A probe whose
// sequence number is not above the last one of its sender's epoch is a
// replay and is refused; a new epoch (the sender restarted) is taken.
func (h *Hearing) Observe(p Packet, now time.Time) error {
	if p.Type != TypeProbe {
		return ErrNotProbe
	}
	if p.To != h.self {
		return ErrNotForMe
	}
	s, ok := h.senders[p.From]
	if ok && s.epoch == p.Epoch && p.Seq <= s.seq {
		return ErrReplayed
	}
	if !ok {
		if len(h.senders) >= MaxSenders {
			h.evictOldest()
		}
		s = &sender{}
		h.senders[p.From] = s
	}
	s.epoch, s.seq, s.at, s.flags = p.Epoch, p.Seq, now, p.Flags
	if p.Flags&FlagPeer == 0 {
		h.operatorSeen = true
	}
	return nil
}

func (h *Hearing) evictOldest() {
	var oldest string
	var at time.Time
	for name, s := range h.senders {
		if oldest == "" || s.at.Before(at) {
			oldest, at = name, s.at
		}
	}
	delete(h.senders, oldest)
}

// Verdict is whether a node may keep answering for a virtual IP.
type Verdict struct {
	// Heard: keep answering.
	Heard bool
	// Why is a sentence for logs and the Lease message.
	Why string
}

// Verdict applies the fence rule at now, for fence bound f. The
// authority that can move a role is the operator leader:
//
//  1. A probe from the leader within f decides: heard if it says "hear
//     you", not heard otherwise (the leader no longer hears this node and
//     will hand the role on after f: stop now).
//  2. No leader probe within f, but an operator replica that hears this
//     node, or a peer node, within f: heard. The cluster network reaches
//     this node and no leader is probing (leader lost, or every operator
//     cut from the API server): nobody can move the role, so fencing
//     would only turn a control-plane fault into a data-plane outage.
//  3. Otherwise (nothing within f, or only replicas that do not hear this
//     node): not heard. The node is cut off; the leader, if any, hands the
//     role on only after f.
//
// Rule 2's limit: a leader that is alive but cannot reach this node while
// another replica or a peer can sees it Down and hands the role on after
// f, while this node keeps answering until it learns of the move through
// the API server (design.md, "fencing").
func (h *Hearing) Verdict(now time.Time, f time.Duration) Verdict {
	var leaderSeen, leaderHears, replicaHears, peer, any bool
	var who string
	for name, s := range h.senders {
		if now.Sub(s.at) >= f {
			continue
		}
		any = true
		switch {
		case s.flags&FlagPeer != 0:
			peer = true
			if who == "" {
				who = "peer " + name
			}
		case s.flags&FlagLeader != 0:
			leaderSeen = true
			if s.flags&FlagHearYou != 0 {
				leaderHears = true
			} else {
				// Several leaders within f (a handover): one that does
				// not hear us fences.
				return Verdict{Heard: false, Why: fmt.Sprintf("operator leader %s does not hear this node", name)}
			}
		case s.flags&FlagHearYou != 0:
			replicaHears = true
			who = "operator replica " + name
		}
	}
	switch {
	case leaderSeen && leaderHears:
		return Verdict{Heard: true, Why: "heard by the operator leader"}
	case replicaHears || peer:
		return Verdict{Heard: true, Why: fmt.Sprintf("no operator leader probing within %s; heard by %s: nobody can move the role", f, who)}
	case any:
		return Verdict{Heard: false, Why: fmt.Sprintf("no operator leader probing within %s and no replica hears this node", f)}
	}
	return Verdict{Heard: false, Why: fmt.Sprintf("no probe received within %s", f)}
}
