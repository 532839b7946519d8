package connsync

import (
	"errors"
	"fmt"
	"time"
)

// Errors of the receiver's checks (beyond Decode's).
var (
	ErrReplayed    = errors.New("replayed or too old (epoch and sequence already seen)")
	ErrWrongSource = errors.New("sender is not a candidate of a gateway of this VIP, or not at its address")
	ErrActive      = errors.New("this node announces the VIP itself")
	ErrInvalid     = errors.New("invalid entry")
	ErrConflict    = errors.New("an entry this node did not write holds the flow with another translation")
)

// window is the replay check of one sender: the sender's epoch (its
// start time in nanoseconds, so a restart moves it forward) and, within
// it, a 64-datagram sliding window of sequence numbers (UDP may reorder).
// A datagram of an older epoch is refused, unless the current epoch has
// been silent for staleAfter (the sender restarted with its clock set
// back).
type window struct {
	epoch uint64
	top   uint64
	seen  uint64 // bit i: top-i seen
	last  time.Time
}

// accept records (epoch, seq) at now and reports whether it is new.
func (w *window) accept(epoch, seq uint64, now time.Time, staleAfter time.Duration) bool {
	if seq == 0 {
		return false
	}
	if epoch != w.epoch {
		if epoch < w.epoch && now.Sub(w.last) < staleAfter {
			return false
		}
		w.epoch, w.top, w.seen, w.last = epoch, seq, 1, now
		return true
	}
	switch {
	case seq > w.top:
		shift := seq - w.top
		if shift >= 64 {
			w.seen = 0
		} else {
			w.seen <<= shift
		}
		w.seen |= 1
		w.top = seq
	case w.top-seq >= 64:
		return false
	default:
		bit := uint64(1) << (w.top - seq)
		if w.seen&bit != 0 {
			return false
		}
		w.seen |= bit
	}
	w.last = now
	return true
}

// Replay holds a window per sender node.
type Replay struct {
	// StaleAfter: an older epoch of a sender is taken again once its
	// current one has been silent this long.
	StaleAfter time.Duration
	w          map[string]*window
}

// Accept reports whether the datagram (from, epoch, seq) arriving at now
// is new, and records it. Call only for authenticated datagrams.
func (r *Replay) Accept(from string, epoch, seq uint64, now time.Time) bool {
	if r.w == nil {
		r.w = map[string]*window{}
	}
	w := r.w[from]
	if w == nil {
		w = &window{}
		r.w[from] = w
	}
	return w.accept(epoch, seq, now, r.StaleAfter)
}

// NATPortRange is where a NAT port of an egress gateway mapping lies:
// Cilium's datapath picks it in NODEPORT_PORT_MIN_NAT..NODEPORT_PORT_MAX_NAT
// (the node-port range's maximum + 1 .. 65535, bpf/lib/nodeport_egress.h),
// or keeps the pod's port when it lies there (__snat_try_keep_port).
type NATPortRange struct{ Min, Max uint16 }

// Validate checks what a receiver is about to install.
func (r NATPortRange) Validate(e Entry) error {
	switch {
	case e.Proto != ProtoTCP && e.Proto != ProtoUDP:
		return fmt.Errorf("%w: protocol %d (only TCP and UDP are synced)", ErrInvalid, e.Proto)
	case e.PodPort == 0 || e.DstPort == 0:
		return fmt.Errorf("%w: port 0 in %s", ErrInvalid, e.Flow)
	case e.NATPort < r.Min || e.NATPort > r.Max:
		return fmt.Errorf("%w: NAT port %d outside %d..%d", ErrInvalid, e.NATPort, r.Min, r.Max)
	case e.Pod == [4]byte{} || e.Dst == [4]byte{}:
		return fmt.Errorf("%w: address 0.0.0.0 in %s", ErrInvalid, e.Flow)
	}
	return nil
}

// Changes are the mappings of cur that prev did not have, or had with
// another NAT port: what a sender sends in a round that is not a full
// report.
func Changes(prev, cur map[Flow]uint16) []Entry {
	var out []Entry
	for f, p := range cur {
		if q, ok := prev[f]; !ok || q != p {
			out = append(out, Entry{Flow: f, NATPort: p})
		}
	}
	return out
}

// Chunks cuts entries into messages that fit a datagram each.
func Chunks(m Message, entries []Entry) []Message {
	per := PerDatagram(m.From)
	var out []Message
	for len(entries) > 0 || len(out) == 0 {
		n := min(per, len(entries))
		c := m
		c.Entries = entries[:n]
		entries = entries[n:]
		out = append(out, c)
	}
	return out
}

// Installed is what a receiver wrote for one VIP: per flow the NAT port
// and when the active node last reported it. Entries not reported for
// the expiry are deleted (Expired): a standby has no CT entry for them, so
// Cilium's CT GC would never remove them.
type Installed struct {
	flows map[Flow]installed
}

type installed struct {
	natPort  uint16
	reported time.Time
}

// Len is the number of flows tracked.
func (t *Installed) Len() int { return len(t.flows) }

// Lookup returns the NAT port written for f.
func (t *Installed) Lookup(f Flow) (uint16, bool) {
	i, ok := t.flows[f]
	return i.natPort, ok
}

// Plan is what the receiver does with one reported entry.
type Plan struct {
	Entry Entry
	// Stale is the entry this node wrote earlier for the flow with
	// another NAT port: its reverse entry is to be deleted first.
	Stale *Entry
	// Owned: this node wrote the flow's forward entry (it may replace it).
	Owned bool
}

// Report returns what to write for the reported entries.
// Every reported entry is planned (the edge compares with the map and
// writes only what differs, so an entry Cilium's GC removed comes back at
// the next report).
func (t *Installed) Report(entries []Entry) []Plan {
	plans := make([]Plan, 0, len(entries))
	for _, e := range entries {
		p := Plan{Entry: e}
		if old, ok := t.flows[e.Flow]; ok {
			p.Owned = true
			if old.natPort != e.NATPort {
				p.Stale = &Entry{Flow: e.Flow, NATPort: old.natPort}
			}
		}
		plans = append(plans, p)
	}
	return plans
}

// Written records that e was installed (or found as it should be) at now.
func (t *Installed) Written(now time.Time, e Entry) {
	if t.flows == nil {
		t.flows = map[Flow]installed{}
	}
	t.flows[e.Flow] = installed{natPort: e.NATPort, reported: now}
}

// Forget stops tracking f (its entries are gone or no longer ours).
func (t *Installed) Forget(f Flow) { delete(t.flows, f) }

// Expired returns, and stops tracking, the flows not reported since
// now-expiry.
func (t *Installed) Expired(now time.Time, expiry time.Duration) []Entry {
	var out []Entry
	for f, i := range t.flows {
		if now.Sub(i.reported) >= expiry {
			out = append(out, Entry{Flow: f, NATPort: i.natPort})
			delete(t.flows, f)
		}
	}
	return out
}

// All returns the tracked entries.
func (t *Installed) All() []Entry {
	out := make([]Entry, 0, len(t.flows))
	for f, i := range t.flows {
		out = append(out, Entry{Flow: f, NATPort: i.natPort})
	}
	return out
}
