package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// InterfaceName is a Linux network interface name as the kernel accepts it
// (dev_valid_name): 1 to 15 bytes, no whitespace, '/' or ':', not "." or "..".
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=15
// +kubebuilder:validation:XValidation:rule="self != '.' && self != '..' && self.matches('^[^\\\\s/:]+$')",message="must be a Linux network interface name such as eth1: no whitespace, '/' or ':', and not '.' or '..'"
type InterfaceName string

// IPv4Address is a unicast IPv4 address in dotted-decimal form.
// MaxLength leaves room for IPv6 text so that an IPv6 address is refused by
// the clear IPv4 rule rather than by a length limit.
// +kubebuilder:validation:MaxLength=45
// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",message="must be an IPv4 address such as 172.18.18.242 (IPv6 is not supported)"
// +kubebuilder:validation:XValidation:rule="!isIP(self) || ip(self).family() != 4 || ip(self).isGlobalUnicast()",message="must be a unicast address: not 0.0.0.0, loopback, link-local, multicast or broadcast"
type IPv4Address string

// IPv4CIDR is an IPv4 network in CIDR notation with no host bits set.
// +kubebuilder:validation:MaxLength=64
// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self).ip().family() == 4",message="must be an IPv4 CIDR such as 10.0.0.0/8 or 0.0.0.0/0 (IPv6 is not supported)"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).ip().family() != 4 || cidr(self) == cidr(self).masked()",message="must be a network address with no host bits set, e.g. 10.0.0.0/8 rather than 10.0.0.1/8"
type IPv4CIDR string

// SourceIPMode says where the source address of egress traffic comes from.
// +kubebuilder:validation:Enum=PrimaryIPFromEgressGatewayNodeInterface;VirtualIPAddress
type SourceIPMode string

const (
	// SourceIPModePrimaryIP SNATs to the primary IPv4 of a named interface on
	// the active node; the source address changes when the active node does.
	SourceIPModePrimaryIP SourceIPMode = "PrimaryIPFromEgressGatewayNodeInterface"
	// SourceIPModeVirtualIP SNATs to a virtual IP that the active node
	// announces with ARP; the source address survives a failover.
	SourceIPModeVirtualIP SourceIPMode = "VirtualIPAddress"
)

// SelectionOrder says how the active node is picked among eligible nodes.
// +kubebuilder:validation:Enum=Alphabetical;Spread
type SelectionOrder string

const (
	// SelectionOrderAlphabetical picks the first eligible node by name, as
	// the user documentation describes.
	SelectionOrderAlphabetical SelectionOrder = "Alphabetical"
	// SelectionOrderSpread picks the eligible node with the highest
	// rendezvous hash of (gateway name, node name), so gateways that share
	// nodes land on different nodes.
	SelectionOrderSpread SelectionOrder = "Spread"
)

// FailbackPolicy says what happens when a node that ranks before the active
// one becomes eligible again.
// +kubebuilder:validation:Enum=Immediate;Never
type FailbackPolicy string

