package reflectors

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/k8s/resource"
	nodeTypes "github.com/cilium/cilium/pkg/node/types"

	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/tables"
)

// NodeLabels knows the labels of the node each endpoint runs on, for
// the nodeSelector of a CiliumEgressGatewayPolicy's selectors. It does
// what Cilium's egress gateway does (pkg/egressgateway/manager.go,
// handleNodeEvent): it follows the agent's shared CiliumNode resource (no
// watch of its own) and keeps each node's labels under the node's IPv4 and
// IPv6 addresses (nodeTypes.ParseCiliumNode, GetNodeIP), which a
// CiliumEndpoint names as status.networking.node. Endpoints of this node
// from the endpoint manager carry this node's name instead; their labels
// are this node's, from LocalNodeLabels.
//
// The keys whose labels changed since the last Take are collected, so the
// entries controller re-evaluates only the endpoints on those nodes.
type NodeLabels struct {
	res       resource.Resource[*ciliumv2.CiliumNode]
	localNode *LocalNodeLabels
	localName func() string

	mu        sync.Mutex
	byIP      map[string]map[string]string // node IP -> labels (never mutated)
	ipsOf     map[string][]string          // CiliumNode name -> its keys in byIP
	local     map[string]string
	localSeen bool
	synced    bool
	dirty     map[string]struct{} // endpoint Node values whose labels changed
	changed   chan struct{}
}

// Changed is signalled (one token, never closed) after labels changed.
func (s *NodeLabels) Changed() <-chan struct{} { return s.changed }

type nodeLabelsParams struct {
	cell.In

	JobGroup job.Group
	Enabled  config.Enabled
	// CiliumNodes is the agent's shared CiliumNode resource (the one
	// Cilium's egress gateway follows).
	CiliumNodes resource.Resource[*ciliumv2.CiliumNode]
	// LocalNode gives the labels of this node, for the endpoints of the
	// endpoint manager.
	LocalNode *LocalNodeLabels
}

// newNodeLabelsSource provides NodeLabels and registers the job that fills
// it; disabled, NodeLabels stays empty and never Ready.
func newNodeLabelsSource(p nodeLabelsParams) (*NodeLabels, error) {
	s := NewNodeLabels(p.CiliumNodes, p.LocalNode)
	if !p.Enabled {
		return s, nil
	}
	if p.CiliumNodes == nil {
		return nil, errors.New("egressha: Cilium's CiliumNode resource is not available")
	}
	p.JobGroup.Add(job.OneShot("node-labels", s.run))
	return s, nil
}

// NewNodeLabels returns the labels of the nodes of res (and of this node
// from lns) as its job fills them. With lns nil (tests) this node's labels
// are never known.
func NewNodeLabels(res resource.Resource[*ciliumv2.CiliumNode], lns *LocalNodeLabels) *NodeLabels {
	return &NodeLabels{
		res:       res,
		localNode: lns,
		localName: nodeTypes.GetName,
		byIP:      map[string]map[string]string{},
		ipsOf:     map[string][]string{},
		dirty:     map[string]struct{}{},
		changed:   make(chan struct{}, 1),
	}
}

func (s *NodeLabels) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Ready reports whether the CiliumNode listing and this node's labels
// (when there is a LocalNodeStore) have been seen: before that, a
// nodeSelector would be matched against labels not known yet.
func (s *NodeLabels) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced && s.localSeen
}

// Take returns the endpoint Node values whose node labels changed since
// the last call.
func (s *NodeLabels) Take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.dirty) == 0 {
		return nil
	}
	keys := slices.Collect(maps.Keys(s.dirty))
	clear(s.dirty)
	return keys
}

// Of returns the labels of the node ep runs on; nil when not known.
// The map must not be modified.
func (s *NodeLabels) Of(ep *tables.Endpoint) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ep.Origin == tables.OriginLocal {
		return s.local
	}
	return s.byIP[ep.Node]
}

func (s *NodeLabels) run(ctx context.Context, health cell.Health) error {
	health.OK("Waiting for the CiliumNode listing")
	events := s.res.Events(ctx)
	for {
		if s.localNode != nil {
			lbls, seen, changed := s.localNode.Get()
			if seen {
				s.setLocal(lbls)
			}
			select {
			case <-changed:
				continue
			case ev, ok := <-events:
				if !ok {
					return nil
				}
				s.event(ev, health)
			}
			continue
		}
		ev, ok := <-events
		if !ok {
			return nil
		}
		s.event(ev, health)
	}
}

func (s *NodeLabels) event(ev resource.Event[*ciliumv2.CiliumNode], health cell.Health) {
	switch ev.Kind {
	case resource.Sync:
		s.mu.Lock()
		s.synced = true
		s.mu.Unlock()
		health.OK("Synced")
	case resource.Upsert:
		n := nodeTypes.ParseCiliumNode(ev.Object)
		s.SetNode(n.Name, nodeIPKeys(n.GetNodeIP(false), n.GetNodeIP(true)), n.Labels)
	case resource.Delete:
		s.SetNode(ev.Key.Name, nil, nil)
	}
	s.signal()
	ev.Done(nil)
}

// setLocal records this node's labels.
func (s *NodeLabels) setLocal(labels map[string]string) {
	s.mu.Lock()
	changed := !s.localSeen || !maps.Equal(s.local, labels)
	if changed {
		s.local, s.localSeen = labels, true
		s.dirty[s.localName()] = struct{}{}
	}
	s.mu.Unlock()
	if changed {
		s.signal()
	}
}

// SetNode replaces the keys and labels of the CiliumNode name (none: the
// node is gone) and marks the keys whose labels changed.
func (s *NodeLabels) SetNode(name string, keys []string, lbls map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.ipsOf[name] {
		if !slices.Contains(keys, k) {
			delete(s.byIP, k)
			s.dirty[k] = struct{}{}
		}
	}
	if len(keys) == 0 {
		delete(s.ipsOf, name)
		return
	}
	s.ipsOf[name] = keys
	for _, k := range keys {
		if old, ok := s.byIP[k]; !ok || !maps.Equal(old, lbls) {
			s.byIP[k] = maps.Clone(lbls)
			s.dirty[k] = struct{}{}
		}
	}
}

// nodeIPKeys are the keys of a node's addresses, as a CiliumEndpoint's
// status.networking.node spells them.
func nodeIPKeys(ips ...net.IP) []string {
	var keys []string
	for _, ip := range ips {
		if ip != nil {
			keys = append(keys, ip.String())
		}
	}
	return keys
}

// Matching returns the IPv4 address of every node whose labels match,
// by node name: the peers a VIP candidate sends its peer probes to
// (egressgw/probe).
func (s *NodeLabels) Matching(match func(labels map[string]string) bool) map[string]netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]netip.Addr{}
	for name, keys := range s.ipsOf {
		if len(keys) == 0 {
			continue
		}
		a, err := netip.ParseAddr(keys[0])
		if err != nil || !a.Is4() || !match(s.byIP[keys[0]]) {
			continue
		}
		out[name] = a
	}
	return out
}
