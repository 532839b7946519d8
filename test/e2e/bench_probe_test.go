package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/egressha/egressha/test/lab/cluster"
)

// probeInterval and probeTimeout: the prober starts one request (a new TCP
// connection) every 20 ms and gives each up to one second.
const (
	probeInterval = 20 * time.Millisecond
	probeTimeout  = time.Second
)

// probeSample is one request of the prober.
type probeSample struct {
	Sent, Replied time.Time
	// Source and MAC: the echo server's view of the sender (the address
	// after SNAT and the Ethernet source on the public bridge).
	Source, MAC string
	Err         error
}

func (s probeSample) ok() bool { return s.Err == nil }

// prober sends a request from inside a pod to the echo server every
// probeInterval, without waiting for earlier ones, and records every
// answer. Samples are kept in the order the requests finished.
type prober struct {
	cfg     cluster.Config
	ns, pod string
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples []probeSample
}

func startProber(cfg cluster.Config, ns, pod string) *prober {
	ctx, cancel := context.WithCancel(context.Background())
	p := &prober{cfg: cfg, ns: ns, pod: pod, cancel: cancel}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(probeInterval)
		defer tick.Stop()
		for {
			p.wg.Add(1)
			go p.once(ctx)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

func (p *prober) once(ctx context.Context) {
	defer p.wg.Done()
	s := probeSample{Sent: time.Now()}
	body, err := cluster.Curl(ctx, p.cfg, p.ns, p.pod, cluster.EchoL2URL(), probeTimeout)
	s.Replied = time.Now()
	if ctx.Err() != nil {
		return // stopped: not a datapath failure
	}
	if err != nil {
		s.Err = err
	} else {
		f := strings.Fields(body)
		if len(f) > 0 {
			s.Source = f[0]
		}
		if len(f) > 1 {
			s.MAC = f[1]
		}
	}
	p.mu.Lock()
	p.samples = append(p.samples, s)
	p.mu.Unlock()
}

// stop ends the prober and returns every sample.
func (p *prober) stop() []probeSample {
	p.cancel()
	p.wg.Wait()
	return p.snapshot()
}

func (p *prober) snapshot() []probeSample {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]probeSample(nil), p.samples...)
}

