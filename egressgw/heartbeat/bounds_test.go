package heartbeat

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func lease(name, holder string, seconds int32, annotation string) *coordinationv1.Lease {
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{GatewaysAnnotation: annotation}},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       &holder,
			LeaseDurationSeconds: &seconds,
			RenewTime:            &metav1.MicroTime{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		},
	}
	return l
}

func kinds(rej []Rejection) []string {
	var out []string
	for _, r := range rej {
		out = append(out, r.Kind)
	}
	return out
}

// Whatever a Lease says, the decoded heartbeat holds known reasons and
// bounded strings, and what was not taken as written is named.
func TestFromLeaseBoundsInput(t *testing.T) {
	long := strings.Repeat("é", 40000) // 80 KB, two bytes a rune
	cases := []struct {
		name       string
		holder     string
		seconds    int32
		annotation string
		clamp      time.Duration
		// want is the report (nil: malformed).
		want       Report
		malformed  string
		duration   time.Duration
		rejections []string
		detail     string
	}{{
		name: "good", holder: "n1", seconds: 4, clamp: 10 * time.Second,
		annotation: `{"gw":{"ready":true,"egressIP":"203.0.113.11"}}`,
		want:       Report{"gw": {Ready: true, EgressIP: "203.0.113.11"}},
		duration:   4 * time.Second,
	}, {
		name: "huge duration is clamped", holder: "n1", seconds: 1<<31 - 1, clamp: 10 * time.Second,
		annotation: `{"gw":{"ready":true,"egressIP":"203.0.113.11"}}`,
		want:       Report{"gw": {Ready: true, EgressIP: "203.0.113.11"}},
		duration:   10 * time.Second, rejections: []string{RejectDurationClamped},
		detail: "spec.leaseDurationSeconds: 596523h14m7s exceeds the maximum expiry 10s, clamped",
	}, {
		name: "unknown reason becomes HeartbeatMalformed naming the field", holder: "n1", seconds: 4,
		annotation: `{"my-egressgw":{"ready":false,"reason":"Foo","message":"whatever"}}`,
		want: Report{"my-egressgw": {Reason: ReasonHeartbeatMalformed,
			Message: `gateways["my-egressgw"].reason: unknown reason "Foo"`}},
		duration: 4 * time.Second, rejections: []string{RejectUnknownReason},
		detail: `gateways["my-egressgw"].reason: unknown reason "Foo"`,
	}, {
		name: "a ready entry with an unknown reason is not ready", holder: "n1", seconds: 4,
		annotation: `{"gw":{"ready":true,"egressIP":"203.0.113.11","reason":"Bogus"}}`,
		want: Report{"gw": {Reason: ReasonHeartbeatMalformed, EgressIP: "203.0.113.11",
			Message: `gateways["gw"].reason: unknown reason "Bogus"`}},
		duration: 4 * time.Second, rejections: []string{RejectUnknownReason},
	}, {
		name: "oversized message and duplicate are truncated", holder: "n1", seconds: 4,
		annotation: `{"gw":{"ready":false,"reason":"VirtualIPNotReady","message":"` + long + `","duplicate":"` + long + `"}}`,
		want: Report{"gw": {Reason: ReasonVirtualIPNotReady,
			Message:   strings.Repeat("é", (MaxMessageBytes-len(TruncatedMarker))/2) + TruncatedMarker,
			Duplicate: strings.Repeat("é", (MaxMessageBytes-len(TruncatedMarker))/2) + TruncatedMarker}},
		duration: 4 * time.Second, rejections: []string{RejectTooLong, RejectTooLong},
		detail: `gateways["gw"].message: 80000 bytes, truncated to 256`,
	}, {
		name: "over-long gateway key is dropped", holder: "n1", seconds: 4,
		annotation: `{"` + strings.Repeat("g", 300) + `":{"ready":true},"gw":{"ready":true,"egressIP":"203.0.113.11"}}`,
		want:       Report{"gw": {Ready: true, EgressIP: "203.0.113.11"}},
		duration:   4 * time.Second, rejections: []string{RejectTooLong},
	}, {
		name: "annotation not JSON is malformed, not missing", holder: "n1", seconds: 4,
		annotation: `{"gw":`,
		malformed:  "annotation egressha.io/gateways: unexpected end of JSON input",
		duration:   4 * time.Second, rejections: []string{RejectMalformed},
	}, {
		name: "held by another node is malformed", holder: "n2", seconds: 4,
		annotation: `{}`,
		malformed:  `spec.holderIdentity: lease egressha-n1 is held by "n2", not by node n1`,
		duration:   4 * time.Second, rejections: []string{RejectMalformed},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hb, err := FromLease(lease("egressha-n1", tc.holder, tc.seconds, tc.annotation))
			hb.ClampDuration(tc.clamp)
			if hb.Node != "n1" || hb.RenewTime.IsZero() {
				t.Fatalf("heartbeat lost its node or renewal: %+v", hb)
			}
			if hb.Malformed != tc.malformed {
				t.Fatalf("Malformed = %q, want %q", hb.Malformed, tc.malformed)
			}
			if (err != nil) != (tc.malformed != "") {
				t.Fatalf("err = %v, malformed %q", err, tc.malformed)
			}
			if tc.malformed == "" && !reflect.DeepEqual(hb.Gateways, tc.want) {
				t.Fatalf("Gateways =\n  %+v\nwant\n  %+v", hb.Gateways, tc.want)
			}
			if hb.Duration != tc.duration {
				t.Fatalf("Duration = %s, want %s", hb.Duration, tc.duration)
			}
			if got := kinds(hb.Rejections); !slices.Equal(got, tc.rejections) {
				t.Fatalf("rejections = %v (%+v), want %v", got, hb.Rejections, tc.rejections)
			}
			if tc.detail != "" && hb.Rejections[0].Detail != tc.detail {
				t.Fatalf("detail = %q, want %q", hb.Rejections[0].Detail, tc.detail)
			}
		})
	}
}

