package selection

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
)

// Engine keeps the decision of every gateway up to date as nodes, heartbeats
// and gateways change, doing work proportional to what changed.
//
// Concurrency: an Engine is not safe for concurrent use. The operator drives
// it from a single goroutine (its event loop); no method blocks or locks.
//
// How the operator drives it:
//   - feed every Node/Pod/Lease/EgressGateway event through UpsertNode,
//     DeleteNode, UpsertGateway and DeleteGateway;
//   - then call Recompute(affected, now) and publish the Results it returns
//     (only those that changed);
//   - arm a timer for NextExpiry(now) and call Recompute(nil, now) when it
//     fires: a heartbeat that lapses, or a hold-down that ends, produces no
//     event; the Engine finds the lapsed nodes and the ended holds itself.
//
// Cost model. A node event costs O(labels of the node + gateways indexed
// under those labels) in UpsertNode, then, per affected gateway, a binary
// search, an Evaluate and a map operation in Recompute; nothing is scanned
// per node. When a candidate's eligibility, reasons or egress IP changed, the
// gateway needs a new candidate list (published lists are immutable, they may
// sit in a statedb table): gateways that had the same list and see the same
// change share one new copy, so the worst case (every gateway selecting every
// node) pays one O(nodes) copy per event, not one per gateway. A membership
// change also moves O(nodes) rank entries per Spread gateway (memmove). The
// active node is found by walking the cached rank from the top, which stops
// at the first eligible node. Rankings are cached per gateway and rebuilt
// (O(n log n)) only when the gateway's spec changes.
//
// Hold-down (Gateway.HoldDown). Every candidate carries EligibleSince, set
// to the Recompute's now when it turns eligible again after having been
// eligible before (a flap, a recovery) or, for a gateway continued from a
// status (a new operator term), when first seen eligible; carried over
// while it stays eligible; zero when it is not eligible or eligible for the
// first time (not held). A gateway
// whose decision waits for a hold to end (Result.HoldDownUntil) sits in a
// heap by that instant; NextExpiry includes it, and Recompute at or after
// it decides for the gateway again although no candidate changed.
type Engine struct {
	nodes map[string]*nodeState
	// labelIndex maps a label pair to the nodes carrying it, so that a
	// gateway's candidates are found without scanning every node.
	labelIndex map[labelPair]map[string]*nodeState
	gateways   map[string]*gwState
	// gwIndex maps a label pair to the gateways whose selector has it as
	// its first pair in sorted order (each gateway is indexed under exactly
	// one pair), so that a node event visits only gateways that could match
	// it, each once.
	gwIndex map[labelPair]map[string]*gwState
	// eligibleIn counts, per node name, the gateways it is an eligible
	// candidate of (as of their last Recompute). Kept by name so that it
	// survives a delete-and-recreate of the node between recomputes.
	eligibleIn map[string]int
	// lapse holds every node with a heartbeat whose expiry has not been
	// processed yet; elig holds nodes with eligibleIn > 0 (for NextExpiry).
	lapse, elig nodeHeap
	// holds holds the gateways whose decision changes when a hold-down
	// ends, by gwState.holdEnd.
	holds gwHeap
	// dirty lists gateways with pending work, in no particular order.
	dirty []*gwState
	// clock is the latest now seen by Recompute; now never goes backwards.
	clock time.Time
	// epoch marks gateways already collected in affectedBy.
	epoch uint64

	// Scratch buffers reused by applyPending.
	scratchUpd []patch
	scratchIns []Candidate
	scratchRem []int
	// memo and interned let gateways with identical candidate lists share
	// one slice, for the duration of one Recompute (see applyPending).
	memo     map[memoKey][]*memoEntry
	interned map[internKey][][]Candidate
	// members caches, per selector, the sorted matching nodes found by
	// rebuild, for the duration of one Recompute.
	members map[string][]*nodeState
}

// memoKey identifies a published candidate list by its backing array.
type memoKey struct {
	p *Candidate
	n int
}

// internKey is a cheap fingerprint of a candidate list; equal lists have
// equal keys, and lists with equal keys are compared in full.
type internKey struct {
	n           int
	first, last string
}

