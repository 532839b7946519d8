// Package tables holds the agent's statedb tables of egressha:
// egress-gateways, egress-policies, egress-endpoints and the desired map
// entries, egress-policy-entries. Rows are plain values with TableHeader/TableRow so
// `cilium-dbg shell -- db/show <table>` prints them. Filling the tables
// (reflectors) and acting on them (heartbeat, reconcilers) live elsewhere.
package tables

import (
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/egresspolicy"
)

// EgressGatewaysTableName is the name of the table of EgressGateways.
const EgressGatewaysTableName = "egress-gateways"

// EgressGateway is one EgressGateway as the agent sees it: the fields the
// agent acts on, parsed once, plus the object itself.
//
// Object is kept so that pure functions shared with the operator (e.g.
// heartbeat.BuildReport) take the API type and need no conversion; the
// other fields are derived from it by NewEgressGateway and exist for
// indexes, `db/show` and typed access. Rows and Object are immutable:
// never modify a row or its Object after it was inserted.
type EgressGateway struct {
	Name string
	Mode v1alpha1.SourceIPMode
	// NodeSelector is spec.nodeSelector (matchLabels semantics).
	NodeSelector map[string]string
	// InterfaceName is the interface of basic mode; empty in VIP mode.
	InterfaceName string
	// VirtualIP is the VIP of VirtualIPAddress mode; invalid otherwise.
	VirtualIP netip.Addr
	// VirtualIPInterfaces are where the VIP is announced (empty = all
	// suitable interfaces).
	VirtualIPInterfaces []string

	// ActiveNodeName is status.activeNodeName: the node the operator
	// elected; empty when none is eligible.
	ActiveNodeName string
	// EgressIP is status.egressIP; invalid when unset.
	EgressIP netip.Addr

	// MapValue is what the egress map needs of the status
	// (egresspolicy.GatewayFromObject), converted here once; MapValueError is
	// what the conversion could not use.
	MapValue      egresspolicy.Gateway
	MapValueError string

	// Object is the EgressGateway as received from the API server.
	Object *v1alpha1.EgressGateway
}

// NewEgressGateway builds the row of gw. Unparsable addresses (the CRD
// validates them) are left invalid.
func NewEgressGateway(gw *v1alpha1.EgressGateway) *EgressGateway {
	r := &EgressGateway{
		Name:           gw.Name,
		Mode:           gw.Spec.SourceIP.Mode,
		NodeSelector:   gw.Spec.NodeSelector,
		ActiveNodeName: gw.Status.ActiveNodeName,
		Object:         gw,
	}
	if p := gw.Spec.SourceIP.PrimaryIPFromEgressGatewayNodeInterface; p != nil {
		r.InterfaceName = string(p.InterfaceName)
	}
	if v := gw.Spec.SourceIP.VirtualIPAddress; v != nil {
		r.VirtualIP, _ = netip.ParseAddr(string(v.IP))
		for _, i := range v.Interfaces {
			r.VirtualIPInterfaces = append(r.VirtualIPInterfaces, string(i))
		}
	}
	r.EgressIP, _ = netip.ParseAddr(gw.Status.EgressIP)
	var err error
	if r.MapValue, err = egresspolicy.GatewayFromObject(gw); err != nil {
		r.MapValueError = err.Error()
	}
	return r
}

// TableHeader implements statedb.TableWritable.
func (*EgressGateway) TableHeader() []string {
	return []string{"Name", "Mode", "NodeSelector", "Interface", "VirtualIP", "ActiveNode", "EgressIP"}
}

// TableRow implements statedb.TableWritable.
func (g *EgressGateway) TableRow() []string {
	sel := make([]string, 0, len(g.NodeSelector))
	for _, k := range slices.Sorted(maps.Keys(g.NodeSelector)) {
		sel = append(sel, k+"="+g.NodeSelector[k])
	}
	iface := g.InterfaceName
	if g.Mode == v1alpha1.SourceIPModeVirtualIP {
		iface = strings.Join(g.VirtualIPInterfaces, ",")
	}
	return []string{
		g.Name,
		shortMode(g.Mode),
		strings.Join(sel, ","),
		orNone(iface),
		orNone(addrString(g.VirtualIP)),
		orNone(g.ActiveNodeName),
		orNone(addrString(g.EgressIP)),
	}
}

// shortMode keeps `db/show` narrow: the long mode names say the same.
func shortMode(m v1alpha1.SourceIPMode) string {
	switch m {
	case v1alpha1.SourceIPModePrimaryIP:
		return "PrimaryIP"
	case v1alpha1.SourceIPModeVirtualIP:
		return "VirtualIP"
	}
	return string(m)
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// EgressGatewayNameIndex is the primary index: the gateway's name.
var EgressGatewayNameIndex = statedb.Index[*EgressGateway, string]{
	Name: "name",
	FromObject: func(g *EgressGateway) index.KeySet {
		return index.NewKeySet(index.String(g.Name))
	},
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// EgressGatewayByName queries a gateway by name.
func EgressGatewayByName(name string) statedb.Query[*EgressGateway] {
	return EgressGatewayNameIndex.Query(name)
}

// NewEgressGatewaysTable creates the egress-gateways table and registers
// it with db.
func NewEgressGatewaysTable(db *statedb.DB) (statedb.RWTable[*EgressGateway], error) {
	tbl, err := statedb.NewTable(EgressGatewaysTableName, EgressGatewayNameIndex)
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}

// Objects returns the API objects of the rows, for pure functions that take
// the API type.
func Objects(rows []*EgressGateway) []*v1alpha1.EgressGateway {
	out := make([]*v1alpha1.EgressGateway, len(rows))
	for i, r := range rows {
		out[i] = r.Object
	}
	return out
}
