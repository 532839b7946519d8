// Package connterm ends, on the pods' side, the TCP connections that a
// failover of a basic-mode gateway has made useless.
//
// In basic mode a gateway's egress IP is the active node's own interface
// address. When the active node changes, the server of every connection a
// pod had through the old node knows the connection by the old address, so
// it cannot survive; the pod learns only when it sends and the server
// resets, and a server-push or idle connection hangs for tcp_retries2
// (about 15 minutes). connterm destroys those sockets in the pods' network
// namespaces (sock_diag SOCK_DESTROY, as Cilium's load-balancer socket
// termination does), so the application sees ECONNABORTED at once and
// reconnects through the new node.
//
// It owns:
//   - the decision (Tracker, pure): from the successive rows of
//     egress-policy-entries of this node's pods, which (pod IP, destination
//     CIDR) had a real gateway and now have one with a different SNAT
//     source. A VirtualIPAddress gateway keeps its source (the VIP) across
//     a move: nothing is terminated;
//   - the I/O (Terminator): one pass over the network namespaces of a
//     directory (the host's /var/run/netns, which Cilium's chart mounts at
//     /var/run/cilium/netns) and the agent's own per batch of decisions,
//     destroying the matching TCP sockets;
//   - the job that connects them (Cell), its flags and metrics.
//
// It never writes a table, a BPF map or conntrack, and it terminates only
// connections the pod opened (not ones it accepted) to destinations outside
// the cluster: only those go through a gateway.
package connterm
