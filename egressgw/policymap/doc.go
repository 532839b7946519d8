// Package policymap writes egressha's desired egress gateway entries into
// Cilium's BPF map cilium_egress_gw_policy_v4.
//
//	egress-policy-entries (statedb) --RegisterReconciler/Ops--> PolicyMap --> cilium_egress_gw_policy_v4
//
// It owns:
//   - PolicyMap, a small typed interface over the map, and BPFPolicyMap, its
//     implementation on Cilium's pkg/bpf with exactly the spec of the C
//     declaration (PolicyMapSpec explains why that matters);
//   - Ops, the statedb reconciler's operations: a row of
//     egress-policy-entries holds every entry of one source IP, and Ops
//     expands it to map keys (writing the new and changed ones, in
//     batches where the map can, and deleting the ones the row no longer
//     has), plus a full resync that reads the map in batches and repairs
//     drift; a full map is reported as a MapFullError in the row's status
//     and in Metrics;
//   - RegisterReconciler, which starts that reconciler only once the table
//     is initialized, so an agent restart never removes or rewrites a
//     correct entry.
//
// It never decides what the entries are (egressgw/egresspolicy does), and it
// never creates the pinned map itself: egressgw/datapath
// opens it in a start hook that the datapath loader waits for.
package policymap
