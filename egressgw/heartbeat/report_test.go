package heartbeat

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
)

func basicGW(name, iface string, selector map[string]string) *v1alpha1.EgressGateway {
	return &v1alpha1.EgressGateway{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.EgressGatewaySpec{
			NodeSelector: selector,
			SourceIP: v1alpha1.SourceIP{
				Mode: v1alpha1.SourceIPModePrimaryIP,
				PrimaryIPFromEgressGatewayNodeInterface: &v1alpha1.PrimaryIPFromEgressGatewayNodeInterface{
					InterfaceName: v1alpha1.InterfaceName(iface),
				},
			},
		},
	}
}

func vipGW(name, vip string, selector map[string]string) *v1alpha1.EgressGateway {
	return &v1alpha1.EgressGateway{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.EgressGatewaySpec{
			NodeSelector: selector,
			SourceIP: v1alpha1.SourceIP{
				Mode:             v1alpha1.SourceIPModeVirtualIP,
				VirtualIPAddress: &v1alpha1.VirtualIPAddress{IP: v1alpha1.IPv4Address(vip)},
			},
		},
	}
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i := range s {
		out[i] = netip.MustParseAddr(s[i])
	}
	return out
}

var (
	egressSel = map[string]string{"egress": "true"}
	nodeLabel = map[string]string{"egress": "true", "kubernetes.io/hostname": "node1"}
	eth1Good  = Device{Name: "eth1", Up: true, OperStatus: "up", Selected: true, IPv4: addrs("203.0.113.11", "203.0.113.99")}
)

func TestIsCandidate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		selector map[string]string
		labels   map[string]string
		want     bool
	}{
		{"all pairs match", map[string]string{"a": "1", "b": "2"}, map[string]string{"a": "1", "b": "2", "c": "3"}, true},
		{"one value differs", map[string]string{"a": "1", "b": "2"}, map[string]string{"a": "1", "b": "3"}, false},
		{"one key missing", map[string]string{"a": "1", "b": "2"}, map[string]string{"a": "1"}, false},
		{"empty value matches empty label", map[string]string{"node-role/egress": ""}, map[string]string{"node-role/egress": ""}, true},
		{"empty value needs the key", map[string]string{"node-role/egress": ""}, map[string]string{}, false},
		{"empty selector selects nothing", map[string]string{}, map[string]string{"a": "1"}, false},
		{"nil selector selects nothing", nil, map[string]string{"a": "1"}, false},
		{"nil labels", map[string]string{"a": "1"}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsCandidate(tc.labels, basicGW("gw", "eth1", tc.selector)); got != tc.want {
				t.Fatalf("IsCandidate = %v, want %v", got, tc.want)
			}
		})
	}
	if IsCandidate(nodeLabel, nil) {
		t.Fatal("nil gateway is a candidate")
	}
}

