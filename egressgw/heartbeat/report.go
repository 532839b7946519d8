package heartbeat

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
)

// ReasonUnsupportedMode says the gateway's sourceIP.mode is not one this
// agent knows; the CRD's enum makes it an agent older than the CRD.
const ReasonUnsupportedMode = "UnsupportedSourceIPMode"

// Device is what BuildReport needs to know about one network interface of
// the node. The agent fills it from Cilium's devices table; tests write it
// by hand.
type Device struct {
	Name string
	// Up is true when the interface can pass traffic: administratively up
	// and not operationally down.
	Up bool
	// OperStatus is the kernel's operational state ("up", "down",
	// "lower-layer-down", ...), only used to explain Up=false.
	OperStatus string
	// Selected is true when the interface is one of Cilium's devices
	// (bpf_host is attached to it), so egress traffic leaving through it is
	// SNATed by the egress gateway datapath.
	Selected bool
	// NotSelectedReason is Cilium's explanation when Selected is false.
	NotSelectedReason string
	// IPv4 holds the interface's global IPv4 addresses, primary
	// (non-secondary) addresses first, each group in kernel order. IPv4[0]
	// is the address the node SNATs to in basic mode.
	IPv4 []netip.Addr
}

// IsCandidate reports whether a node with nodeLabels is a candidate of gw
// (v1alpha1.NodeSelectorMatches).
func IsCandidate(nodeLabels map[string]string, gw *v1alpha1.EgressGateway) bool {
	return gw != nil && v1alpha1.NodeSelectorMatches(gw.Spec.NodeSelector, nodeLabels)
}

// VIPStatus is what the node's VIP responder (vipd) says about one
// VirtualIPAddress-mode gateway the node is a candidate of.
type VIPStatus struct {
	// Ready is true when an ARP responder works on every interface of the
	// gateway, so the node could announce the VIP the moment it is elected.
	Ready bool
	// Message says why not Ready, or, on the active node, why it does not
	// announce (yet).
	Message    string
	Announcing bool
	Duplicate  string
}

// LocalFact is what this node knows of one gateway, from the gateway's spec,
// the node's labels and its devices: whether the node is a candidate, and
// for basic mode the interface and what its checks found. It holds no
// state of the VIP controller (egress-virtual-ips has that).
type LocalFact struct {
	Gateway   string
	Mode      v1alpha1.SourceIPMode
	Candidate bool
	// Interface is the interface of basic mode (empty in other modes).
	Interface string
	// VIP is the virtual IP of VirtualIPAddress mode as the spec spells it
	// ("(none)" when missing; empty in other modes).
	VIP string
	// Basic is the result of the basic-mode checks of Interface: Ready with
	// this node's egress address, or the first failed check. It is
	// computed for every basic-mode gateway, candidate or not; zero in
	// other modes.
	Basic GatewayReport
}

// LocalEgressIP is this node's own address on the gateway's interface
// (basic mode, interface usable); empty otherwise.
func (f LocalFact) LocalEgressIP() string {
	if f.Mode == v1alpha1.SourceIPModePrimaryIP && f.Basic.Ready {
		return f.Basic.EgressIP
	}
	return ""
}

// LocalFacts returns the facts of every gateway, in the order given. Pure.
func LocalFacts(nodeLabels map[string]string, gateways []*v1alpha1.EgressGateway, devices []Device) []LocalFact {
	byName := devicesByName(devices)
	out := make([]LocalFact, 0, len(gateways))
	for _, gw := range gateways {
		f := LocalFact{Gateway: gw.Name, Mode: gw.Spec.SourceIP.Mode, Candidate: IsCandidate(nodeLabels, gw)}
		switch f.Mode {
		case v1alpha1.SourceIPModePrimaryIP:
			if p := gw.Spec.SourceIP.PrimaryIPFromEgressGatewayNodeInterface; p != nil {
				f.Interface = string(p.InterfaceName)
			}
			f.Basic = interfaceReport(f.Interface, byName)
		case v1alpha1.SourceIPModeVirtualIP:
			f.VIP = "(none)"
			if v := gw.Spec.SourceIP.VirtualIPAddress; v != nil {
				f.VIP = string(v.IP)
			}
		}
		out = append(out, f)
	}
	return out
}

// BuildReport resolves, for every gateway whose nodeSelector matches
// nodeLabels, whether this node can carry the gateway's traffic now and
// with which source address (ReportFromFacts of LocalFacts). Pure.
func BuildReport(nodeLabels map[string]string, gateways []*v1alpha1.EgressGateway, devices []Device, vips map[string]VIPStatus) Report {
	return ReportFromFacts(LocalFacts(nodeLabels, gateways, devices), vips)
}

