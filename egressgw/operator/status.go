package operator

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/selection"
)

// DesiredStatus is the EgressGateway status for decision r, built on the
// object's current status so unchanged conditions keep their transition
// times. detectedAt is when the operator saw the change that led to r;
// now is when the status is being written. When the active node changes,
// lastFailover records it with r.ChangeReason, which the caller sets to the
// reason of the transition written (transitionOf), not of r's own step.
//
// In VirtualIPAddress mode vip is what the active node's Lease reports for
// the gateway: Ready says ElectionSucceededAndVirtualIPAnnounced only once
// the node answers ARP for the VIP, and VirtualIPConflict is True while it
// reports another host claiming the VIP.
//
// suspect, when set, is the LivenessSuspect condition to show (liveness.go:
// some candidates are held, not judged); otherwise the condition is removed.
func DesiredStatus(gw *v1alpha1.EgressGateway, r selection.Result, vip heartbeat.GatewayReport, suspect *metav1.Condition, detectedAt, now time.Time) v1alpha1.EgressGatewayStatus {
	st := *gw.Status.DeepCopy()
	st.ObservedGeneration = gw.Generation
	prev := st.ActiveNodeName
	st.ActiveNodeName = r.Active
	st.ActiveNodeInternalIP = ""
	if r.Active != "" && r.ActiveInternalIP.IsValid() {
		st.ActiveNodeInternalIP = r.ActiveInternalIP.String()
	}
	st.ReadyNodes = int64(r.ReadyNodes)
	st.EgressIP = r.EgressIP
	st.Candidates = nil
	for _, c := range r.Candidates {
		st.Candidates = append(st.Candidates, v1alpha1.Candidate{Node: c.Node, Eligible: c.Eligible, Reasons: c.Reasons})
	}
	if prev != r.Active {
		reason := r.ChangeReason
		if reason == "" {
			reason = "Elected"
		}
		st.LastFailover = &v1alpha1.Failover{
			From:     prev,
			To:       r.Active,
			Reason:   reason,
			Time:     metav1.NewTime(now),
			Duration: &metav1.Duration{Duration: now.Sub(detectedAt).Round(time.Millisecond)},
		}
	}
	cond := metav1.Condition{Type: v1alpha1.ConditionReady, ObservedGeneration: gw.Generation}
	switch {
	case r.Active == "":
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, v1alpha1.ReasonElectionFailed, r.Message
	case gw.Spec.SourceIP.Mode == v1alpha1.SourceIPModeVirtualIP && vip.Announcing:
		cond.Status, cond.Reason = metav1.ConditionTrue, v1alpha1.ReasonElectionSucceededAndVirtualIPAnnounced
		cond.Message = fmt.Sprintf("%s is active and announces %s (%d of %d candidates eligible)", r.Active, r.EgressIP, r.ReadyNodes, len(r.Candidates))
	case gw.Spec.SourceIP.Mode == v1alpha1.SourceIPModeVirtualIP:
		// Elected, but the node does not answer ARP for the VIP (yet): it
		// waits for the previous node to withdraw, probes, or found the VIP
		// in use. Traffic to the VIP does not reach it meanwhile.
		why := vip.Message
		if why == "" {
			why = "it has not reported announcing yet"
		}
		cond.Status, cond.Reason = metav1.ConditionFalse, v1alpha1.ReasonVirtualIPAnnouncingFailed
		cond.Message = fmt.Sprintf("%s is active but does not announce %s: %s", r.Active, r.EgressIP, why)
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, v1alpha1.ReasonElectionSucceeded
		cond.Message = fmt.Sprintf("%s is active with egress IP %s (%d of %d candidates eligible)", r.Active, r.EgressIP, r.ReadyNodes, len(r.Candidates))
	}
	if cond.Message == "" {
		cond.Message = cond.Reason
	}
	if r.Active != "" && r.HeldDown != "" {
		// Why a better-ranked node is not active (yet).
		cond.Message += "; " + r.HeldDown
	}
	cond.Message = boundMessage(cond.Message)
	meta.SetStatusCondition(&st.Conditions, cond)
	if gw.Spec.SourceIP.Mode == v1alpha1.SourceIPModeVirtualIP {
		dup := metav1.Condition{Type: v1alpha1.ConditionVirtualIPConflict, ObservedGeneration: gw.Generation,
			Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonNoConflict,
			Message: "no other host was seen answering for the virtual IP"}
		if r.Active != "" && vip.Duplicate != "" {
			dup.Status, dup.Reason = metav1.ConditionTrue, v1alpha1.ReasonDuplicateAddress
			dup.Message = fmt.Sprintf("another host claims %s: %s (seen by %s); find and remove the duplicate address",
				r.EgressIP, vip.Duplicate, r.Active)
		}
		dup.Message = boundMessage(dup.Message)
		meta.SetStatusCondition(&st.Conditions, dup)
	} else {
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionVirtualIPConflict)
	}
	if suspect != nil {
		c := *suspect
		c.ObservedGeneration = gw.Generation
		c.Message = boundMessage(c.Message)
		meta.SetStatusCondition(&st.Conditions, c)
	} else {
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionLivenessSuspect)
	}
	return st
}

// MaxConditionMessageBytes bounds the message of every condition the
// operator writes, well under the API's 32 KiB limit of a condition
// message: a message listing thousands of candidates, or carrying what a
// node reported, must not make the status write fail.
const MaxConditionMessageBytes = 4096

func boundMessage(s string) string {
	s, _ = heartbeat.Truncate(s, MaxConditionMessageBytes)
	return s
}

// StatusChanged reports whether writing desired would change anything.
func StatusChanged(current, desired v1alpha1.EgressGatewayStatus) bool {
	return !equality.Semantic.DeepEqual(current, desired)
}

// PolicyStatus is the status of a policy given its gateway's decision;
// found is false when the EgressGateway does not exist.
func PolicyStatus(p *v1alpha1.EgressGatewayPolicy, r selection.Result, found bool) v1alpha1.EgressGatewayPolicyStatus {
	st := *p.Status.DeepCopy()
	st.ObservedGeneration = p.Generation
	cond := metav1.Condition{Type: v1alpha1.ConditionReady, ObservedGeneration: p.Generation}
	switch {
	case !found:
		cond.Status, cond.Reason = metav1.ConditionFalse, v1alpha1.ReasonGatewayNotFound
		cond.Message = fmt.Sprintf("EgressGateway %q does not exist; matching traffic is dropped until it does", p.Spec.EgressGatewayName)
	case r.Active == "":
		cond.Status, cond.Reason = metav1.ConditionFalse, v1alpha1.ReasonGatewayNotReady
		cond.Message = fmt.Sprintf("EgressGateway %q has no active node: %s", p.Spec.EgressGatewayName, r.Message)
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, v1alpha1.ReasonPolicyReady
		cond.Message = fmt.Sprintf("traffic leaves through %s as %s", r.Active, r.EgressIP)
	}
	cond.Message = boundMessage(cond.Message)
	meta.SetStatusCondition(&st.Conditions, cond)
	return st
}

func policyStatusChanged(current, desired v1alpha1.EgressGatewayPolicyStatus) bool {
	return !equality.Semantic.DeepEqual(current, desired)
}
