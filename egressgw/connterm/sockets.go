package connterm

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/cilium/cilium/pkg/datapath/sockets"
	"github.com/cilium/cilium/pkg/netns"
)

// TCP states (include/net/tcp_states.h) as sock_diag's state bitmask uses
// them.
const (
	tcpListen   = 10
	tcpTimeWait = 6
	// dumpStates: every state but TIME_WAIT (closed by the application
	// already: nobody waits on it), LISTEN included to know which local
	// ports accept connections.
	dumpStates = (1<<13 - 1) &^ (1 << tcpTimeWait)
)

// Failure reasons of egressha_connections_termination_failures_total.
const (
	FailureList        = "list"        // a namespace's sockets could not be listed
	FailureDestroy     = "destroy"     // SOCK_DESTROY failed for a socket
	FailureUnsupported = "unsupported" // the kernel lacks CONFIG_INET_DIAG_DESTROY
)

// ErrUnsupported is returned when the kernel cannot destroy sockets
// (CONFIG_INET_DIAG_DESTROY off): SOCK_DESTROY answers EOPNOTSUPP.
var ErrUnsupported = errors.New("the kernel cannot destroy sockets (SOCK_DESTROY: EOPNOTSUPP; it needs CONFIG_INET_DIAG_DESTROY=y)")

// Terminator destroys the TCP sockets of terminations in the agent's own
// network namespace and in every namespace pinned in NetnsDir.
type Terminator struct {
	Log *slog.Logger
	// NetnsDir holds the pods' pinned network namespaces (the host's
	// /var/run/netns; Cilium's chart mounts it at /var/run/cilium/netns).
	// A namespace that cannot be opened (a pod just deleted) is skipped.
	NetnsDir string
	// ClusterDestination reports remote addresses inside the cluster
	// (pods, nodes): the datapath never sends those through a gateway, so
	// their connections are left alone. nil: none are.
	ClusterDestination func(netip.Addr) bool
}

// Result is what one pass did.
type Result struct {
	// Destroyed counts the sockets destroyed per termination (same index).
	Destroyed []int
	// Failed counts failures by reason.
	Failed map[string]int
	// Namespaces is the number of namespaces looked into.
	Namespaces int
}

// Terminate makes one pass over the network namespaces and destroys the
// TCP sockets (IPv4, and IPv6 with v4-mapped addresses) that one of terms
// matches, in any state but LISTEN and TIME_WAIT, except connections the
// namespace accepted (their local port is a listening one) and
// connections to cluster destinations. It returns ErrUnsupported, and
// stops, when the kernel cannot destroy sockets.
func (t *Terminator) Terminate(terms []Termination) (Result, error) {
	res := Result{Destroyed: make([]int, len(terms)), Failed: map[string]int{}}
	if len(terms) == 0 {
		return res, nil
	}
	bySource := map[netip.Addr][]int{}
	for i := range terms {
		bySource[terms[i].Source] = append(bySource[terms[i].Source], i)
	}
	seen := map[[2]uint64]bool{}
	visit := func(name string, open func() (*nl.NetlinkSocket, error), path string) error {
		if id, ok := nsID(path); ok {
			if seen[id] {
				return nil
			}
			seen[id] = true
		}
		s, err := open()
		if err != nil {
			t.Log.Debug("egressha: cannot open network namespace, skipping", "netns", name, "error", err)
			return nil
		}
		defer s.Close()
		res.Namespaces++
		return t.terminateIn(name, s, terms, bySource, &res)
	}

	// The agent's own namespace first: host-network processes and
	// hostNetwork pods.
	if err := visit("<host>", func() (*nl.NetlinkSocket, error) { return nl.Subscribe(unix.NETLINK_INET_DIAG) },
		"/proc/self/ns/net"); err != nil {
		return res, err
	}
	entries, err := os.ReadDir(t.NetnsDir)
	if err != nil {
		t.Log.Debug("egressha: cannot read the network namespace directory", "dir", t.NetnsDir, "error", err)
		return res, nil
	}
	for _, e := range entries {
		path := filepath.Join(t.NetnsDir, e.Name())
		if err := visit(e.Name(), func() (*nl.NetlinkSocket, error) { return diagSocketIn(path) }, path); err != nil {
			return res, err
		}
	}
	return res, nil
}

