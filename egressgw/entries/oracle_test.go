package entries

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/statedb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	slimv1 "github.com/cilium/cilium/pkg/k8s/slim/k8s/apis/meta/v1"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/cegp"
	"github.com/egressha/egressha/egressgw/egresspolicy"
	"github.com/egressha/egressha/egressgw/reflectors"
	"github.com/egressha/egressha/egressgw/tables"
)

// Sizes of the oracle test: oracleSeeds random sequences of oracleSteps
// input events each; the controller runs a round after every one to
// oracleBurst events.
const (
	oracleSeeds = 40
	oracleSteps = 400
	oracleBurst = 4
)

// TestControllerMatchesCompute is the oracle test of the incremental
// controller: random sequences of endpoint, EgressGatewayPolicy,
// EgressGateway, CiliumEgressGatewayPolicy and node-label events are
// written into the real input tables (as the reflectors write them), the
// controller's round runs after every burst, and then
// egress-policy-entries must hold exactly egresspolicy.Compute of the tables'
// current contents, and every policy's conditions must be Compute's.
func TestControllerMatchesCompute(t *testing.T) {
	for seed := uint64(1); seed <= oracleSeeds; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			o := newOracle(t, seed)
			for step := 0; step < oracleSteps; {
				for range 1 + o.rnd.IntN(oracleBurst) {
					o.event()
					step++
				}
				o.j.round()
				o.check(t, step)
			}
			if o.entriesSeen == 0 || o.fullRounds == 0 || o.dropSeen == 0 || o.nodeSelectorSeen == 0 {
				t.Fatalf("the random walk exercised too little: %d entries, %d full checks, %d drop entries, %d nodeSelector entries",
					o.entriesSeen, o.fullRounds, o.dropSeen, o.nodeSelectorSeen)
			}
		})
	}
}

const oracleLocalNode = "node-1"