const (
	// FailbackImmediate moves the role back to the best-ranked eligible node.
	FailbackImmediate FailbackPolicy = "Immediate"
	// FailbackNever keeps the active node for as long as it stays eligible.
	FailbackNever FailbackPolicy = "Never"
)

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=egw
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.sourceIP.mode`
// +kubebuilder:printcolumn:name="Active",type=string,JSONPath=`.status.activeNodeName`
// +kubebuilder:printcolumn:name="Egress IP",type=string,JSONPath=`.status.egressIP`
// +kubebuilder:printcolumn:name="Ready Nodes",type=integer,JSONPath=`.status.readyNodes`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// EgressGateway is a group of nodes of which one, the active node, sends the
// traffic of the pods selected by EgressGatewayPolicies out of the cluster;
// the others stand by and take over when the active node stops being eligible.
type EgressGateway struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec EgressGatewaySpec `json:"spec"`
	// +optional
	Status EgressGatewayStatus `json:"status,omitempty"`
}

// EgressGatewaySpec is the desired state of an EgressGateway.
type EgressGatewaySpec struct {
	// NodeSelector selects the candidate nodes by label (every pair must
	// match). Among the eligible candidates (Ready, not cordoned, cilium-agent
	// Ready, heartbeat fresh) one is made active.
	// +required
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="must select nodes by at least one label, e.g. node-role.deckhouse.io/egress: \"\"; an empty selector would make every node a gateway candidate"
	NodeSelector map[string]string `json:"nodeSelector"`

	// SourceIP says which source address the egress traffic gets.
	// +required
	SourceIP SourceIP `json:"sourceIP"`

	// Selection tunes how the active node is chosen. Omitted means
	// Alphabetical order with Immediate failback, as documented.
	// +optional
	Selection *Selection `json:"selection,omitempty"`
}

// SourceIP selects the source-address mode and holds the settings of that
// mode; exactly the sub-object named by mode must be set.
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'PrimaryIPFromEgressGatewayNodeInterface' || has(self.primaryIPFromEgressGatewayNodeInterface)",message="mode PrimaryIPFromEgressGatewayNodeInterface requires primaryIPFromEgressGatewayNodeInterface with an interfaceName"
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'PrimaryIPFromEgressGatewayNodeInterface' || !has(self.virtualIPAddress)",message="virtualIPAddress must not be set when mode is PrimaryIPFromEgressGatewayNodeInterface; set mode: VirtualIPAddress to use a virtual IP"
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'VirtualIPAddress' || has(self.virtualIPAddress)",message="mode VirtualIPAddress requires virtualIPAddress with an ip"
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'VirtualIPAddress' || !has(self.primaryIPFromEgressGatewayNodeInterface)",message="primaryIPFromEgressGatewayNodeInterface must not be set when mode is VirtualIPAddress; set mode: PrimaryIPFromEgressGatewayNodeInterface to use an interface address"
type SourceIP struct {
	// Mode is PrimaryIPFromEgressGatewayNodeInterface (the active node's
	// interface address; it changes on failover) or VirtualIPAddress (a
	// virtual IP announced by the active node; it survives failover).
	// +required
	Mode SourceIPMode `json:"mode"`

	// +optional
	PrimaryIPFromEgressGatewayNodeInterface *PrimaryIPFromEgressGatewayNodeInterface `json:"primaryIPFromEgressGatewayNodeInterface,omitempty"`

	// +optional
	VirtualIPAddress *VirtualIPAddress `json:"virtualIPAddress,omitempty"`
}

// PrimaryIPFromEgressGatewayNodeInterface holds the settings of basic mode.
type PrimaryIPFromEgressGatewayNodeInterface struct {
	// InterfaceName is the "public" interface, with the same name on every
	// candidate node; its primary IPv4 address becomes the source address.
	// +required
	InterfaceName InterfaceName `json:"interfaceName"`
}

// VirtualIPAddress holds the settings of virtual IP mode.
type VirtualIPAddress struct {
	// IP is the virtual source address; the active node answers ARP for it.
	// +required
	IP IPv4Address `json:"ip"`

	// Interfaces lists where the active node answers ARP for the IP. Empty
	// means every up, ARP-capable interface that is not Cilium's own or
	// loopback.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	Interfaces []InterfaceName `json:"interfaces,omitempty"`
}

// Selection tunes active-node selection. These fields extend the documented
// behaviour; their defaults are that behaviour.
type Selection struct {
	// Order is Alphabetical (first eligible node by name) or Spread
	// (rendezvous hash of gateway and node names, so gateways sharing nodes
	// are spread over them).
	// +optional
	// +kubebuilder:default=Alphabetical
	Order SelectionOrder `json:"order,omitempty"`

	// Failback is Immediate (the best-ranked eligible node always takes the
	// role back) or Never (the active node keeps the role while it stays
	// eligible, which avoids a second move after maintenance).
	// +optional
	// +kubebuilder:default=Immediate
	Failback FailbackPolicy `json:"failback,omitempty"`

	// HoldDown is how long a node that becomes eligible again after it
	// failed (recovers, flaps) must stay eligible without interruption
	// before it may take the role from another eligible node, e.g. by failback
	// (keepalived's preempt_delay): a node that flaps never regains the
	// role. It never delays a takeover from a node that is not eligible
	// any more, nor the first election. A Go duration from 0s (no hold) to
	// 1h; omitted means the operator's --egress-gateway-ha-hold-down (10s).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('1h')",message="must be a duration from 0s to 1h, e.g. 10s"
	HoldDown *metav1.Duration `json:"holdDown,omitempty"`
}

// EgressGatewayStatus is the state the operator observed and decided.
type EgressGatewayStatus struct {
	// ObservedGeneration is the spec generation this status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// ActiveNodeName is the node that currently sends the traffic; empty when
	// no candidate is eligible (traffic is then dropped: fail closed).
	// +optional
	ActiveNodeName string `json:"activeNodeName,omitempty"`

	// ActiveNodeInternalIP is the active node's InternalIP: the tunnel
	// endpoint every node sends the selected pods' traffic to.
	// +optional
	ActiveNodeInternalIP string `json:"activeNodeInternalIP,omitempty"`

	// ReadyNodes is the number of eligible candidate nodes.
	// +optional
	ReadyNodes int64 `json:"readyNodes,omitempty"`

	// EgressIP is the source address traffic currently gets: the virtual IP,
	// or the active node's interface address in basic mode.
	// +optional
	EgressIP string `json:"egressIP,omitempty"`

	// Candidates lists every node matching nodeSelector with whether it is
	// eligible and, if not, why.
	// +optional
	// +listType=map
	// +listMapKey=node
	Candidates []Candidate `json:"candidates,omitempty"`

	// LastFailover records the latest change of active node.
	// +optional
	LastFailover *Failover `json:"lastFailover,omitempty"`

	// Conditions: Ready (reasons ElectionSucceeded,
	// ElectionSucceededAndVirtualIPAnnounced, ElectionFailed,
	// VirtualIPAnnouncingFailed) and, in VirtualIPAddress mode,
	// VirtualIPConflict (True with reason DuplicateAddress while another
	// host claims the virtual IP).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Candidate is one node matching an EgressGateway's nodeSelector.
type Candidate struct {
	// Node is the Node name.
	// +required
	Node string `json:"node"`
	// Eligible is true when the node may be made active.
	// +required
	Eligible bool `json:"eligible"`
	// Reasons say why the node is not eligible, e.g. NodeNotReady, Cordoned,
	// CiliumAgentNotReady, HeartbeatExpired, VirtualIPNotReady,
	// InterfaceMissing.
	// +optional
	// +listType=atomic
	Reasons []string `json:"reasons,omitempty"`
}

// Failover is one change of active node.
type Failover struct {
	// From is the previous active node (empty if there was none).
	// +optional
	From string `json:"from,omitempty"`
	// To is the new active node (empty if none is eligible).
	// +optional
	To string `json:"to,omitempty"`
	// Reason is why the previous node lost the role, e.g. HeartbeatExpired.
	// +optional
	Reason string `json:"reason,omitempty"`
	// Time is when the new status was written.
	// +optional
	Time metav1.Time `json:"time,omitempty"`
	// Duration is the time from detecting the change to writing the status.
	// +optional
	Duration *metav1.Duration `json:"duration,omitempty"`
}

// +kubebuilder:object:root=true

// EgressGatewayList is a list of EgressGateways.
type EgressGatewayList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EgressGateway `json:"items"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=egwp
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Gateway",type=string,JSONPath=`.spec.egressGatewayName`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// EgressGatewayPolicy sends the traffic of the selected pods towards the
// destination CIDRs through an EgressGateway.
type EgressGatewayPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec EgressGatewayPolicySpec `json:"spec"`
	// +optional
	Status EgressGatewayPolicyStatus `json:"status,omitempty"`
}

