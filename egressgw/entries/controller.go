package entries

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/cegp"
	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/egresspolicy"
	"github.com/egressha/egressha/egressgw/reflectors"
	"github.com/egressha/egressha/egressgw/tables"
)

// desiredEntriesInitializer marks egress-policy-entries initialized once
// the first computation over synced inputs is written.
const desiredEntriesInitializer = "egressha-desired-entries"

type desiredEntriesParams struct {
	cell.In

	Log      *slog.Logger
	DB       *statedb.DB
	JobGroup job.Group
	Enabled  config.Enabled
	Specs    statedb.Table[*tables.PolicySpec]
	// Policies is this controller's output beside the entries: each
	// policy with its conditions.
	Policies  statedb.RWTable[*tables.Policy]
	Gateways  statedb.Table[*tables.EgressGateway]
	Endpoints statedb.Table[*tables.Endpoint]
	CEGPs     statedb.Table[*tables.CEGP]
	// Nodes are the labels of the nodes the endpoints run on, for CEGP
	// selectors with a nodeSelector.
	Nodes *reflectors.NodeLabels
	// CEGPLocal names this node and resolves CEGP egress IPs on it.
	CEGPLocal *CEGPLocal `optional:"true"`
	// LocalGateways give this node's own address per basic-mode gateway
	// (see localEgressIPs); optional so test hives can do without it.
	LocalGateways statedb.Table[*tables.LocalGateway] `optional:"true"`
	// Entries is provided by the map reconciler's cell.
	Entries statedb.RWTable[*tables.SourceEntries]
}

// registerDesiredEntries registers the initializer of egress-policy-entries
// and the job that fills it. The initializer is registered even when
// egressha is disabled and then never marked done: nothing may prune the
// map on the strength of a table that nobody fills.
func registerDesiredEntries(p desiredEntriesParams) {
	wtxn := p.DB.WriteTxn(p.Entries)
	done := p.Entries.RegisterInitializer(wtxn, desiredEntriesInitializer)
	wtxn.Commit()
	if !p.Enabled {
		return
	}
	// egress-policies is initialized once the policies are listed, as
	// before the first computation the controller mirrors them (without
	// conditions).
	wtxn = p.DB.WriteTxn(p.Policies)
	policiesDone := p.Policies.RegisterInitializer(wtxn, "egressha-policies")
	wtxn.Commit()
	j := newEntriesJob(p, done)
	j.policiesDone = policiesDone
	p.JobGroup.Add(job.OneShot("desired-entries", j.run))
}

func newEntriesJob(p desiredEntriesParams, initDone func(statedb.WriteTxn)) *entriesJob {
	return &entriesJob{
		desiredEntriesParams: p,
		initDone:             initDone,
		policiesDone:         func(statedb.WriteTxn) {},
		policies:             map[string]*tables.Policy{},
		gateways:             map[string]egresspolicy.Gateway{},
		fromStatus:           map[string]egresspolicy.Gateway{},
		basic:                map[string]bool{},
		gatewayErrs:          map[string]string{},
		conflicts:            map[netip.Addr][]egresspolicy.Conflict{},
		conflictRefs:         map[egresspolicy.Conflict]int{},
		lastConflict:         map[string]egresspolicy.Condition{},
		cegps:                map[string]*tables.CEGP{},
		cegpErrs:             map[string]string{},
	}
}