// memoEntry is one change applied to a candidate list and its outcome.
type memoEntry struct {
	upd []patch
	ins []Candidate
	rem []int
	out []Candidate
}

type labelPair struct{ k, v string }

type nodeState struct {
	Node    // Labels is engine-owned (copied when it changes)
	expiry  time.Time
	heapIdx [2]int
}

type gwState struct {
	gw      Gateway // normalized
	sel     []labelPair
	idxKey  labelPair
	indexed bool
	cands   []Candidate // sorted by name; published in result: never mutated
	rank    []rankEntry // Spread order only; engine-owned
	ready   int
	active  string
	result  Result
	has     bool
	pending map[string]struct{} // node names to re-evaluate
	full    bool                // rebuild the candidate set from scratch
	dirty   bool
	deleted bool
	selChg  bool // order or failback changed since the last decision
	seen    uint64
	// inherited: the Engine learned of the gateway with an active node in
	// its status (it continues another's decisions: its first candidates
	// start held down).
	inherited bool
	// redecide: decide again although no candidate changed (a hold-down
	// ended, or HoldDown changed).
	redecide bool
	// holdEnd is result.HoldDownUntil; holdIdx the position in Engine.holds
	// (-1: not in it).
	holdEnd time.Time
	holdIdx int
}

type patch struct {
	i int
	c Candidate
}

// NewEngine returns an empty Engine.
func NewEngine() *Engine {
	return &Engine{
		nodes:      map[string]*nodeState{},
		labelIndex: map[labelPair]map[string]*nodeState{},
		gateways:   map[string]*gwState{},
		gwIndex:    map[labelPair]map[string]*gwState{},
		eligibleIn: map[string]int{},
		memo:       map[memoKey][]*memoEntry{},
		members:    map[string][]*nodeState{},
		interned:   map[internKey][][]Candidate{},
		lapse:      nodeHeap{slot: lapseHeap},
		holds:      gwHeap{},
		elig:       nodeHeap{slot: eligibleHeap},
	}
}

// UpsertNode adds or updates a node and returns the names (sorted) of the
// gateways whose selector matches its old or new labels: only their
// decisions can change. The node is copied.
func (e *Engine) UpsertNode(n *Node) (affected []string) {
	if n == nil || n.Name == "" {
		return nil
	}
	ns := e.nodes[n.Name]
	var old map[string]string
	isNew := ns == nil
	if isNew {
		ns = &nodeState{heapIdx: [2]int{-1, -1}}
		e.nodes[n.Name] = ns
	} else {
		old = ns.Labels
	}
	labelsChanged := isNew || !maps.Equal(old, n.Labels)
	ns.Name = n.Name
	cp := *n
	if labelsChanged {
		cp.Labels = maps.Clone(n.Labels)
		e.unindexNode(n.Name, old)
		e.indexNode(ns, cp.Labels)
	} else {
		cp.Labels = old
	}
	ns.Node = cp
	if ns.Heartbeat != nil {
		ns.expiry = ns.Heartbeat.Expiry()
	} else {
		ns.expiry = time.Time{}
	}
	// A heartbeat that had already expired by the last Recompute needs no
	// lapse processing: the affected gateways re-evaluate the node anyway.
	e.lapse.set(ns, ns.Heartbeat != nil && ns.expiry.After(e.clock))
	e.elig.set(ns, ns.Heartbeat != nil && e.eligibleIn[n.Name] > 0)

	gws := e.affectedBy(old, cp.Labels, labelsChanged)
	names := make([]string, len(gws))
	for i, g := range gws {
		e.markPending(g, n.Name)
		names[i] = g.gw.Name
	}
	slices.Sort(names)
	return names
}

// DeleteNode removes a node and returns the names (sorted) of the gateways
// it was a candidate of.
func (e *Engine) DeleteNode(name string) (affected []string) {
	ns := e.nodes[name]
	if ns == nil {
		return nil
	}
	gws := e.affectedBy(ns.Labels, nil, false)
	e.unindexNode(name, ns.Labels)
	e.lapse.set(ns, false)
	e.elig.set(ns, false)
	delete(e.nodes, name)
	names := make([]string, len(gws))
	for i, g := range gws {
		e.markPending(g, name)
		names[i] = g.gw.Name
	}
	slices.Sort(names)
	return names
}

