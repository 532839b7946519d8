package tables

import (
	"cmp"
	"hash/maphash"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"

	k8sTypes "github.com/cilium/cilium/pkg/k8s/types"
	"github.com/cilium/cilium/pkg/labels"

	"github.com/egressha/egressha/egressgw/egresspolicy"
)

// EndpointsTableName is the name of the table of endpoints the egress
// policies can select.
const EndpointsTableName = "egress-endpoints"

// EndpointOrigin says where the agent learnt of an endpoint.
type EndpointOrigin string

const (
	// OriginLocal is an endpoint of this node, from Cilium's endpoint
	// manager: known as soon as the endpoint has its identity labels,
	// before its CiliumEndpoint reaches the API server and comes back.
	OriginLocal EndpointOrigin = "local"
	// OriginCiliumEndpoint is an endpoint from a CiliumEndpoint object
	// (any node).
	OriginCiliumEndpoint EndpointOrigin = "cep"
)

// Endpoint is one IPv4 pod endpoint, with what policy selection needs.
// The table holds one row per IP (the map is keyed by source IP); see
// EndpointWriter for which source wins when two know the same IP. Rows are
// immutable.
type Endpoint struct {
	// IP, Namespace and Labels (identity labels, "k8s:" stripped) are what
	// egresspolicy.ForEndpoint matches. Node is the node name for local
	// endpoints and the node IP (status.networking.node) for
	// CiliumEndpoints, which carry no node name; the agent finds the
	// labels of the endpoint's node by it (reflectors.NodeLabels), as
	// Cilium's egress gateway finds them by the CiliumEndpoint's node IP.
	egresspolicy.Endpoint
	// Name is the pod's name (local) or the CiliumEndpoint's name, which is
	// the pod's name.
	Name   string
	Origin EndpointOrigin
}

// Equal reports whether two rows hold the same values.
func (e *Endpoint) Equal(o *Endpoint) bool {
	return e.IP == o.IP && e.Namespace == o.Namespace && e.Node == o.Node && e.Name == o.Name &&
		e.Origin == o.Origin && e.UID == o.UID && maps.Equal(e.Labels, o.Labels)
}

// TableHeader implements statedb.TableWritable.
func (*Endpoint) TableHeader() []string {
	return []string{"IP", "Namespace", "Name", "Node", "Origin", "Labels"}
}

// TableRow implements statedb.TableWritable. Labels are sorted by key.
func (e *Endpoint) TableRow() []string {
	lbls := make([]string, 0, len(e.Labels))
	for _, k := range slices.Sorted(maps.Keys(e.Labels)) {
		lbls = append(lbls, k+"="+e.Labels[k])
	}
	return []string{e.IP.String(), orNone(e.Namespace), orNone(e.Name), orNone(e.Node), string(e.Origin),
		orNone(strings.Join(lbls, ","))}
}

// IdentityLabels converts security identity labels as Cilium models them
// ("k8s:app=backend", "k8s:io.kubernetes.pod.namespace=my-ns") into the map
// egressgw/egresspolicy matches. It uses Cilium's own conversion
// (labels.Labels.K8sStringMap, as Cilium's egress gateway does): the k8s
// source is stripped, other sources stay as "source.key". known is false
// when no label has the k8s source, i.e. the identity is not resolved yet
// (no labels, or only reserved:init): matching such an endpoint would be
// matching a pod without its labels.
func IdentityLabels(model []string) (m map[string]string, known bool) {
	lbls := labels.NewLabelsFromModel(model)
	for _, l := range lbls {
		if l.Source == labels.LabelSourceK8s {
			known = true
			break
		}
	}
	if !known {
		return nil, false
	}
	return lbls.K8sStringMap(), true
}

// NewLocalEndpoint builds the row of a local endpoint from what Cilium's
// *endpoint.Endpoint exposes: GetIPv4Address(), GetK8sNamespace(),
// GetK8sPodName(), this node's name and GetOpLabels() (the identity labels
// the endpoint's identity is allocated from, set before the allocation
// finishes). ok is false for endpoints that get no row: no IPv4, not a pod
// (host and health endpoints), or labels not known yet.
func NewLocalEndpoint(ipv4, namespace, pod, node string, identityLabels []string) (*Endpoint, bool) {
	ip, err := netip.ParseAddr(ipv4)
	if err != nil || !ip.Is4() || namespace == "" || pod == "" {
		return nil, false
	}
	lbls, known := IdentityLabels(identityLabels)
	if !known {
		return nil, false
	}
	return &Endpoint{
		Endpoint: egresspolicy.Endpoint{IP: ip, Namespace: namespace, Labels: lbls, Node: node},
		Name:     pod,
		Origin:   OriginLocal,
	}, true
}

