// Package cluster brings up and drives the lab: a real Cilium cluster in
// network namespaces on one machine. The CLI (test/lab) and the e2e tests
// use this package alone, so the demo and the tests cannot drift apart.
//
// Topology (every address lives only inside lab namespaces; the root
// namespace has no link and no route towards them):
//
//	lab-cp   br0 198.18.0.1/24   cluster network; kube-apiserver proxy :6443
//	   ├── eth0 of every node (198.18.0.1x, the node's InternalIP, VXLAN underlay)
//	lab-echo br1 203.0.113.100/24 (+ .1, the nodes' default gateway)
//	   ├── eth1 of every node (203.0.113.1x, the "public" interface)
//	   └── echo server :8080, answers with the source address it saw;
//	       GET /stream pushes a line every 50 ms; :8080/udp echoes datagrams
//
// Node names sort so the spec's alphabetical rule is visible:
// lab-egress-a < lab-egress-b < lab-worker.
package cluster

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// Mode says whose egress gateway the agents run.
type Mode string

const (
	// ModeEgressHA runs our cells with Cilium's own egress gateway off.
	ModeEgressHA Mode = "egressha"
	// ModeStock runs Cilium's own egress gateway (our cells off): the
	// baseline that CiliumEgressGatewayPolicy behaves as upstream.
	ModeStock Mode = "stock"
)

// Node is one lab node: a network namespace named after its Node object.
type Node struct {
	Name      string
	ClusterIP netip.Addr // eth0, the Node's InternalIP
	PublicIP  netip.Addr // eth1
	PodCIDR   netip.Prefix
	Labels    map[string]string
	// Index is 1-based and names the bridge-side veth ends (vc1, vp1, ...).
	Index int
}

// Config describes a lab.
type Config struct {
	// Dir holds all state: pki, etcd, logs, per-node run dirs and bpffs.
	Dir string
	// BinDir holds cilium-agent, cilium-operator-generic, cilium-cni,
	// cilium-dbg and egressha-lab.
	BinDir string
	// BPFDir is Cilium's bpf/ source tree for the agents' runtime compiles.
	BPFDir string
	// CiliumDir is the Cilium module's directory: its chart
	// (install/kubernetes/cilium) is what the lab installs.
	CiliumDir string
	// RepoDir is the egressha checkout: patches/ (Helm values, RBAC) and
	// the lab's values files.
	RepoDir string
	Mode    Mode
	Nodes   []Node
}

// Fixed lab addresses and names.
const (
	CPNetns      = "lab-cp"
	EchoNetns    = "lab-echo"
	ClusterName  = "lab"
	EchoPort     = 8080
	APIPort      = 6443  // in lab-cp, proxied to the apiserver
	APILocalPort = 16443 // the apiserver's own listener, root namespace loopback
	// CiliumNamespace is where Cilium's pods and leases live.
	CiliumNamespace = "kube-system"
	// EgressLabel is the label the spec's examples select gateway nodes by.
	EgressLabel = "node-role.deckhouse.io/egress"
)

var (
	CPAddr        = netip.MustParsePrefix("198.18.0.1/24")
	EchoAddr      = netip.MustParsePrefix("203.0.113.100/24")
	PublicGateway = netip.MustParsePrefix("203.0.113.1/24")
	ServiceCIDR   = netip.MustParsePrefix("198.18.16.0/20")
)

// DefaultNodes are the three nodes of the lab: two gateway candidates
// (labelled as in the spec) and a worker.
func DefaultNodes() []Node {
	mk := func(i int, name string, egress bool) Node {
		n := Node{
			Name:      name,
			Index:     i,
			ClusterIP: netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)}),
			PublicIP:  netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + i)}),
			PodCIDR:   netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i), 0}), 24),
			Labels: map[string]string{
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
			},
		}
		if egress {
			n.Labels[EgressLabel] = ""
		}
		return n
	}
	return []Node{mk(1, "lab-egress-a", true), mk(2, "lab-egress-b", true), mk(3, "lab-worker", false)}
}

// DefaultConfig is the lab `make lab` brings up.
func DefaultConfig() Config {
	dir := os.Getenv("EGRESSHA_LAB_DIR")
	if dir == "" {
		dir = "/var/lib/egressha-lab"
	}
	bin := os.Getenv("EGRESSHA_LAB_BIN")
	if bin == "" {
		if exe, err := os.Executable(); err == nil {
			bin = filepath.Dir(exe)
		}
	}
	ciliumDir := os.Getenv("EGRESSHA_LAB_CILIUM")
	bpf := os.Getenv("EGRESSHA_LAB_BPF")
	if bpf == "" && ciliumDir != "" {
		bpf = filepath.Join(ciliumDir, "bpf")
	}
	repo := os.Getenv("EGRESSHA_LAB_REPO")
	if repo == "" && bin != "" {
		// make puts the binaries in <repo>/_output/bin.
		repo = filepath.Dir(filepath.Dir(bin))
	}
	return Config{Dir: dir, BinDir: bin, BPFDir: bpf, CiliumDir: ciliumDir, RepoDir: repo, Mode: ModeEgressHA, Nodes: DefaultNodes()}
}

// Node returns the node called name.
func (c Config) Node(name string) (Node, error) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, nil
		}
	}
	return Node{}, fmt.Errorf("no lab node %q (nodes: %v)", name, c.nodeNames())
}

func (c Config) nodeNames() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Name)
	}
	return out
}

func (c Config) path(elem ...string) string {
	return filepath.Join(append([]string{c.Dir}, elem...)...)
}

func (c Config) bin(name string) string { return filepath.Join(c.BinDir, name) }

// Kubeconfig is the admin kubeconfig for the apiserver's loopback listener
// in the root namespace (for the CLI and tests).
func (c Config) Kubeconfig() string { return c.path("kubeconfig") }

// EchoURL is the echo server's address on the public network.
func EchoURL() string { return fmt.Sprintf("http://%s:%d", EchoAddr.Addr(), EchoPort) }
