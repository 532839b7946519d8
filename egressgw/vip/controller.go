package vip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	datapathtables "github.com/cilium/cilium/pkg/datapath/tables"
	k8sClient "github.com/cilium/cilium/pkg/k8s/client"
	"github.com/cilium/cilium/pkg/k8s/utils"
	nodeTypes "github.com/cilium/cilium/pkg/node/types"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/client"
	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/probe"
	"github.com/egressha/egressha/egressgw/reflectors"
	"github.com/egressha/egressha/egressgw/tables"
	"github.com/egressha/egressha/vipd"
)

type vipParams struct {
	cell.In

	Log          *slog.Logger
	JobGroup     job.Group
	Enabled      config.Enabled
	Config       config.AgentConfig
	VIPConfig    Config
	DaemonConfig *option.DaemonConfig
	Clientset    k8sClient.Clientset
	CRDs         *client.Clientset
	DB           *statedb.DB
	Gateways     statedb.Table[*tables.EgressGateway]
	Devices      statedb.Table[*datapathtables.Device]
	VIPs         statedb.RWTable[*tables.VirtualIP]
	// LocalGateways say which gateways this node is a candidate of.
	LocalGateways statedb.Table[*tables.LocalGateway]
	Status        *heartbeat.Status
	Metrics       *Metrics
	// Probes is the liveness probe responder (probe.AgentCell); absent or
	// off, the fence is the Lease's.
	Probes *probe.Responder `optional:"true"`
	// NodeLabels gives the other candidates' addresses for peer probes.
	NodeLabels *reflectors.NodeLabels `optional:"true"`
}

func registerController(p vipParams) error {
	if !p.Enabled {
		return nil
	}
	if err := p.VIPConfig.Validate(p.Config); err != nil {
		return fmt.Errorf("egressha VIP responder: %w", err)
	}
	j := &vipJob{
		p:    p,
		log:  p.Log,
		cfg:  p.VIPConfig,
		gws:  map[string]*vipGW{},
		wake: make(chan struct{}, 1),
	}
	// egress-virtual-ips is initialized once this controller has looked at
	// every gateway: the heartbeat's first report after an agent restart
	// waits for it, or it would say "not set up yet" (VirtualIPNotReady)
	// for the VIP of the active node and move the role for nothing.
	wtxn := p.DB.WriteTxn(p.VIPs)
	j.initialized = p.VIPs.RegisterInitializer(wtxn, "egress-gateway-ha-vip")
	wtxn.Commit()
	p.JobGroup.Add(job.OneShot("egress-gateway-ha-vip", j.run))
	return nil
}

// vipJob is the VIP controller's loop; only run's goroutine touches it,
// except peers and the duplicate evidence (own locks).
type vipJob struct {
	p     vipParams
	log   *slog.Logger
	cfg   Config
	node  string
	ns    string
	ann   *vipd.Announcer
	gws   map[string]*vipGW
	peers *peerLeases
	wake  chan struct{}
	// initialized marks egress-virtual-ips initialized (first publish).
	initialized func(statedb.WriteTxn)
}

// vipGW is the controller's state for one gateway.
type vipGW struct {
	name    string
	vip     netip.Addr
	ifaces  []string
	sp      *vipd.Speaker
	state   string
	message string
	since   time.Time
	retryAt time.Time
	// assigned is the interface the VIP was added to (assign-address flag).
	assigned string

	dupMu sync.Mutex
	dup   string
	dupAt time.Time
}

func (j *vipJob) poke() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