func TestBuildReport(t *testing.T) {
	for _, tc := range []struct {
		name     string
		labels   map[string]string
		gateways []*v1alpha1.EgressGateway
		devices  []Device
		want     Report
		// wantMessage holds substrings of each not-ready gateway's message.
		wantMessage map[string][]string
		vips        map[string]VIPStatus
	}{
		{
			name:    "no gateways",
			labels:  nodeLabel,
			devices: []Device{eth1Good},
			want:    Report{},
		},
		{
			name:     "selector does not match: gateway left out",
			labels:   map[string]string{"egress": "false"},
			gateways: []*v1alpha1.EgressGateway{basicGW("egw", "eth1", egressSel)},
			devices:  []Device{eth1Good},
			want:     Report{},
		},
		{
			name:     "empty selector: gateway left out",
			labels:   nodeLabel,
			gateways: []*v1alpha1.EgressGateway{basicGW("egw", "eth1", map[string]string{})},
			devices:  []Device{eth1Good},
			want:     Report{},
		},
		{
			name:     "basic mode ready: first primary IPv4",
			labels:   nodeLabel,
			gateways: []*v1alpha1.EgressGateway{basicGW("egw", "eth1", egressSel)},
			devices:  []Device{{Name: "eth0", Up: true, Selected: true, IPv4: addrs("10.0.0.1")}, eth1Good},
			want:     Report{"egw": {Ready: true, EgressIP: "203.0.113.11"}},
		},
		{
			name:     "interface missing",
			labels:   nodeLabel,
			gateways: []*v1alpha1.EgressGateway{basicGW("egw", "eth2", egressSel)},
			devices:  []Device{eth1Good},
			want:     Report{"egw": {Reason: ReasonInterfaceMissing}},
			wantMessage: map[string][]string{"egw": {"interface eth2 does not exist on this node",
				"interfaceName"}},
		},
		{
			name:        "interfaceName unset",
			labels:      nodeLabel,
			gateways:    []*v1alpha1.EgressGateway{basicGW("egw", "", egressSel)},
			devices:     []Device{eth1Good},
			want:        Report{"egw": {Reason: ReasonInterfaceMissing}},
			wantMessage: map[string][]string{"egw": {"interfaceName is not set"}},
		},
		{
			name:   "basic mode without its sub-object",
			labels: nodeLabel,
			gateways: []*v1alpha1.EgressGateway{{
				ObjectMeta: metav1.ObjectMeta{Name: "egw"},
				Spec: v1alpha1.EgressGatewaySpec{NodeSelector: egressSel,
					SourceIP: v1alpha1.SourceIP{Mode: v1alpha1.SourceIPModePrimaryIP}},
			}},
			devices:     []Device{eth1Good},
			want:        Report{"egw": {Reason: ReasonInterfaceMissing}},
			wantMessage: map[string][]string{"egw": {"interfaceName is not set"}},
		},
		{
			name:        "interface operationally down",
			labels:      nodeLabel,
			gateways:    []*v1alpha1.EgressGateway{basicGW("egw", "eth1", egressSel)},
			devices:     []Device{{Name: "eth1", Up: false, OperStatus: "lower-layer-down", Selected: true, IPv4: addrs("203.0.113.11")}},
			want:        Report{"egw": {Reason: ReasonInterfaceDown}},
			wantMessage: map[string][]string{"egw": {"interface eth1 is down", "lower-layer-down", "bring it up"}},
		},
		{
			name:        "interface administratively down",
			labels:      nodeLabel,
			gateways:    []*v1alpha1.EgressGateway{basicGW("egw", "eth1", egressSel)},
			devices:     []Device{{Name: "eth1", Selected: true, IPv4: addrs("203.0.113.11")}},
			want:        Report{"egw": {Reason: ReasonInterfaceDown}},
			wantMessage: map[string][]string{"egw": {"administratively down"}},
		},
		{
			name:     "down wins over no address and not selected",
			labels:   nodeLabel,
			gateways: []*v1alpha1.EgressGateway{basicGW("egw", "eth1", egressSel)},
			devices:  []Device{{Name: "eth1", OperStatus: "down"}},
			want:     Report{"egw": {Reason: ReasonInterfaceDown}},
		},
		{
			name:        "no IPv4 address",
			labels:      nodeLabel,
			gateways:    []*v1alpha1.EgressGateway{basicGW("egw", "eth1", egressSel)},
			devices:     []Device{{Name: "eth1", Up: true, Selected: false, NotSelectedReason: "device has no addresses"}},
			want:        Report{"egw": {Reason: ReasonNoIPv4Address}},
			wantMessage: map[string][]string{"egw": {"interface eth1 has no global IPv4 address", "assign one"}},
		},
		{
			name:     "not a Cilium device",
			labels:   nodeLabel,
			gateways: []*v1alpha1.EgressGateway{basicGW("egw", "eth1", egressSel)},
			devices: []Device{{Name: "eth1", Up: true, OperStatus: "up", IPv4: addrs("203.0.113.11"),
				NotSelectedReason: "not matching user filter [eth0]"}},
			want: Report{"egw": {Reason: ReasonNotCiliumDevice}},
			wantMessage: map[string][]string{"egw": {"interface eth1 is not one of Cilium's devices",
				"(not matching user filter [eth0])", "add it to --devices"}},
		},
		{
			name:        "VIP mode fails closed until the responder reports",
			labels:      nodeLabel,
			gateways:    []*v1alpha1.EgressGateway{vipGW("egw-vip", "198.51.100.10", egressSel)},
			devices:     []Device{eth1Good},
			want:        Report{"egw-vip": {Reason: ReasonVirtualIPNotReady}},
			wantMessage: map[string][]string{"egw-vip": {"has not set up virtual IP 198.51.100.10"}},
		},
		{
			name:        "VIP mode responder not ready",
			labels:      nodeLabel,
			gateways:    []*v1alpha1.EgressGateway{vipGW("egw-vip", "198.51.100.10", egressSel)},
			vips:        map[string]VIPStatus{"egw-vip": {Message: "interface eth7: no such network interface"}},
			want:        Report{"egw-vip": {Reason: ReasonVirtualIPNotReady}},
			wantMessage: map[string][]string{"egw-vip": {"eth7"}},
		},
		{
			name:     "VIP mode ready and announcing: egress IP is the VIP",
			labels:   nodeLabel,
			gateways: []*v1alpha1.EgressGateway{vipGW("egw-vip", "198.51.100.10", egressSel)},
			vips:     map[string]VIPStatus{"egw-vip": {Ready: true, Announcing: true, Duplicate: "02:00:00:00:00:09 on eth1"}},
			want: Report{"egw-vip": {Ready: true, EgressIP: "198.51.100.10", Announcing: true,
				Duplicate: "02:00:00:00:00:09 on eth1"}},
		},
		{
			name:   "unknown mode",
			labels: nodeLabel,
			gateways: []*v1alpha1.EgressGateway{{
				ObjectMeta: metav1.ObjectMeta{Name: "egw"},
				Spec: v1alpha1.EgressGatewaySpec{NodeSelector: egressSel,
					SourceIP: v1alpha1.SourceIP{Mode: "Teleport"}},
			}},
			want:        Report{"egw": {Reason: ReasonUnsupportedMode}},
			wantMessage: map[string][]string{"egw": {`"Teleport" is not supported`}},
		},
		{
			name:   "several gateways, only matching ones, each resolved on its own",
			labels: nodeLabel,
			gateways: []*v1alpha1.EgressGateway{
				basicGW("a-ready", "eth1", egressSel),
				basicGW("b-missing", "eth9", egressSel),
				basicGW("c-other-nodes", "eth1", map[string]string{"egress": "true", "zone": "b"}),
				vipGW("d-vip", "198.51.100.10", map[string]string{"kubernetes.io/hostname": "node1"}),
			},
			devices: []Device{eth1Good},
			want: Report{
				"a-ready":   {Ready: true, EgressIP: "203.0.113.11"},
				"b-missing": {Reason: ReasonInterfaceMissing},
				"d-vip":     {Reason: ReasonVirtualIPNotReady},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := BuildReport(tc.labels, tc.gateways, tc.devices, tc.vips)
			if got == nil {
				t.Fatal("BuildReport returned nil; want an empty Report")
			}
			for name, g := range got {
				if !g.Ready && g.Message == "" {
					t.Errorf("%s: not ready without a message", name)
				}
				if !g.Ready && g.EgressIP != "" {
					t.Errorf("%s: not ready but reports egress IP %s", name, g.EgressIP)
				}
				for _, sub := range tc.wantMessage[name] {
					if !strings.Contains(g.Message, sub) {
						t.Errorf("%s: message %q does not contain %q", name, g.Message, sub)
					}
				}
				g.Message = ""
				got[name] = g
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("BuildReport =\n  %+v\nwant\n  %+v", got, tc.want)
			}
		})
	}
}

