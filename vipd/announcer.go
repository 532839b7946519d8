package vipd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Config holds the timings of probing and announcing.
type Config struct {
	// ProbeCount probes are sent ProbeInterval apart before a VIP is
	// claimed; the claim waits ProbeInterval after the last one for answers.
	// RFC 5227 uses 3 probes 1-2 s apart for DHCP-style address use; egressha
	// orders its own nodes through Leases, so the probe only has to catch a
	// foreign host and can be short.
	ProbeCount    int
	ProbeInterval time.Duration
	// GARPCount gratuitous ARP rounds (both forms each) are sent
	// GARPInterval apart on takeover.
	GARPCount    int
	GARPInterval time.Duration
	// ReannounceInterval is how often an active VIP is announced again and
	// probed for duplicates; 0 disables both.
	ReannounceInterval time.Duration
}

// DefaultConfig are the defaults of the agent flags.
var DefaultConfig = Config{
	ProbeCount:         2,
	ProbeInterval:      30 * time.Millisecond,
	GARPCount:          3,
	GARPInterval:       100 * time.Millisecond,
	ReannounceInterval: 10 * time.Second,
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.ProbeCount < 0 || c.GARPCount < 1 {
		errs = append(errs, fmt.Errorf("probe count must be >= 0 and GARP count >= 1 (got %d, %d)", c.ProbeCount, c.GARPCount))
	}
	if c.ProbeCount > 0 && c.ProbeInterval <= 0 {
		errs = append(errs, fmt.Errorf("probe interval must be positive, got %s", c.ProbeInterval))
	}
	if c.GARPCount > 1 && c.GARPInterval <= 0 {
		errs = append(errs, fmt.Errorf("GARP interval must be positive, got %s", c.GARPInterval))
	}
	if c.ReannounceInterval < 0 {
		errs = append(errs, fmt.Errorf("re-announce interval must not be negative, got %s", c.ReannounceInterval))
	}
	return errors.Join(errs...)
}

// Announcer owns one Responder per interface and the Speakers (one per
// VIP) that use them.
type Announcer struct {
	cfg Config
	obs Observer
	log *slog.Logger

	mu         sync.Mutex
	responders map[string]*Responder
}

// NewAnnouncer returns an Announcer without interfaces.
func NewAnnouncer(cfg Config, obs Observer, log *slog.Logger) *Announcer {
	if obs == nil {
		obs = NopObserver{}
	}
	return &Announcer{cfg: cfg, obs: obs, log: log, responders: map[string]*Responder{}}
}

// SyncInterfaces makes the announcer hold a working responder on exactly
// the named interfaces: it opens missing ones, re-opens ones whose socket
// failed or whose interface was re-created, and closes the rest. It returns
// why each interface that has no working responder cannot have one.
// Speakers on a re-opened interface keep their VIPs (the registrations are
// carried over) but an active VIP is not answered again until its Speaker
// is started again: the caller re-claims after a socket failure.
func (a *Announcer) SyncInterfaces(names []string) map[string]error {
	a.mu.Lock()
	defer a.mu.Unlock()
	errs := map[string]error{}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	for name, r := range a.responders {
		if !want[name] {
			r.close()
			delete(a.responders, name)
		}
	}
	for name := range want {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			if r, ok := a.responders[name]; ok {
				r.close()
				delete(a.responders, name)
			}
			errs[name] = fmt.Errorf("interface %s: %w", name, err)
			continue
		}
		if r, ok := a.responders[name]; ok {
			if r.Err() == nil && r.index == ifi.Index && r.mac.String() == ifi.HardwareAddr.String() && CheckInterface(ifi) == nil {
				continue
			}
			r.close()
			delete(a.responders, name)
		}
		r, err := listen(ifi, a.obs, a.log)
		if err != nil {
			errs[name] = err
			continue
		}
		a.responders[name] = r
	}
	return errs
}

// Responder returns the working responder of an interface, if any.
func (a *Announcer) Responder(name string) (*Responder, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.responders[name]
	if ok && r.Err() != nil {
		return nil, false
	}
	return r, ok
}

// Close closes every responder; speakers stop answering.
func (a *Announcer) Close() {
	a.SyncInterfaces(nil)
}

func (a *Announcer) responderList(names []string) []*Responder {
	a.mu.Lock()
	defer a.mu.Unlock()
	rs := make([]*Responder, 0, len(names))
	for _, n := range names {
		if r, ok := a.responders[n]; ok {
			rs = append(rs, r)
		}
	}
	return rs
}

// Speaker announces one VIP on a set of interfaces. Its methods must be
// called from one goroutine (the owner's control loop).
type Speaker struct {
	a      *Announcer
	vip    netip.Addr
	ifaces []string
	fence  Fence
	onDup  func(Duplicate)

	mu       sync.Mutex
	probeDup []Duplicate // duplicates seen during the current probe

	active  bool
	stop    chan struct{}
	stopped chan struct{}
}