func (j *vipJob) run(ctx context.Context, health cell.Health) error {
	j.node = nodeTypes.GetName()
	j.ns = j.p.DaemonConfig.CiliumNamespaceName()
	j.ann = vipd.NewAnnouncer(j.cfg.vipd(), j.p.Metrics, j.log)
	j.peers = newPeerLeases(j.poke)
	defer func() {
		for _, g := range j.gws {
			j.release(g, "agent stopping")
		}
		j.ann.Close()
		j.peers.stop()
	}()

	// egress-local-gateways is initialized only once the gateways, the
	// devices and the node's labels are known.
	health.OK("Waiting for the local node, devices and EgressGateways")
	_, factsInit := j.p.LocalGateways.Initialized(j.p.DB.ReadTxn())
	select {
	case <-ctx.Done():
		return nil
	case <-factsInit:
	}

	// The fence verdict changes with probes that arrive, not with tables.
	var probeChanged <-chan struct{}
	if j.p.Probes != nil {
		probeChanged = j.p.Probes.Changed()
	}
	for {
		txn := j.p.DB.ReadTxn()
		gws, gwChanged := j.p.Gateways.AllWatch(txn)
		devs, devChanged := j.p.Devices.AllWatch(txn)
		facts, factsChanged := j.p.LocalGateways.AllWatch(txn)
		candidate := map[string]bool{}
		for f := range facts {
			candidate[f.Gateway] = f.Candidate
		}
		next := j.reconcile(ctx, statedb.Collect(gws), statedb.Collect(devs), candidate)
		j.publish(health)

		var timer <-chan time.Time
		if !next.IsZero() {
			timer = time.After(max(time.Until(next), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-gwChanged:
		case <-devChanged:
		case <-factsChanged:
		case <-j.wake:
		case <-probeChanged:
		case <-timer:
		}
	}
}

// probing reports whether the fence is the probe rule: the responder runs
// and an operator's probe has arrived since it started. Until then (and
// with probing off) the fence is the Lease rule, as the operator then
// judges this node by its Lease too.
func (j *vipJob) probing() bool {
	return j.p.Probes != nil && j.p.Probes.Started() && j.p.Probes.OperatorSeen()
}

// fenceOpen: this node may answer for its VIPs. With probing, while it is
// heard (probe.Hearing.Verdict: the operator leader says it hears this
// node, or no leader probes and the cluster network still reaches it);
// a control-plane outage alone does not fence. Without probing, while the
// heartbeat Lease this node last renewed is valid for at least the margin
// more. Checked before every ARP frame that claims a VIP.
func (j *vipJob) fenceOpen() bool {
	if j.probing() {
		return j.p.Probes.Heard(time.Now()).Heard
	}
	return time.Now().Before(j.p.Status.ValidUntil().Add(-j.cfg.EgressGatewayHAVIPFenceMargin))
}

// fenceClosedWhy says why the fence is closed, and when to look again.
func (j *vipJob) fenceClosedWhy(now time.Time) (string, time.Time) {
	if j.probing() {
		return "not heard over the cluster network: " + j.p.Probes.Heard(now).Why, now.Add(j.p.Config.EgressGatewayHAProbeFence / 2)
	}
	return fmt.Sprintf("heartbeat Lease valid until %s only (fence margin %s): not answering until it is renewed",
		j.p.Status.ValidUntil().Format(time.RFC3339Nano), j.cfg.EgressGatewayHAVIPFenceMargin), now.Add(100 * time.Millisecond)
}

// peerAddrs are the other candidates of the wanted VIP gateways: a node
// that no operator probes (every replica gone in an API server outage)
// stays heard while they reach it.
func (j *vipJob) peerAddrs(wanted map[string]*tables.EgressGateway) map[string]netip.Addr {
	if j.p.NodeLabels == nil || len(wanted) == 0 {
		return nil
	}
	peers := j.p.NodeLabels.Matching(func(labels map[string]string) bool {
		for _, gw := range wanted {
			if v1alpha1.NodeSelectorMatches(gw.NodeSelector, labels) {
				return true
			}
		}
		return false
	})
	delete(peers, j.node)
	return peers
}

// fenceRecheck is when an open fence must be looked at again without a
// change: with probing, the responder signals every change of its verdict
// (Changed), and a look every second bounds a missed one; without, the
// Lease's validity.
func (j *vipJob) fenceRecheck(now time.Time) time.Time {
	if j.probing() {
		return now.Add(time.Second)
	}
	return j.p.Status.ValidUntil().Add(-j.cfg.EgressGatewayHAVIPFenceMargin)
}

// reconcile brings every VIP gateway to the state its inputs ask for and
// returns when it wants to run again (zero: only on a change).
func (j *vipJob) reconcile(ctx context.Context, gws []*tables.EgressGateway, devs []*datapathtables.Device, candidate map[string]bool) time.Time {
	now := time.Now()
	wanted := map[string]*tables.EgressGateway{}
	for _, gw := range gws {
		if gw.Mode == v1alpha1.SourceIPModeVirtualIP && gw.VirtualIP.Is4() && candidate[gw.Name] {
			wanted[gw.Name] = gw
		}
	}
	for name, g := range j.gws {
		if _, ok := wanted[name]; !ok {
			j.release(g, "no longer a candidate of the gateway")
			delete(j.gws, name)
		}
	}
	if j.p.Probes != nil {
		j.p.Probes.SetVIPCandidate(len(wanted) > 0)
		j.p.Probes.SetPeers(j.peerAddrs(wanted))
	}
	if len(wanted) == 0 {
		j.peers.stop()
		j.ann.SyncInterfaces(nil)
		return time.Time{}
	}
	if err := j.peers.start(j.p.Clientset, j.ns); err != nil {
		j.log.Warn("Cannot watch the heartbeat Leases of other nodes", "error", err)
	}

	auto := autoVIPInterfaces(devs)
	union := map[string]bool{}
	ifacesOf := map[string][]string{}
	for name, gw := range wanted {
		ifs := gw.VirtualIPInterfaces
		if len(ifs) == 0 {
			ifs = auto
		}
		ifs = slices.Sorted(slices.Values(ifs))
		ifacesOf[name] = ifs
		for _, i := range ifs {
			union[i] = true
		}
	}
	ifErrs := j.ann.SyncInterfaces(slices.Collect(maps.Keys(union)))

	var next time.Time
	wake := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, name := range slices.Sorted(maps.Keys(wanted)) {
		gw := wanted[name]
		g := j.gws[name]
		if g == nil {
			g = &vipGW{name: name}
			j.gws[name] = g
		}
		if g.sp != nil && (g.vip != gw.VirtualIP || !slices.Equal(g.ifaces, ifacesOf[name])) {
			j.release(g, "virtual IP or interfaces changed")
		}
		g.vip, g.ifaces = gw.VirtualIP, ifacesOf[name]
		if g.sp == nil {
			g.sp = j.ann.NewSpeaker(g.vip, g.ifaces, j.fenceOpen, j.duplicateHandler(g))
		} else {
			g.sp.Reregister()
		}
		wake(j.step(ctx, g, gw, ifErrs, now))
	}
	return next
}

// step advances one gateway and returns when it wants to be looked at
// again.
func (j *vipJob) step(ctx context.Context, g *vipGW, gw *tables.EgressGateway, ifErrs map[string]error, now time.Time) time.Time {
	if why := notReady(g.ifaces, ifErrs); why != "" {
		j.stopAnnouncing(g, "responder not ready: "+why)
		j.setState(g, tables.VIPNotReady, why, now)
		return now.Add(5 * time.Second) // interfaces come and go without a table change (e.g. NOARP)
	}
	if gw.ActiveNodeName != j.node {
		j.stopAnnouncing(g, fmt.Sprintf("the active node is now %s", orNoneString(gw.ActiveNodeName)))
		j.setState(g, tables.VIPStandby, fmt.Sprintf("active node is %s", orNoneString(gw.ActiveNodeName)), now)
		return time.Time{}
	}
	if !j.fenceOpen() {
		why, again := j.fenceClosedWhy(now)
		j.stopAnnouncing(g, "self-fencing: "+why)
		j.setState(g, tables.VIPFenced, why, now)
		return again
	}
	if g.sp.Active() {
		if g.sp.Announcing() {
			j.setState(g, tables.VIPAnnouncing, fmt.Sprintf("answering ARP for %s on %s", g.vip, strings.Join(g.ifaces, ",")), now)
			return j.fenceRecheck(now)
		}
		// A responder was re-opened under us: claim again.
		j.stopAnnouncing(g, "an ARP socket was re-opened")
	}
	if now.Before(g.retryAt) {
		return g.retryAt
	}
	return j.claim(ctx, g, now)
}

// claim checks that nobody else announces, probes, and starts announcing.
func (j *vipJob) claim(ctx context.Context, g *vipGW, now time.Time) time.Time {
	blockers, err := j.blockers(ctx, g.name, now)
	if err != nil {
		j.setState(g, tables.VIPWaiting, "cannot confirm that no other node announces: "+err.Error(), now)
		g.retryAt = now.Add(500 * time.Millisecond)
		return g.retryAt
	}
	if len(blockers) > 0 {
		var parts []string
		var first time.Time
		for _, b := range blockers {
			parts = append(parts, fmt.Sprintf("%s (its Lease expires in %s)", b.node, b.expires.Sub(now).Round(time.Millisecond)))
			if first.IsZero() || b.expires.Before(first) {
				first = b.expires
			}
		}
		j.setState(g, tables.VIPWaiting, "waiting for "+strings.Join(parts, ", ")+" to withdraw the virtual IP", now)
		return first
	}
	j.setState(g, tables.VIPProbing, "probing for other hosts using "+g.vip.String(), now)
	dups, err := g.sp.Probe(ctx)
	if err != nil {
		j.setState(g, tables.VIPNotReady, "ARP probe failed: "+err.Error(), now)
		g.retryAt = now.Add(time.Second)
		return g.retryAt
	}
	if len(dups) > 0 {
		msg := fmt.Sprintf("not claiming %s: %s answered the ARP probe", g.vip, dups[0])
		j.log.Warn("Virtual IP is used by another host; not claiming it", "gateway", g.name, "vip", g.vip, "duplicate", dups[0].String())
		j.setState(g, tables.VIPConflict, msg, now)
		g.retryAt = now.Add(time.Second)
		return g.retryAt
	}
	// The probe took time: the fence must still be open to start.
	if !j.fenceOpen() {
		return time.Now()
	}
	g.sp.Start()
	j.assign(g)
	after := time.Since(now)
	j.log.Info("Claimed virtual IP: answering ARP and sending gratuitous ARP",
		"gateway", g.name, "vip", g.vip, "interfaces", g.ifaces, "claimTook", after.Round(time.Microsecond))
	j.setState(g, tables.VIPAnnouncing, fmt.Sprintf("answering ARP for %s on %s", g.vip, strings.Join(g.ifaces, ",")), time.Now())
	return j.fenceRecheck(time.Now())
}

// peerExpiry is when another node's Lease, whose renewal this agent
// observed at observed, stops blocking this node from claiming a VIP. Its
// leaseDurationSeconds counts up to the larger of this agent's own expiry
// (the agents of a cluster share the flag, so a legitimate peer never
// claims more) and the operator's default maximum expiry: a Lease claiming
// years cannot keep the VIP unannounced for years.
func peerExpiry(hb heartbeat.Heartbeat, observed time.Time, ownExpiry time.Duration) time.Time {
	hb.ClampDuration(max(ownExpiry, config.DefaultOperatorConfig.EgressGatewayHAHeartbeatMaxExpiry))
	return observed.Add(hb.Duration)
}

type blocker struct {
	node    string
	expires time.Time
}

// blockers reads, from the API server (not from a cache that may lag after
// a partition), whether this node is still the active node and which other
// nodes' Leases say they announce the gateway's VIP and have not expired.
// A Lease's expiry counts from when this agent first saw its current
// renewal, so clock skew between nodes cannot shorten it.
func (j *vipJob) blockers(ctx context.Context, gateway string, now time.Time) ([]blocker, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	gw, err := j.p.CRDs.Gateways.Get(ctx, gateway)
	if err != nil {
		return nil, fmt.Errorf("reading EgressGateway %s: %w", gateway, err)
	}
	if gw.Status.ActiveNodeName != j.node {
		return nil, fmt.Errorf("EgressGateway %s now names %s as active", gateway, orNoneString(gw.Status.ActiveNodeName))
	}
	leases, err := j.p.Clientset.CoordinationV1().Leases(j.ns).List(ctx, metav1.ListOptions{
		LabelSelector: heartbeat.ComponentLabel + "=" + heartbeat.ComponentValue,
	})
	if err != nil {
		return nil, fmt.Errorf("listing heartbeat Leases: %w", err)
	}
	// The operator hands the role of a node that stopped answering its
	// probes on only after that node's fence bound has passed (operator
	// liveness.go): such a node has stopped answering, whatever its Lease
	// still says.
	fenced := ""
	if lf := gw.Status.LastFailover; lf != nil && lf.To == j.node && lf.Reason == v1alpha1.CandidateNodeUnreachable {
		fenced = lf.From
	}
	var out []blocker
	for i := range leases.Items {
		hb, err := heartbeat.FromLease(&leases.Items[i])
		if err != nil || hb.Node == j.node || hb.Node == fenced || !hb.Gateways[gateway].Announcing {
			continue
		}
		expires := peerExpiry(hb, j.peers.observed(hb.Node, hb.RenewTime, now), j.p.Config.EgressGatewayHAHeartbeatExpiry)
		if now.Before(expires) {
			out = append(out, blocker{node: hb.Node, expires: expires})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].node < out[b].node })
	return out, nil
}

func (j *vipJob) stopAnnouncing(g *vipGW, why string) {
	if g.sp == nil || !g.sp.Active() {
		return
	}
	g.sp.Stop()
	j.unassign(g)
	j.log.Info("Stopped answering ARP for virtual IP", "gateway", g.name, "vip", g.vip, "reason", why)
}

func (j *vipJob) release(g *vipGW, why string) {
	j.stopAnnouncing(g, why)
	if g.sp != nil {
		g.sp.Close()
		g.sp = nil
	}
	g.state = ""
}

// assign adds the VIP to the first interface when the flag asks for it.
func (j *vipJob) assign(g *vipGW) {
	if !j.cfg.EgressGatewayHAVIPAssignAddress || len(g.ifaces) == 0 {
		return
	}
	link, err := netlink.LinkByName(g.ifaces[0])
	if err == nil {
		err = netlink.AddrReplace(link, vipAddr(g.vip))
	}
	if err != nil {
		j.log.Warn("Cannot add the virtual IP to the interface (egress-gateway-ha-vip-assign-address)",
			"gateway", g.name, "vip", g.vip, "interface", g.ifaces[0], "error", err)
		return
	}
	g.assigned = g.ifaces[0]
}

func (j *vipJob) unassign(g *vipGW) {
	if g.assigned == "" {
		return
	}
	link, err := netlink.LinkByName(g.assigned)
	if err == nil {
		err = netlink.AddrDel(link, vipAddr(g.vip))
	}
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		j.log.Warn("Cannot remove the virtual IP from the interface", "gateway", g.name, "vip", g.vip, "interface", g.assigned, "error", err)
	}
	g.assigned = ""
}