// UpsertGateway adds or updates a gateway. Its PreviousActive is read only
// while the Engine has not decided for it yet (see Gateway.PreviousActive):
// a status written from an older decision must not pull the role back.
func (e *Engine) UpsertGateway(gw Gateway) {
	gw = normalize(gw)
	g := e.gateways[gw.Name]
	if g == nil {
		g = &gwState{gw: gw, active: gw.PreviousActive, inherited: gw.PreviousActive != "", pending: map[string]struct{}{}, holdIdx: -1}
		e.gateways[gw.Name] = g
		e.indexGateway(g)
		e.markFull(g)
		return
	}
	if !g.has {
		g.active, g.inherited = gw.PreviousActive, gw.PreviousActive != ""
	}
	old := g.gw
	if maps.Equal(old.NodeSelector, gw.NodeSelector) && old.Mode == gw.Mode && old.VirtualIP == gw.VirtualIP &&
		old.Order == gw.Order && old.Failback == gw.Failback {
		if old.HoldDown != gw.HoldDown {
			// The candidates stay; which of them are held changes.
			g.gw.HoldDown = gw.HoldDown
			g.redecide = true
			e.markDirty(g)
		}
		return
	}
	if g.has && (old.Order != gw.Order || old.Failback != gw.Failback) {
		g.selChg = true
	}
	if !maps.Equal(old.NodeSelector, gw.NodeSelector) {
		e.unindexGateway(g)
		g.gw = gw
		e.indexGateway(g)
	} else {
		g.gw = gw
	}
	// Every candidate's eligibility may depend on the mode, the VIP or the
	// selector; the rank on the order. Rebuilding is O(candidates log
	// candidates) and spec changes are rare.
	e.markFull(g)
}

// DeleteGateway forgets a gateway and its decision.
func (e *Engine) DeleteGateway(name string) {
	g := e.gateways[name]
	if g == nil {
		return
	}
	for i := range g.cands {
		if g.cands[i].Eligible {
			e.addEligible(g.cands[i].Node, -1)
		}
	}
	e.unindexGateway(g)
	e.holds.set(g, false)
	g.deleted = true
	delete(e.gateways, name)
}

// Result returns the latest decision for a gateway.
func (e *Engine) Result(name string) (Result, bool) {
	g := e.gateways[name]
	if g == nil || !g.has {
		return Result{}, false
	}
	return g.result, true
}

// NextExpiry returns the next instant a decision can change without an
// event: the earliest heartbeat expiry among nodes that are eligible
// candidates of some gateway, or the earliest end of a hold-down that will
// move a gateway's role (Result.HoldDownUntil), whichever comes first; the
// zero time if there is none. If that instant is not after now (it passed
// since the last Recompute), it returns now: recompute at once. Heartbeat
// lapses of nodes that are eligible nowhere do not change any active node;
// their candidate reasons are updated by the next Recompute.
func (e *Engine) NextExpiry(now time.Time) time.Time {
	var t time.Time
	if e.elig.Len() > 0 {
		t = e.elig.min().expiry
	}
	if e.holds.Len() > 0 {
		if h := e.holds.min().holdEnd; t.IsZero() || h.Before(t) {
			t = h
		}
	}
	if !t.IsZero() && !t.After(now) {
		return now
	}
	return t
}

