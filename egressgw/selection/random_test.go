package selection

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/heartbeat"
)

// TestEngineMatchesSelect drives the Engine with random event sequences and
// checks after every Recompute that each gateway's decision equals Select's
// from-scratch decision, that exactly the changed decisions were returned,
// and that NextExpiry is the earliest expiry among eligible candidates or
// hold-down ends that move a role.
//
// Half of the gateways have no hold-down: for them the reference is Select
// itself. The others hold new eligible candidates down for up to 3 s; their
// reference is the same from-scratch decision given since when each
// candidate is eligible, which the model keeps on its own (eligible in its
// previous expected result: unchanged; newly eligible: now).
func TestEngineMatchesSelect(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			m := newModel(seed)
			for step := range 1500 {
				m.step(t, step)
			}
			if m.changes == 0 || m.failovers == 0 || m.lapses == 0 || m.holdMoves == 0 {
				t.Fatalf("the random walk exercised too little: %d results, %d failovers, %d lapse-only changes, %d hold-down ends that moved a role",
					m.changes, m.failovers, m.lapses, m.holdMoves)
			}
		})
	}
}

var (
	modelNodes    = seq("n%02d", 0, 11)
	modelGateways = seq("g%d", 0, 5)
	modelReasons  = []string{"", heartbeat.ReasonInterfaceMissing, heartbeat.ReasonInterfaceDown, heartbeat.ReasonVirtualIPNotReady}
	modelSels     = []map[string]string{
		{egressLabel: ""},
		{"pool": "p0"},
		{"pool": "p1", "zone": "z0"},
		{egressLabel: "", "zone": "z1"},
		{},
		{"pool": "p2"},
	}
)

type model struct {
	rnd      *rand.Rand
	e        *Engine
	now      time.Time
	nodes    map[string]*Node
	gws      map[string]Gateway
	last     map[string]Result // last expected result per gateway
	selChg   map[string]bool
	affected map[string]bool

	changes, failovers, lapses, holdMoves int
}

func newModel(seed uint64) *model {
	return &model{
		rnd:    rand.New(rand.NewPCG(seed, seed*7919)),
		e:      NewEngine(),
		now:    t0,
		nodes:  map[string]*Node{},
		gws:    map[string]Gateway{},
		last:   map[string]Result{},
		selChg: map[string]bool{},
	}
}

func (m *model) pick(xs []string) string { return xs[m.rnd.IntN(len(xs))] }
func (m *model) chance(p float64) bool   { return m.rnd.Float64() < p }

func (m *model) randomNode(name string) *Node {
	n := &Node{
		Name:       name,
		Labels:     map[string]string{"kubernetes.io/hostname": name},
		InternalIP: netip.AddrFrom4([4]byte{10, 0, byte(m.rnd.IntN(2)), byte(1 + m.rnd.IntN(200))}),
		Ready:      m.chance(0.85),
		Cordoned:   m.chance(0.1),
		AgentReady: m.chance(0.9),
	}
	if m.chance(0.7) {
		n.Labels[egressLabel] = ""
	}
	if m.chance(0.8) {
		n.Labels["pool"] = m.pick([]string{"p0", "p1", "p2"})
	}
	if m.chance(0.8) {
		n.Labels["zone"] = m.pick([]string{"z0", "z1"})
	}
	if m.chance(0.9) {
		rep := heartbeat.Report{}
		// Often a node reports the same for every gateway, as real nodes
		// do; then gateways with the same selector and mode have equal
		// candidate lists, which the Engine shares.
		uniform := m.chance(0.6)
		r := m.randomReport()
		for _, g := range modelGateways {
			switch {
			case uniform:
				rep[g] = r
			case m.chance(0.85):
				rep[g] = m.randomReport()
			}
		}
		n.Heartbeat = &heartbeat.Heartbeat{
			Node: name, RenewTime: m.now.Add(-time.Duration(m.rnd.IntN(3000)) * time.Millisecond),
			Duration: hbLife, Gateways: rep,
		}
	}
	return n
}