// entriesJob keeps egress-policy-entries equal to the union of
// egresspolicy.ForEndpoint over the rows of egress-endpoints, one row per
// source IP holding that endpoint's targets.
//
// It follows its three inputs with change iterators. An endpoint change
// recomputes that endpoint only (its row is found by its IP); a change of
// a policy's spec or of a gateway's map value recomputes every endpoint.
// Either way a row is only written when its targets change, so the
// reconciler never redoes work for an unchanged row, and new values for
// an endpoint (a failover) replace its row in place instead of deleting
// it. The targets come from one egresspolicy.Resolver per set of policies
// and gateways, so endpoints the same policies select share one slice. A change of a node's labels recomputes the endpoints on
// that node only (found by a scan of egress-endpoints), and only when some policy
// has a nodeSelector.
type entriesJob struct {
	desiredEntriesParams
	initDone func(statedb.WriteTxn)
	// policiesDone marks egress-policies initialized (once the specs are).
	policiesDone        func(statedb.WriteTxn)
	policiesInitialized bool

	// The inputs' change iterators (subscribe).
	cegpChanges statedb.ChangeIterator[*tables.CEGP]
	polChanges  statedb.ChangeIterator[*tables.PolicySpec]
	gwChanges   statedb.ChangeIterator[*tables.EgressGateway]
	epChanges   statedb.ChangeIterator[*tables.Endpoint]

	initialized bool
	// policies are the current rows of egress-policies by name; polList
	// their parsed policies, rebuilt when a spec changes.
	policies map[string]*tables.Policy
	polList  []egresspolicy.Policy
	gateways map[string]egresspolicy.Gateway
	// resolver resolves endpoints against polList and gateways; rebuilt
	// with them.
	resolver *egresspolicy.Resolver
	// fromStatus are the gateways as their status says (before
	// localEgressIPs); basic the names of basic-mode gateways; local this
	// node's own egress address per basic-mode gateway.
	fromStatus map[string]egresspolicy.Gateway
	basic      map[string]bool
	local      map[string]string
	// gatewayErrs are the last conversion errors logged, per gateway.
	gatewayErrs map[string]string
	// conflicts are the overlap conflicts of each endpoint (egresspolicy.Resolve);
	// conflictRefs counts how many endpoints report each, so the set the
	// conditions need is known without visiting every endpoint.
	conflicts        map[netip.Addr][]egresspolicy.Conflict
	conflictRefs     map[egresspolicy.Conflict]int
	conflictsChanged bool // the set of conflicts changed since the last conditions
	lastConflict     map[string]egresspolicy.Condition

	// cegps are the rows of egress-cegps by name; cegpValues the spread
	// values last computed for each (they depend on this node's devices);
	// cegpErrs the last resolution errors logged.
	cegps      map[string]*tables.CEGP
	cegpValues map[string][]egresspolicy.Value
	cegpErrs   map[string]string
}

func (j *entriesJob) run(ctx context.Context, health cell.Health) error {
	if err := j.subscribe(); err != nil {
		return err
	}

	// Nothing is computed before every input has synced: an entry computed
	// from a partial view (a policy whose gateway is not listed yet) would
	// be wrong, and the first computation is what marks the table
	// initialized. Meanwhile egress-policies mirrors the policies, without
	// conditions.
	for {
		specsWatch := j.mirrorPolicies()
		txn := j.DB.ReadTxn()
		var pending []string
		var watch <-chan struct{}
		for _, t := range []statedb.TableMeta{j.Specs, j.Gateways, j.Endpoints, j.CEGPs} {
			if ok, w := t.Initialized(txn); !ok {
				pending = append(pending, t.Name())
				watch = w
			}
		}
		if !j.Nodes.Ready() {
			pending = append(pending, "node labels")
			watch = j.Nodes.Changed()
		}
		if len(pending) == 0 {
			break
		}
		health.OK("Waiting for " + strings.Join(pending, ", ") + " to sync")
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
		case <-specsWatch:
		}
	}

	// The egress IP of a CEGP gateway entry served by this node is read
	// from the node's devices; look again now and then, as an address
	// can change without any table changing.
	resolveTicker := time.NewTicker(cegpResolveInterval)
	defer resolveTicker.Stop()
	for {
		w := j.round()
		txn := j.DB.ReadTxn()
		health.OK(fmt.Sprintf("%d of %d endpoints with egress entries, %d policies, %d gateways",
			j.Entries.NumObjects(txn), j.Endpoints.NumObjects(txn), len(j.policies), len(j.gateways)))

		select {
		case <-ctx.Done():
			return nil
		case <-w.policies:
		case <-w.gateways:
		case <-w.endpoints:
		case <-w.cegps:
		case <-j.Nodes.Changed():
		case <-w.local:
		case <-resolveTicker.C:
		}
	}
}

