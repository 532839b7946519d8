package operator

import (
	"time"

	"k8s.io/utils/clock"
)

// expiryTimer wakes a controller at the next heartbeat expiry, when a
// decision may change without any input changing. Both the selection
// controller and the CEGP controller use it.
type expiryTimer struct {
	clock clock.WithTicker
	timer clock.Timer
	// C fires a hair after the expiry; nil while nothing is armed.
	C <-chan time.Time
}

// Fired must be called when C fired.
func (t *expiryTimer) Fired() { t.C = nil }

// Arm sets the timer for next(now), the earliest heartbeat expiry after
// now (zero: none, and the timer is stopped). A timer is armed relative to
// the clock at the moment it is created, so an expiry the clock passes
// while Arm runs (between reading the time and arming, or during the round
// before) is acted on here, at once, by calling due with the current
// time, not left to a timer whose instant is already gone. It tries three
// times; the next round arms again.
func (t *expiryTimer) Arm(next func(now time.Time) time.Time, due func(now time.Time)) {
	for range 3 {
		now := t.clock.Now()
		at := next(now)
		if at.IsZero() {
			t.stop()
			return
		}
		if at.After(now) {
			t.stop()
			// A hair after the expiry instant, so Fresh() is false then.
			t.timer = t.clock.NewTimer(at.Sub(now) + time.Millisecond)
			t.C = t.timer.C()
			if at.After(t.clock.Now()) {
				return
			}
		}
		due(t.clock.Now())
	}
}

func (t *expiryTimer) stop() {
	if t.timer != nil {
		t.timer.Stop()
		t.timer, t.C = nil, nil
	}
}
