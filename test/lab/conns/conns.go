// Package conns holds long-lived connections from a lab pod to the echo
// server, of the kinds applications keep open through an egress gateway,
// and records what each one saw while the gateway moves (issue 17):
// whether it carried on (the same TCP connection, the same UDP socket),
// how long it stalled, and when the client learned that it was gone.
//
// Every connection has a reader that is always blocked on its socket, so
// an error (a reset, a socket destroyed by the agent) is seen the moment
// the kernel reports it, whatever the connection was doing.
package conns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/egressha/egressha/test/lab/cluster"
)

// Kind is a kind of long-lived connection.
type Kind string

const (
	// RequestResponse: HTTP/1.1 keep-alive, a GET every RequestEvery on
	// one TCP connection (the client speaks first after a failover).
	RequestResponse Kind = "request-response"
	// ServerPush: GET /stream, the echo server writes a line every 50 ms
	// (the server speaks first after a failover).
	ServerPush Kind = "server-push"
	// IdleKeepalive: one request, then idle with TCP keepalive (probes
	// after 1 s idle, every 1 s); Resume sends one more request on it.
	IdleKeepalive Kind = "idle-keepalive"
	// UDP: a connected UDP socket (one fixed source port) sending a
	// datagram every RequestEvery to the echo server's UDP port, as a
	// DNS-like request/response client.
	UDP Kind = "udp"
)

// Kinds in report order.
var Kinds = []Kind{RequestResponse, ServerPush, IdleKeepalive, UDP}

// RequestEvery paces the client-driven kinds.
const RequestEvery = 100 * time.Millisecond

// Mix is how many connections of each kind to open.
type Mix map[Kind]int

// DefaultMix is 50 connections: 15 request/response, 15 server push, 10
// idle with keepalive, 10 UDP flows.
var DefaultMix = Mix{RequestResponse: 15, ServerPush: 15, IdleKeepalive: 10, UDP: 10}

// OneEach is one connection of each kind.
var OneEach = Mix{RequestResponse: 1, ServerPush: 1, IdleKeepalive: 1, UDP: 1}

// Conn is one long-lived connection and what it saw.
type Conn struct {
	Kind Kind
	// Local is the pod's address:port of the connection.
	Local string

	mu sync.Mutex
	c  net.Conn
	// ok are the times of the answers (lines, responses, datagrams).
	ok []time.Time
	// sources are the source addresses the echo server reported (UDP
	// and request/response: after SNAT), in order of change.
	sources []string
	err     error
	errAt   time.Time
	closed  bool
	// resume: the request Resume sent and when its answer came.
	resumeAt, resumedAt time.Time
	writeReq            chan struct{}
}

// Set is the connections of one pod.
type Set struct {
	conns  []*Conn
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Open dials the mix from inside the lab pod ns/name to the echo server.
func Open(ctx context.Context, cfg cluster.Config, ns, name string, mix Mix) (*Set, error) {
	pod, err := cluster.GetPod(cfg, ns, name)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s := &Set{cancel: cancel}
	addr := cluster.EchoAddr.Addr().String() + fmt.Sprintf(":%d", cluster.EchoPort)
	for _, k := range Kinds {
		for range mix[k] {
			d := net.Dialer{Timeout: 5 * time.Second}
			network := "tcp4"
			switch k {
			case IdleKeepalive:
				d.KeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 10}
			case UDP:
				network = "udp4"
			}
			nc, err := cluster.DialerIn(pod.Netns, d)(ctx, network, addr)
			if err != nil {
				s.Close()
				return nil, fmt.Errorf("%s connection from %s/%s: %w", k, ns, name, err)
			}
			c := &Conn{Kind: k, Local: nc.LocalAddr().String(), c: nc, writeReq: make(chan struct{}, 1)}
			s.conns = append(s.conns, c)
			s.wg.Add(2)
			go func() { defer s.wg.Done(); c.read() }()
			go func() { defer s.wg.Done(); c.write(runCtx) }()
		}
	}
	return s, nil
}

// Conns returns the connections.
func (s *Set) Conns() []*Conn { return s.conns }

