package datapath

import (
	"strings"
	"testing"

	"github.com/cilium/cilium/pkg/kpr"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/internal/testcells"
)

func TestCheckPreconditions(t *testing.T) {
	dc, k := testcells.GoodDaemonConfig()
	if err := CheckPreconditions(dc, k); err != nil {
		t.Fatalf("a supported configuration was refused: %v", err)
	}

	cases := []struct {
		name   string
		mutate func(*option.DaemonConfig, *kpr.KPRConfig)
		want   string
	}{
		{"cilium egress gateway on", func(d *option.DaemonConfig, _ *kpr.KPRConfig) { d.EnableEgressGateway = true }, "enable-egress-gateway=true"},
		{"no ipv4 masquerade", func(d *option.DaemonConfig, _ *kpr.KPRConfig) { d.EnableIPv4Masquerade = false }, "enable-ipv4-masquerade=true"},
		{"iptables masquerade", func(d *option.DaemonConfig, _ *kpr.KPRConfig) { d.EnableBPFMasquerade = false }, "enable-bpf-masquerade=true"},
		{"no kpr", func(_ *option.DaemonConfig, k *kpr.KPRConfig) {
			k.KubeProxyReplacement = "false"
			k.EnableNodePort = false
		}, "kube-proxy-replacement=true"},
		{"kvstore identities", func(d *option.DaemonConfig, _ *kpr.KPRConfig) {
			d.IdentityAllocationMode = option.IdentityAllocationModeKVstore
		}, `identity allocation mode is "kvstore"`},
		{"endpoint slices", func(d *option.DaemonConfig, _ *kpr.KPRConfig) { d.EnableCiliumEndpointSlice = true }, "enable-cilium-endpoint-slice=false"},
		{"ipv6 only", func(d *option.DaemonConfig, _ *kpr.KPRConfig) { d.EnableIPv4 = false }, "enable-ipv4=true"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dc, k := testcells.GoodDaemonConfig()
			tc.mutate(dc, &k)
			err := CheckPreconditions(dc, k)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error naming %q, got %v", tc.want, err)
			}
		})
	}

	// Every problem is reported at once, so an operator fixes them in one go.
	dc, k = testcells.GoodDaemonConfig()
	dc.EnableEgressGateway, dc.EnableBPFMasquerade = true, false
	err := CheckPreconditions(dc, k)
	if err == nil || !strings.Contains(err.Error(), "enable-egress-gateway") || !strings.Contains(err.Error(), "enable-bpf-masquerade") {
		t.Fatalf("want both problems reported, got %v", err)
	}
}
