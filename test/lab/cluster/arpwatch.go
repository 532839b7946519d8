package cluster

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
)

// ARPAnswer is one ARP frame on the public network in which a host claims
// the watched address: a reply to the watcher's request, or a gratuitous
// ARP.
type ARPAnswer struct {
	At   time.Time
	MAC  string
	Slot int // the watcher's request round it arrived in
	Kind string
}

// ARPWatch sends an ARP request for one address from the echo server's
// bridge every interval and records every frame that claims the address.
// It is the "capture on the public network" of the fencing check.
type ARPWatch struct {
	conn *packet.Conn
	mac  net.HardwareAddr
	vip  netip.Addr

	mu      sync.Mutex
	slot    int
	answers []ARPAnswer

	stop chan struct{}
	done sync.WaitGroup
}

// WatchARP starts watching vip from lab-echo's br1.
func WatchARP(vip netip.Addr, interval time.Duration) (*ARPWatch, error) {
	w := &ARPWatch{vip: vip, stop: make(chan struct{})}
	err := inNetns(EchoNetns, func() error {
		ifi, err := net.InterfaceByName("br1")
		if err != nil {
			return err
		}
		w.mac = ifi.HardwareAddr
		w.conn, err = packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ARP watch in %s: %w", EchoNetns, err)
	}
	w.done.Add(2)
	go w.read()
	go w.ask(interval)
	return w, nil
}

func (w *ARPWatch) ask(interval time.Duration) {
	defer w.done.Done()
	req, _ := arp.NewPacket(arp.OperationRequest, w.mac, EchoAddr.Addr(), net.HardwareAddr{0, 0, 0, 0, 0, 0}, w.vip)
	pb, _ := req.MarshalBinary()
	f := ethernet.Frame{Destination: ethernet.Broadcast, Source: w.mac, EtherType: ethernet.EtherTypeARP, Payload: pb}
	fb, _ := f.MarshalBinary()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		w.mu.Lock()
		w.slot++
		w.mu.Unlock()
		_, _ = w.conn.WriteTo(fb, &packet.Addr{HardwareAddr: ethernet.Broadcast})
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
	}
}

func (w *ARPWatch) read() {
	defer w.done.Done()
	buf := make([]byte, 1500)
	for {
		n, _, err := w.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		now := time.Now()
		var f ethernet.Frame
		var p arp.Packet
		if f.UnmarshalBinary(buf[:n]) != nil || p.UnmarshalBinary(f.Payload) != nil {
			continue
		}
		if p.SenderIP != w.vip || bytes.Equal(p.SenderHardwareAddr, w.mac) {
			continue
		}
		kind := "reply"
		if p.TargetIP == p.SenderIP {
			kind = "garp"
		}
		w.mu.Lock()
		w.answers = append(w.answers, ARPAnswer{At: now, MAC: p.SenderHardwareAddr.String(), Slot: w.slot, Kind: kind})
		w.mu.Unlock()
	}
}

// Stop ends the watch and returns every answer, in arrival order, and the
// number of request rounds sent.
func (w *ARPWatch) Stop() ([]ARPAnswer, int) {
	close(w.stop)
	w.conn.Close()
	w.done.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.answers, w.slot
}

// ARPRun is a maximal sequence of answers from one MAC.
type ARPRun struct {
	MAC         string
	First, Last time.Time
	Answers     int
}

// ARPAnalysis judges a capture for two hosts answering at once.
type ARPAnalysis struct {
	Answers int
	// OverlapSlots are request rounds answered by more than one MAC.
	OverlapSlots int
	// Runs are the answers grouped into maximal same-MAC runs; every
	// change of MAC starts a run.
	Runs []ARPRun
	// Interleaved counts runs that are followed, within the overlap window,
	// by a run of the MAC before them: A, B, A with the B run shorter than
	// window means A never stopped answering while B did.
	Interleaved int
	// MinSwitchGap is the shortest time between the last answer of one MAC
	// and the first answer of the next.
	MinSwitchGap time.Duration
}

// AnalyzeARP groups answers and finds overlaps. window is the least time a
// legitimate holder keeps the address (handovers are further apart).
func AnalyzeARP(answers []ARPAnswer, window time.Duration) ARPAnalysis {
	a := ARPAnalysis{Answers: len(answers), MinSwitchGap: -1}
	bySlot := map[int]map[string]bool{}
	for _, x := range answers {
		if bySlot[x.Slot] == nil {
			bySlot[x.Slot] = map[string]bool{}
		}
		bySlot[x.Slot][x.MAC] = true
		if n := len(a.Runs); n > 0 && a.Runs[n-1].MAC == x.MAC {
			a.Runs[n-1].Last = x.At
			a.Runs[n-1].Answers++
			continue
		}
		a.Runs = append(a.Runs, ARPRun{MAC: x.MAC, First: x.At, Last: x.At, Answers: 1})
	}
	for _, macs := range bySlot {
		if len(macs) > 1 {
			a.OverlapSlots++
		}
	}
	for i := 1; i < len(a.Runs); i++ {
		gap := a.Runs[i].First.Sub(a.Runs[i-1].Last)
		if a.MinSwitchGap < 0 || gap < a.MinSwitchGap {
			a.MinSwitchGap = gap
		}
		if i+1 < len(a.Runs) && a.Runs[i+1].MAC == a.Runs[i-1].MAC && a.Runs[i+1].First.Sub(a.Runs[i].First) < window {
			a.Interleaved++
		}
	}
	return a
}

// EchoNeighbour is the MAC the echo server's namespace has for ip ("" if
// none).
func EchoNeighbour(ip netip.Addr) string {
	out, _ := run("ip", "-n", EchoNetns, "neigh", "show", ip.String())
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}