// subscribe starts the change iterators of the inputs.
func (j *entriesJob) subscribe() error {
	wtxn := j.DB.WriteTxn(j.Specs, j.Gateways, j.Endpoints, j.CEGPs)
	defer wtxn.Abort()
	var err error
	if j.cegpChanges, err = j.CEGPs.Changes(wtxn); err != nil {
		return err
	}
	if j.polChanges, err = j.Specs.Changes(wtxn); err != nil {
		return err
	}
	if j.gwChanges, err = j.Gateways.Changes(wtxn); err != nil {
		return err
	}
	if j.epChanges, err = j.Endpoints.Changes(wtxn); err != nil {
		return err
	}
	wtxn.Commit()
	return nil
}

// roundWatch are the channels that signal the inputs of a round changed.
type roundWatch struct {
	policies, gateways, endpoints, cegps, local <-chan struct{}
}

// round brings egress-policy-entries and the policies' conditions up to
// date with every input change since the previous round, in one write
// transaction. The first round computes everything and marks the table
// initialized.
func (j *entriesJob) round() roundWatch {
	var w roundWatch
	wtxn := j.DB.WriteTxn(j.Entries, j.Policies)
	cg, cegpWatch := j.cegpChanges.Next(wtxn)
	w.cegps = cegpWatch
	cegpsChanged := false
	for c := range cg {
		if c.Deleted {
			delete(j.cegps, c.Object.Name)
		} else {
			j.cegps[c.Object.Name] = c.Object
		}
		cegpsChanged = true
	}
	pol, polWatch := j.polChanges.Next(wtxn)
	gw, gwWatch := j.gwChanges.Next(wtxn)
	eps, epWatch := j.epChanges.Next(wtxn)
	w.policies, w.gateways, w.endpoints = polWatch, gwWatch, epWatch

	// A CiliumEgressGatewayPolicy's row changes with its spec or the
	// operator's decision: either can change any of its entries. The
	// spread values are computed before the first computation too.
	valuesChanged := j.refreshCEGPValues()
	var n writeCounts
	full := !j.initialized || valuesChanged || cegpsChanged
	for c := range pol {
		if j.policyChanged(wtxn, c, &n) {
			full = true
		}
	}
	for c := range gw {
		j.gatewayChanged(c)
	}
	if j.LocalGateways != nil {
		facts, watch := j.LocalGateways.AllWatch(wtxn)
		local := map[string]string{}
		for f := range facts {
			if ip := f.LocalEgressIP(); ip != "" {
				local[f.Gateway] = ip
			}
		}
		j.local, w.local = local, watch
	}
	if j.localEgressIPs() {
		full = true
	}
	// Taken before any label is read: a change after this is seen
	// again in the next round.
	nodeKeys := j.Nodes.Take()
	// A full round recomputes every endpoint: the changes are only
	// consumed.
	dirty := map[netip.Addr]*tables.Endpoint{}
	for c := range eps {
		switch {
		case full:
		case c.Deleted:
			dirty[c.Object.IP] = nil
		default:
			dirty[c.Object.IP] = c.Object
		}
	}

	if full {
		j.polList = j.polList[:0]
		for _, name := range slices.Sorted(maps.Keys(j.policies)) {
			j.polList = append(j.polList, j.policies[name].Policy)
		}
		for _, name := range slices.Sorted(maps.Keys(j.cegps)) {
			p := j.cegps[name].Policy
			p.Spread = j.cegpValues[name]
			j.polList = append(j.polList, p)
		}
		j.resolver = egresspolicy.NewResolver(j.polList, j.gateways)
		j.syncAll(wtxn, &n)
	} else {
		// Endpoints on a node whose labels changed; only a policy
		// with a nodeSelector can depend on them. They are found by a
		// scan: an index by node would cost a tree entry per endpoint
		// on every node, for what only such policies need.
		if len(nodeKeys) > 0 && j.anyNodeSelectors() {
			changed := make(map[string]struct{}, len(nodeKeys))
			for _, k := range nodeKeys {
				changed[k] = struct{}{}
			}
			for ep := range j.Endpoints.All(wtxn) {
				if _, ok := changed[ep.Node]; ok {
					if _, ok := dirty[ep.IP]; !ok {
						dirty[ep.IP] = ep
					}
				}
			}
		}
		for ip, ep := range dirty {
			j.syncEndpoint(wtxn, ip, ep, &n)
		}
	}
	j.syncConditions(wtxn, full, &n)

	first := !j.initialized
	if first {
		j.initDone(wtxn)
		j.initialized = true
		n.writes++
	}
	if n.writes > 0 {
		wtxn.Commit()
	} else {
		wtxn.Abort()
	}
	if first {
		j.Log.Info("egressha: desired egress entries computed from synced inputs; the map may now be pruned",
			"endpoints", n.inserted, "policies", len(j.policies), "gateways", len(j.gateways))
	} else if n.inserted+n.updated+n.deleted > 0 {
		j.Log.Debug("egressha: desired egress entries updated (rows are endpoint IPs)", "full", full, "endpoints", len(dirty),
			"inserted", n.inserted, "updated", n.updated, "deleted", n.deleted)
	}
	return w
}

