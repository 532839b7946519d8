// Package probe measures what a pod sees while the egress gateway moves: a
// prober sends an HTTP request (a new TCP connection) from inside a lab pod
// to the echo server every Interval, without waiting for earlier ones, and
// records who the echo server saw. The demo (test/lab/demo) and the e2e
// tests and benchmarks (test/e2e) use it.
package probe

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/egressha/egressha/test/lab/cluster"
)

// Interval and Timeout: the prober starts one request (a new TCP
// connection) every 20 ms and gives each up to one second.
const (
	Interval = 20 * time.Millisecond
	Timeout  = time.Second
)

// Sample is one request of the prober.
type Sample struct {
	Sent, Replied time.Time
	// Source and MAC: the echo server's view of the sender (the address
	// after SNAT and the Ethernet source on the public bridge).
	Source, MAC string
	Err         error
}

// OK reports whether the request got an answer.
func (s Sample) OK() bool { return s.Err == nil }

// Prober sends a request from inside a pod to the echo server every
// Interval, without waiting for earlier ones, and records every answer.
// Samples are kept in the order the requests finished.
type Prober struct {
	cfg     cluster.Config
	ns, pod string
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples []Sample
}

// Start starts a prober in the lab pod ns/pod.
func Start(cfg cluster.Config, ns, pod string) *Prober {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Prober{cfg: cfg, ns: ns, pod: pod, cancel: cancel}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(Interval)
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

func (p *Prober) once(ctx context.Context) {
	defer p.wg.Done()
	s := Sample{Sent: time.Now()}
	body, err := cluster.Curl(ctx, p.cfg, p.ns, p.pod, cluster.EchoL2URL(), Timeout)
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

// Stop ends the prober and returns every sample. It may be called more
// than once.
func (p *Prober) Stop() []Sample {
	p.cancel()
	p.wg.Wait()
	return p.Snapshot()
}

// Snapshot returns the samples so far.
func (p *Prober) Snapshot() []Sample {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Sample(nil), p.samples...)
}

// WaitFor returns the first successful sample answered after after for
// which match holds, waiting up to timeout for one.
func (p *Prober) WaitFor(after time.Time, timeout time.Duration, match func(Sample) bool) (Sample, bool) {
	deadline := time.Now().Add(timeout)
	seen := 0
	for {
		all := p.Snapshot()
		for _, s := range all[seen:] {
			if s.OK() && s.Replied.After(after) && match(s) {
				return s, true
			}
		}
		seen = len(all)
		if time.Now().After(deadline) {
			return Sample{}, false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitSteady waits until the last n samples all succeeded and match.
func (p *Prober) WaitSteady(n int, timeout time.Duration, match func(Sample) bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		all := p.Snapshot()
		if len(all) >= n {
			good := true
			for _, s := range all[len(all)-n:] {
				good = good && s.OK() && match(s)
			}
			if good {
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// LastBefore returns the latest successful sample answered before before
// for which match holds.
func (p *Prober) LastBefore(before time.Time, match func(Sample) bool) (Sample, bool) {
	var best Sample
	found := false
	for _, s := range p.Snapshot() {
		if s.OK() && s.Replied.Before(before) && match(s) && (!found || s.Replied.After(best.Replied)) {
			best, found = s, true
		}
	}
	return best, found
}

// LongestGap is the longest time between two consecutive successful
// replies for which match holds, from the last such reply before since
// on: the traffic gap a disruption at since caused.
func (p *Prober) LongestGap(since time.Time, match func(Sample) bool) time.Duration {
	var replies []time.Time
	for _, s := range p.Snapshot() {
		if s.OK() && match(s) {
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

// Count returns how many requests were sent in [from, to) and how many of
// those failed.
func (p *Prober) Count(from, to time.Time) (sent, failed int) {
	for _, s := range p.Snapshot() {
		if !s.Sent.Before(from) && s.Sent.Before(to) {
			sent++
			if !s.OK() {
				failed++
			}
		}
	}
	return sent, failed
}

// Via tells which node a reply left the cluster through ("" when it
// cannot tell).
type Via func(Sample) string

// ViaSourceIP tells gateways apart by the SNAT address the echo server
// saw: each node's eth1 address (basic mode).
func ViaSourceIP(cfg cluster.Config) Via {
	byIP := map[string]string{}
	for _, n := range cfg.Nodes {
		byIP[n.PublicIP.String()] = n.Name
	}
	return func(s Sample) string { return byIP[s.Source] }
}

// ViaSourceMAC tells gateways apart by the Ethernet source address of the
// request on the public bridge: each node's eth1 MAC. It works when every
// gateway SNATs to the same virtual IP (VIP mode).
func ViaSourceMAC(cfg cluster.Config) (Via, error) {
	byMAC, err := NodesByMAC(cfg)
	if err != nil {
		return nil, err
	}
	return func(s Sample) string { return byMAC[s.MAC] }, nil
}

// NodesByMAC maps each node's eth1 MAC address to the node's name.
func NodesByMAC(cfg cluster.Config) (map[string]string, error) {
	byMAC := map[string]string{}
	for _, n := range cfg.Nodes {
		mac, err := cluster.LinkMAC(n, "eth1")
		if err != nil {
			return nil, fmt.Errorf("eth1 MAC of %s: %w", n.Name, err)
		}
		byMAC[mac.String()] = n.Name
	}
	return byMAC, nil
}

// IsVia matches the replies that left through node.
func IsVia(via Via, node string) func(Sample) bool {
	return func(s Sample) bool { return via(s) == node }
}
