package selection

import (
	"fmt"
	"maps"
	"net/netip"
	"testing"
	"time"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/heartbeat"
)

const (
	benchNodes    = 5000
	benchGateways = 500
	benchPools    = 50
	// Heartbeats in the benchmarks outlive any run, so that no lapse
	// processing mixes into the measured event.
	benchLife = 24 * time.Hour
)

// benchNode is a node with the labels a real node carries.
func benchNode(i int, labels map[string]string, rep heartbeat.Report) *Node {
	name := fmt.Sprintf("node-%04d", i)
	l := map[string]string{
		"kubernetes.io/hostname":           name,
		"kubernetes.io/os":                 "linux",
		"kubernetes.io/arch":               "amd64",
		"topology.kubernetes.io/zone":      fmt.Sprintf("zone-%d", i%3),
		"node.kubernetes.io/instance-type": "m5.large",
	}
	for k, v := range labels {
		l[k] = v
	}
	return &Node{
		Name:       name,
		Labels:     l,
		InternalIP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
		Ready:      true,
		AgentReady: true,
		Heartbeat:  &heartbeat.Heartbeat{Node: name, RenewTime: t0, Duration: benchLife, Gateways: rep},
	}
}

// poolsEngine: 50 pools of 100 nodes, 500 gateways each selecting one pool
// (10 per pool), half Alphabetical and half Spread, basic mode.
func poolsEngine(b *testing.B) (*Engine, []*Node) {
	e := NewEngine()
	nodes := make([]*Node, benchNodes)
	for i := range nodes {
		pool := i / (benchNodes / benchPools)
		rep := heartbeat.Report{}
		for g := pool; g < benchGateways; g += benchPools {
			rep[fmt.Sprintf("gw-%03d", g)] = heartbeat.GatewayReport{Ready: true, EgressIP: fmt.Sprintf("203.0.%d.%d", i>>8, i&0xff)}
		}
		nodes[i] = benchNode(i, map[string]string{"egress-pool": fmt.Sprintf("pool-%02d", pool)}, rep)
		e.UpsertNode(nodes[i])
	}
	for g := range benchGateways {
		gw := Gateway{
			Name:         fmt.Sprintf("gw-%03d", g),
			NodeSelector: map[string]string{"egress-pool": fmt.Sprintf("pool-%02d", g%benchPools)},
			Mode:         v1alpha1.SourceIPModePrimaryIP,
		}
		if g%2 == 1 {
			gw.Order = v1alpha1.SelectionOrderSpread
		}
		e.UpsertGateway(gw)
	}
	if res := e.Recompute(nil, t0); len(res) != benchGateways {
		b.Fatalf("initial recompute: %d results", len(res))
	}
	return e, nodes
}

// worstEngine: 500 Spread gateways all selecting all 5,000 nodes.
func worstEngine(b *testing.B) (*Engine, []*Node) {
	e := NewEngine()
	// One shared report: every node reports every gateway Ready.
	rep := heartbeat.Report{}
	for g := range benchGateways {
		rep[fmt.Sprintf("gw-%03d", g)] = heartbeat.GatewayReport{Ready: true, EgressIP: "203.0.113.1"}
	}
	nodes := make([]*Node, benchNodes)
	for i := range nodes {
		nodes[i] = benchNode(i, map[string]string{egressLabel: ""}, rep)
		e.UpsertNode(nodes[i])
	}
	for g := range benchGateways {
		e.UpsertGateway(Gateway{
			Name:         fmt.Sprintf("gw-%03d", g),
			NodeSelector: map[string]string{egressLabel: ""},
			Mode:         v1alpha1.SourceIPModePrimaryIP,
			Order:        v1alpha1.SelectionOrderSpread,
		})
	}
	if res := e.Recompute(nil, t0); len(res) != benchGateways {
		b.Fatalf("initial recompute: %d results", len(res))
	}
	return e, nodes
}

// benchEvents runs one node event plus the Recompute of what it affected
// per iteration. The node changes round-robin over all nodes.
func benchEvents(b *testing.B, setup func(*testing.B) (*Engine, []*Node)) {
	b.Run("ReadyFlip", func(b *testing.B) {
		e, nodes := setup(b)
		now := t0
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			n := nodes[i%len(nodes)]
			n.Ready = !n.Ready // the Engine copied the old value
			affected := e.UpsertNode(n)
			now = now.Add(time.Millisecond)
			e.Recompute(affected, now)
		}
	})
	b.Run("HeartbeatRenewal", func(b *testing.B) {
		e, nodes := setup(b)
		now := t0
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			now = now.Add(time.Millisecond)
			n := nodes[i%len(nodes)]
			// A renewal is a new decoded Lease, as from the reflector.
			h := *n.Heartbeat
			h.RenewTime = now
			n.Heartbeat = &h
			affected := e.UpsertNode(n)
			if res := e.Recompute(affected, now); len(res) != 0 {
				b.Fatalf("a renewal changed %d results", len(res))
			}
		}
	})
	b.Run("Cordon", func(b *testing.B) {
		e, nodes := setup(b)
		now := t0
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			// Cordon and uncordon the same node: the active node of its
			// gateways (node 0 is first alphabetically in its pool).
			n := nodes[0]
			n.Cordoned = !n.Cordoned
			affected := e.UpsertNode(n)
			now = now.Add(time.Millisecond)
			e.Recompute(affected, now)
		}
	})
	b.Run("LabelChange", func(b *testing.B) {
		e, nodes := setup(b)
		// Each node without its egress label, built before the clock runs.
		unlabelled := make([]map[string]string, len(nodes))
		for i, n := range nodes {
			unlabelled[i] = maps.Clone(n.Labels)
			delete(unlabelled[i], "egress-pool")
			delete(unlabelled[i], egressLabel)
		}
		now := t0
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			// Remove, then restore, the selected label of a node: its
			// gateways lose and regain a candidate.
			k := (i / 2) % len(nodes)
			m := *nodes[k]
			if i%2 == 0 {
				m.Labels = unlabelled[k]
			}
			affected := e.UpsertNode(&m)
			now = now.Add(time.Millisecond)
			e.Recompute(affected, now)
		}
	})
}

// BenchmarkRecomputeAfterNodeEvent: 5,000 nodes in 50 labelled pools of
// 100, 500 gateways each selecting one pool; one node event, then
// UpsertNode + Recompute(affected).
func BenchmarkRecomputeAfterNodeEvent(b *testing.B) { benchEvents(b, poolsEngine) }

// BenchmarkRecomputeWorstCase: 500 Spread gateways all selecting all 5,000
// nodes; one node event touches every gateway.
func BenchmarkRecomputeWorstCase(b *testing.B) { benchEvents(b, worstEngine) }

// BenchmarkInitialLoad: a new leader learns 5,000 nodes and 500 gateways and
// decides for all of them.
func BenchmarkInitialLoad(b *testing.B) {
	for _, c := range []struct {
		name  string
		setup func(*testing.B) (*Engine, []*Node)
	}{{"Pools", poolsEngine}, {"WorstCase", worstEngine}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				c.setup(b)
			}
		})
	}
}
