package operator

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
)

// spec.selection.holdDown overrides the operator's default, within bounds.
func TestGatewayHoldDown(t *testing.T) {
	const def = 10 * time.Second
	d := func(x time.Duration) *metav1.Duration { return &metav1.Duration{Duration: x} }
	tests := []struct {
		name string
		sel  *v1alpha1.Selection
		want time.Duration
	}{
		{name: "no selection: the flag", want: def},
		{name: "selection without holdDown: the flag", sel: &v1alpha1.Selection{Failback: v1alpha1.FailbackNever}, want: def},
		{name: "holdDown set", sel: &v1alpha1.Selection{HoldDown: d(3 * time.Second)}, want: 3 * time.Second},
		{name: "holdDown 0s: no hold", sel: &v1alpha1.Selection{HoldDown: d(0)}, want: 0},
		{name: "beyond the CRD's bound (an object older than the validation)", sel: &v1alpha1.Selection{HoldDown: d(5 * time.Hour)}, want: MaxHoldDown},
		{name: "negative", sel: &v1alpha1.Selection{HoldDown: d(-time.Second)}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := &v1alpha1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "gw"}}
			gw.Spec.Selection = tt.sel
			if got := gatewayFromObject(gw, def).HoldDown; got != tt.want {
				t.Fatalf("HoldDown = %s, want %s", got, tt.want)
			}
		})
	}
}

// Freshness counts from when this operator observed a renewal, the first
// sight included.
func TestObservedRenewTime(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC)
	behind := now.Add(-2 * time.Second) // a node clock 2 s behind
	earlier := now.Add(-3 * time.Second)
	tests := []struct {
		name                   string
		seen                   bool
		prevObserved, prevRept time.Time
		reported               time.Time
		want                   time.Time
	}{
		{name: "first sight of a node whose clock is behind: now", reported: behind, want: now},
		{name: "first sight of a node whose clock is ahead: now", reported: now.Add(time.Minute), want: now},
		{name: "unchanged renewTime keeps when it was observed", seen: true, prevObserved: earlier, prevRept: behind, reported: behind, want: earlier},
		{name: "a renewal counts from now", seen: true, prevObserved: earlier, prevRept: behind.Add(-time.Second), reported: behind, want: now},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := observedRenewTime(tt.seen, tt.prevObserved, tt.prevRept, tt.reported, now); !got.Equal(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