// EgressGatewayPolicySpec is the desired state of an EgressGatewayPolicy.
type EgressGatewayPolicySpec struct {
	// EgressGatewayName is the name of the EgressGateway to use.
	// +required
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="must be the name of an EgressGateway: lower-case letters, digits, '-' and '.', e.g. my-egressgw"
	EgressGatewayName string `json:"egressGatewayName"`

	// DestinationCIDRs are the IPv4 destinations whose traffic uses the
	// gateway; 0.0.0.0/0 means every destination outside the cluster.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="must list at least one IPv4 CIDR; use 0.0.0.0/0 for every destination"
	DestinationCIDRs []IPv4CIDR `json:"destinationCIDRs"`

	// ExcludedCIDRs are carved out of DestinationCIDRs: traffic to them
	// leaves as if no policy matched. Cluster ranges need no exclusion.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	ExcludedCIDRs []IPv4CIDR `json:"excludedCIDRs,omitempty"`

	// Selectors select the pods; a pod matching any entry is selected. Use
	// the io.kubernetes.pod.namespace pseudo-label in podSelector, or
	// namespaceSelector, to restrict namespaces.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="must have at least one selector; a policy without selectors selects no pods"
	Selectors []EgressGatewayPolicySelector `json:"selectors"`
}

// EgressGatewayPolicySelector selects pods by their labels and, optionally,
// by the labels of their namespace; both must match when both are set.
// +kubebuilder:validation:XValidation:rule="has(self.podSelector) || has(self.namespaceSelector)",message="each selector needs a podSelector or a namespaceSelector"
type EgressGatewayPolicySelector struct {
	// PodSelector matches pod labels; io.kubernetes.pod.namespace matches
	// the pod's namespace name. An empty selector matches every pod.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`

	// NamespaceSelector matches the labels of the pod's namespace.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
}