func (m *model) randomReport() heartbeat.GatewayReport {
	if m.chance(0.85) {
		ip := fmt.Sprintf("203.0.113.%d", 1+m.rnd.IntN(3))
		switch {
		case m.chance(0.05):
			ip = ""
		case m.chance(0.05):
			ip = "not-an-ip"
		}
		return heartbeat.GatewayReport{Ready: true, EgressIP: ip}
	}
	return heartbeat.GatewayReport{Reason: m.pick(modelReasons)}
}

func (m *model) randomGateway(name string) Gateway {
	g := Gateway{
		Name:           name,
		NodeSelector:   maps.Clone(m.modelSel()),
		Mode:           v1alpha1.SourceIPModePrimaryIP,
		PreviousActive: m.pick(append([]string{"", "gone"}, modelNodes...)),
	}
	if m.chance(0.3) {
		g.Mode, g.VirtualIP = v1alpha1.SourceIPModeVirtualIP, "198.51.100.7"
	}
	if m.chance(0.4) {
		g.Order = v1alpha1.SelectionOrderSpread
	}
	if m.chance(0.4) {
		g.Failback = v1alpha1.FailbackNever
	}
	if m.chance(0.5) {
		g.HoldDown = time.Duration(1+m.rnd.IntN(3000)) * time.Millisecond
	}
	return g
}

func (m *model) modelSel() map[string]string { return modelSels[m.rnd.IntN(len(modelSels))] }

func (m *model) touch(names []string) {
	for _, n := range names {
		m.affected[n] = true
	}
}

func (m *model) event() {
	switch x := m.rnd.IntN(100); {
	case x < 40: // a heartbeat renewal: only the renew time changes
		name := m.pick(modelNodes)
		n, ok := m.nodes[name]
		if !ok || n.Heartbeat == nil {
			return
		}
		c := *n
		h := *n.Heartbeat
		h.RenewTime = m.now
		c.Heartbeat = &h
		m.nodes[name] = &c
		m.touch(m.e.UpsertNode(&c))
	case x < 45: // only the InternalIP changes
		name := m.pick(modelNodes)
		n, ok := m.nodes[name]
		if !ok {
			return
		}
		c := *n
		c.InternalIP = netip.AddrFrom4([4]byte{10, 1, 0, byte(1 + m.rnd.IntN(200))})
		m.nodes[name] = &c
		m.touch(m.e.UpsertNode(&c))
	case x < 80: // any other node change
		n := m.randomNode(m.pick(modelNodes))
		m.nodes[n.Name] = n
		m.touch(m.e.UpsertNode(n))
	case x < 86:
		name := m.pick(modelNodes)
		delete(m.nodes, name)
		m.touch(m.e.DeleteNode(name))
	case x < 96:
		g := m.randomGateway(m.pick(modelGateways))
		if old, ok := m.gws[g.Name]; ok {
			if _, decided := m.last[g.Name]; decided {
				// The Engine ignores PreviousActive once it decided.
				g.PreviousActive = old.PreviousActive
				if normalize(old).Order != normalize(g).Order || normalize(old).Failback != normalize(g).Failback {
					m.selChg[g.Name] = true
				}
			}
		}
		m.gws[g.Name] = g
		m.e.UpsertGateway(g)
		m.affected[g.Name] = true
	default:
		name := m.pick(modelGateways)
		delete(m.gws, name)
		delete(m.last, name)
		delete(m.selChg, name)
		m.e.DeleteGateway(name)
	}
}

