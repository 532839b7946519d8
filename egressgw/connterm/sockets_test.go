package connterm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cilium/cilium/pkg/netns"

	"github.com/egressha/egressha/internal/privileged"
)

// pinnedNetns creates a network namespace with lo up and addrs on it,
// pinned (bind-mounted, as `ip netns add` does) at dir/name; removed at
// the end of the test.
func pinnedNetns(t *testing.T, dir, name string, addrs ...string) *netns.NetNS {
	t.Helper()
	ns, err := netns.New()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	target := filepath.Join(dir, name)
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", ns.FD()), target, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("pin netns: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			t.Errorf("unpin netns: %v", err)
		}
	})
	err = ns.Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		for _, a := range addrs {
			if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: netlink.NewIPNet(net.ParseIP(a))}); err != nil {
				return fmt.Errorf("add %s: %w", a, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("set up netns %s: %v", name, err)
	}
	return ns
}

// conn is one TCP connection inside a namespace: the client's and the
// server's ends.
type conn struct {
	name           string
	client, server net.Conn
}

// connect opens a connection from local to remote:port inside ns, with a
// listener on remote:port.
func connect(t *testing.T, ns *netns.NetNS, name, local, remote string, port int) conn {
	t.Helper()
	c := conn{name: name}
	err := ns.Do(func() error {
		ln, err := net.Listen("tcp4", net.JoinHostPort(remote, fmt.Sprint(port)))
		if err != nil {
			return err
		}
		t.Cleanup(func() { ln.Close() })
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		if c.client, err = d.Dial("tcp4", ln.Addr().String()); err != nil {
			return err
		}
		c.server, err = ln.Accept()
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { c.client.Close(); c.server.Close() })
	return c
}

// connectMapped is connect with the client on an AF_INET6 socket using
// v4-mapped addresses (a dual-stack client): sock_diag lists it as IPv6.
func connectMapped(t *testing.T, ns *netns.NetNS, name, local, remote string, port int) conn {
	t.Helper()
	c := conn{name: name}
	mapped := func(a string, port int) *unix.SockaddrInet6 {
		sa := &unix.SockaddrInet6{Port: port}
		copy(sa.Addr[:], net.ParseIP(a).To16())
		return sa
	}
	err := ns.Do(func() error {
		ln, err := net.Listen("tcp4", net.JoinHostPort(remote, fmt.Sprint(port)))
		if err != nil {
			return err
		}
		t.Cleanup(func() { ln.Close() })
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			return err
		}
		if err := unix.Bind(fd, mapped(local, 0)); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		if err := unix.Connect(fd, mapped(remote, port)); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		if c.client, err = net.FileConn(f); err != nil {
			return err
		}
		c.server, err = ln.Accept()
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { c.client.Close(); c.server.Close() })
	return c
}

// reading starts a blocked Read on r and returns where its error arrives.
func reading(r io.Reader) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 1))
		ch <- err
	}()
	return ch
}