func vipAddr(vip netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: vip.AsSlice(), Mask: net.CIDRMask(32, 32)}, Flags: unix.IFA_F_NOPREFIXROUTE}
}

// duplicateHandler records duplicate evidence; called from read goroutines.
func (j *vipJob) duplicateHandler(g *vipGW) func(vipd.Duplicate) {
	return func(d vipd.Duplicate) {
		g.dupMu.Lock()
		first := g.dup == ""
		g.dup, g.dupAt = fmt.Sprintf("%s on %s (%s)", d.MAC, d.Interface, d.Kind), d.At
		g.dupMu.Unlock()
		if first {
			j.log.Warn("Another host claims the virtual IP", "gateway", g.name, "vip", d.VIP, "mac", d.MAC.String(),
				"interface", d.Interface, "evidence", d.Kind)
			j.poke()
		}
	}
}

// dupHold is how long duplicate evidence is reported after it was last
// seen: three re-announce probes, at least a minute.
func (j *vipJob) dupHold() time.Duration {
	return max(3*j.cfg.EgressGatewayHAVIPReannounceInterval, time.Minute)
}

func (j *vipJob) setState(g *vipGW, state, msg string, now time.Time) {
	if g.state != state {
		if g.state != "" || state != tables.VIPStandby {
			j.log.Info("Virtual IP state", "gateway", g.name, "vip", g.vip, "from", orNoneString(g.state), "to", state, "message", msg)
		}
		g.since = now
	}
	g.state, g.message = state, msg
	if state != tables.VIPConflict && state != tables.VIPWaiting && state != tables.VIPNotReady {
		g.retryAt = time.Time{}
	}
}