// waitFor returns the first successful sample answered after after for
// which match holds, waiting up to timeout for one.
func (p *prober) waitFor(after time.Time, timeout time.Duration, match func(probeSample) bool) (probeSample, bool) {
	deadline := time.Now().Add(timeout)
	seen := 0
	for {
		all := p.snapshot()
		for _, s := range all[seen:] {
			if s.ok() && s.Replied.After(after) && match(s) {
				return s, true
			}
		}
		seen = len(all)
		if time.Now().After(deadline) {
			return probeSample{}, false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitSteady waits until the last n samples all succeeded and match.
func (p *prober) waitSteady(n int, timeout time.Duration, match func(probeSample) bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		all := p.snapshot()
		if len(all) >= n {
			good := true
			for _, s := range all[len(all)-n:] {
				good = good && s.ok() && match(s)
			}
			if good {
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// lastBefore returns the latest successful sample answered before before
// for which match holds.
func (p *prober) lastBefore(before time.Time, match func(probeSample) bool) (probeSample, bool) {
	var best probeSample
	found := false
	for _, s := range p.snapshot() {
		if s.ok() && s.Replied.Before(before) && match(s) && (!found || s.Replied.After(best.Replied)) {
			best, found = s, true
		}
	}
	return best, found
}

// longestGap is the longest time between two consecutive successful
// replies for which match holds, from the last such reply before since
// on: the traffic gap a disruption at since caused.
func (p *prober) longestGap(since time.Time, match func(probeSample) bool) time.Duration {
	var replies []time.Time
	for _, s := range p.snapshot() {
		if s.ok() && match(s) {
			replies = append(replies, s.Replied)
		}
	}
	slices.SortFunc(replies, time.Time.Compare)
	var longest time.Duration
	var prev time.Time
	for _, t := range replies {
		if !t.Before(since) && !prev.IsZero() {
			longest = max(longest, t.Sub(prev))
		}
		prev = t
	}
	return longest
}

// count returns how many requests were sent in [from, to) and how many of
// those failed.
func (p *prober) count(from, to time.Time) (sent, failed int) {
	for _, s := range p.snapshot() {
		if !s.Sent.Before(from) && s.Sent.Before(to) {
			sent++
			if !s.ok() {
				failed++
			}
		}
	}
	return sent, failed
}

// viaFunc tells which node a reply left the cluster through ("" when it
// cannot tell).
type viaFunc func(probeSample) string

// viaSourceIP tells gateways apart by the SNAT address the echo server
// saw: each node's eth1 address (basic mode).
func viaSourceIP(cfg cluster.Config) viaFunc {
	byIP := map[string]string{}
	for _, n := range cfg.Nodes {
		byIP[n.PublicIP.String()] = n.Name
	}
	return func(s probeSample) string { return byIP[s.Source] }
}

// viaSourceMAC tells gateways apart by the Ethernet source address of the
// request on the public bridge: each node's eth1 MAC. It works when every
// gateway SNATs to the same virtual IP (VIP mode).
func viaSourceMAC(t *testing.T, cfg cluster.Config) viaFunc {
	t.Helper()
	byMAC := map[string]string{}
	for _, n := range cfg.Nodes {
		mac, err := cluster.LinkMAC(n, "eth1")
		if err != nil {
			t.Fatalf("eth1 MAC of %s: %v", n.Name, err)
		}
		byMAC[mac.String()] = n.Name
	}
	return func(s probeSample) string { return byMAC[s.MAC] }
}

func isVia(via viaFunc, node string) func(probeSample) bool {
	return func(s probeSample) bool { return via(s) == node }
}

// egressMapWatcher dumps a node's pinned egress policy map (read directly
// through bpffs, no cilium-dbg) every 10 ms and records when each source
// address first had an entry through gatewayIP.
type egressMapWatcher struct {
	cancel    context.CancelFunc
	done      chan struct{}
	mu        sync.Mutex
	firstSeen map[netip.Addr]time.Time
	err       error
}

func watchEgressMap(t *testing.T, cfg cluster.Config, node string, gatewayIP netip.Addr) *egressMapWatcher {
	t.Helper()
	path := cfg.BPFFSPath(node, "tc/globals/cilium_egress_gw_policy_v4")
	fd, err := bpfObjGet(path)
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &egressMapWatcher{cancel: cancel, done: make(chan struct{}), firstSeen: map[netip.Addr]time.Time{}}
	go func() {
		defer close(w.done)
		defer syscall.Close(fd)
		for ctx.Err() == nil {
			now := time.Now()
			err := dumpEgressMap(fd, func(src netip.Addr, _ netip.Prefix, _, gw netip.Addr) {
				if gw != gatewayIP {
					return
				}
				w.mu.Lock()
				if _, ok := w.firstSeen[src]; !ok {
					w.firstSeen[src] = now
				}
				w.mu.Unlock()
			})
			if err != nil {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return w
}

// seen returns when src first had an entry, or false.
func (w *egressMapWatcher) seen(src string) (time.Time, bool) {
	a, err := netip.ParseAddr(src)
	if err != nil {
		return time.Time{}, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.firstSeen[a]
	return at, ok
}

func (w *egressMapWatcher) stop() error {
	w.cancel()
	<-w.done
	return w.err
}

// The bpf(2) commands used to read a pinned map.
const (
	bpfCmdMapLookupElem = 1
	bpfCmdMapGetNextKey = 4
	bpfCmdObjGet        = 7
	egressKeySize       = 12 // struct egress_gw_policy_key: lpm prefixlen, saddr, daddr
	egressValueSize     = 8  // struct egress_gw_policy_entry: egress_ip, gateway_ip
	egressStaticBits4   = 32 // the source address is the static part of the LPM key
)

func bpfObjGet(path string) (int, error) {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return -1, err
	}
	attr := struct {
		pathname  unsafe.Pointer
		bpfFD     uint32
		fileFlags uint32
	}{pathname: unsafe.Pointer(p)}
	fd, _, errno := syscall.Syscall(unix.SYS_BPF, bpfCmdObjGet, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(p)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

type bpfMapElemAttr struct {
	mapFD uint32
	_     uint32
	key   unsafe.Pointer
	value unsafe.Pointer // next_key for BPF_MAP_GET_NEXT_KEY
	flags uint64
}

func bpfMapCall(cmd uintptr, attr *bpfMapElemAttr) syscall.Errno {
	_, _, errno := syscall.Syscall(unix.SYS_BPF, cmd, uintptr(unsafe.Pointer(attr)), unsafe.Sizeof(*attr))
	return errno
}

// dumpEgressMap calls f for every entry of Cilium's egress policy map.
func dumpEgressMap(fd int, f func(src netip.Addr, dst netip.Prefix, egressIP, gatewayIP netip.Addr)) error {
	key := make([]byte, egressKeySize)
	next := make([]byte, egressKeySize)
	val := make([]byte, egressValueSize)
	var cur unsafe.Pointer // nil: start from the first key
	for range 1 << 20 {
		attr := bpfMapElemAttr{mapFD: uint32(fd), key: cur, value: unsafe.Pointer(&next[0])}
		if errno := bpfMapCall(bpfCmdMapGetNextKey, &attr); errno == syscall.ENOENT {
			return nil
		} else if errno != 0 {
			return fmt.Errorf("BPF_MAP_GET_NEXT_KEY: %w", errno)
		}
		copy(key, next)
		cur = unsafe.Pointer(&key[0])
		attr = bpfMapElemAttr{mapFD: uint32(fd), key: cur, value: unsafe.Pointer(&val[0])}
		if errno := bpfMapCall(bpfCmdMapLookupElem, &attr); errno == syscall.ENOENT {
			continue // deleted between the two calls
		} else if errno != 0 {
			return fmt.Errorf("BPF_MAP_LOOKUP_ELEM: %w", errno)
		}
		bits := int(*(*uint32)(unsafe.Pointer(&key[0]))) - egressStaticBits4 // host byte order
		src := netip.AddrFrom4([4]byte(key[4:8]))
		dst := netip.PrefixFrom(netip.AddrFrom4([4]byte(key[8:12])), max(bits, 0))
		f(src, dst, netip.AddrFrom4([4]byte(val[0:4])), netip.AddrFrom4([4]byte(val[4:8])))
	}
	return fmt.Errorf("egress map iteration did not end")
}

// benchEnabled skips the lab benchmarks unless EGRESSHA_BENCH=1 (`make
// bench`): they take many minutes. Asked to run, they fail, never skip,
// when the lab cannot come up.
func benchEnabled(t *testing.T) {
	t.Helper()
	if os.Getenv("EGRESSHA_BENCH") != "1" {
		t.Skip("lab benchmark: set EGRESSHA_BENCH=1 (make bench)")
	}
}
