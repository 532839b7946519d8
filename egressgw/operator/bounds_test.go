package operator

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/selection"
)

// A rejection is logged and counted once per Lease resourceVersion, not on
// every event repeating the same object, and again when the Lease changes.
func TestRejectionsReportedOncePerVersion(t *testing.T) {
	var logs bytes.Buffer
	c := &Controller{log: slog.New(slog.NewTextHandler(&logs, nil)), metrics: NewMetrics(), rejectedAt: map[string]string{}}
	holder, secs := "n1", int32(1<<31-1)
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "egressha-n1", ResourceVersion: "1",
			Annotations: map[string]string{heartbeat.GatewaysAnnotation: `{"gw":{"reason":"Foo"}}`}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs,
			RenewTime: &metav1.MicroTime{Time: time.Now()}},
	}
	count := func(kind string) float64 { return c.metrics.HeartbeatRejected.WithLabelValues(kind).Get() }
	for range 3 { // the same version seen again (resync)
		hb, errText := heartbeatFromLease(l, 10*time.Second, 0)
		if errText != "" || hb.Duration != 10*time.Second || hb.Gateways["gw"].Reason != heartbeat.ReasonHeartbeatMalformed {
			t.Fatalf("heartbeat %+v, error %q", hb, errText)
		}
		c.reportRejections("kube-system/egressha-n1", l.ResourceVersion, hb.Rejections)
	}
	if count(heartbeat.RejectDurationClamped) != 1 || count(heartbeat.RejectUnknownReason) != 1 {
		t.Fatalf("counted clamped=%v unknown=%v, want 1 each", count(heartbeat.RejectDurationClamped), count(heartbeat.RejectUnknownReason))
	}
	if n := strings.Count(logs.String(), "heartbeat lease not taken as written"); n != 2 {
		t.Fatalf("%d log lines, want 2:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `gateways[\"gw\"].reason: unknown reason \"Foo\"`) {
		t.Fatalf("the log does not name the field:\n%s", logs.String())
	}
	// The next renewal repeats the problem: counted again.
	l.ResourceVersion = "2"
	l.Annotations[heartbeat.GatewaysAnnotation] = `{"gw":`
	hb, errText := heartbeatFromLease(l, 10*time.Second, 0)
	if hb == nil || hb.Malformed == "" || errText == "" {
		t.Fatalf("undecodable annotation: heartbeat %+v, error %q", hb, errText)
	}
	c.reportRejections("kube-system/egressha-n1", l.ResourceVersion, hb.Rejections)
	if count(heartbeat.RejectDurationClamped) != 2 || count(heartbeat.RejectMalformed) != 1 {
		t.Fatalf("counted clamped=%v malformed=%v, want 2 and 1", count(heartbeat.RejectDurationClamped), count(heartbeat.RejectMalformed))
	}
}

// Condition messages are bounded whatever they are built from, so the
// status write cannot fail on the API's 32 KiB limit.
func TestConditionMessagesBounded(t *testing.T) {
	gw := &v1alpha1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "vip"}}
	gw.Spec.SourceIP.Mode = v1alpha1.SourceIPModeVirtualIP
	now := time.Now()
	check := func(st v1alpha1.EgressGatewayStatus, typ string) {
		t.Helper()
		c := meta.FindStatusCondition(st.Conditions, typ)
		if c == nil || len(c.Message) > MaxConditionMessageBytes || !strings.HasSuffix(c.Message, heartbeat.TruncatedMarker) {
			t.Fatalf("%s condition %+v not bounded", typ, c)
		}
	}
	// No active node: the message lists every candidate (thousands).
	st := DesiredStatus(gw, selection.Result{Gateway: "vip", Message: strings.Repeat("node-x: HeartbeatExpired; ", 5000)},
		heartbeat.GatewayReport{}, nil, now, now)
	check(st, v1alpha1.ConditionReady)
	// Active but not announcing, with what the node said (unbounded here:
	// DesiredStatus does not rely on the Lease decoding having cut it).
	long := strings.Repeat("y", 100000)
	r := selection.Result{Gateway: "vip", Active: "n1", ActiveInternalIP: netip.MustParseAddr("198.18.0.11"), EgressIP: "203.0.113.50"}
	st = DesiredStatus(gw, r, heartbeat.GatewayReport{Message: long, Duplicate: long}, nil, now, now)
	check(st, v1alpha1.ConditionReady)
	check(st, v1alpha1.ConditionVirtualIPConflict)
	p := &v1alpha1.EgressGatewayPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"}}
	p.Spec.EgressGatewayName = "vip"
	pst := PolicyStatus(p, selection.Result{Message: long}, true)
	if c := meta.FindStatusCondition(pst.Conditions, v1alpha1.ConditionReady); c == nil || len(c.Message) > MaxConditionMessageBytes {
		t.Fatalf("policy condition %+v not bounded", c)
	}
}