// Recompute brings decisions up to date at now and returns, sorted by
// gateway name, the Results that differ from the previous Result of their
// gateway (ChangeReason and PreviousActive aside). The new Active becomes the
// gateway's previous active node for the next decision.
//
// gateways names the gateways the caller knows changed (e.g. the affected
// lists of the node events). The Engine also recomputes every other gateway
// with pending changes, and every gateway of which a candidate's heartbeat
// lapsed by now, and every gateway whose hold-down ended by now, so
// Recompute(nil, now) is complete too: nothing is left stale whatever the
// list. now is clamped so that it never goes backwards.
func (e *Engine) Recompute(gateways []string, now time.Time) []Result {
	if now.Before(e.clock) {
		now = e.clock
	}
	e.clock = now
	// gateways needs no handling of its own: every gateway an event touched
	// is already marked dirty, and a clean gateway's decision cannot change.
	// Heartbeats that lapsed by now produced no event: find them.
	for e.lapse.Len() > 0 && !now.Before(e.lapse.min().expiry) {
		ns := e.lapse.min()
		e.lapse.set(ns, false)
		for _, g := range e.affectedBy(ns.Labels, nil, false) {
			e.markPending(g, ns.Name)
		}
	}
	// Hold-downs that ended by now produced no event either.
	for e.holds.Len() > 0 && !now.Before(e.holds.min().holdEnd) {
		g := e.holds.min()
		e.holds.set(g, false)
		g.redecide = true
		e.markDirty(g)
	}
	if len(e.dirty) == 0 {
		return nil
	}
	slices.SortFunc(e.dirty, func(a, b *gwState) int { return strings.Compare(a.gw.Name, b.gw.Name) })
	var out []Result
	for _, g := range e.dirty {
		g.dirty = false
		if g.deleted {
			continue
		}
		if r, changed := e.recompute(g, now); changed {
			out = append(out, r)
		}
	}
	clear(e.dirty)
	e.dirty = e.dirty[:0]
	clear(e.memo)
	clear(e.members)
	clear(e.interned)
	return out
}

// recompute decides for one gateway.
func (e *Engine) recompute(g *gwState, now time.Time) (Result, bool) {
	var candsChanged, full bool
	switch {
	case g.full:
		full = true
		candsChanged = e.rebuild(g, now)
	case len(g.pending) > 0:
		candsChanged = e.applyPending(g, now)
	case !g.redecide:
		return Result{}, false
	}
	redecide := g.redecide
	g.redecide = false
	if g.has && !full && !candsChanged && !redecide {
		// Same gateway, same candidates, no hold-down ended, and the
		// previous decision as the starting point: the same decision
		// (chooseActive is idempotent while no hold ends).
		// Only the active node's InternalIP, which is not part of a
		// candidate, can differ.
		o := &g.result
		var ip netip.Addr
		if ns := e.nodes[o.Active]; ns != nil && o.Active != "" {
			ip = ns.InternalIP
		}
		if ip == o.ActiveInternalIP {
			return Result{}, false
		}
		r := *o
		r.ActiveInternalIP, r.PreviousActive, r.ChangeReason = ip, o.Active, ""
		g.result = r
		return r, true
	}
	prev := g.active
	r := decide(&g.gw, g.cands, g.rank, g.ready, prev, e, g.selChg, now)
	g.selChg = false
	g.holdEnd = r.HoldDownUntil
	e.holds.set(g, !g.holdEnd.IsZero())
	o := &g.result
	if g.has && !candsChanged && r.Active == o.Active && r.ActiveInternalIP == o.ActiveInternalIP &&
		r.EgressIP == o.EgressIP && r.ReadyNodes == o.ReadyNodes && r.Message == o.Message && r.HoldDownUntil.Equal(o.HoldDownUntil) {
		return Result{}, false
	}
	g.result, g.has, g.active = r, true, r.Active
	return r, true
}