// ReportFromFacts is the report of the gateways this node is a candidate
// of. Gateways the node is not a candidate of are left out, so an empty
// Report means the node is a candidate of nothing.
//
// Basic mode (PrimaryIPFromEgressGatewayNodeInterface) checks, in order:
// the interface exists, is up, has a global IPv4 address and is one of
// Cilium's devices; the first failed check is the reason. VirtualIPAddress
// mode takes the VIP controller's status from vips (keyed by gateway name);
// a gateway the controller has not reported yet is not ready (fail closed).
//
// ReportFromFacts is pure: it reads only its arguments.
func ReportFromFacts(facts []LocalFact, vips map[string]VIPStatus) Report {
	r := Report{}
	for _, f := range facts {
		if f.Candidate {
			r[f.Gateway] = f.report(vips)
		}
	}
	return r
}

func (f LocalFact) report(vips map[string]VIPStatus) GatewayReport {
	switch f.Mode {
	case v1alpha1.SourceIPModePrimaryIP:
		return f.Basic

	case v1alpha1.SourceIPModeVirtualIP:
		st, ok := vips[f.Gateway]
		if !ok {
			// The responder has not looked at this gateway yet: the
			// operator must not elect a node that could not answer ARP.
			return GatewayReport{
				Reason:  ReasonVirtualIPNotReady,
				Message: fmt.Sprintf("the VIP responder has not set up virtual IP %s on this node yet", f.VIP),
			}
		}
		rep := GatewayReport{Ready: st.Ready, Announcing: st.Announcing, Duplicate: st.Duplicate, Message: st.Message}
		if st.Ready {
			rep.EgressIP = f.VIP
		} else {
			rep.Reason = ReasonVirtualIPNotReady
		}
		return rep

	default:
		return GatewayReport{
			Reason: ReasonUnsupportedMode,
			Message: fmt.Sprintf("sourceIP.mode %q is not supported by this agent (want %s or %s)",
				f.Mode, v1alpha1.SourceIPModePrimaryIP, v1alpha1.SourceIPModeVirtualIP),
		}
	}
}

// interfaceReport applies the basic-mode checks to the interface name.
func interfaceReport(name string, devices map[string]*Device) GatewayReport {
	if name == "" {
		return GatewayReport{
			Reason:  ReasonInterfaceMissing,
			Message: "spec.sourceIP.primaryIPFromEgressGatewayNodeInterface.interfaceName is not set",
		}
	}
	d, ok := devices[name]
	if !ok {
		return GatewayReport{
			Reason: ReasonInterfaceMissing,
			Message: fmt.Sprintf("interface %s does not exist on this node; create it or fix "+
				"spec.sourceIP.primaryIPFromEgressGatewayNodeInterface.interfaceName", name),
		}
	}
	if !d.Up {
		state := d.OperStatus
		if state == "" {
			state = "administratively down"
		} else {
			state = "operational state " + state
		}
		return GatewayReport{
			Reason:  ReasonInterfaceDown,
			Message: fmt.Sprintf("interface %s is down (%s); bring it up", name, state),
		}
	}
	if len(d.IPv4) == 0 {
		return GatewayReport{
			Reason: ReasonNoIPv4Address,
			Message: fmt.Sprintf("interface %s has no global IPv4 address; assign one (its primary IPv4 address "+
				"becomes the egress IP)", name),
		}
	}
	if !d.Selected {
		why := ""
		if d.NotSelectedReason != "" {
			why = " (" + d.NotSelectedReason + ")"
		}
		return GatewayReport{
			Reason: ReasonNotCiliumDevice,
			Message: fmt.Sprintf("interface %s is not one of Cilium's devices%s, so egress traffic would leave it "+
				"without SNAT; add it to --devices (Helm devices)", name, why),
		}
	}
	return GatewayReport{Ready: true, EgressIP: d.IPv4[0].String()}
}

// LocalEgressIPs returns, for every basic-mode gateway whose interface
// this node has with a usable IPv4 address, that address: what this node
// SNATs to if traffic of the gateway leaves through it, whether or not it
// is (still, or already) a candidate. Pure.
func LocalEgressIPs(gateways []*v1alpha1.EgressGateway, devices []Device) map[string]string {
	out := map[string]string{}
	for _, f := range LocalFacts(nil, gateways, devices) {
		if ip := f.LocalEgressIP(); ip != "" {
			out[f.Gateway] = ip
		}
	}
	return out
}

func devicesByName(devices []Device) map[string]*Device {
	byName := make(map[string]*Device, len(devices))
	for i := range devices {
		byName[devices[i].Name] = &devices[i]
	}
	return byName
}

// Candidates returns the sorted names of the gateways in the report.
func (r Report) Candidates() []string {
	return slices.Sorted(maps.Keys(r))
}

// Summary describes the report in one line for logs and health, e.g.
// "egw-a ready (203.0.113.11), egw-b not ready (InterfaceDown)".
func (r Report) Summary() string {
	if len(r) == 0 {
		return "no gateways"
	}
	parts := make([]string, 0, len(r))
	for _, name := range r.Candidates() {
		if g := r[name]; g.Ready {
			parts = append(parts, fmt.Sprintf("%s ready (%s)", name, g.EgressIP))
		} else {
			parts = append(parts, fmt.Sprintf("%s not ready (%s)", name, g.Reason))
		}
	}
	return strings.Join(parts, ", ")
}