// NewSpeaker registers vip on the interfaces. fence is checked before every
// frame that claims the VIP; onDup (may be nil) is called from a read
// goroutine for every piece of duplicate evidence while the speaker probes
// or is active, and must not block or call the Speaker.
func (a *Announcer) NewSpeaker(vip netip.Addr, ifaces []string, fence Fence, onDup func(Duplicate)) *Speaker {
	s := &Speaker{a: a, vip: vip, ifaces: slices.Clone(ifaces), fence: fence, onDup: onDup}
	for _, r := range a.responderList(s.ifaces) {
		r.register(vip, fence, s.duplicate)
	}
	return s
}

// VIP is the speaker's address.
func (s *Speaker) VIP() netip.Addr { return s.vip }

// Interfaces are the speaker's interfaces.
func (s *Speaker) Interfaces() []string { return s.ifaces }

// Active reports whether Start was called without a Stop since.
func (s *Speaker) Active() bool { return s.active }

// Announcing reports whether the VIP is answered on every interface right
// now: false after a responder failed or was re-opened, even while Active.
func (s *Speaker) Announcing() bool {
	rs := s.a.responderList(s.ifaces)
	if !s.active || len(rs) != len(s.ifaces) {
		return false
	}
	for _, r := range rs {
		r.mu.RLock()
		e, ok := r.vips[s.vip]
		on := ok && e.announce && r.Err() == nil
		r.mu.RUnlock()
		if !on {
			return false
		}
	}
	return true
}

func (s *Speaker) duplicate(d Duplicate) {
	s.mu.Lock()
	s.probeDup = append(s.probeDup, d)
	s.mu.Unlock()
	if s.onDup != nil {
		s.onDup(d)
	}
}

// Reregister registers the VIP again on interfaces whose responder was
// re-opened by SyncInterfaces; the caller then re-claims.
func (s *Speaker) Reregister() {
	for _, r := range s.a.responderList(s.ifaces) {
		r.mu.RLock()
		_, ok := r.vips[s.vip]
		r.mu.RUnlock()
		if !ok {
			r.register(s.vip, s.fence, s.duplicate)
		}
	}
}

// Probe sends the configured probes on every interface and waits for
// answers. It returns the duplicates seen (empty: the VIP is free), or an
// error if a probe could not be sent or ctx ended.
func (s *Speaker) Probe(ctx context.Context) ([]Duplicate, error) {
	cfg := s.a.cfg
	rs := s.a.responderList(s.ifaces)
	if len(rs) != len(s.ifaces) {
		return nil, fmt.Errorf("no working ARP responder on every interface of %s (%v)", s.vip, s.ifaces)
	}
	s.mu.Lock()
	s.probeDup = nil
	s.mu.Unlock()
	for _, r := range rs {
		r.set(s.vip, func(e *vipEntry) { e.probing = true })
	}
	defer func() {
		for _, r := range rs {
			r.set(s.vip, func(e *vipEntry) { e.probing = false })
		}
	}()
	for i := 0; i < cfg.ProbeCount; i++ {
		for _, r := range rs {
			if err := r.probe(s.vip); err != nil {
				return nil, fmt.Errorf("ARP probe for %s on %s: %w", s.vip, r.name, err)
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(cfg.ProbeInterval):
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.probeDup), nil
}

// Start answers ARP for the VIP on every interface, sends the GARP burst
// and keeps re-announcing (and probing for duplicates) until Stop.
func (s *Speaker) Start() {
	if s.active {
		return
	}
	s.active = true
	for _, r := range s.a.responderList(s.ifaces) {
		r.set(s.vip, func(e *vipEntry) { e.announce = true })
	}
	s.stop, s.stopped = make(chan struct{}), make(chan struct{})
	go s.announceLoop(s.stop, s.stopped)
}

// Stop stops answering at once (no reply or GARP leaves after it returns)
// and ends the re-announce loop.
func (s *Speaker) Stop() {
	if !s.active {
		return
	}
	s.active = false
	for _, r := range s.a.responderList(s.ifaces) {
		r.set(s.vip, func(e *vipEntry) { e.announce = false })
	}
	close(s.stop)
	<-s.stopped
}

// Close stops and unregisters the VIP.
func (s *Speaker) Close() {
	s.Stop()
	for _, r := range s.a.responderList(s.ifaces) {
		r.unregister(s.vip)
	}
}

func (s *Speaker) announceLoop(stop, stopped chan struct{}) {
	defer close(stopped)
	cfg := s.a.cfg
	garps := func() {
		for _, r := range s.a.responderList(s.ifaces) {
			if err := r.garp(s.vip); err != nil {
				s.a.log.Warn("Gratuitous ARP not sent", "vip", s.vip, "interface", r.name, "error", err)
			}
		}
	}
	for i := 0; i < cfg.GARPCount; i++ {
		if i > 0 {
			select {
			case <-stop:
				return
			case <-time.After(cfg.GARPInterval):
			}
		}
		garps()
	}
	if cfg.ReannounceInterval <= 0 {
		<-stop
		return
	}
	t := time.NewTicker(cfg.ReannounceInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		garps()
		// A responder that answers unicast requests never shows up in
		// broadcasts: ask, and let the read loop report who answers.
		for _, r := range s.a.responderList(s.ifaces) {
			if s.fence() {
				_ = r.probe(s.vip)
			}
		}
	}
}
