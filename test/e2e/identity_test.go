package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

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
		// No client-side rate limit: at client-go's default 5 requests/s
		// a read and the update that follows it are 200 ms apart, and
		// egressha's leader Lease is renewed more often than that.
		rc.QPS, rc.Burst = -1, 0
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
	checkOwnHeartbeatOnly(t, as(cluster.AgentPodName("lab-egress-b")).cs)
	checkRights(t, cfg)
}

// checkOwnHeartbeatOnly: with patches/heartbeat-admission.yaml, the agent
// of lab-egress-b (a gateway candidate, so its heartbeat Lease exists) may
// write its own heartbeat Lease and no other Lease: not another node's
// heartbeat, not a control-plane leader Lease.
func checkOwnHeartbeatOnly(t *testing.T, agentB kubernetes.Interface) {
	ctx := context.Background()
	leases := agentB.CoordinationV1().Leases(cluster.CiliumNamespace)
	refusedByPolicy := func(what string, err error) {
		t.Helper()
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "may write only its own heartbeat Lease") {
			t.Errorf("agent of lab-egress-b: %s: want refused by the heartbeat admission policy, got %v", what, err)
		}
	}
	var own *coordinationv1.Lease
	waitUntil(t, 30*time.Second, "lab-egress-b's heartbeat Lease", func() bool {
		l, err := leases.Get(ctx, "egressha-lab-egress-b", metav1.GetOptions{})
		own = l
		return err == nil
	})
	// Its own: an update (no change) is admitted; a conflict with its
	// agent's own renewal is fine, a refusal is not.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, err := leases.Get(ctx, own.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Errorf("agent of lab-egress-b: update its own heartbeat Lease: %v", err)
	}
	other, err := leases.Get(ctx, "egressha-lab-egress-a", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("agent of lab-egress-b: read lab-egress-a's heartbeat Lease: %v", err)
	}
	_, err = leases.Update(ctx, other, metav1.UpdateOptions{})
	refusedByPolicy("update lab-egress-a's heartbeat Lease", err)
	// RBAC already gives the agent no delete.
	if err := leases.Delete(ctx, other.Name, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("agent of lab-egress-b: delete lab-egress-a's heartbeat Lease: want Forbidden, got %v", err)
	}
	_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "egressha-lab-worker"}}, metav1.CreateOptions{})
	refusedByPolicy("create lab-worker's heartbeat Lease", err)
	_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "kube-scheduler"}}, metav1.CreateOptions{})
	refusedByPolicy("create the kube-scheduler leader Lease", err)
	for _, name := range []string{cluster.CiliumOperatorLeaseName, cluster.OperatorLeaseName} {
		// The leader renews egressha's Lease six times a second: an
		// update from a read that a renewal overtook is a Conflict, found
		// before admission looks at it (and the agent may not patch).
		// Read and try again until the policy answers.
		conflicts := 0
		err := retry.OnError(wait.Backoff{Steps: 100, Duration: 20 * time.Millisecond, Jitter: 1}, apierrors.IsConflict, func() error {
			leader, err := leases.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("agent of lab-egress-b: read the operator leader Lease %s: %v", name, err)
			}
			_, err = leases.Update(ctx, leader, metav1.UpdateOptions{})
			if apierrors.IsConflict(err) {
				conflicts++
			}
			return err
		})
		t.Logf("update of the operator leader Lease %s: %d conflicts before the answer", name, conflicts)
		refusedByPolicy("update the operator leader Lease "+name, err)
	}
}

// waitUntil polls cond every 100 ms until it holds or timeout passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkRights lists, per identity, what RBAC lets it do in Cilium's
// namespace and in any other (SelfSubjectRulesReview with its own token),
// and compares the list with test/e2e/testdata/rights/<name>.txt: a right
// that appears or disappears, in the chart's RBAC or ours, fails until the
// file is updated on purpose (EGRESSHA_UPDATE_RIGHTS=1 rewrites it).
func checkRights(t *testing.T, cfg cluster.Config) {
	for name, pod := range map[string]string{"cilium-agent": cluster.AgentPodName("lab-worker"), "cilium-operator": "cilium-operator-1"} {
		rc, err := cfg.PodRESTConfig(pod)
		if err != nil {
			t.Fatal(err)
		}
		cs := kubernetes.NewForConfigOrDie(rc)
		var lines []string
		for _, ns := range []string{cluster.CiliumNamespace, "default"} {
			r, err := cs.AuthorizationV1().SelfSubjectRulesReviews().Create(context.Background(), &authorizationv1.SelfSubjectRulesReview{
				Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("%s: SelfSubjectRulesReview in %s: %v", name, ns, err)
			}
			if r.Status.Incomplete {
				t.Fatalf("%s: incomplete rules review in %s: %s", name, ns, r.Status.EvaluationError)
			}
			where := "namespace " + ns
			if ns == "default" {
				where = "any other namespace"
			}
			for _, rule := range r.Status.ResourceRules {
				for _, g := range rule.APIGroups {
					for _, res := range rule.Resources {
						verbs := slices.Clone(rule.Verbs)
						slices.Sort(verbs)
						line := fmt.Sprintf("%s: %s %s: %s", where, groupName(g), res, strings.Join(verbs, ","))
						if len(rule.ResourceNames) > 0 {
							names := slices.Clone(rule.ResourceNames)
							slices.Sort(names)
							line += " (only " + strings.Join(names, ",") + ")"
						}
						lines = append(lines, line)
					}
				}
			}
		}
		slices.Sort(lines)
		got := strings.Join(slices.Compact(lines), "\n") + "\n"
		file := filepath.Join("testdata", "rights", name+".txt")
		if os.Getenv("EGRESSHA_UPDATE_RIGHTS") == "1" {
			if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("%s: %v (EGRESSHA_UPDATE_RIGHTS=1 writes it)", name, err)
		}
		if got != string(want) {
			t.Errorf("%s: its rights changed; if on purpose, rerun with EGRESSHA_UPDATE_RIGHTS=1 and review the diff of %s\n%s",
				name, file, lineDiff(string(want), got))
		}
	}
}

func groupName(g string) string {
	if g == "" {
		return "core"
	}
	return g
}

// lineDiff lists the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var out []string
	for _, l := range w {
		if l != "" && !slices.Contains(g, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range g {
		if l != "" && !slices.Contains(w, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}