// EgressGatewayPolicyStatus is the state the agents observed.
type EgressGatewayPolicyStatus struct {
	// ObservedGeneration is the spec generation this status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready (reasons Ready, GatewayNotFound, GatewayNotReady)
	// and Conflict.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true

// EgressGatewayPolicyList is a list of EgressGatewayPolicies.
type EgressGatewayPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EgressGatewayPolicy `json:"items"`
}

// Condition types and reasons, in the words of the user documentation.
const (
	ConditionReady    = "Ready"
	ConditionConflict = "Conflict"
	// ConditionVirtualIPConflict (VirtualIPAddress mode) is True while the
	// active node sees another host claiming the VIP.
	ConditionVirtualIPConflict = "VirtualIPConflict"
	ReasonDuplicateAddress     = "DuplicateAddress"
	ReasonNoConflict           = "NoConflict"
	// ConditionLivenessSuspect is present (True) while some of the
	// gateway's candidates are held rather than judged: most candidates
	// failed together by one signal, so the operator suspects its own view
	// (reason ObserverSuspect) or the control plane (ControlPlaneSuspect).
	ConditionLivenessSuspect  = "LivenessSuspect"
	ReasonObserverSuspect     = "ObserverSuspect"
	ReasonControlPlaneSuspect = "ControlPlaneSuspect"

	ReasonElectionSucceeded                      = "ElectionSucceeded"
	ReasonElectionSucceededAndVirtualIPAnnounced = "ElectionSucceededAndVirtualIPAnnounced"
	ReasonElectionFailed                         = "ElectionFailed"
	ReasonVirtualIPAnnouncingFailed              = "VirtualIPAnnouncingFailed"

	ReasonPolicyReady     = "Ready"
	ReasonGatewayNotFound = "GatewayNotFound"
	ReasonGatewayNotReady = "GatewayNotReady"
)

// Reasons a candidate node is not eligible.
const (
	CandidateNodeNotReady        = "NodeNotReady"
	CandidateCordoned            = "Cordoned"
	CandidateCiliumAgentNotReady = "CiliumAgentNotReady"
	CandidateHeartbeatExpired    = "HeartbeatExpired"
	// CandidateNodeUnreachable: the node stopped answering the operator's
	// liveness probes over the cluster network (crashed or cut off).
	CandidateNodeUnreachable   = "NodeUnreachable"
	CandidateVirtualIPNotReady = "VirtualIPNotReady"
	CandidateInterfaceMissing  = "InterfaceMissing"
)