// localEgressIPs sets j.gateways from the gateways' status, except that a
// node that has a basic-mode gateway's interface with an IPv4 address
// programs that address as the egress IP. The datapath SNATs to the egress
// IP of the entry on whichever node a packet leaves, without checking that
// the node is the gateway; during a switch the pods' nodes and the gateway
// nodes update their maps at different moments, so a node holding the
// active node's address would, for some milliseconds, send traffic out
// with another node's source address (the new gateway on a crash, the old
// one on a planned move). With its own address it sends it out correctly.
// So `cilium-dbg bpf egress list` shows, on each node, the address that
// node would use. It reports whether any value changed.
func (j *entriesJob) localEgressIPs() bool {
	changed := len(j.gateways) != len(j.fromStatus)
	next := make(map[string]egresspolicy.Gateway, len(j.fromStatus))
	for name, g := range j.fromStatus {
		if own, ok := j.local[name]; ok && j.basic[name] && g.ActiveNode != "" {
			if ip, err := netip.ParseAddr(own); err == nil && ip.Is4() {
				g.EgressIP = ip
			}
		}
		if old, ok := j.gateways[name]; !ok || old != g {
			changed = true
		}
		next[name] = g
	}
	j.gateways = next
	return changed
}

// cegpResolveInterval is how often the local egress IPs of the CEGP gateway
// entries this node serves are resolved again without any other trigger.
const cegpResolveInterval = 10 * time.Second

// refreshCEGPValues recomputes the spread values of every CEGP from the
// operator's decision and this node's devices, and reports whether any
// changed (or a CEGP came or went).
func (j *entriesJob) refreshCEGPValues() bool {
	changed := len(j.cegpValues) != len(j.cegps)
	next := make(map[string][]egresspolicy.Value, len(j.cegps))
	node, resolve := "", cegp.Resolver(nil)
	if j.CEGPLocal != nil {
		node, resolve = j.CEGPLocal.NodeName(), j.CEGPLocal.Resolve
	}
	for name, row := range j.cegps {
		vals, errs := cegp.Values(row.Selection, row.Entries, node, resolve)
		next[name] = vals
		old, had := j.cegpValues[name]
		if !had || !slices.Equal(old, vals) {
			changed = true
			if had || len(vals) > 0 {
				j.Log.Info("egressha: CiliumEgressGatewayPolicy gateways for this node's entries",
					"policy", name, "values", fmt.Sprint(vals), "decision", fmt.Sprint(row.Selection))
			}
		}
		msg := errors.Join(errs...)
		if text := errString(msg); text != j.cegpErrs[name] {
			if text != "" {
				j.Log.Warn("egressha: this node serves a CiliumEgressGatewayPolicy gateway entry but cannot resolve its egress IP; "+
					"the node drops that traffic (egress IP 0.0.0.0), as Cilium does", "policy", name, "error", text)
			}
			j.cegpErrs[name] = text
		}
		if row.Error != "" && (!had) {
			j.Log.Warn("egressha: CiliumEgressGatewayPolicy is partly unusable; the rest of it is applied",
				"policy", name, "error", row.Error)
		}
	}
	for name := range j.cegpErrs {
		if _, ok := j.cegps[name]; !ok {
			delete(j.cegpErrs, name)
		}
	}
	j.cegpValues = next
	return changed
}

// anyNodeSelectors reports whether a policy selects endpoints by the
// labels of their node.
func (j *entriesJob) anyNodeSelectors() bool {
	for i := range j.polList {
		if len(j.polList[i].NodeSelectors) > 0 {
			return true
		}
	}
	return false
}

type writeCounts struct {
	writes, inserted, updated, deleted int
}