// A clamped heartbeat of a node that died is no longer fresh once the
// clamp passed, whatever its Lease claims.
func TestClampedHeartbeatExpires(t *testing.T) {
	hb, err := FromLease(lease("egressha-n1", "n1", 1<<31-1, `{}`))
	if err != nil {
		t.Fatal(err)
	}
	hb.ClampDuration(10 * time.Second)
	if !hb.Fresh(hb.RenewTime.Add(9 * time.Second)) {
		t.Fatal("not fresh within the clamp")
	}
	if hb.Fresh(hb.RenewTime.Add(10 * time.Second)) {
		t.Fatal("a dead node's heartbeat is fresh past the operator's maximum expiry")
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
		cut  bool
	}{
		{"short", 20, "short", false},
		{strings.Repeat("a", 20), 20, strings.Repeat("a", 20), false},
		{strings.Repeat("a", 21), 20, "aaaaaa" + TruncatedMarker, true},
		{"ééééééééééé", 20, "ééé" + TruncatedMarker, true}, // never splits a rune
	} {
		got, cut := Truncate(tc.in, tc.max)
		if got != tc.want || cut != tc.cut || len(got) > tc.max || !utf8.ValidString(got) {
			t.Errorf("Truncate(%q, %d) = %q, %v; want %q, %v", tc.in, tc.max, got, cut, tc.want, tc.cut)
		}
	}
}

