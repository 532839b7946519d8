package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/cilium/pkg/kpr"
	"github.com/cilium/cilium/pkg/option"
)

// CheckPreconditions returns every reason Cilium's configuration
// cannot carry egressha's datapath, each with the setting that fixes it.
// The egress gateway BPF code SNATs only with BPF masquerade, which needs
// NodePort; Cilium's own egress gateway manager deletes every map entry it
// did not write; endpoint identities must be CRD-backed CiliumEndpoints.
func CheckPreconditions(dc *option.DaemonConfig, kprCfg kpr.KPRConfig) error {
	var errs []error
	if dc.EnableEgressGateway {
		errs = append(errs, errors.New("enable-egress-gateway=true (Helm egressGateway.enabled): Cilium's own egress gateway "+
			"deletes every egress map entry it did not write, so it cannot run beside egressha; set it to false"))
	}
	if !dc.EnableIPv4Masquerade {
		errs = append(errs, errors.New("IPv4 masquerading is off; set enable-ipv4-masquerade=true (Helm enableIPv4Masquerade)"))
	}
	if !dc.EnableBPFMasquerade {
		errs = append(errs, errors.New("BPF masquerading is off; set enable-bpf-masquerade=true (Helm bpf.masquerade)"))
	}
	if kprCfg.KubeProxyReplacement != option.KubeProxyReplacementTrue || !kprCfg.EnableNodePort {
		errs = append(errs, errors.New("kube-proxy replacement is off; set kube-proxy-replacement=true (Helm kubeProxyReplacement)"))
	}
	if dc.IdentityAllocationMode != option.IdentityAllocationModeCRD {
		errs = append(errs, fmt.Errorf("identity allocation mode is %q; egressha needs identity-allocation-mode=crd", dc.IdentityAllocationMode))
	}
	if dc.EnableCiliumEndpointSlice {
		errs = append(errs, errors.New("CiliumEndpointSlice is enabled; egressha reads CiliumEndpoints, set enable-cilium-endpoint-slice=false"))
	}
	if !dc.EnableIPv4 {
		errs = append(errs, errors.New("IPv4 is disabled; egressha programs IPv4 egress only, set enable-ipv4=true"))
	}
	return errors.Join(errs...)
}