// publish writes the rows that changed to egress-virtual-ips.
func (j *vipJob) publish(health cell.Health) {
	txn := j.p.DB.WriteTxn(j.p.VIPs)
	defer txn.Commit()
	if j.initialized != nil {
		j.initialized(txn)
		j.initialized = nil
	}
	var active, problems []string
	for row := range j.p.VIPs.All(txn) {
		if _, ok := j.gws[row.Gateway]; !ok {
			j.p.VIPs.Delete(txn, row)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(j.gws)) {
		g := j.gws[name]
		g.dupMu.Lock()
		if g.dup != "" && time.Since(g.dupAt) > j.dupHold() {
			g.dup = ""
		}
		dup := g.dup
		g.dupMu.Unlock()
		row := &tables.VirtualIP{Gateway: name, VIP: g.vip, Interfaces: g.ifaces, State: g.state,
			Ready: g.state != tables.VIPNotReady && g.state != "", Message: g.message, Duplicate: dup, Since: g.since}
		if old, _, ok := j.p.VIPs.Get(txn, tables.VirtualIPByGateway(name)); !ok || !sameVIPRow(old, row) {
			j.p.VIPs.Insert(txn, row)
		}
		switch {
		case g.state == tables.VIPAnnouncing && dup == "":
			active = append(active, fmt.Sprintf("%s (%s)", g.vip, name))
		case g.state == tables.VIPNotReady || g.state == tables.VIPConflict || dup != "":
			problems = append(problems, fmt.Sprintf("%s: %s %s", name, g.state, g.message+dupSuffix(dup)))
		}
	}
	if len(problems) > 0 {
		health.Degraded("Virtual IPs not served: "+strings.Join(problems, "; "), errors.New(strings.Join(problems, "; ")))
		return
	}
	health.OK(fmt.Sprintf("Announcing %d virtual IP(s): %s", len(active), strings.Join(active, ", ")))
}

func dupSuffix(d string) string {
	if d == "" {
		return ""
	}
	return "; duplicate: " + d
}

func sameVIPRow(a, b *tables.VirtualIP) bool {
	return a.VIP == b.VIP && slices.Equal(a.Interfaces, b.Interfaces) && a.State == b.State && a.Ready == b.Ready &&
		a.Message == b.Message && a.Duplicate == b.Duplicate && a.Since.Equal(b.Since)
}

// notReady says why the responder cannot answer on every interface.
func notReady(ifaces []string, errs map[string]error) string {
	if len(ifaces) == 0 {
		return "no interface to announce on: the gateway lists none and the node has no up, ARP-capable, non-Cilium interface"
	}
	var why []string
	for _, i := range ifaces {
		if err := errs[i]; err != nil {
			why = append(why, err.Error())
		}
	}
	return strings.Join(why, "; ")
}

// autoVIPInterfaces are the interfaces an empty spec list means: up,
// Ethernet, broadcast-capable, not loopback and not created by Cilium.
func autoVIPInterfaces(devs []*datapathtables.Device) []string {
	var out []string
	for _, d := range devs {
		if d.Name == "" || d.Flags&net.FlagUp == 0 || d.Flags&net.FlagLoopback != 0 || d.Flags&net.FlagBroadcast == 0 ||
			len(d.HardwareAddr) != 6 || isCiliumDevice(d.Name, d.Type) {
			continue
		}
		out = append(out, d.Name)
	}
	sort.Strings(out)
	return out
}

func isCiliumDevice(name, typ string) bool {
	for _, p := range []string{"cilium_", "lxc"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return typ == "vxlan" || typ == "geneve"
}

func orNoneString(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// peerLeases watches the heartbeat Leases of the other candidate nodes and
// remembers when this agent first saw each renewal. It runs only while the
// node is a candidate of a VIP gateway.
type peerLeases struct {
	onChange func()

	mu       sync.Mutex
	stopCh   chan struct{}
	seen     map[string]peerRenewal // node -> last renewal seen
	announce map[string]string      // node -> announcing gateways, to signal changes only
}

type peerRenewal struct {
	renew    time.Time
	observed time.Time
}

func newPeerLeases(onChange func()) *peerLeases {
	return &peerLeases{onChange: onChange, seen: map[string]peerRenewal{}, announce: map[string]string{}}
}

func (p *peerLeases) start(cs k8sClient.Clientset, ns string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopCh != nil {
		return nil
	}
	if ns == "" {
		return errors.New("the Cilium namespace (--k8s-namespace) is not set")
	}
	lw := utils.ListerWatcherWithModifiers(
		utils.ListerWatcherFromTyped[*coordinationv1.LeaseList](cs.CoordinationV1().Leases(ns)),
		func(o *metav1.ListOptions) {
			o.LabelSelector = heartbeat.ComponentLabel + "=" + heartbeat.ComponentValue
		})
	_, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    &coordinationv1.Lease{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { p.update(o, false) },
			UpdateFunc: func(_, o any) { p.update(o, false) },
			DeleteFunc: func(o any) { p.update(o, true) },
		},
	})
	p.stopCh = make(chan struct{})
	go ctrl.Run(p.stopCh)
	return nil
}

func (p *peerLeases) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopCh != nil {
		close(p.stopCh)
		p.stopCh = nil
	}
}