// FuzzDecodeReport: decoding a Lease annotation never panics; what it
// accepts is bounded (known reasons, strings within their bounds), is
// stable (sanitizing again rejects nothing) and round-trips through Encode.
func FuzzDecodeReport(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `"x"`, `{"gw":null}`,
		`{"gw":{"ready":true,"egressIP":"203.0.113.11"}}`,
		`{"gw":{"ready":false,"reason":"InterfaceMissing","message":"interface eth1 does not exist"}}`,
		`{"gw":{"ready":false,"reason":"Foo"}}`,
		`{"vip":{"ready":true,"egressIP":"198.51.100.10","announcing":true,"duplicate":"02:00:00:00:00:01"}}`,
		`{"gw":{"ready":false,"reason":"VirtualIPNotReady","message":"` + strings.Repeat("x", 300) + `"}}`,
		`{"` + strings.Repeat("g", 254) + `":{}}`,
		`{"gw":{"message":"\xff\xfe"}}`,
		`{"gw":{"reason":"` + strings.Repeat("\u00e9", 100) + `"}}`,
		`{"a":{},"a":{"ready":true}}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, rej, err := DecodeReportChecked(s)
		if err != nil {
			if r != nil || rej != nil {
				t.Fatalf("error %v with a report %+v", err, r)
			}
			if !strings.Contains(err.Error(), GatewaysAnnotation) {
				t.Fatalf("error does not name the annotation: %v", err)
			}
			return
		}
		for _, x := range rej {
			if !slices.Contains(RejectKinds, x.Kind) {
				t.Fatalf("rejection kind %q outside the closed set", x.Kind)
			}
		}
		for name, g := range r {
			if len(name) > MaxGatewayNameBytes {
				t.Fatalf("key of %d bytes kept", len(name))
			}
			if g.Reason != "" && !slices.Contains(ReportedReasons, g.Reason) {
				t.Fatalf("unknown reason %q kept", g.Reason)
			}
			if len(g.Message) > MaxMessageBytes || len(g.Duplicate) > MaxMessageBytes || len(g.EgressIP) > MaxEgressIPBytes {
				t.Fatalf("unbounded entry %q: %d/%d/%d bytes", name, len(g.Message), len(g.Duplicate), len(g.EgressIP))
			}
		}
		if again := r.Sanitize(); len(again) != 0 {
			t.Fatalf("sanitizing twice rejects %+v", again)
		}
		enc, err := r.Encode()
		if err != nil {
			t.Fatal(err)
		}
		back, rej2, err := DecodeReportChecked(enc)
		if err != nil || len(rej2) != 0 {
			t.Fatalf("re-decoding %s: %v, %+v", enc, err, rej2)
		}
		if !reflect.DeepEqual(back, r) {
			a, _ := json.Marshal(r)
			b, _ := json.Marshal(back)
			t.Fatalf("round trip changed the report:\n  %s\n  %s", a, b)
		}
	})
}

func TestRestartGraceAnnotation(t *testing.T) {
	for _, tc := range []struct {
		value    string
		want     time.Duration
		rejected bool
	}{
		{"30", 30 * time.Second, false},
		{" 5 ", 5 * time.Second, false},
		{"0", 0, false},
		{"-5", 0, true},
		{"30s", 0, true},
		{"99999999999", 0, true},
		{strings.Repeat("x", 1000), 0, true},
	} {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "egressha-n1",
			Annotations: map[string]string{GatewaysAnnotation: `{"gw":{"ready":true}}`, RestartAnnotation: tc.value}}}
		hb, err := FromLease(l)
		if err != nil || hb.Malformed != "" {
			t.Fatalf("%q: a bad restart annotation must not make the Lease malformed: %v %q", tc.value, err, hb.Malformed)
		}
		if hb.RestartGrace != tc.want || (len(hb.Rejections) > 0) != tc.rejected || !hb.Gateways["gw"].Ready {
			t.Fatalf("%q: grace %s, rejections %v; want %s, rejected %v", tc.value, hb.RestartGrace, hb.Rejections, tc.want, tc.rejected)
		}
		for _, r := range hb.Rejections {
			if len(r.Detail) > 200 {
				t.Fatalf("%q: rejection detail not bounded: %d bytes", tc.value, len(r.Detail))
			}
		}
	}
	hb := Heartbeat{RestartGrace: time.Hour}
	hb.ClampRestartGrace(2 * time.Minute)
	if hb.RestartGrace != 2*time.Minute || len(hb.Rejections) != 1 || hb.Rejections[0].Kind != RejectDurationClamped {
		t.Fatalf("clamp: %+v", hb)
	}
	hb.ClampRestartGrace(0)
	if hb.RestartGrace != 0 {
		t.Fatalf("max 0 must turn the grace off, got %s", hb.RestartGrace)
	}
}
