package heartbeat

import (
	"sync/atomic"
	"time"
)

// Renewal is one successful write of the node's heartbeat Lease.
type Renewal struct {
	// RenewTime is the local time taken just before the write was sent; it
	// is the renewTime the Lease carries. It keeps Go's monotonic clock
	// reading, so ValidUntil does not move with wall-clock jumps.
	RenewTime time.Time
	// ValidUntil is RenewTime plus the heartbeat expiry: until then the
	// operator treats the node's heartbeat as fresh.
	ValidUntil time.Time
	// Report is what the Lease carried.
	Report Report
}

// Status is the agent's view of its own heartbeat, for components that must
// stop acting on their own once the heartbeat may have expired (the VIP
// responder's self-fencing). The heartbeat job writes it; anyone may read
// it. The zero value is ready to use and reports no renewal.
type Status struct {
	last atomic.Pointer[Renewal]
}

// NewStatus returns an empty Status.
func NewStatus() *Status { return &Status{} }

// ValidUntil is the last successful renewal time plus the expiry; the zero
// time when the Lease was never renewed by this agent. A caller holding a
// role that needs a fresh heartbeat must give it up at ValidUntil.
func (s *Status) ValidUntil() time.Time {
	if r := s.last.Load(); r != nil {
		return r.ValidUntil
	}
	return time.Time{}
}

// Last returns the last successful renewal, if any.
func (s *Status) Last() (Renewal, bool) {
	if r := s.last.Load(); r != nil {
		return *r, true
	}
	return Renewal{}, false
}

// Renewed records a successful renewal. Only the heartbeat job calls it.
func (s *Status) Renewed(r Renewal) { s.last.Store(&r) }