func (p *peerLeases) update(o any, deleted bool) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o, deleted = d.Obj, true
	}
	l, ok := o.(*coordinationv1.Lease)
	if !ok {
		return
	}
	hb, err := heartbeat.FromLease(l)
	if hb.Node == "" {
		return
	}
	now := time.Now()
	var announcing []string
	if err == nil {
		for _, name := range hb.Gateways.Candidates() {
			if hb.Gateways[name].Announcing {
				announcing = append(announcing, name)
			}
		}
	}
	p.mu.Lock()
	changed := false
	if deleted {
		delete(p.seen, hb.Node)
		changed = p.announce[hb.Node] != ""
		delete(p.announce, hb.Node)
	} else {
		if prev, ok := p.seen[hb.Node]; !ok || !prev.renew.Equal(hb.RenewTime) {
			p.seen[hb.Node] = peerRenewal{renew: hb.RenewTime, observed: now}
		}
		a := strings.Join(announcing, ",")
		changed = p.announce[hb.Node] != a
		p.announce[hb.Node] = a
	}
	p.mu.Unlock()
	if changed {
		p.onChange()
	}
}

// observed is when this agent first saw node's renewal at renew; now if it
// has not seen it (the longest possible wait).
func (p *peerLeases) observed(node string, renew, now time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.seen[node]; ok && s.renew.Equal(renew) {
		return s.observed
	}
	return now
}