func (m *model) step(t *testing.T, step int) {
	t.Helper()
	m.affected = map[string]bool{}
	for range 1 + m.rnd.IntN(4) {
		m.event()
	}
	// Advance time, sometimes exactly to the next expiry.
	if next := m.e.NextExpiry(m.now); !next.IsZero() && m.chance(0.2) {
		m.now = next
	} else {
		m.now = m.now.Add(time.Duration(m.rnd.IntN(1500)) * time.Millisecond)
	}
	var names []string
	if m.chance(0.5) {
		names = slices.Sorted(maps.Keys(m.affected))
	}
	got := map[string]Result{}
	var order []string
	for _, r := range m.e.Recompute(names, m.now) {
		got[r.Gateway] = r
		order = append(order, r.Gateway)
	}
	if !slices.IsSorted(order) {
		t.Fatalf("step %d: results not sorted by gateway: %v", step, order)
	}

	nodes := slices.Collect(maps.Values(m.nodes))
	var wantNext time.Time
	for name, g := range m.gws {
		prev, decided := m.last[name]
		if decided {
			g.PreviousActive = prev.Active
		}
		// The hold-down's bookkeeping, from the model's own history: a
		// candidate still eligible keeps its EligibleSince; one eligible
		// again after having been eligible is held from now; one eligible
		// for the first time is not held, except in the first decision of
		// a gateway continued from a status (PreviousActive set).
		inherited := !decided && g.PreviousActive != ""
		history := func(node string, eligible bool) (time.Time, bool) {
			i, ok := findCandidate(prev.Candidates, node)
			found := decided && ok
			was := eligible || (found && prev.Candidates[i].wasEligible)
			switch {
			case !eligible:
				return time.Time{}, was
			case found && prev.Candidates[i].Eligible:
				return prev.Candidates[i].EligibleSince, was
			case found && prev.Candidates[i].wasEligible, inherited:
				return m.now, was
			}
			return time.Time{}, was
		}
		want := selectWith(g, nodes, m.now, history)
		if g.HoldDown == 0 {
			// Without a hold-down the history changes nothing: Select
			// (no history) decides the same.
			plain := Select(g, nodes, m.now)
			if plain.Active != want.Active || plain.Message != want.Message || !plain.HoldDownUntil.IsZero() {
				t.Fatalf("step %d %s: Select %+v, with history %+v", step, name, plain, want)
			}
		}
		if m.selChg[name] && want.ChangeReason == ChangeFailback {
			want.ChangeReason = ChangeSelectionChanged
		}
		delete(m.selChg, name)
		changed := !decided || want.Active != prev.Active || want.ActiveInternalIP != prev.ActiveInternalIP ||
			want.EgressIP != prev.EgressIP || want.ReadyNodes != prev.ReadyNodes || want.Message != prev.Message ||
			!want.HoldDownUntil.Equal(prev.HoldDownUntil) || !candidatesEqual(want.Candidates, prev.Candidates)
		r, returned := got[name]
		if changed != returned {
			t.Fatalf("step %d %s: returned=%v, want %v\nengine %+v\nwant %+v\nprev %+v", step, name, returned, changed, r, want, prev)
		}
		if returned && (r.ChangeReason != want.ChangeReason || r.PreviousActive != want.PreviousActive) {
			t.Fatalf("step %d %s: change %q -> %q (%q), want %q -> %q (%q)", step, name,
				r.PreviousActive, r.Active, r.ChangeReason, want.PreviousActive, want.Active, want.ChangeReason)
		}
		e, ok := m.e.Result(name)
		if !ok || e.Active != want.Active || e.ActiveInternalIP != want.ActiveInternalIP || e.EgressIP != want.EgressIP ||
			e.ReadyNodes != want.ReadyNodes || e.Message != want.Message || !e.HoldDownUntil.Equal(want.HoldDownUntil) ||
			!candidatesEqual(e.Candidates, want.Candidates) {
			t.Fatalf("step %d %s: engine\n%+v\nwant\n%+v", step, name, e, want)
		}
		if changed {
			m.last[name] = want
			m.changes++
			if decided && want.Active != prev.Active {
				m.failovers++
				if len(m.affected) == 0 {
					m.lapses++
				}
				if !prev.HoldDownUntil.IsZero() && !m.now.Before(prev.HoldDownUntil) && want.ChangeReason == ChangeFailback {
					m.holdMoves++
				}
			}
		}
		if t := want.HoldDownUntil; !t.IsZero() && (wantNext.IsZero() || t.Before(wantNext)) {
			wantNext = t
		}
		for _, c := range want.Candidates {
			if c.Eligible {
				if exp := m.nodes[c.Node].Heartbeat.Expiry(); wantNext.IsZero() || exp.Before(wantNext) {
					wantNext = exp
				}
			}
		}
	}
	for name := range got {
		if _, ok := m.gws[name]; !ok {
			t.Fatalf("step %d: result for unknown gateway %s", step, name)
		}
	}
	if next := m.e.NextExpiry(m.now); !next.Equal(wantNext) {
		t.Fatalf("step %d: NextExpiry %v, want %v", step, next, wantNext)
	}
}
