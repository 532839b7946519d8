package e2e

import (
	"context"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/egressha/egressha/test/lab/cluster"
)

// checkIdentities checks, on a lab that is up, that Cilium's processes run
// under the chart's ServiceAccounts with Pod-bound tokens (the agent's
// carries its node's name) and that the agent's identity is refused what
// it must not do. Every other e2e test passing proves the RBAC suffices.
func checkIdentities(t *testing.T, cfg cluster.Config) {
	ctx := context.Background()
	type client struct {
		cs  kubernetes.Interface
		dyn dynamic.Interface
	}
	as := func(pod string) client {
		t.Helper()
		rc, err := cfg.PodRESTConfig(pod)
		if err != nil {
			t.Fatal(err)
		}
		return client{kubernetes.NewForConfigOrDie(rc), dynamic.NewForConfigOrDie(rc)}
	}
	agent := as(cluster.AgentPodName("lab-worker"))
	operator := as("cilium-operator-1")

	for _, c := range []struct {
		who      client
		user     string
		nodeName string
	}{
		{agent, "system:serviceaccount:kube-system:cilium", "lab-worker"},
		{operator, "system:serviceaccount:kube-system:cilium-operator", ""},
	} {
		r, err := c.who.cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SelfSubjectReview: %v", err)
		}
		u := r.Status.UserInfo
		if u.Username != c.user {
			t.Errorf("token of %s authenticates as %q", c.user, u.Username)
		}
		if got := strings.Join(u.Extra["authentication.kubernetes.io/node-name"], ","); got != c.nodeName {
			t.Errorf("%s: node-name claim %q, want %q", c.user, got, c.nodeName)
		}
		if len(u.Extra["authentication.kubernetes.io/pod-name"]) != 1 {
			t.Errorf("%s: token not bound to a Pod: extra %v", c.user, u.Extra)
		}
		t.Logf("%s: groups %v, pod %v, node %v", u.Username, u.Groups, u.Extra["authentication.kubernetes.io/pod-name"], u.Extra["authentication.kubernetes.io/node-name"])
	}

	mustForbid := func(what string, err error) {
		t.Helper()
		if !apierrors.IsForbidden(err) {
			t.Errorf("agent identity: %s: want Forbidden, got %v", what, err)
		}
	}
	mustAllow := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("agent identity: %s: %v", what, err)
		}
	}
	_, err := agent.cs.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{})
	mustForbid("list Secrets in default", err)
	_, err = agent.cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
	mustForbid("create a Secret in default", err)
	_, err = agent.cs.CoreV1().Events("default").Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "x"}, InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: "lab-worker"}}, metav1.CreateOptions{})
	mustForbid("create an Event", err)
	_, err = agent.cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "x"}}}}, metav1.CreateOptions{})
	mustForbid("create a Pod", err)
	_, err = agent.cs.CoordinationV1().Leases("default").Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
	mustForbid("create a Lease in another namespace", err)

	gws, err := agent.dyn.Resource(egressGatewaysGVR).List(ctx, metav1.ListOptions{})
	mustAllow("list EgressGateways", err)
	for _, gw := range gws.Items {
		u := gw.DeepCopy()
		_ = unstructured.SetNestedField(u.Object, "lab-worker", "status", "activeNodeName")
		_, err := agent.dyn.Resource(egressGatewaysGVR).UpdateStatus(ctx, u, metav1.UpdateOptions{})
		mustForbid("write EgressGateway status", err)
		// The operator's identity may.
		_, err = operator.dyn.Resource(egressGatewaysGVR).UpdateStatus(ctx, gw.DeepCopy(), metav1.UpdateOptions{})
		if err != nil && !apierrors.IsConflict(err) {
			t.Errorf("operator identity: write EgressGateway status: %v", err)
		}
	}
	if len(gws.Items) == 0 {
		t.Error("no EgressGateway to check status writes against")
	}
	_, err = agent.cs.CoordinationV1().Leases(cluster.CiliumNamespace).Get(ctx, "egressha-lab-worker", metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("agent identity: read its heartbeat Lease: %v", err)
	}
}