// WaitUp waits until every connection has been answered at least once.
func (s *Set) WaitUp(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var down []string
		for _, c := range s.conns {
			c.mu.Lock()
			if len(c.ok) == 0 || c.err != nil {
				down = append(down, fmt.Sprintf("%s %s (%v)", c.Kind, c.Local, c.err))
			}
			c.mu.Unlock()
		}
		if len(down) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d connections not answered within %s: %s", len(down), timeout, strings.Join(down, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Resume sends one request on every idle connection still open.
func (s *Set) Resume() {
	for _, c := range s.conns {
		if c.Kind != IdleKeepalive {
			continue
		}
		c.mu.Lock()
		if c.err == nil && c.resumeAt.IsZero() {
			c.resumeAt = time.Now()
			select {
			case c.writeReq <- struct{}{}:
			default:
			}
		}
		c.mu.Unlock()
	}
}

// Close closes every connection and waits for their goroutines.
func (s *Set) Close() {
	s.cancel()
	for _, c := range s.conns {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.c.Close()
	}
	s.wg.Wait()
}

const request = "GET / HTTP/1.1\r\nHost: echo\r\n\r\n"

// write sends what the kind sends: a request every RequestEvery
// (request/response, UDP), the stream request once (server push), one
// request now and one per Resume (idle).
func (c *Conn) write(ctx context.Context) {
	send := func(b string) bool {
		if _, err := c.c.Write([]byte(b)); err != nil {
			c.fail(err)
			return false
		}
		return true
	}
	switch c.Kind {
	case ServerPush:
		send("GET " + cluster.StreamPath + " HTTP/1.1\r\nHost: echo\r\n\r\n")
		return
	case IdleKeepalive:
		if !send(request) {
			return
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.writeReq:
				if !send(request) {
					return
				}
			}
		}
	}
	tick := time.NewTicker(RequestEvery)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		msg := request
		if c.Kind == UDP {
			msg = fmt.Sprintf("req %d", seq)
		}
		if !send(msg) && c.Kind != UDP {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// read records every answer until the connection ends.
func (c *Conn) read() {
	switch c.Kind {
	case UDP:
		buf := make([]byte, 1500)
		for {
			n, err := c.c.Read(buf)
			if err != nil {
				if c.isClosed() || errors.Is(err, net.ErrClosed) {
					return
				}
				// ICMP errors (port unreachable while a path is
				// broken) surface on a connected UDP socket; the
				// socket stays usable.
				continue
			}
			// "req N SOURCE": the address:port the server saw.
			f := strings.Fields(string(buf[:n]))
			c.answered(time.Now(), f[len(f)-1])
		}
	case ServerPush:
		br := bufio.NewReader(c.c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			c.fail(err)
			return
		}
		lines := bufio.NewScanner(resp.Body)
		for lines.Scan() {
			c.answered(time.Now(), "")
		}
		err = lines.Err()
		if err == nil {
			err = errors.New("stream ended by the server")
		}
		c.fail(err)
	default:
		br := bufio.NewReader(c.c)
		for {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				c.fail(err)
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				c.fail(err)
				return
			}
			c.answered(time.Now(), strings.TrimSpace(string(body)))
		}
	}
}

func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *Conn) answered(at time.Time, source string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ok = append(c.ok, at)
	if source != "" && (len(c.sources) == 0 || c.sources[len(c.sources)-1] != source) {
		c.sources = append(c.sources, source)
	}
	if !c.resumeAt.IsZero() && c.resumedAt.IsZero() && at.After(c.resumeAt) {
		c.resumedAt = at
	}
}

func (c *Conn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.err != nil {
		return
	}
	c.err, c.errAt = err, time.Now()
}

// Outcome is what one connection saw around a disruption.
type Outcome struct {
	Kind  Kind
	Local string
	// Survived: still open at the end, and answered after the traffic
	// moved (idle: its Resume request answered on the same connection).
	Survived bool
	// Stall: the longest time without an answer from the disruption to
	// the end (to the end if it never resumed); idle: the Resume
	// request's round trip.
	Stall time.Duration
	// Ended: the client saw the connection fail (reset, aborted, EOF);
	// EndedAfterMove is when, from the first request through the new
	// node (negative: before it).
	Ended          bool
	EndedAfterMove time.Duration
	Err            string
	// Sources are the addresses the echo server saw (request/response:
	// address; UDP: address:port), in order of change.
	Sources []string
}

// Outcomes reports every connection over [disrupted, end], with moved the
// time traffic first went through the new node (zero if it did not move).
func (s *Set) Outcomes(disrupted, moved, end time.Time) []Outcome {
	out := make([]Outcome, 0, len(s.conns))
	for _, c := range s.conns {
		out = append(out, c.outcome(disrupted, moved, end))
	}
	return out
}

func (c *Conn) outcome(disrupted, moved, end time.Time) Outcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := Outcome{Kind: c.Kind, Local: c.Local, Sources: slices.Clone(c.sources)}
	if c.err != nil && c.errAt.Before(end) {
		o.Ended, o.Err = true, c.err.Error()
		if !moved.IsZero() {
			o.EndedAfterMove = c.errAt.Sub(moved)
		}
	}
	stop := end
	if o.Ended {
		stop = c.errAt
	}
	last := disrupted
	answeredAfterMove := false
	for _, at := range c.ok {
		if at.After(stop) {
			break
		}
		if at.Before(disrupted) {
			last = at
			continue
		}
		o.Stall = max(o.Stall, at.Sub(last))
		last = at
		if !moved.IsZero() && at.After(moved) {
			answeredAfterMove = true
		}
	}
	if c.Kind == IdleKeepalive {
		o.Stall = 0
		if !c.resumedAt.IsZero() {
			o.Stall = c.resumedAt.Sub(c.resumeAt)
		} else if !c.resumeAt.IsZero() {
			o.Stall = stop.Sub(c.resumeAt)
		}
		o.Survived = !o.Ended && !c.resumedAt.IsZero()
		return o
	}
	o.Stall = max(o.Stall, stop.Sub(last))
	o.Survived = !o.Ended && (answeredAfterMove || moved.IsZero() && len(c.ok) > 0 && c.ok[len(c.ok)-1].After(disrupted))
	return o
}

// String is a one-line summary of an outcome.
func (o Outcome) String() string {
	switch {
	case o.Survived:
		return fmt.Sprintf("%s %s survived, stall %s", o.Kind, o.Local, o.Stall.Round(time.Millisecond))
	case o.Ended:
		return fmt.Sprintf("%s %s ended %s after the move: %s", o.Kind, o.Local, o.EndedAfterMove.Round(time.Millisecond), o.Err)
	default:
		return fmt.Sprintf("%s %s hung (no answer for %s, no error)", o.Kind, o.Local, o.Stall.Round(time.Millisecond))
	}
}
