package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/egressha/egressha/test/lab/cluster"
	"github.com/egressha/egressha/test/lab/probe"
)

// viaSourceMAC is probe.ViaSourceMAC for a test: it fails the test when a
// node's MAC cannot be read.
func viaSourceMAC(t *testing.T, cfg cluster.Config) probe.Via {
	t.Helper()
	via, err := probe.ViaSourceMAC(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return via
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
