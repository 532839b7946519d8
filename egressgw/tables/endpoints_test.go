package tables

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"testing"

	"github.com/cilium/statedb"

	cilium_v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	slim_metav1 "github.com/cilium/cilium/pkg/k8s/slim/k8s/apis/meta/v1"
	k8sTypes "github.com/cilium/cilium/pkg/k8s/types"

	"github.com/egressha/egressha/egressgw/egresspolicy"
)

// TestNewLocalEndpoint covers the conversion of a local endpoint, given the
// values *endpoint.Endpoint exposes (GetIPv4Address, GetK8sNamespace,
// GetK8sPodName, GetOpLabels), into a row.
func TestNewLocalEndpoint(t *testing.T) {
	backend := []string{
		"k8s:app=backend",
		"k8s:io.kubernetes.pod.namespace=my-ns",
		"k8s:io.cilium.k8s.namespace.labels.team=payments",
		"k8s:io.cilium.k8s.policy.serviceaccount=default",
	}
	for _, tc := range []struct {
		name              string
		ip, ns, pod, node string
		labels            []string
		want              *Endpoint
	}{
		{
			name: "pod with identity labels", ip: "10.244.1.10", ns: "my-ns", pod: "backend-1", node: "worker-1", labels: backend,
			want: &Endpoint{
				Endpoint: egresspolicy.Endpoint{
					IP: netip.MustParseAddr("10.244.1.10"), Namespace: "my-ns", Node: "worker-1",
					Labels: map[string]string{
						"app":                                 "backend",
						"io.kubernetes.pod.namespace":         "my-ns",
						"io.cilium.k8s.namespace.labels.team": "payments",
						"io.cilium.k8s.policy.serviceaccount": "default",
					},
				},
				Name: "backend-1", Origin: OriginLocal,
			},
		},
		{
			// Labels of other sources keep their source, as in Cilium's
			// own egress gateway (K8sStringMap), so they never match a
			// podSelector key by accident.
			name: "other sources kept apart", ip: "10.244.1.11", ns: "my-ns", pod: "p", node: "n",
			labels: []string{"k8s:app=x", "container:tier=y", "reserved:foo"},
			want: &Endpoint{
				Endpoint: egresspolicy.Endpoint{IP: netip.MustParseAddr("10.244.1.11"), Namespace: "my-ns", Node: "n",
					Labels: map[string]string{"app": "x", "container.tier": "y", "reserved.foo": ""}},
				Name: "p", Origin: OriginLocal,
			},
		},
		{name: "labels not known yet", ip: "10.244.1.10", ns: "my-ns", pod: "backend-1", labels: nil},
		{name: "init identity", ip: "10.244.1.10", ns: "my-ns", pod: "backend-1", labels: []string{"reserved:init"}},
		{name: "no IPv4 (IPv6-only endpoint)", ip: "", ns: "my-ns", pod: "backend-1", labels: backend},
		{name: "IPv6 address", ip: "fd00::10", ns: "my-ns", pod: "backend-1", labels: backend},
		{name: "not a pod (host or health endpoint)", ip: "10.244.0.1", labels: []string{"reserved:health"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := NewLocalEndpoint(tc.ip, tc.ns, tc.pod, tc.node, tc.labels)
			if ok != (tc.want != nil) {
				t.Fatalf("ok = %v, want %v (row %+v)", ok, tc.want != nil, got)
			}
			if tc.want != nil && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("row\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestEndpointsFromCiliumEndpoint(t *testing.T) {
	cep := &k8sTypes.CiliumEndpoint{
		ObjectMeta: slim_metav1.ObjectMeta{Name: "backend-1", Namespace: "my-ns"},
		Identity:   &cilium_v2.EndpointIdentity{ID: 50001, Labels: []string{"k8s:app=backend", "k8s:io.kubernetes.pod.namespace=my-ns"}},
		Networking: &cilium_v2.EndpointNetworking{
			NodeIP: "192.168.0.11",
			Addressing: cilium_v2.AddressPairList{
				{IPV4: "10.244.1.10", IPV6: "fd00::10"},
				{IPV6: "fd00::11"},
				{IPV4: "10.244.1.10"},
				nil,
				{IPV4: "10.245.0.3"},
			},
		},
	}
	rows := EndpointsFromCiliumEndpoint(cep, nil)
	if len(rows) != 2 || rows[0].IP.String() != "10.244.1.10" || rows[1].IP.String() != "10.245.0.3" {
		t.Fatalf("rows %+v, want one per distinct IPv4", rows)
	}
	want := []string{"10.244.1.10", "my-ns", "backend-1", "192.168.0.11", "cep", "app=backend,io.kubernetes.pod.namespace=my-ns"}
	if got := rows[0].TableRow(); !reflect.DeepEqual(got, want) {
		t.Fatalf("TableRow = %q, want %q", got, want)
	}
	if len(rows[0].TableHeader()) != len(want) {
		t.Fatal("header and row differ in length")
	}

	cep.Identity = &cilium_v2.EndpointIdentity{ID: 5, Labels: []string{"reserved:init"}}
	if rows := EndpointsFromCiliumEndpoint(cep, nil); rows != nil {
		t.Fatalf("init identity: rows %+v, want none", rows)
	}
	cep.Identity = nil
	if rows := EndpointsFromCiliumEndpoint(cep, nil); rows != nil {
		t.Fatalf("no identity: rows %+v, want none", rows)
	}
	if rows := EndpointsFromCiliumEndpoint(&k8sTypes.CiliumEndpoint{Identity: &cilium_v2.EndpointIdentity{Labels: []string{"k8s:a=b"}}}, nil); rows != nil {
		t.Fatalf("no networking: rows %+v, want none", rows)
	}
}

func TestEndpointWriter(t *testing.T) {
	db := statedb.New()
	tbl, err := NewEndpointsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	w := NewEndpointWriter(db, tbl)
	ip := netip.MustParseAddr("10.244.1.10")
	row := func(origin EndpointOrigin, name, app string) *Endpoint {
		return &Endpoint{
			Endpoint: egresspolicy.Endpoint{IP: ip, Namespace: "my-ns", Labels: map[string]string{"app": app}},
			Name:     name, Origin: origin,
		}
	}
	get := func() (*Endpoint, statedb.Revision) {
		e, rev, found := tbl.Get(db.ReadTxn(), EndpointByIP(ip))
		if !found {
			return nil, 0
		}
		return e, rev
	}
	set := func(source string, rows ...*Endpoint) {
		w.Update(func(t *EndpointTxn) { t.Set(source, rows...) })
	}

	// A stale CiliumEndpoint and the current one share the IP: the first
	// by key wins, whatever the order of events.
	set(CiliumEndpointSource("my-ns", "web-2"), row(OriginCiliumEndpoint, "web-2", "new"))
	set(CiliumEndpointSource("my-ns", "web-1"), row(OriginCiliumEndpoint, "web-1", "stale"))
	if e, _ := get(); e == nil || e.Name != "web-1" {
		t.Fatalf("row %+v, want web-1 (first source key)", e)
	}

	// The local endpoint wins over both.
	local := LocalEndpointSource(7, 1)
	set(local, row(OriginLocal, "web-2", "new"))
	e, rev := get()
	if e == nil || e.Origin != OriginLocal {
		t.Fatalf("row %+v, want the local one", e)
	}

	// Equal values are not rewritten.
	set(CiliumEndpointSource("my-ns", "web-2"), row(OriginCiliumEndpoint, "web-2", "new"))
	set(local, row(OriginLocal, "web-2", "new"))
	if _, rev2 := get(); rev2 != rev {
		t.Fatalf("revision %d -> %d: an unchanged row was rewritten", rev, rev2)
	}

	// The local endpoint goes: the CiliumEndpoints take over, the IP never
	// leaves the table.
	set(local)
	if e, _ := get(); e == nil || e.Name != "web-1" {
		t.Fatalf("row %+v, want web-1 back", e)
	}
	set(CiliumEndpointSource("my-ns", "web-1"))
	if e, _ := get(); e == nil || e.Name != "web-2" || e.Labels["app"] != "new" {
		t.Fatalf("row %+v, want web-2", e)
	}
	set(CiliumEndpointSource("my-ns", "web-2"))
	if e, _ := get(); e != nil {
		t.Fatalf("row %+v, want none", e)
	}

	// A source that changes IP leaves its old IP.
	other := netip.MustParseAddr("10.244.1.20")
	moved := row(OriginCiliumEndpoint, "web-3", "x")
	set(CiliumEndpointSource("my-ns", "web-3"), moved)
	moved2 := *moved
	moved2.IP = other
	set(CiliumEndpointSource("my-ns", "web-3"), &moved2)
	if e, _ := get(); e != nil {
		t.Fatalf("old IP still has %+v", e)
	}
	if n := tbl.NumObjects(db.ReadTxn()); n != 1 {
		t.Fatalf("%d rows, want 1", n)
	}
}

// TestIdentityLabelCache: the same identity labels give the same (shared)
// map, other labels another one, an unresolved identity none; the cache
// stays bounded over many label sets and still answers correctly.
func TestIdentityLabelCache(t *testing.T) {
	c := NewIdentityLabelCache()
	a := []string{"k8s:app=backend", "k8s:io.kubernetes.pod.namespace=my-ns"}
	m1, ok1 := c.Labels(a)
	m2, ok2 := c.Labels(slices.Clone(a))
	if !ok1 || !ok2 || reflect.ValueOf(m1).UnsafePointer() != reflect.ValueOf(m2).UnsafePointer() {
		t.Fatalf("same labels: %v %v, not one shared map", m1, m2)
	}
	if want := map[string]string{"app": "backend", "io.kubernetes.pod.namespace": "my-ns"}; !maps.Equal(m1, want) {
		t.Fatalf("labels %v, want %v", m1, want)
	}
	a[0] = "k8s:app=frontend" // the cache kept its own copy of the model
	if m, _ := c.Labels(a); m["app"] != "frontend" {
		t.Fatalf("other labels gave %v", m)
	}
	if m, ok := c.Labels([]string{"reserved:init"}); ok || m != nil {
		t.Fatalf("unresolved identity: %v %v", m, ok)
	}
	for i := range 3 * labelCacheGeneration {
		m, ok := c.Labels([]string{"k8s:app=a" + strconv.Itoa(i)})
		if !ok || m["app"] != "a"+strconv.Itoa(i) {
			t.Fatalf("label set %d: %v", i, m)
		}
	}
	if n := len(c.cur) + len(c.prev); n > 2*labelCacheGeneration {
		t.Fatalf("%d label sets cached, want at most %d", n, 2*labelCacheGeneration)
	}
	var nilCache *IdentityLabelCache
	if m, ok := nilCache.Labels(a); !ok || m["app"] != "frontend" {
		t.Fatalf("nil cache: %v", m)
	}
}