// TestTerminateDestroysOnlyMatchingSockets runs the I/O against real
// sockets in pinned network namespaces: the pod's idle connection to the
// moved destination ends at once with ECONNABORTED; its connections to an
// excluded or an outside destination, another pod's connection to the
// same destination, a connection the pod accepted from that destination
// and a connection to a cluster address all survive.
func TestTerminateDestroysOnlyMatchingSockets(t *testing.T) {
	privileged.Require(t, "creates network namespaces and bind-mounts them")
	dir := t.TempDir()
	const (
		podIP   = "10.244.1.10"
		otherIP = "10.244.1.11"
		server  = "198.51.100.1"
		exclIP  = "198.51.100.200"
		outside = "192.0.2.1"
		inClust = "198.51.100.7"
		peer    = "198.51.100.5"
	)
	podNS := pinnedNetns(t, dir, "lab-pod-a", podIP, server, exclIP, outside, inClust, peer)
	otherNS := pinnedNetns(t, dir, "lab-pod-b", otherIP, server)
	// A file that is no namespace is skipped.
	if err := os.WriteFile(filepath.Join(dir, "not-a-netns"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	moved := connect(t, podNS, "moved", podIP, server, 8081)
	movedMapped := connectMapped(t, podNS, "moved (v4-mapped)", podIP, server, 8086)
	excludedMapped := connectMapped(t, podNS, "excluded (v4-mapped)", podIP, exclIP, 8087)
	excluded := connect(t, podNS, "excluded", podIP, exclIP, 8082)
	outsideC := connect(t, podNS, "outside", podIP, outside, 8083)
	cluster := connect(t, podNS, "cluster", podIP, inClust, 8084)
	otherPod := connect(t, otherNS, "other pod", otherIP, server, 8081)
	// The pod serves on 8085 and a host inside the destination connected
	// to it: the accepted end has local = pod IP, remote in the prefix.
	accepted := connect(t, podNS, "accepted", peer, podIP, 8085)
	accepted.client, accepted.server = accepted.server, accepted.client

	movedErr := reading(moved.client)
	mappedErr := reading(movedMapped.client)
	terms := []Termination{
		{Source: netip.MustParseAddr(podIP), Dest: netip.MustParsePrefix("198.51.100.0/24"),
			Except: []netip.Prefix{netip.MustParsePrefix("198.51.100.128/25")}},
		{Source: netip.MustParseAddr("10.244.1.99"), Dest: netip.MustParsePrefix("0.0.0.0/0")},
	}
	term := &Terminator{
		Log: slog.New(slog.DiscardHandler), NetnsDir: dir,
		ClusterDestination: func(a netip.Addr) bool { return a == netip.MustParseAddr(inClust) },
	}
	start := time.Now()
	res, err := term.Terminate(terms)
	if err != nil {
		t.Fatalf("Terminate: %v", err)
	}
	if res.Destroyed[0] != 2 || res.Destroyed[1] != 0 || len(res.Failed) != 0 {
		t.Fatalf("result %+v: want exactly the two moved connections destroyed, no failure", res)
	}
	if res.Namespaces != 3 { // host, lab-pod-a, lab-pod-b
		t.Errorf("looked into %d namespaces, want 3", res.Namespaces)
	}
	for _, read := range []struct {
		name string
		err  <-chan error
	}{{moved.name, movedErr}, {movedMapped.name, mappedErr}} {
		select {
		case err := <-read.err:
			if !errors.Is(err, syscall.ECONNABORTED) {
				t.Fatalf("%s: the blocked Read returned %v, want ECONNABORTED", read.name, err)
			}
			t.Logf("%s: the blocked Read returned %v %s after the pass started", read.name, err, time.Since(start))
		case <-time.After(time.Second):
			t.Fatalf("%s: the blocked Read did not return within 1 s", read.name)
		}
	}
	for _, c := range []conn{excluded, excludedMapped, outsideC, cluster, otherPod, accepted} {
		if _, err := c.server.Write([]byte("x")); err != nil {
			t.Fatalf("%s: server write: %v", c.name, err)
		}
		_ = c.client.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.client.Read(make([]byte, 1)); err != nil {
			t.Errorf("%s: connection did not survive: %v", c.name, err)
		}
	}
}

// TestTerminateWithoutNamespaceDir: a missing directory leaves the host's
// namespace, and nothing fails.
func TestTerminateWithoutNamespaceDir(t *testing.T) {
	privileged.Require(t, "lists the host's sockets with sock_diag")
	term := &Terminator{Log: slog.New(slog.DiscardHandler), NetnsDir: filepath.Join(t.TempDir(), "missing")}
	res, err := term.Terminate([]Termination{{Source: netip.MustParseAddr("10.244.1.99"), Dest: netip.MustParsePrefix("0.0.0.0/0")}})
	if err != nil || res.Namespaces != 1 || res.Destroyed[0] != 0 {
		t.Fatalf("got %+v, %v; want the host namespace only, nothing destroyed", res, err)
	}
}
