package tables

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
	"github.com/egressha/egressha/egressgw/egresspolicy"
)

func TestNewPolicy(t *testing.T) {
	obj := &v1alpha1.EgressGatewayPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: v1alpha1.EgressGatewayPolicySpec{
			EgressGatewayName: "egw",
			DestinationCIDRs:  []v1alpha1.IPv4CIDR{"0.0.0.0/0", "not-a-cidr"},
			ExcludedCIDRs:     []v1alpha1.IPv4CIDR{"10.1.2.3/8"},
			Selectors: []v1alpha1.EgressGatewayPolicySelector{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}},
			},
		},
	}
	r := NewPolicy(obj)
	if r.Name != "p" || r.Object != obj || r.Policy.Gateway != "egw" || len(r.Policy.Selectors) != 1 || r.Error == "" {
		t.Fatalf("row %+v", r)
	}
	row := r.TableRow()
	if len(row) != len(r.TableHeader()) {
		t.Fatal("header and row differ in length")
	}
	want := []string{"p", "egw", "0.0.0.0/0", "10.0.0.0/8", "Unknown", "Unknown", "<none>"}
	if !reflect.DeepEqual(row[:7], want) {
		t.Fatalf("TableRow = %q, want %q", row[:7], want)
	}

	conds := []egresspolicy.Condition{
		{Type: egresspolicy.ConditionReady, Status: egresspolicy.StatusFalse, Reason: egresspolicy.ReasonGatewayNotReady, Message: "no active node"},
		{Type: egresspolicy.ConditionConflict, Status: egresspolicy.StatusFalse, Reason: egresspolicy.ReasonNoConflict, Message: "none"},
	}
	r2 := r.WithConditions(conds)
	if r.Conditions != nil {
		t.Fatal("WithConditions modified the original row")
	}
	if got := r2.TableRow()[4:7]; !reflect.DeepEqual(got, []string{"False (GatewayNotReady)", "False", "no active node"}) {
		t.Fatalf("not ready: %q", got)
	}
	conds[1] = egresspolicy.Condition{Type: egresspolicy.ConditionConflict, Status: egresspolicy.StatusTrue, Reason: egresspolicy.ReasonOverlappingPolicies, Message: "overlap"}
	if got := r.WithConditions(conds).TableRow()[5:7]; !reflect.DeepEqual(got, []string{"True (OverlappingPolicies)", "overlap"}) {
		t.Fatalf("conflict: %q", got)
	}
}