// rebuild recomputes the whole candidate list of g from the label index.
func (e *Engine) rebuild(g *gwState, now time.Time) bool {
	g.full = false
	clear(g.pending)
	members := e.matching(g)
	cands := make([]Candidate, len(members))
	ready := 0
	// A gateway this Engine continues from a status (a new operator term)
	// has history it cannot see: its candidates start held down, so the
	// new term preempts nothing at once. Otherwise a candidate eligible
	// for the first time is not held; one that returns is (below).
	holdNew := !g.has && g.inherited
	for i, ns := range members {
		cands[i] = Evaluate(&ns.Node, &g.gw, now)
		if cands[i].Eligible {
			cands[i].wasEligible = true
			if holdNew {
				cands[i].EligibleSince = now
			}
			ready++
		}
	}
	// Apply the net change of eligibility per node (both lists are sorted).
	old := g.cands
	i, j := 0, 0
	for i < len(old) || j < len(cands) {
		switch {
		case j == len(cands) || (i < len(old) && old[i].Node < cands[j].Node):
			if old[i].Eligible {
				e.addEligible(old[i].Node, -1)
			}
			i++
		case i == len(old) || cands[j].Node < old[i].Node:
			if cands[j].Eligible {
				e.addEligible(cands[j].Node, 1)
			}
			j++
		default:
			cands[j].wasEligible = cands[j].Eligible || old[i].wasEligible
			if old[i].Eligible != cands[j].Eligible {
				if cands[j].Eligible {
					e.addEligible(cands[j].Node, 1)
					if old[i].wasEligible {
						cands[j].EligibleSince = now // it returns: held
					}
				} else {
					e.addEligible(cands[j].Node, -1)
				}
			} else if cands[j].Eligible {
				// Still eligible: its hold-down keeps counting, unless
				// it blipped (unsteady).
				cands[j].EligibleSince = old[i].EligibleSince
				if cands[j].unsteady || old[i].unsteady {
					cands[j].EligibleSince = now
				}
			}
			i++
			j++
		}
	}
	g.ready = ready
	if g.gw.Order == v1alpha1.SelectionOrderSpread {
		g.rank = spreadRank(g.gw.Name, cands)
	} else {
		g.rank = nil
	}
	if candidatesEqual(old, cands) {
		return false // keep the published slice
	}
	g.cands = e.intern(cands)
	return true
}

// matching returns the nodes matching g's selector, sorted by name. The
// slice is shared by the gateways with the same selector that are rebuilt
// in the same Recompute: read only.
func (e *Engine) matching(g *gwState) []*nodeState {
	if len(g.sel) == 0 {
		return nil
	}
	var key strings.Builder
	for _, p := range g.sel {
		key.WriteString(p.k)
		key.WriteByte(0)
		key.WriteString(p.v)
		key.WriteByte(0)
	}
	if m, ok := e.members[key.String()]; ok {
		return m
	}
	// Start from the rarest pair, check the others on each node.
	var smallest map[string]*nodeState
	for i, p := range g.sel {
		s := e.labelIndex[p]
		if i == 0 || len(s) < len(smallest) {
			smallest = s
		}
	}
	members := make([]*nodeState, 0, len(smallest))
	for _, ns := range smallest {
		if len(g.sel) == 1 || Matches(g.gw.NodeSelector, ns.Labels) {
			members = append(members, ns)
		}
	}
	slices.SortFunc(members, func(a, b *nodeState) int { return strings.Compare(a.Name, b.Name) })
	e.members[key.String()] = members
	return members
}

