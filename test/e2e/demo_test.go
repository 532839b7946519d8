package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/egressha/egressha/test/lab/cluster"
	"github.com/egressha/egressha/test/lab/demo"
)

// TestDemo runs the demo (`egressha-lab demo`, the README's first command)
// twice on one lab, as a user running it again would: in basic mode the
// echo server sees the active node's eth1 address, then the standby's
// after the crash; in VIP mode it sees the VIP throughout while the MAC
// answering for it moves to the standby.
func TestDemo(t *testing.T) {
	cfg := startLab(t, cluster.ModeEgressHA)
	a, b := mustNode(t, cfg, "lab-egress-a"), mustNode(t, cfg, "lab-egress-b")
	macA, macB := publicMAC(t, a), publicMAC(t, b)
	// A liveness bound, not a performance target (about 2 s at the default
	// heartbeat settings).
	const maxGap = 10 * time.Second

	for run := 1; run <= 2; run++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		res, err := demo.Run(ctx, cfg, &testWriter{t: t})
		cancel()
		if err != nil {
			t.Fatalf("demo run %d: %v", run, err)
		}
		t.Logf("demo run %d took %s", run, res.Took.Round(100*time.Millisecond))

		basic := res.Basic
		if basic.ActiveBefore != a.Name || basic.SourceBefore != a.PublicIP.String() {
			t.Errorf("run %d, basic mode before the crash: active %s, source %s; want %s, %s",
				run, basic.ActiveBefore, basic.SourceBefore, a.Name, a.PublicIP)
		}
		if basic.ActiveAfter != b.Name || basic.SourceAfter != b.PublicIP.String() {
			t.Errorf("run %d, basic mode after the crash of %s: active %s, source %s; want %s, %s",
				run, a.Name, basic.ActiveAfter, basic.SourceAfter, b.Name, b.PublicIP)
		}
		if basic.SourceRecovered != a.PublicIP.String() {
			t.Errorf("run %d, basic mode after the recovery: source %s, want %s", run, basic.SourceRecovered, a.PublicIP)
		}

		vip := res.VIP
		for when, got := range map[string]string{"before the crash": vip.SourceBefore, "after the crash": vip.SourceAfter, "after the recovery": vip.SourceRecovered} {
			if got != demo.VIP.String() {
				t.Errorf("run %d, VIP mode %s: source %s, want the VIP %s", run, when, got, demo.VIP)
			}
		}
		if vip.ActiveBefore != a.Name || vip.VIPOwnerBefore != macA || vip.MACBefore != macA {
			t.Errorf("run %d, VIP mode before the crash: active %s, VIP at %s, requests from %s; want %s (%s)",
				run, vip.ActiveBefore, vip.VIPOwnerBefore, vip.MACBefore, a.Name, macA)
		}
		if vip.ActiveAfter != b.Name || vip.VIPOwnerAfter != macB || vip.MACAfter != macB {
			t.Errorf("run %d, VIP mode after the crash of %s: active %s, VIP at %s, requests from %s; want %s (%s)",
				run, a.Name, vip.ActiveAfter, vip.VIPOwnerAfter, vip.MACAfter, b.Name, macB)
		}

		for name, gap := range map[string]time.Duration{"basic crash": basic.CrashGap, "VIP crash": vip.CrashGap} {
			if gap <= 0 || gap >= maxGap {
				t.Errorf("run %d, %s gap %s: want more than 0 and less than %s", run, name, gap, maxGap)
			}
		}
		t.Logf("run %d: gaps: basic crash %s, failback %s; VIP crash %s, failback %s", run,
			basic.CrashGap.Round(time.Millisecond), basic.FailbackGap.Round(time.Millisecond),
			vip.CrashGap.Round(time.Millisecond), vip.FailbackGap.Round(time.Millisecond))
	}
}