// IdentityLabelCache shares the label maps of IdentityLabels between
// endpoints with the same identity labels: at 100,000 endpoints over a
// thousand identities, a thousand maps instead of 100,000 (and no
// conversion per endpoint). The maps it returns are shared and must not be
// modified (rows are immutable anyway).
//
// It is bounded: it holds the label sets looked up since the last two
// turnovers, a turnover happening when the current generation reaches
// labelCacheGeneration sets; a set not looked up for two generations is
// forgotten (its rows keep their map). Not safe for concurrent use.
type IdentityLabelCache struct {
	seed      maphash.Seed
	cur, prev map[uint64][]cachedLabels
	n         int
}

type cachedLabels struct {
	model  []string
	labels map[string]string
}

// labelCacheGeneration is the number of label sets per generation.
const labelCacheGeneration = 4096

// NewIdentityLabelCache returns an empty cache.
func NewIdentityLabelCache() *IdentityLabelCache {
	return &IdentityLabelCache{seed: maphash.MakeSeed(), cur: map[uint64][]cachedLabels{}}
}

// Labels is IdentityLabels(model), shared with every earlier caller that
// passed the same model (same labels in the same order). A nil cache
// converts every time.
func (c *IdentityLabelCache) Labels(model []string) (map[string]string, bool) {
	if c == nil {
		return IdentityLabels(model)
	}
	var h maphash.Hash
	h.SetSeed(c.seed)
	for _, l := range model {
		h.WriteString(l)
		h.WriteByte(0)
	}
	sum := h.Sum64()
	for _, e := range c.cur[sum] {
		if slices.Equal(e.model, model) {
			return e.labels, e.labels != nil
		}
	}
	for _, e := range c.prev[sum] {
		if slices.Equal(e.model, model) {
			c.add(sum, e)
			return e.labels, e.labels != nil
		}
	}
	lbls, known := IdentityLabels(model)
	if !known {
		lbls = nil
	}
	c.add(sum, cachedLabels{model: slices.Clone(model), labels: lbls})
	return lbls, known
}

func (c *IdentityLabelCache) add(sum uint64, e cachedLabels) {
	if c.n >= labelCacheGeneration {
		c.prev, c.cur, c.n = c.cur, map[uint64][]cachedLabels{}, 0
	}
	c.cur[sum] = append(c.cur[sum], e)
	c.n++
}

// EndpointsFromCiliumEndpoint returns the rows of a CiliumEndpoint: one per
// distinct IPv4 address in status.networking.addressing, all with the
// identity labels of status.identity.labels (from cache, which may be
// nil). None while the identity is not known.
func EndpointsFromCiliumEndpoint(cep *k8sTypes.CiliumEndpoint, cache *IdentityLabelCache) []*Endpoint {
	if cep == nil || cep.Networking == nil || cep.Identity == nil {
		return nil
	}
	lbls, known := cache.Labels(cep.Identity.Labels)
	if !known {
		return nil
	}
	var out []*Endpoint
	for _, pair := range cep.Networking.Addressing {
		if pair == nil {
			continue
		}
		ip, err := netip.ParseAddr(pair.IPV4)
		if err != nil || !ip.Is4() || slices.ContainsFunc(out, func(e *Endpoint) bool { return e.IP == ip }) {
			continue
		}
		out = append(out, &Endpoint{
			Endpoint: egresspolicy.Endpoint{IP: ip, Namespace: cep.Namespace, Labels: lbls, Node: cep.Networking.NodeIP, UID: string(cep.UID)},
			Name:     cep.Name,
			Origin:   OriginCiliumEndpoint,
		})
	}
	return out
}

// EndpointIPIndex is the primary index: the endpoint's IP.
var EndpointIPIndex = statedb.Index[*Endpoint, netip.Addr]{
	Name: "ip",
	// The key is index.NetIPAddr's (the 16-byte form), in one allocation.
	FromObject: func(e *Endpoint) index.KeySet { return oneKeySet(e.IP.As16()) },
	FromKey:    index.NetIPAddr,
	FromString: index.NetIPAddrString,
	Unique:     true,
}

// EndpointByIP queries the endpoint of an IP.
func EndpointByIP(ip netip.Addr) statedb.Query[*Endpoint] {
	return EndpointIPIndex.Query(ip)
}

// NewEndpointsTable creates the egress-endpoints table and registers it
// with db. Its only index is the IP: an index costs a tree entry per row
// (with a watch channel), i.e. megabytes at 100,000 endpoints on every
// node. There is no index by node: the endpoints of a node whose labels
// changed are found by a scan (entries controller), which only happens
// when a policy has a nodeSelector.
func NewEndpointsTable(db *statedb.DB) (statedb.RWTable[*Endpoint], error) {
	tbl, err := statedb.NewTable(EndpointsTableName, EndpointIPIndex)
	if err != nil {
		return nil, err
	}
	return tbl, db.RegisterTable(tbl)
}

// CiliumEndpointSource is the source key of a CiliumEndpoint.
func CiliumEndpointSource(namespace, name string) string {
	return "cep:" + namespace + "/" + name
}

// LocalEndpointSource is the source key of a local endpoint: its Cilium
// endpoint ID and a number the caller gives each endpoint object, as an ID
// can be reused before the deletion of its previous holder is processed.
func LocalEndpointSource(id uint16, instance uint64) string {
	return "local:" + strconv.Itoa(int(id)) + "/" + strconv.FormatUint(instance, 10)
}