// applyPending re-evaluates the nodes that changed since the last decision
// and produces a new candidate list if any candidate changed.
func (e *Engine) applyPending(g *gwState, now time.Time) bool {
	upd, ins, rem := e.scratchUpd[:0], e.scratchIns[:0], e.scratchRem[:0]
	for name := range g.pending {
		i, found := findCandidate(g.cands, name)
		ns := e.nodes[name]
		if ns == nil || !Matches(g.gw.NodeSelector, ns.Labels) {
			if found {
				rem = append(rem, i)
				if g.cands[i].Eligible {
					e.eligibleDelta(g, name, -1)
				}
			}
			continue
		}
		c := Evaluate(&ns.Node, &g.gw, now)
		c.wasEligible = c.Eligible || (found && g.cands[i].wasEligible)
		if c.Eligible && found {
			switch {
			case g.cands[i].Eligible && (c.unsteady || g.cands[i].unsteady):
				// Still eligible but not answering (or just answering
				// again): its hold-down starts over.
				c.EligibleSince = now
			case g.cands[i].Eligible:
				// Still eligible: its hold-down keeps counting.
				c.EligibleSince = g.cands[i].EligibleSince
			case g.cands[i].wasEligible:
				// It returns (a flap, a recovery): held down from now.
				c.EligibleSince = now
			}
		}
		// Eligible for the first time in this gateway: not held, so a
		// node whose report arrives a moment after another's at creation
		// is not kept from the role it ranks for.
		if !found {
			ins = append(ins, c)
			if c.Eligible {
				e.eligibleDelta(g, name, 1)
			}
			continue
		}
		old := &g.cands[i]
		if candidateEqual(old, &c) {
			continue
		}
		if slices.Equal(old.Reasons, c.Reasons) {
			c.Reasons = old.Reasons
		}
		if old.Eligible != c.Eligible {
			if c.Eligible {
				e.eligibleDelta(g, name, 1)
			} else {
				e.eligibleDelta(g, name, -1)
			}
		}
		upd = append(upd, patch{i, c})
	}
	clear(g.pending)
	defer func() {
		clear(upd)
		clear(ins)
		e.scratchUpd, e.scratchIns, e.scratchRem = upd[:0], ins[:0], rem[:0]
	}()
	if len(upd) == 0 && len(ins) == 0 && len(rem) == 0 {
		return false
	}
	slices.SortFunc(upd, func(a, b patch) int { return a.i - b.i })
	slices.Sort(rem)
	slices.SortFunc(ins, func(a, b Candidate) int { return strings.Compare(a.Node, b.Node) })
	old := g.cands
	// Gateways that share nodes usually share their candidate list too
	// (same nodes, same reports): then one node event applies the same
	// change to the same list in each of them. Building the new list once
	// and sharing it turns the worst case (every gateway selecting every
	// node) from one full copy per gateway into one copy per event.
	key := memoKey{n: len(old)}
	if len(old) > 0 {
		key.p = &old[0]
	}
	for _, m := range e.memo[key] {
		if patchesEqual(m.upd, upd) && candidatesEqual(m.ins, ins) && slices.Equal(m.rem, rem) {
			g.cands = m.out
			e.updateRank(g, old, ins, rem)
			return true
		}
	}
	var cands []Candidate
	if len(ins) == 0 && len(rem) == 0 {
		// Same candidates, some changed. Copy and patch: the old slice may
		// be held by a published Result.
		cands = slices.Clone(old)
		for _, p := range upd {
			cands[p.i] = p.c
		}
	} else {
		// Membership changed: merge the sorted inserts into the old list,
		// skipping removed entries and applying patches, in one pass.
		cands = make([]Candidate, 0, len(old)+len(ins)-len(rem))
		u, r, j := 0, 0, 0
		for i := range old {
			for j < len(ins) && ins[j].Node < old[i].Node {
				cands = append(cands, ins[j])
				j++
			}
			switch {
			case r < len(rem) && rem[r] == i:
				r++
			case u < len(upd) && upd[u].i == i:
				cands = append(cands, upd[u].c)
				u++
			default:
				cands = append(cands, old[i])
			}
		}
		cands = append(cands, ins[j:]...)
	}
	e.memo[key] = append(e.memo[key], &memoEntry{
		upd: slices.Clone(upd), ins: slices.Clone(ins), rem: slices.Clone(rem), out: cands,
	})
	g.cands = cands
	e.updateRank(g, old, ins, rem)
	return true
}

// updateRank applies membership changes to a Spread ranking in place.
func (e *Engine) updateRank(g *gwState, old, ins []Candidate, rem []int) {
	if g.gw.Order != v1alpha1.SelectionOrderSpread {
		return
	}
	for _, i := range rem {
		k, ok := slices.BinarySearchFunc(g.rank, rankEntry{SpreadScore(g.gw.Name, old[i].Node), old[i].Node}, rankCmp)
		if ok {
			g.rank = slices.Delete(g.rank, k, k+1)
		}
	}
	for _, c := range ins {
		re := rankEntry{SpreadScore(g.gw.Name, c.Node), c.Node}
		k, _ := slices.BinarySearchFunc(g.rank, re, rankCmp)
		g.rank = slices.Insert(g.rank, k, re)
	}
}

// patchesEqual compares two sorted patch lists.
func patchesEqual(a, b []patch) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].i != b[i].i || !candidateEqual(&a[i].c, &b[i].c) {
			return false
		}
	}
	return true
}

// intern returns an equal candidate list built earlier in this Recompute,
// if there is one, so that gateways rebuilt together (a new leader's first
// pass) share one list; otherwise it records c.
func (e *Engine) intern(c []Candidate) []Candidate {
	if len(c) == 0 {
		return c
	}
	key := internKey{n: len(c), first: c[0].Node, last: c[len(c)-1].Node}
	for _, l := range e.interned[key] {
		if candidatesEqual(l, c) {
			return l
		}
	}
	e.interned[key] = append(e.interned[key], c)
	return c
}