// nsID identifies a namespace file by device and inode, so a namespace
// reachable twice (the host pinned in the directory) is visited once.
func nsID(path string) ([2]uint64, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return [2]uint64{}, false
	}
	return [2]uint64{st.Dev, st.Ino}, true
}

// diagSocketIn opens a NETLINK_INET_DIAG socket in the namespace pinned
// at path; the socket stays bound to that namespace.
func diagSocketIn(path string) (*nl.NetlinkSocket, error) {
	ns, err := netns.OpenPinned(path)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	var s *nl.NetlinkSocket
	err = ns.Do(func() error {
		var err error
		s, err = nl.Subscribe(unix.NETLINK_INET_DIAG)
		return err
	})
	return s, err
}

// diagTimeout bounds each netlink receive: a namespace never blocks a pass.
var diagTimeout = unix.Timeval{Sec: 5}

func (t *Terminator) terminateIn(name string, s *nl.NetlinkSocket, terms []Termination, bySource map[netip.Addr][]int, res *Result) error {
	if err := s.SetReceiveTimeout(&diagTimeout); err != nil {
		res.Failed[FailureList]++
		return nil
	}
	handle := map[int]*nl.SocketHandle{unix.NETLINK_INET_DIAG: {Socket: s}}
	type candidate struct {
		sock sockets.Socket
		term int
		port uint16
	}
	var cands []candidate
	listening := map[uint16]bool{}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP)
		req.Sockets = handle
		req.AddData(&sockets.SocketRequest{Family: family, Protocol: unix.IPPROTO_TCP, States: dumpStates})
		err := req.ExecuteIter(unix.NETLINK_INET_DIAG, nl.SOCK_DIAG_BY_FAMILY, func(msg []byte) bool {
			var sk sockets.Socket
			if sk.Deserialize(msg) != nil {
				return true
			}
			if sk.State == tcpListen {
				listening[sk.ID.SourcePort] = true
				return true
			}
			local, remote := addr(sk.ID.Source), addr(sk.ID.Destination)
			for _, i := range bySource[local] {
				if terms[i].Matches(local, remote) {
					cands = append(cands, candidate{sock: sk, term: i, port: sk.ID.SourcePort})
					break
				}
			}
			return true
		})
		if err != nil && !errors.Is(err, nl.ErrDumpInterrupted) {
			t.Log.Warn("egressha: cannot list the TCP sockets of a network namespace", "netns", name, "error", err)
			res.Failed[FailureList]++
			return nil
		}
	}
	for _, c := range cands {
		if listening[c.port] {
			continue // accepted by the pod: not through a gateway
		}
		if t.ClusterDestination != nil && t.ClusterDestination(addr(c.sock.ID.Destination)) {
			continue
		}
		err := destroy(handle, &c.sock)
		switch {
		case err == nil:
			res.Destroyed[c.term]++
		case errors.Is(err, unix.ENOENT):
			// closed meanwhile
		case errors.Is(err, unix.EOPNOTSUPP):
			res.Failed[FailureUnsupported]++
			return ErrUnsupported
		default:
			t.Log.Warn("egressha: cannot destroy a TCP socket", "netns", name,
				"local", net.JoinHostPort(addr(c.sock.ID.Source).String(), fmt.Sprint(c.sock.ID.SourcePort)),
				"remote", net.JoinHostPort(addr(c.sock.ID.Destination).String(), fmt.Sprint(c.sock.ID.DestinationPort)),
				"error", err)
			res.Failed[FailureDestroy]++
		}
	}
	return nil
}

// destroy sends SOCK_DESTROY for one socket, identified exactly (cookie
// included), and waits for the kernel's answer.
func destroy(handle map[int]*nl.SocketHandle, sk *sockets.Socket) error {
	req := nl.NewNetlinkRequest(sockets.SOCK_DESTROY, unix.NLM_F_ACK)
	req.Sockets = handle
	req.AddData(&sockets.SocketRequest{Family: sk.Family, Protocol: unix.IPPROTO_TCP, States: dumpStates, ID: sk.ID})
	_, err := req.Execute(unix.NETLINK_INET_DIAG, 0)
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// addr converts a sock_diag address (IPv4, or IPv6 possibly v4-mapped) to
// the IPv4 address it stands for; an IPv6 address stays IPv6 and matches
// nothing.
func addr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