// mirrorPolicies applies the policies' changes to egress-policies before
// the first computation, and marks it initialized once the policies are
// listed. It returns the channel of the next change.
func (j *entriesJob) mirrorPolicies() <-chan struct{} {
	wtxn := j.DB.WriteTxn(j.Policies)
	defer wtxn.Abort()
	changes, watch := j.polChanges.Next(wtxn)
	var n writeCounts
	for c := range changes {
		j.policyChanged(wtxn, c, &n)
	}
	if ok, _ := j.Specs.Initialized(wtxn); ok && !j.policiesInitialized {
		j.policiesDone(wtxn)
		j.policiesInitialized = true
		n.writes++
	}
	if n.writes > 0 {
		wtxn.Commit()
	}
	return watch
}

// policyChanged records a change of egress-policy-specs and writes the
// policy's row of egress-policies, keeping the conditions computed last. It
// reports whether the entries may change: only a change of the spec
// matters.
func (j *entriesJob) policyChanged(wtxn statedb.WriteTxn, c statedb.Change[*tables.PolicySpec], n *writeCounts) bool {
	name := c.Object.Name
	old := j.policies[name]
	if c.Deleted {
		delete(j.policies, name)
		delete(j.lastConflict, name)
		if old != nil {
			_, _, _ = j.Policies.Delete(wtxn, old)
			n.writes++
		}
		return old != nil
	}
	var conds []egresspolicy.Condition
	if old != nil {
		conds = old.Conditions
	}
	row := c.Object.WithConditions(conds)
	if _, _, err := j.Policies.Insert(wtxn, row); err == nil {
		n.writes++
	}
	j.policies[name] = row
	if row.Error != "" && (old == nil || old.Error != row.Error) {
		j.Log.Warn("egressha: EgressGatewayPolicy is partly unusable; the rest of it is applied",
			"policy", name, "error", row.Error)
	}
	return specChanged(old, row)
}

func specChanged(old, cur *tables.Policy) bool {
	switch {
	case old == nil:
		return true
	case old.Object == cur.Object:
		return false // the same object
	case old.Object == nil || cur.Object == nil:
		return true
	}
	return !equality.Semantic.DeepEqual(old.Object.Spec, cur.Object.Spec)
}

