package cluster

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

func sysctl(ns, key, value string) error {
	_, err := run("ip", "netns", "exec", ns, "sysctl", "-qw", key+"="+value)
	return err
}

// createNetwork builds the namespaces, bridges and veth pairs of the lab.
func createNetwork(cfg Config) error {
	for _, ns := range []string{CPNetns, EchoNetns} {
		if err := ip("", "netns", "add", ns); err != nil {
			return err
		}
		if err := ip(ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
		// Hubs never forward between lab networks.
		if err := sysctl(ns, "net.ipv4.ip_forward", "0"); err != nil {
			return err
		}
	}
	steps := [][]string{
		{CPNetns, "link", "add", "br0", "type", "bridge"},
		{CPNetns, "addr", "add", CPAddr.String(), "dev", "br0"},
		{CPNetns, "link", "set", "br0", "up"},
		{EchoNetns, "link", "add", "br1", "type", "bridge"},
		{EchoNetns, "addr", "add", EchoAddr.String(), "dev", "br1"},
		{EchoNetns, "addr", "add", PublicGateway.String(), "dev", "br1"},
		{EchoNetns, "link", "set", "br1", "up"},
	}
	for _, s := range steps {
		if err := ip(s[0], s[1:]...); err != nil {
			return err
		}
	}
	for _, n := range cfg.Nodes {
		if err := createNode(n); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	for i := range cfg.operatorPods() {
		if err := createOperatorHost(i + 1); err != nil {
			return fmt.Errorf("operator host %s: %w", operatorHost(i+1), err)
		}
	}
	return nil
}

// operatorHosts are the hosts of the operator replicas (as many as the
// chart's operator.replicas, which the lab's values leave at 2).
func operatorHosts(cfg Config) []string {
	var hosts []string
	for _, p := range cfg.operatorPods() {
		hosts = append(hosts, p.Netns)
	}
	return hosts
}

// createOperatorHost makes a host on the cluster network only, for an
// operator replica: like a control-plane node, it reaches the API server
// through lab-cp and nothing else.
func createOperatorHost(i int) error {
	name := operatorHost(i)
	if err := ip("", "netns", "add", name); err != nil {
		return err
	}
	vo := fmt.Sprintf("vo%d", i)
	for _, s := range [][]string{
		{name, "link", "set", "lo", "up"},
		{CPNetns, "link", "add", vo, "type", "veth", "peer", "name", "eth0", "netns", name},
		{CPNetns, "link", "set", vo, "master", "br0", "up"},
		{name, "addr", "add", operatorHostAddr(i) + "/24", "dev", "eth0"},
		{name, "link", "set", "eth0", "up"},
	} {
		if err := ip(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

func vethNames(n Node) (clusterSide, publicSide string) {
	return fmt.Sprintf("vc%d", n.Index), fmt.Sprintf("vp%d", n.Index)
}

func createNode(n Node) error {
	if err := ip("", "netns", "add", n.Name); err != nil {
		return err
	}
	vc, vp := vethNames(n)
	steps := [][]string{
		{n.Name, "link", "set", "lo", "up"},
		{CPNetns, "link", "add", vc, "type", "veth", "peer", "name", "eth0", "netns", n.Name},
		{CPNetns, "link", "set", vc, "master", "br0", "up"},
		{EchoNetns, "link", "add", vp, "type", "veth", "peer", "name", "eth1", "netns", n.Name},
		{EchoNetns, "link", "set", vp, "master", "br1", "up"},
		{n.Name, "addr", "add", n.ClusterIP.String() + "/24", "dev", "eth0"},
		{n.Name, "addr", "add", n.PublicIP.String() + "/24", "dev", "eth1"},
	}
	for _, s := range steps {
		if err := ip(s[0], s[1:]...); err != nil {
			return err
		}
	}
	if err := setNodeLinks(n, true); err != nil {
		return err
	}
	return sysctl(n.Name, "net.ipv4.ip_forward", "1")
}

// setNodeLinks brings a node's eth0 and eth1 up (with its default route
// towards the public network) or down: "cutting the cable" of a crash.
func setNodeLinks(n Node, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	for _, dev := range []string{"eth0", "eth1"} {
		if err := ip(n.Name, "link", "set", dev, state); err != nil {
			return err
		}
	}
	if !up {
		return nil
	}
	return ip(n.Name, "route", "replace", "default", "via", PublicGateway.Addr().String(), "dev", "eth1")
}

// CutClusterLink takes a node's cluster link (eth0) down, or back up,
// leaving its public link and its processes alone: the node is cut off
// from the other nodes, the operators and the API server, while it can
// still answer on the public network (the case its VIP fence is for).
func CutClusterLink(n Node, cut bool) error {
	state := "up"
	if cut {
		state = "down"
	}
	return ip(n.Name, "link", "set", "eth0", state)
}

// NodeLinksUp reports whether the node's eth0 is administratively up.
func NodeLinksUp(n Node) bool {
	out, err := run("ip", "-n", n.Name, "-o", "link", "show", "eth0")
	return err == nil && (strings.Contains(out, "<UP") || strings.Contains(out, ",UP"))
}

// deleteNetwork removes every lab namespace: nodes, pods, hubs. Deleting a
// namespace deletes the veth ends inside it and so their peers.
func deleteNetwork(cfg Config) []error {
	var errs []error
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if isLabNetns(cfg, e.Name()) {
			if err := ip("", "netns", "del", e.Name()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

func isLabNetns(cfg Config, name string) bool {
	if name == CPNetns || name == EchoNetns || strings.HasPrefix(name, podNetnsPrefix) || strings.HasPrefix(name, "lab-op-") {
		return true
	}
	for _, n := range cfg.Nodes {
		if n.Name == name {
			return true
		}
	}
	return false
}

// BlockAPI cuts (or restores) a node's access to the API server only: a
// blackhole route to the API proxy, while every other link stays up. The
// agent keeps running and the node keeps forwarding; only its heartbeat
// (and every other API call) fails.
func BlockAPI(n Node, blocked bool) error { return blockAPIFrom(n.Name, blocked) }

func blockAPIFrom(netns string, blocked bool) error {
	verb := "del"
	if blocked {
		verb = "add"
	}
	return ip(netns, "route", verb, "blackhole", CPAddr.Addr().String()+"/32")
}

// BlockAPIOperators cuts (or restores) every operator replica's access to
// the API server; the nodes keep theirs.
func BlockAPIOperators(cfg Config, blocked bool) error {
	for _, p := range cfg.operatorPods() {
		if err := blockAPIFrom(p.Netns, blocked); err != nil {
			return err
		}
	}
	return nil
}

// BlockAPIAll makes the API server unreachable for everyone on the cluster
// network (agents and operators), as an outage of the control plane: the
// proxy in lab-cp drops every packet to the API port, so established
// connections hang as they would, rather than being reset. The lab's own
// kubelets (on the root namespace's loopback) are not affected.
func BlockAPIAll(blocked bool) error {
	verb := "-D"
	if blocked {
		verb = "-I"
	}
	_, err := run("ip", "netns", "exec", CPNetns, "iptables", "-w", verb, "INPUT", "-i", "br0", "-p", "tcp", "--dport", strconv.Itoa(APIPort), "-j", "DROP")
	return err
}