var (
	oracleNodes      = []string{"node-1", "node-2", "node-3"}
	oracleNodeIPs    = map[string]string{"node-1": "192.168.0.1", "node-2": "192.168.0.2", "node-3": "192.168.0.3"}
	oracleGateways   = []string{"gw-a", "gw-b", "gw-c"}
	oraclePolicies   = []string{"pol-a", "pol-b", "pol-c", "pol-d"}
	oracleCEGPs      = []string{"cegp-a", "cegp-b"}
	oracleNamespaces = []string{"ns-a", "ns-b"}
	oracleApps       = []string{"web", "db", "batch"}
	oracleCIDRs      = []string{"0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "203.0.113.0/24", "203.0.113.128/25", "198.51.100.7/32"}
	oraclePods       = []string{"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"}
)

// oracle holds the controller under test and its input tables.
type oracle struct {
	rnd *rand.Rand
	db  *statedb.DB
	j   *entriesJob

	specs     statedb.RWTable[*tables.PolicySpec]
	policies  statedb.RWTable[*tables.Policy]
	gateways  statedb.RWTable[*tables.EgressGateway]
	endpoints statedb.RWTable[*tables.Endpoint]
	cegps     statedb.RWTable[*tables.CEGP]
	entries   statedb.RWTable[*tables.SourceEntries]
	epWriter  *tables.EndpointWriter
	nodes     *reflectors.NodeLabels
	// nodeLabels are the labels each node has now (the oracle's view).
	nodeLabels map[string]map[string]string

	entriesSeen, fullRounds, dropSeen, nodeSelectorSeen int
}

func newOracle(t *testing.T, seed uint64) *oracle {
	db := statedb.New()
	o := &oracle{rnd: rand.New(rand.NewPCG(seed, seed*104729)), db: db, nodeLabels: map[string]map[string]string{}}
	var err error
	must := func(e error) {
		if e != nil && err == nil {
			err = e
		}
	}
	o.policies, err = tables.NewPoliciesTable(db)
	var e error
	o.specs, e = tables.NewPolicySpecsTable(db)
	must(e)
	o.gateways, e = tables.NewEgressGatewaysTable(db)
	must(e)
	o.endpoints, e = tables.NewEndpointsTable(db)
	must(e)
	o.cegps, e = tables.NewCEGPsTable(db)
	must(e)
	o.entries, e = tables.NewPolicyEntriesTable(db)
	must(e)
	if err != nil {
		t.Fatal(err)
	}
	o.epWriter = tables.NewEndpointWriter(db, o.endpoints)
	o.nodes = reflectors.NewNodeLabels(nil, nil)
	p := desiredEntriesParams{
		Log: slog.New(slog.DiscardHandler), DB: db,
		Specs: o.specs, Policies: o.policies, Gateways: o.gateways, Endpoints: o.endpoints, CEGPs: o.cegps,
		Nodes: o.nodes, Entries: o.entries,
		// This node serves the CEGP entries the operator gave it, with
		// one fixed egress IP (the agent asks netlink).
		CEGPLocal: &CEGPLocal{NodeName: func() string { return oracleLocalNode },
			Resolve: func(cegp.GatewayEntry) (netip.Addr, error) { return netip.MustParseAddr("172.18.0.1"), nil }},
	}
	o.j = newEntriesJob(p, func(statedb.WriteTxn) {})
	if err := o.j.subscribe(); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o *oracle) pick(xs []string) string { return xs[o.rnd.IntN(len(xs))] }
func (o *oracle) chance(p float64) bool   { return o.rnd.Float64() < p }

// event writes one random change into the inputs.
func (o *oracle) event() {
	switch n := o.rnd.IntN(100); {
	case n < 40:
		o.endpointEvent()
	case n < 58:
		o.policyEvent()
	case n < 75:
		o.gatewayEvent()
	case n < 88:
		o.cegpEvent()
	default:
		o.nodeEvent()
	}
}

func (o *oracle) labels() map[string]string {
	return map[string]string{"app": o.pick(oracleApps)}
}

// endpointEvent sets or deletes the endpoints of one source. Sources share
// a small pool of IPs, so several sources claim one IP at times and the
// endpoint writer picks the winner, as it does in the agent.
func (o *oracle) endpointEvent() {
	pod := o.pick(oraclePods)
	ns := o.pick(oracleNamespaces)
	local := o.chance(0.3)
	source := tables.CiliumEndpointSource(ns, pod)
	if local {
		source = tables.LocalEndpointSource(uint16(o.rnd.IntN(4)), 1)
	}
	var rows []*tables.Endpoint
	if !o.chance(0.25) {
		node := o.pick(oracleNodes)
		lbls := o.labels()
		lbls[egresspolicy.PodNamespaceLabel] = ns
		ip := netip.AddrFrom4([4]byte{10, 244, 0, byte(1 + o.rnd.IntN(10))})
		if o.chance(0.05) {
			ip = netip.MustParseAddr("fd00::1")
		}
		ep := &tables.Endpoint{
			Endpoint: egresspolicy.Endpoint{IP: ip, Namespace: ns, Node: oracleNodeIPs[node], Labels: lbls, UID: fmt.Sprintf("uid-%s-%s-%d", ns, pod, o.rnd.IntN(3))},
			Name:     pod, Origin: tables.OriginCiliumEndpoint,
		}
		if local {
			ep.Origin, ep.Node = tables.OriginLocal, oracleLocalNode
		}
		rows = append(rows, ep)
	}
	o.epWriter.Update(func(t *tables.EndpointTxn) { t.Set(source, rows...) })
}

func (o *oracle) cidrs(max int) []string {
	n := 1 + o.rnd.IntN(max)
	out := []string{}
	for range n {
		c := o.pick(oracleCIDRs)
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// policyEvent adds, changes or deletes an EgressGatewayPolicy as the
// reflector does.
func (o *oracle) policyEvent() {
	name := o.pick(oraclePolicies)
	wtxn := o.db.WriteTxn(o.specs)
	defer wtxn.Commit()
	old, _, exists := o.specs.Get(wtxn, tables.PolicySpecNameIndex.Query(name))
	if exists && o.chance(0.2) {
		o.specs.Delete(wtxn, old)
		return
	}
	obj := &v1alpha1.EgressGatewayPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.EgressGatewayPolicySpec{
			EgressGatewayName: o.pick(oracleGateways),
		},
	}
	for _, c := range o.cidrs(3) {
		obj.Spec.DestinationCIDRs = append(obj.Spec.DestinationCIDRs, v1alpha1.IPv4CIDR(c))
	}
	if o.chance(0.3) {
		for _, c := range o.cidrs(2) {
			obj.Spec.ExcludedCIDRs = append(obj.Spec.ExcludedCIDRs, v1alpha1.IPv4CIDR(c))
		}
	}
	for range 1 + o.rnd.IntN(2) {
		ml := map[string]string{}
		if o.chance(0.8) {
			ml["app"] = o.pick(oracleApps)
		}
		if o.chance(0.5) {
			ml[egresspolicy.PodNamespaceLabel] = o.pick(oracleNamespaces)
		}
		obj.Spec.Selectors = append(obj.Spec.Selectors, v1alpha1.EgressGatewayPolicySelector{
			PodSelector: &metav1.LabelSelector{MatchLabels: ml},
		})
	}
	o.specs.Insert(wtxn, tables.NewPolicySpec(obj))
}

// gatewayEvent adds, changes or deletes an EgressGateway with a status
// as the operator writes it.
func (o *oracle) gatewayEvent() {
	name := o.pick(oracleGateways)
	wtxn := o.db.WriteTxn(o.gateways)
	defer wtxn.Commit()
	if old, _, ok := o.gateways.Get(wtxn, tables.EgressGatewayByName(name)); ok && o.chance(0.15) {
		o.gateways.Delete(wtxn, old)
		return
	}
	obj := &v1alpha1.EgressGateway{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.EgressGatewaySpec{
			NodeSelector: map[string]string{"egress": "true"},
			SourceIP: v1alpha1.SourceIP{Mode: v1alpha1.SourceIPModePrimaryIP,
				PrimaryIPFromEgressGatewayNodeInterface: &v1alpha1.PrimaryIPFromEgressGatewayNodeInterface{InterfaceName: "eth1"}},
		},
	}
	if o.chance(0.4) {
		obj.Spec.SourceIP = v1alpha1.SourceIP{Mode: v1alpha1.SourceIPModeVirtualIP,
			VirtualIPAddress: &v1alpha1.VirtualIPAddress{IP: "203.0.113.50"}}
	}
	if !o.chance(0.25) {
		node := o.pick(oracleNodes)
		obj.Status.ActiveNodeName = node
		obj.Status.ActiveNodeInternalIP = oracleNodeIPs[node]
		if !o.chance(0.1) {
			obj.Status.EgressIP = fmt.Sprintf("203.0.113.%d", 1+o.rnd.IntN(3))
		}
	}
	o.gateways.Insert(wtxn, tables.NewEgressGateway(obj))
}

func slimSel(kv ...string) *slimv1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &slimv1.LabelSelector{MatchLabels: m}
}

// cegpEvent adds, changes or deletes a CiliumEgressGatewayPolicy with an
// operator decision in its annotation; some selectors have a nodeSelector.
func (o *oracle) cegpEvent() {
	name := o.pick(oracleCEGPs)
	wtxn := o.db.WriteTxn(o.cegps)
	defer wtxn.Commit()
	if old, _, ok := o.cegps.Get(wtxn, tables.CEGPNameIndex.Query(name)); ok && o.chance(0.15) {
		o.cegps.Delete(wtxn, old)
		return
	}
	obj := &ciliumv2.CiliumEgressGatewayPolicy{}
	obj.Name = name
	for _, c := range o.cidrs(2) {
		obj.Spec.DestinationCIDRs = append(obj.Spec.DestinationCIDRs, ciliumv2.CIDR(c))
	}
	if o.chance(0.3) {
		obj.Spec.ExcludedCIDRs = []ciliumv2.CIDR{ciliumv2.CIDR(o.pick(oracleCIDRs))}
	}
	rule := ciliumv2.EgressRule{PodSelector: slimSel("app", o.pick(oracleApps))}
	if o.chance(0.6) {
		rule.NodeSelector = slimSel("zone", o.pick([]string{"z1", "z2"}))
	}
	obj.Spec.Selectors = []ciliumv2.EgressRule{rule}
	n := 1 + o.rnd.IntN(2)
	var sels []cegp.EntrySelection
	for i := range n {
		obj.Spec.EgressGateways = append(obj.Spec.EgressGateways, ciliumv2.EgressGateway{NodeSelector: slimSel("egress", "true"), Interface: "eth1"})
		s := cegp.EntrySelection{Index: i}
		if o.chance(0.8) {
			node := o.pick(oracleNodes)
			s.Node, s.InternalIP = node, oracleNodeIPs[node]
		} else {
			s.Reason = cegp.ReasonNoEligibleNode
		}
		sels = append(sels, s)
	}
	if o.chance(0.9) {
		obj.Annotations = map[string]string{cegp.Annotation: cegp.Encode(sels)}
	}
	o.cegps.Insert(wtxn, tables.NewCEGP(obj))
}

// nodeEvent changes the labels of one node, as a CiliumNode update does.
func (o *oracle) nodeEvent() {
	node := o.pick(oracleNodes)
	var lbls map[string]string
	if !o.chance(0.15) {
		lbls = map[string]string{"zone": o.pick([]string{"z1", "z2", "z3"})}
	}
	keys := []string{oracleNodeIPs[node]}
	if lbls == nil {
		keys = nil
		delete(o.nodeLabels, oracleNodeIPs[node])
	} else {
		o.nodeLabels[oracleNodeIPs[node]] = lbls
	}
	o.nodes.SetNode(node, keys, lbls)
}

// check compares egress-policy-entries and the conditions in
// egress-policies with egresspolicy.Compute over the tables' contents.
func (o *oracle) check(t *testing.T, step int) {
	t.Helper()
	txn := o.db.ReadTxn()

	// The inputs, converted from the final state independently of the
	// controller: policies in name order, then CEGPs in name order with
	// the spread values of this node; gateways from their status;
	// endpoints with the labels of their node.
	var pols []egresspolicy.Policy
	specRows := statedb.Collect(o.specs.All(txn))
	slices.SortFunc(specRows, func(a, b *tables.PolicySpec) int { return strings.Compare(a.Name, b.Name) })
	for _, r := range specRows {
		pols = append(pols, r.Policy)
	}
	cegpRows := statedb.Collect(o.cegps.All(txn))
	slices.SortFunc(cegpRows, func(a, b *tables.CEGP) int { return strings.Compare(a.Name, b.Name) })
	for _, r := range cegpRows {
		p := r.Policy
		p.Spread, _ = cegp.Values(r.Selection, r.Entries, oracleLocalNode, o.j.CEGPLocal.Resolve)
		pols = append(pols, p)
	}
	gws := map[string]egresspolicy.Gateway{}
	for g := range o.gateways.All(txn) {
		gws[g.Name], _ = egresspolicy.GatewayFromObject(g.Object)
	}
	var eps []egresspolicy.Endpoint
	for e := range o.endpoints.All(txn) {
		ep := e.Endpoint
		if e.Origin == tables.OriginLocal {
			ep.NodeLabels = nil // this node's labels: the test sets none
		} else {
			ep.NodeLabels = o.nodeLabels[ep.Node]
		}
		eps = append(eps, ep)
	}
	want, conds := egresspolicy.Compute(pols, gws, eps)

	// One row per source IP with at least one target, its targets sorted
	// by destination with unique destinations; expanded, the rows are
	// Compute's entries (in key order, since rows come in IP order).
	var got []egresspolicy.Entry
	for row := range o.entries.All(txn) {
		if len(row.Targets) == 0 {
			t.Fatalf("step %d: row of %s without targets", step, row.Source)
		}
		for i := 1; i < len(row.Targets); i++ {
			if c := row.Targets[i-1].Dest.Addr().Compare(row.Targets[i].Dest.Addr()); c > 0 ||
				(c == 0 && row.Targets[i-1].Dest.Bits() >= row.Targets[i].Dest.Bits()) {
				t.Fatalf("step %d: targets of %s not sorted or not unique: %v", step, row.Source, row.Targets)
			}
		}
		got = slices.AppendSeq(got, row.Entries())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("step %d: egress-policy-entries differ from egresspolicy.Compute:\ncontroller:\n%s\nCompute:\n%s",
			step, egresspolicy.FormatTable(got), egresspolicy.FormatTable(want))
	}
	// egress-policies holds exactly the policies, each with Compute's
	// conditions.
	if n := o.policies.NumObjects(txn); n != len(specRows) {
		t.Fatalf("step %d: egress-policies has %d rows for %d policies", step, n, len(specRows))
	}
	for _, s := range specRows {
		r, _, ok := o.policies.Get(txn, tables.PolicyByName(s.Name))
		if !ok || r.Object != s.Object {
			t.Fatalf("step %d: egress-policies row of %s is not its current spec", step, s.Name)
		}
		if !slices.Equal(r.Conditions, conds[r.Name]) {
			t.Fatalf("step %d: conditions of %s:\ncontroller: %+v\nCompute:    %+v", step, r.Name, r.Conditions, conds[r.Name])
		}
	}

	o.fullRounds++
	o.entriesSeen += len(got)
	for _, e := range got {
		if e.Value.IsDrop() {
			o.dropSeen++
		}
	}
	for _, p := range pols {
		if len(p.NodeSelectors) > 0 {
			for _, e := range got {
				if e.Policy == p.Name {
					o.nodeSelectorSeen++
				}
			}
		}
	}
}