// gatewayChanged records a change of egress-gateways in j.fromStatus;
// localEgressIPs then derives j.gateways (name, active node, its
// InternalIP, egress IP: the rest of the status does not matter here).
func (j *entriesJob) gatewayChanged(c statedb.Change[*tables.EgressGateway]) {
	name := c.Object.Name
	if c.Deleted {
		delete(j.fromStatus, name)
		delete(j.basic, name)
		delete(j.gatewayErrs, name)
		return
	}
	if c.Object.Object == nil {
		return
	}
	g := c.Object.MapValue
	if msg := c.Object.MapValueError; msg != j.gatewayErrs[name] {
		if msg != "" {
			j.Log.Warn("egressha: EgressGateway status is not usable; its policies' traffic is dropped until it is",
				"gateway", name, "error", msg)
		}
		j.gatewayErrs[name] = msg
	}
	j.fromStatus[name] = g
	j.basic[name] = c.Object.Mode == v1alpha1.SourceIPModePrimaryIP
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// syncAll recomputes every endpoint and removes the rows of sources that
// are no endpoint (any left from an endpoint whose deletion was coalesced
// away). Both tables are ordered by IP, so one merge walk finds those.
func (j *entriesJob) syncAll(wtxn statedb.WriteTxn, n *writeCounts) {
	eps := statedb.Collect(j.Endpoints.All(wtxn))
	rows := statedb.Collect(j.Entries.All(wtxn))
	i := 0
	for _, ep := range eps {
		if !ep.IP.Is4() {
			// No row (egress-endpoints holds IPv4 only; its index sorts
			// other addresses elsewhere).
			j.syncEndpoint(wtxn, ep.IP, ep, n)
			continue
		}
		for ; i < len(rows) && rows[i].Source.Less(ep.IP); i++ {
			j.syncEndpoint(wtxn, rows[i].Source, nil, n)
		}
		if i < len(rows) && rows[i].Source == ep.IP {
			i++
		}
		j.syncEndpoint(wtxn, ep.IP, ep, n)
	}
	for ; i < len(rows); i++ {
		j.syncEndpoint(wtxn, rows[i].Source, nil, n)
	}
	for ip := range j.conflicts {
		if _, _, ok := j.Endpoints.Get(wtxn, tables.EndpointByIP(ip)); !ok {
			j.setConflicts(ip, nil)
		}
	}
}

// syncEndpoint makes the row of source ip hold the targets of ep (no row
// if ep is nil or has none), writing only when they differ.
func (j *entriesJob) syncEndpoint(wtxn statedb.WriteTxn, ip netip.Addr, ep *tables.Endpoint, n *writeCounts) {
	var want []egresspolicy.Target
	var conflicts []egresspolicy.Conflict
	if ep != nil {
		e := ep.Endpoint
		e.NodeLabels = j.Nodes.Of(ep)
		want, conflicts = j.resolver.Resolve(&e)
	}
	j.setConflicts(ip, conflicts)
	if !ip.Is4() {
		return
	}
	old, _, found := j.Entries.Get(wtxn, tables.SourceEntriesByIP(ip))
	switch {
	case len(want) == 0:
		if found {
			_, _, _ = j.Entries.Delete(wtxn, old)
			n.deleted++
			n.writes++
		}
		return
	case !found:
		n.inserted++
	case slices.Equal(old.Targets, want):
		return
	default:
		n.updated++
	}
	_, _, _ = j.Entries.Insert(wtxn, &tables.SourceEntries{Source: ip, Targets: want, Status: reconciler.StatusPending()})
	n.writes++
}

// setConflicts replaces the conflicts reported for ip.
func (j *entriesJob) setConflicts(ip netip.Addr, cs []egresspolicy.Conflict) {
	old := j.conflicts[ip]
	if len(old) == 0 && len(cs) == 0 {
		return
	}
	if slices.Equal(old, cs) {
		return
	}
	for _, c := range old {
		if j.conflictRefs[c]--; j.conflictRefs[c] <= 0 {
			delete(j.conflictRefs, c)
			j.conflictsChanged = true
		}
	}
	for _, c := range cs {
		if j.conflictRefs[c]++; j.conflictRefs[c] == 1 {
			j.conflictsChanged = true
		}
	}
	if len(cs) == 0 {
		delete(j.conflicts, ip)
	} else {
		j.conflicts[ip] = cs
	}
}

// syncConditions writes each policy's Ready and Conflict conditions into
// egress-policies where they differ, and logs changes of the conflict
// state. The conditions are not written to the API: the operator owns the
// policy status, and every agent writing its view would fight over it.
func (j *entriesJob) syncConditions(wtxn statedb.WriteTxn, full bool, n *writeCounts) {
	if !full && !j.conflictsChanged {
		// Only rows that have no conditions yet need them; the computed
		// ones are unchanged.
		for _, row := range j.policies {
			if row.Conditions == nil {
				full = true
				break
			}
		}
		if !full {
			return
		}
	}
	j.conflictsChanged = false
	conflicts := slices.Collect(maps.Keys(j.conflictRefs))
	conds := egresspolicy.Conditions(j.polList, j.fromStatus, conflicts)
	for name, row := range j.policies {
		want := conds[name]
		if slices.Equal(row.Conditions, want) {
			continue
		}
		nrow := row.WithConditions(want)
		if _, _, err := j.Policies.Insert(wtxn, nrow); err == nil {
			j.policies[name] = nrow
			n.writes++
		}
		j.logConflict(name, nrow)
	}
}

func (j *entriesJob) logConflict(name string, row *tables.Policy) {
	c, ok := row.Condition(egresspolicy.ConditionConflict)
	if !ok {
		return
	}
	prev, had := j.lastConflict[name]
	j.lastConflict[name] = c
	switch {
	case !had && c.Status != egresspolicy.StatusTrue:
	case had && prev.Status == c.Status && prev.Message == c.Message:
	case c.Status == egresspolicy.StatusTrue:
		j.Log.Warn("egressha: EgressGatewayPolicy conflicts with another policy; the policy whose name sorts first is programmed",
			"policy", name, "reason", c.Reason, "message", c.Message)
	default:
		j.Log.Info("egressha: EgressGatewayPolicy no longer conflicts with another policy", "policy", name)
	}
}