// eligibleDelta records that name became (d=1) or stopped being (d=-1) an
// eligible candidate of g.
func (e *Engine) eligibleDelta(g *gwState, name string, d int) {
	g.ready += d
	e.addEligible(name, d)
}

// addEligible maintains eligibleIn and the eligible-node heap.
func (e *Engine) addEligible(name string, d int) {
	was := e.eligibleIn[name]
	v := was + d
	if v <= 0 {
		delete(e.eligibleIn, name)
	} else {
		e.eligibleIn[name] = v
	}
	// The heap position depends on the expiry only, which UpsertNode
	// maintains; here only membership can change.
	if (was > 0) != (v > 0) {
		if ns := e.nodes[name]; ns != nil {
			e.elig.set(ns, v > 0 && ns.Heartbeat != nil)
		}
	}
}

// lookupNode implements nodeLookup.
func (e *Engine) lookupNode(name string) (*Node, bool) {
	ns, ok := e.nodes[name]
	if !ok {
		return nil, false
	}
	return &ns.Node, true
}

func (e *Engine) markDirty(g *gwState) {
	if !g.dirty {
		g.dirty = true
		e.dirty = append(e.dirty, g)
	}
}

func (e *Engine) markFull(g *gwState) {
	g.full = true
	clear(g.pending)
	e.markDirty(g)
}

func (e *Engine) markPending(g *gwState, node string) {
	if !g.full {
		g.pending[node] = struct{}{}
	}
	e.markDirty(g)
}

// affectedBy returns the gateways whose selector matches a or (if both is
// set) b. Each gateway is indexed under one of its pairs, so it is visited
// at most once per label map; epoch removes the duplicates between a and b.
func (e *Engine) affectedBy(a, b map[string]string, both bool) []*gwState {
	e.epoch++
	var out []*gwState
	collect := func(labels map[string]string) {
		for k, v := range labels {
			for _, g := range e.gwIndex[labelPair{k, v}] {
				if g.seen != e.epoch && Matches(g.gw.NodeSelector, labels) {
					g.seen = e.epoch
					out = append(out, g)
				}
			}
		}
	}
	collect(a)
	if both {
		collect(b)
	}
	return out
}

func (e *Engine) indexNode(ns *nodeState, labels map[string]string) {
	for k, v := range labels {
		p := labelPair{k, v}
		s := e.labelIndex[p]
		if s == nil {
			s = map[string]*nodeState{}
			e.labelIndex[p] = s
		}
		s[ns.Name] = ns
	}
}

func (e *Engine) unindexNode(name string, labels map[string]string) {
	for k, v := range labels {
		p := labelPair{k, v}
		if s := e.labelIndex[p]; s != nil {
			delete(s, name)
			if len(s) == 0 {
				delete(e.labelIndex, p)
			}
		}
	}
}

func (e *Engine) indexGateway(g *gwState) {
	g.sel = g.sel[:0]
	for k, v := range g.gw.NodeSelector {
		g.sel = append(g.sel, labelPair{k, v})
	}
	slices.SortFunc(g.sel, func(a, b labelPair) int {
		if c := strings.Compare(a.k, b.k); c != 0 {
			return c
		}
		return strings.Compare(a.v, b.v)
	})
	if len(g.sel) == 0 {
		return // selects nothing, never affected
	}
	g.idxKey, g.indexed = g.sel[0], true
	s := e.gwIndex[g.idxKey]
	if s == nil {
		s = map[string]*gwState{}
		e.gwIndex[g.idxKey] = s
	}
	s[g.gw.Name] = g
}

func (e *Engine) unindexGateway(g *gwState) {
	if !g.indexed {
		return
	}
	if s := e.gwIndex[g.idxKey]; s != nil {
		delete(s, g.gw.Name)
		if len(s) == 0 {
			delete(e.gwIndex, g.idxKey)
		}
	}
	g.indexed = false
}
