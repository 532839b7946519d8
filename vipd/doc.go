// Package vipd answers ARP for virtual IPs (VIPs) that no interface of this
// host carries, so that a router or a neighbour sends the VIP's traffic to
// this host; it is the VirtualIPAddress mode of egressha's EgressGateway.
//
// The shape follows MetalLB's layer2 announcer: one Responder per interface
// (an AF_PACKET socket that reads ARP and answers requests for the VIPs it
// announces) and an Announcer that owns the responders and hands out one
// Speaker per VIP. On top of that vipd adds what MetalLB lacks and what
// broke other egress gateways in production:
//
//   - Fencing: every reply and every gratuitous ARP is sent only while the
//     caller's Fence allows it. The caller ties the fence to its role and
//     to the deadline of its heartbeat Lease, so a node that lost the role
//     or cannot prove it is alive stops answering at once, without waiting
//     for a goroutine to notice.
//   - Probing before claiming (RFC 5227 style, with shorter timings because
//     egressha's Lease protocol already orders its own nodes): ARP probes
//     with sender IP 0.0.0.0; any other host answering for the VIP, or
//     probing for it at the same time, is a conflict.
//   - Gratuitous ARP in both forms on takeover (request: sender IP = target
//     IP, target MAC zero; reply: sender IP = target IP and target MAC =
//     sender MAC, which is what Linux requires to treat a reply as
//     gratuitous and override a fresh neighbour entry), repeated in a burst
//     because single GARPs get lost, and re-announced periodically because
//     some switches and hosts ignore GARP.
//   - Duplicate detection while active: any ARP from another MAC that claims
//     the VIP (a reply, a GARP, a request sent from the VIP), and a periodic
//     probe that another responder would answer, are reported to the
//     caller.
//
// vipd never adds the VIP to an interface: on a Cilium node a local address
// becomes a node address and can become the masquerade source of unrelated
// traffic (see design.md). Replies to the VIP reach the node because it owns
// the VIP's MAC binding, and Cilium's datapath reverse-translates them.
//
// The package depends on the kernel only through AF_PACKET sockets; it has
// no Kubernetes or Cilium dependency and is tested in network namespaces
// with real veth pairs.
package vipd
