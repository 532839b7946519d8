package operator

import (
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// TestExpiryTimer: the timer fires a hair after the next expiry; an expiry
// the clock passes while the timer is being armed is acted on at once (the
// race fixed for the selection controller in 79c80c7, which the CEGP
// controller had kept); no expiry stops the timer.
func TestExpiryTimer(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(t0)
	e := expiryTimer{clock: clk}
	var due []time.Time
	onDue := func(now time.Time) { due = append(due, now) }

	// An expiry 2 s ahead: armed, nothing due.
	e.Arm(func(time.Time) time.Time { return t0.Add(2 * time.Second) }, onDue)
	if e.C == nil || len(due) != 0 {
		t.Fatalf("want the timer armed and nothing due, got C=%v due=%v", e.C, due)
	}
	clk.Step(2 * time.Second)
	select {
	case <-e.C:
		t.Fatal("fired at the expiry instant, when the heartbeat is still fresh")
	default:
	}
	clk.Step(time.Millisecond)
	select {
	case <-e.C:
		e.Fired()
	default:
		t.Fatal("did not fire a hair after the expiry")
	}

	// The clock passes the expiry while the timer is being armed: due at
	// once, and the next expiry armed.
	expiries := []time.Time{clk.Now().Add(time.Millisecond), clk.Now().Add(time.Hour)}
	calls := 0
	e.Arm(func(now time.Time) time.Time {
		calls++
		for _, x := range expiries {
			if x.After(now) {
				if calls == 1 {
					clk.Step(5 * time.Millisecond) // the clock moves on while arming
				}
				return x
			}
		}
		return time.Time{}
	}, onDue)
	if len(due) != 1 || !due[0].Equal(t0.Add(2*time.Second+6*time.Millisecond)) {
		t.Fatalf("want one due call at the current time, got %v", due)
	}
	if e.C == nil {
		t.Fatal("the next expiry is not armed")
	}

	// No expiry left: the timer is stopped.
	e.Arm(func(time.Time) time.Time { return time.Time{} }, onDue)
	if e.C != nil || len(due) != 1 {
		t.Fatalf("want no timer and no more due calls, got C=%v due=%v", e.C, due)
	}
}
