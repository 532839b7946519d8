package writer

import (
	"context"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/egressha/egressha/egressgw/heartbeat"
)

func TestDesiredLease(t *testing.T) {
	h := &heartbeatJob{node: "node1", namespace: "kube-system", name: "egressha-node1", expiry: 1500 * time.Millisecond}
	now := time.Date(2026, 1, 1, 0, 0, 10, 123456789, time.UTC)

	created := h.desiredLease(nil, now, `{"egw":{"ready":true}}`)
	if created.Name != "egressha-node1" || created.Namespace != "kube-system" {
		t.Fatalf("new Lease is %s/%s", created.Namespace, created.Name)
	}
	if *created.Spec.HolderIdentity != "node1" || *created.Spec.LeaseDurationSeconds != 2 {
		t.Fatalf("holder %q, duration %d; want node1 and ceil(1.5s)=2", *created.Spec.HolderIdentity, *created.Spec.LeaseDurationSeconds)
	}
	if !created.Spec.RenewTime.Time.Equal(now) || created.Spec.AcquireTime == nil {
		t.Fatalf("renewTime %v acquireTime %v", created.Spec.RenewTime, created.Spec.AcquireTime)
	}
	wantLabels := map[string]string{heartbeat.ComponentLabel: heartbeat.ComponentValue, heartbeat.NodeLabel: "node1"}
	if !reflect.DeepEqual(created.Labels, wantLabels) {
		t.Fatalf("labels %v, want %v", created.Labels, wantLabels)
	}
	if hb, err := heartbeat.FromLease(created); err != nil || !hb.Gateways["egw"].Ready || hb.Node != "node1" {
		t.Fatalf("the operator cannot decode the Lease: %+v, %v", hb, err)
	}

	// Renewing a live Lease keeps its acquireTime and what others put on it.
	acquired := metav1.NewMicroTime(now.Add(-time.Minute))
	renewed := metav1.NewMicroTime(now.Add(-time.Second))
	live := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "egressha-node1", Namespace: "kube-system", ResourceVersion: "42",
			Labels: map[string]string{"team": "net"}, Annotations: map[string]string{"note": "keep"}},
		Spec: coordinationv1.LeaseSpec{AcquireTime: &acquired, RenewTime: &renewed, LeaseDurationSeconds: ptr(int32(2))},
	}
	got := h.desiredLease(live, now, "{}")
	if got.ResourceVersion != "42" || got.Labels["team"] != "net" || got.Annotations["note"] != "keep" {
		t.Fatalf("renewal dropped metadata: %+v", got.ObjectMeta)
	}
	if !got.Spec.AcquireTime.Equal(&acquired) {
		t.Fatalf("renewing a live Lease moved acquireTime to %v", got.Spec.AcquireTime)
	}
	if live.Spec.RenewTime != &renewed || live.Labels[heartbeat.NodeLabel] != "" {
		t.Fatal("desiredLease modified the cached Lease")
	}

	// Renewing an expired Lease acquires it anew.
	old := metav1.NewMicroTime(now.Add(-3 * time.Second))
	live.Spec.RenewTime = &old
	if got := h.desiredLease(live, now, "{}"); !got.Spec.AcquireTime.Time.Equal(now) {
		t.Fatalf("renewing an expired Lease kept acquireTime %v", got.Spec.AcquireTime)
	}

	// A node name too long for a label value leaves the label out.
	h.node = strings.Repeat("n", 70)
	if got := h.desiredLease(nil, now, "{}"); got.Labels[heartbeat.NodeLabel] != "" || *got.Spec.HolderIdentity != h.node {
		t.Fatalf("long node name: labels %v holder %q", got.Labels, *got.Spec.HolderIdentity)
	}
}

func ptr[T any](v T) *T { return &v }

// TestStoppingAsksForARestartGrace: an agent that stops renews its Lease
// once more, asking for its restart grace; the restarted agent's first
// renewal removes the request. With grace 0 it withdraws instead.
func TestStoppingAsksForARestartGrace(t *testing.T) {
	for _, tc := range []struct {
		grace     time.Duration
		wantGrace time.Duration
		wantReady bool
	}{
		{30 * time.Second, 30 * time.Second, true},
		{1500 * time.Millisecond, 2 * time.Second, true}, // whole seconds, rounded up
		{0, 0, false},
	} {
		cs := fake.NewClientset()
		h := &heartbeatJob{node: "node1", namespace: "kube-system", name: "egressha-node1", expiry: 15 * time.Second,
			log: slog.New(slog.DiscardHandler), leases: cs.CoordinationV1().Leases("kube-system")}
		h.p.Status = heartbeat.NewStatus()
		h.p.Config.EgressGatewayHARestartGrace = tc.grace
		report := heartbeat.Report{"egw": {Ready: true, EgressIP: "203.0.113.11"}}
		ctx := context.Background()
		if err := h.renewLease(ctx, report); err != nil {
			t.Fatal(err)
		}
		h.candidate, h.written = true, report
		read := func() heartbeat.Heartbeat {
			l, err := cs.CoordinationV1().Leases("kube-system").Get(ctx, "egressha-node1", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			hb, err := heartbeat.FromLease(l)
			if err != nil {
				t.Fatal(err)
			}
			return hb
		}
		if hb := read(); hb.RestartGrace != 0 {
			t.Fatalf("a running agent's Lease asks for a restart grace %s", hb.RestartGrace)
		}
		h.stopping()
		hb := read()
		if hb.RestartGrace != tc.wantGrace || hb.Gateways["egw"].Ready != tc.wantReady {
			t.Fatalf("grace %s: stopped agent's Lease asks for %s, egw ready %v; want %s, %v",
				tc.grace, hb.RestartGrace, hb.Gateways["egw"].Ready, tc.wantGrace, tc.wantReady)
		}
		// The restarted agent renews: the request is gone.
		h.lease = nil
		if err := h.renewLease(ctx, report); err != nil {
			t.Fatal(err)
		}
		if hb := read(); hb.RestartGrace != 0 || !hb.Gateways["egw"].Ready {
			t.Fatalf("after the restart the Lease still asks for %s (ready %v)", hb.RestartGrace, hb.Gateways["egw"].Ready)
		}
	}
}
