package egresspolicy

import (
	"fmt"
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	benchEndpoints = 100_000
	benchPolicies  = 10
	benchDests     = 4
)

// benchInput: 10 policies over 3 gateways, each with 4 destination CIDRs;
// policy i selects app=app-i (even i: in namespaces labelled tier=prod
// through a namespaceSelector; odd i: anywhere). 100,000 endpoints with
// typical identity labels, app-0 to app-9 round robin, 50 namespaces of
// which half are tier=prod. So every selected endpoint has 4 entries.
func benchInput(b *testing.B) ([]Policy, map[string]Gateway, []Endpoint) {
	gws := map[string]Gateway{}
	for g := range 3 {
		name := fmt.Sprintf("gw-%d", g)
		gws[name] = Gateway{Name: name, ActiveNode: fmt.Sprintf("egress-%d", g),
			GatewayIP: netip.AddrFrom4([4]byte{192, 168, 0, byte(21 + g)}), EgressIP: netip.AddrFrom4([4]byte{172, 18, 18, byte(21 + g)})}
	}
	policies := make([]Policy, benchPolicies)
	for i := range policies {
		var dests []netip.Prefix
		for d := range benchDests {
			dests = append(dests, netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(100 + i), byte(d), 0, 0}), 16))
		}
		var ns *metav1.LabelSelector
		if i%2 == 0 {
			ns = match("tier", "prod")
		}
		policies[i] = Policy{
			Name:         fmt.Sprintf("policy-%02d", i),
			Gateway:      fmt.Sprintf("gw-%d", i%3),
			Destinations: dests,
			Selectors:    []Selector{sel(b, match("app", fmt.Sprintf("app-%d", i)), ns)},
		}
	}
	endpoints := make([]Endpoint, benchEndpoints)
	for i := range endpoints {
		// Every other namespace is tier=prod, and app-i with an even i only
		// lives in even namespaces (i%50 and i%10 have the same parity), so
		// the even policies select all of their pods too.
		ns := fmt.Sprintf("ns-%02d", i%50)
		labels := map[string]string{
			"app":                                 fmt.Sprintf("app-%d", i%10),
			"pod-template-hash":                   fmt.Sprintf("%x", i%977),
			PodNamespaceLabel:                     ns,
			"io.cilium.k8s.policy.cluster":        "default",
			"io.cilium.k8s.policy.serviceaccount": "default",
			NamespaceLabelPrefix + "kubernetes.io/metadata.name": ns,
		}
		if (i%50)%2 == 0 {
			labels[NamespaceLabelPrefix+"tier"] = "prod"
		}
		endpoints[i] = Endpoint{
			IP:        netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			Namespace: ns,
			Labels:    labels,
			Node:      fmt.Sprintf("worker-%d", i%500),
		}
	}
	return policies, gws, endpoints
}

// BenchmarkCompute100kEndpoints is the full recomputation: 100,000
// endpoints × 4 destination CIDRs (400,000 entries), 10 policies.
func BenchmarkCompute100kEndpoints(b *testing.B) {
	policies, gws, endpoints := benchInput(b)
	entries, _ := Compute(policies, gws, endpoints)
	if len(entries) != benchEndpoints*benchDests {
		b.Fatalf("%d entries, want %d", len(entries), benchEndpoints*benchDests)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		Compute(policies, gws, endpoints)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(entries)), "ns/entry")
}

// BenchmarkForEndpoint is the incremental path: the entries of one added
// endpoint against the same 10 policies.
func BenchmarkForEndpoint(b *testing.B) {
	policies, gws, endpoints := benchInput(b)
	ep := endpoints[12345]
	ep.IP = netip.MustParseAddr("10.250.0.1")
	if n := len(ForEndpoint(policies, gws, ep)); n != benchDests {
		b.Fatalf("%d entries, want %d", n, benchDests)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		ForEndpoint(policies, gws, ep)
	}
}