// EndpointWriter is the only writer of egress-endpoints. Its sources (one
// per CiliumEndpoint, one per local endpoint) each state the rows they
// know; several may know the same IP: a local endpoint and its own
// CiliumEndpoint, or a stale CiliumEndpoint whose IP was already reused.
// The table holds, per IP, the local row if there is one (it is fresher),
// else the row of the first source by key, so the choice does not depend
// on the order of events. When the winner goes, the next one takes over
// without the IP ever leaving the table. A row is only written when its
// values change.
type EndpointWriter struct {
	db  *statedb.DB
	tbl statedb.RWTable[*Endpoint]

	mu      sync.Mutex
	sources map[string][]*Endpoint
	// byIP are the sources knowing each IP (almost always one: a slice,
	// not a map, so the writer costs a few words per endpoint).
	byIP map[netip.Addr][]sourceRow
}

// sourceRow is what one source knows of an IP.
type sourceRow struct {
	source string
	row    *Endpoint
}

// NewEndpointWriter returns the writer of tbl.
func NewEndpointWriter(db *statedb.DB, tbl statedb.RWTable[*Endpoint]) *EndpointWriter {
	return &EndpointWriter{
		db:      db,
		tbl:     tbl,
		sources: map[string][]*Endpoint{},
		byIP:    map[netip.Addr][]sourceRow{},
	}
}

// EndpointTxn is an update in progress; see EndpointWriter.Update.
type EndpointTxn struct {
	w     *EndpointWriter
	txn   statedb.WriteTxn
	dirty map[netip.Addr]struct{}
}

// Update runs fn and writes the resulting rows in one transaction.
// Updates are serialized.
func (w *EndpointWriter) Update(fn func(*EndpointTxn)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := &EndpointTxn{w: w, txn: w.db.WriteTxn(w.tbl), dirty: map[netip.Addr]struct{}{}}
	fn(t)
	for ip := range t.dirty {
		w.writeIP(t.txn, ip)
	}
	t.txn.Commit()
}

// WriteTxn is the transaction of the update, e.g. to mark a table
// initializer done together with the rows.
func (t *EndpointTxn) WriteTxn() statedb.WriteTxn { return t.txn }

// Set replaces what a source knows with rows; no rows means the source is
// gone.
func (t *EndpointTxn) Set(source string, rows ...*Endpoint) {
	w := t.w
	for _, old := range w.sources[source] {
		if srs := w.byIP[old.IP]; srs != nil {
			srs = slices.DeleteFunc(srs, func(sr sourceRow) bool { return sr.source == source })
			if len(srs) == 0 {
				delete(w.byIP, old.IP)
			} else {
				w.byIP[old.IP] = srs
			}
		}
		t.dirty[old.IP] = struct{}{}
	}
	if len(rows) == 0 {
		delete(w.sources, source)
		return
	}
	w.sources[source] = rows
	for _, r := range rows {
		srs := w.byIP[r.IP]
		i := slices.IndexFunc(srs, func(sr sourceRow) bool { return sr.source == source })
		if i >= 0 {
			srs[i].row = r
		} else {
			srs = append(srs, sourceRow{source: source, row: r})
		}
		w.byIP[r.IP] = srs
		t.dirty[r.IP] = struct{}{}
	}
}

// winner is the row the table holds for ip: local first, then by source
// key.
func (w *EndpointWriter) winner(ip netip.Addr) *Endpoint {
	var best *Endpoint
	var bestKey string
	for _, sr := range w.byIP[ip] {
		k, r := sr.source, sr.row
		if best == nil {
			best, bestKey = r, k
			continue
		}
		bl, rl := best.Origin == OriginLocal, r.Origin == OriginLocal
		if (rl && !bl) || (rl == bl && cmp.Less(k, bestKey)) {
			best, bestKey = r, k
		}
	}
	if best != nil && best.UID == "" {
		// A local endpoint learns its CiliumEndpoint's UID (the key of the
		// spread over a CiliumEgressGatewayPolicy's gateways) late; take it
		// from the CiliumEndpoint of the same pod, so every node hashes
		// the pod alike.
		for _, sr := range w.byIP[ip] {
			if r := sr.row; r.UID != "" && r.Origin == OriginCiliumEndpoint && r.Namespace == best.Namespace && r.Name == best.Name {
				cp := *best
				cp.UID = r.UID
				return &cp
			}
		}
	}
	return best
}

func (w *EndpointWriter) writeIP(txn statedb.WriteTxn, ip netip.Addr) {
	want := w.winner(ip)
	cur, _, found := w.tbl.Get(txn, EndpointByIP(ip))
	switch {
	case want == nil && found:
		_, _, _ = w.tbl.Delete(txn, cur)
	case want != nil && (!found || !cur.Equal(want)):
		_, _, _ = w.tbl.Insert(txn, want)
	}
}
