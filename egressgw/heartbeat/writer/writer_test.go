package writer

import (
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	datapathtables "github.com/cilium/cilium/pkg/datapath/tables"

	"github.com/egressha/egressha/egressgw/heartbeat"
)

func TestReportDevice(t *testing.T) {
	addr := func(s string, secondary bool, scope datapathtables.RouteScope) datapathtables.DeviceAddress {
		return datapathtables.DeviceAddress{Addr: netip.MustParseAddr(s), Secondary: secondary, Scope: scope}
	}
	for _, tc := range []struct {
		name   string
		dev    datapathtables.Device
		wantUp bool
		wantV4 []string
	}{
		{
			name: "primary first, then secondary; link scope, IPv6 and link-local skipped",
			dev: datapathtables.Device{Name: "eth1", Flags: net.FlagUp, OperStatus: "up", Addrs: []datapathtables.DeviceAddress{
				addr("203.0.113.99", true, datapathtables.RT_SCOPE_UNIVERSE),
				addr("169.254.1.1", false, datapathtables.RT_SCOPE_UNIVERSE),
				addr("10.1.1.1", false, datapathtables.RT_SCOPE_LINK),
				addr("2001:db8::1", false, datapathtables.RT_SCOPE_UNIVERSE),
				addr("203.0.113.11", false, datapathtables.RT_SCOPE_UNIVERSE),
				addr("203.0.113.12", false, datapathtables.RT_SCOPE_UNIVERSE),
			}},
			wantUp: true,
			wantV4: []string{"203.0.113.11", "203.0.113.12", "203.0.113.99"},
		},
		{name: "dummy devices report unknown", dev: datapathtables.Device{Name: "d", Flags: net.FlagUp, OperStatus: "unknown"}, wantUp: true},
		{name: "admin down", dev: datapathtables.Device{Name: "d", OperStatus: "up"}, wantUp: false},
		{name: "no carrier", dev: datapathtables.Device{Name: "d", Flags: net.FlagUp, OperStatus: "lower-layer-down"}, wantUp: false},
		{name: "dormant", dev: datapathtables.Device{Name: "d", Flags: net.FlagUp, OperStatus: "dormant"}, wantUp: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := reportDevice(&tc.dev)
			if got.Up != tc.wantUp {
				t.Errorf("Up = %v, want %v", got.Up, tc.wantUp)
			}
			var v4 []string
			for _, a := range got.IPv4 {
				v4 = append(v4, a.String())
			}
			if !reflect.DeepEqual(v4, tc.wantV4) {
				t.Errorf("IPv4 = %v, want %v", v4, tc.wantV4)
			}
		})
	}

	devs := reportDevices([]*datapathtables.Device{{Index: 7}, {Name: "eth0", Selected: true, NotSelectedReason: ""}})
	if len(devs) != 1 || devs[0].Name != "eth0" || !devs[0].Selected {
		t.Fatalf("reportDevices = %+v; want only eth0 (a device without a name is not a device yet)", devs)
	}
}

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
