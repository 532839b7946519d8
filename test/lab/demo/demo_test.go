package demo

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/egressha/egressha/test/lab/cluster"
)

// The manifests agree with each other and with the lab: the policy names
// the gateways, selects the demo's pod, and the VIP is VIP, on the lab's
// public network.
func TestManifests(t *testing.T) {
	type object struct {
		Kind     string
		Metadata struct{ Name string }
		Spec     struct {
			EgressGatewayName string `json:"egressGatewayName"`
			SourceIP          struct {
				Mode             string
				VirtualIPAddress struct {
					IP         string
					Interfaces []string
				} `json:"virtualIPAddress"`
			} `json:"sourceIP"`
			Selectors []struct {
				PodSelector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				} `json:"podSelector"`
			}
		}
	}
	parse := func(name, text string) object {
		t.Helper()
		var o object
		if err := yaml.Unmarshal([]byte(text), &o); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return o
	}
	basic, vip, policy := parse("basic.yaml", BasicGateway), parse("vip.yaml", VIPGateway), parse("policy.yaml", Policy)
	for name, o := range map[string]object{"basic.yaml": basic, "vip.yaml": vip} {
		if o.Kind != "EgressGateway" || o.Metadata.Name != GatewayName {
			t.Errorf("%s: %s %q, want EgressGateway %q", name, o.Kind, o.Metadata.Name, GatewayName)
		}
	}
	if basic.Spec.SourceIP.Mode != "PrimaryIPFromEgressGatewayNodeInterface" {
		t.Errorf("basic.yaml: mode %q", basic.Spec.SourceIP.Mode)
	}
	v := vip.Spec.SourceIP
	if v.Mode != "VirtualIPAddress" || v.VirtualIPAddress.IP != VIP.String() || strings.Join(v.VirtualIPAddress.Interfaces, ",") != "eth1" {
		t.Errorf("vip.yaml: %+v, want mode VirtualIPAddress, ip %s on eth1", v, VIP)
	}
	if !cluster.EchoAddr.Masked().Contains(VIP) {
		t.Errorf("VIP %s is not on the lab's public network %s", VIP, cluster.EchoAddr.Masked())
	}
	if policy.Kind != "EgressGatewayPolicy" || policy.Spec.EgressGatewayName != GatewayName || len(policy.Spec.Selectors) != 1 {
		t.Fatalf("policy.yaml: %+v", policy)
	}
	want := map[string]string{"app": "backend", "io.kubernetes.pod.namespace": Namespace}
	if got := policy.Spec.Selectors[0].PodSelector.MatchLabels; len(got) != len(want) || got["app"] != want["app"] ||
		got["io.kubernetes.pod.namespace"] != want["io.kubernetes.pod.namespace"] {
		t.Errorf("policy.yaml selects %v, want %v", got, want)
	}
}