// The report must round-trip through the Lease annotation unchanged.
func TestReportEncodesIntoLease(t *testing.T) {
	r := BuildReport(nodeLabel, []*v1alpha1.EgressGateway{
		basicGW("egw", "eth1", egressSel), vipGW("vip", "198.51.100.10", egressSel),
	}, []Device{eth1Good}, nil)
	s, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeReport(s)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, r) {
		t.Fatalf("round trip changed the report:\n  %+v\n  %+v", r, back)
	}
	if got, want := r.Summary(), "egw ready (203.0.113.11), vip not ready (VirtualIPNotReady)"; got != want {
		t.Fatalf("Summary = %q, want %q", got, want)
	}
	if got := (Report{}).Summary(); got != "no gateways" {
		t.Fatalf("empty Summary = %q", got)
	}
}

func TestStatus(t *testing.T) {
	var s Status
	if !s.ValidUntil().IsZero() {
		t.Fatal("fresh Status has a ValidUntil")
	}
	if _, ok := s.Last(); ok {
		t.Fatal("fresh Status has a renewal")
	}
	now := time.Now()
	s.Renewed(Renewal{RenewTime: now, ValidUntil: now.Add(4 * time.Second), Report: Report{"egw": {Ready: true}}})
	if got := s.ValidUntil(); !got.Equal(now.Add(4 * time.Second)) {
		t.Fatalf("ValidUntil = %v", got)
	}
	if r, ok := s.Last(); !ok || !r.Report["egw"].Ready {
		t.Fatalf("Last = %+v, %v", r, ok)
	}
}

// Every node that has a basic-mode gateway's interface resolves its own
// egress address for it, candidate or not; VIP gateways and nodes without
// the interface (or without an address on it) get none.
func TestLocalEgressIPs(t *testing.T) {
	got := LocalEgressIPs([]*v1alpha1.EgressGateway{
		basicGW("egw", "eth1", egressSel),
		basicGW("elsewhere", "eth1", map[string]string{"zone": "b"}),
		basicGW("missing", "eth9", egressSel),
		vipGW("vip", "198.51.100.10", egressSel),
	}, []Device{eth1Good})
	want := map[string]string{"egw": "203.0.113.11", "elsewhere": "203.0.113.11"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("LocalEgressIPs = %v, want %v", got, want)
	}
}
