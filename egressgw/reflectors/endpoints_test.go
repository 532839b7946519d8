package reflectors

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/hive/hivetest"
	"github.com/cilium/statedb"

	"github.com/cilium/cilium/api/v1/models"
	"github.com/cilium/cilium/pkg/endpoint"
	"github.com/cilium/cilium/pkg/labelsfilter"
	"github.com/cilium/cilium/pkg/policy"
	testpolicy "github.com/cilium/cilium/pkg/testutils/policy"

	"github.com/egressha/egressha/egressgw/egresspolicy"
	"github.com/egressha/egressha/egressgw/tables"
)

// newTestEndpoint builds a real *endpoint.Endpoint as the CNI ADD does
// (endpoint.NewEndpointFromChangeModel), without the datapath behind it.
func newTestEndpoint(t *testing.T, id int64, ipv4, ns, pod string, lbls []string, state string) *endpoint.Endpoint {
	t.Helper()
	m := &models.EndpointChangeRequest{
		ID: id, K8sNamespace: ns, K8sPodName: pod, Labels: lbls,
		Addressing: &models.AddressPair{IPV4: ipv4},
	}
	if state != "" {
		st := models.EndpointState(state)
		m.State = &st
	}
	log := hivetest.Logger(t)
	repo := policy.NewPolicyRepository(log, nil, nil, nil, nil, testpolicy.NewPolicyMetricsNoop())
	ep, err := endpoint.NewEndpointFromChangeModel(context.Background(), log,
		nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, repo, nil, nil, nil, nil, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

// TestLocalEndpoints drives the endpoint-manager subscriber with real
// endpoints: rows appear once the identity labels are known, win over the
// CiliumEndpoint of the same IP, and on deletion hand the IP back to it.
func TestLocalEndpoints(t *testing.T) {
	// The agent configures Cilium's label filter at startup; endpoints
	// filter their labels with it.
	if err := labelsfilter.ParseLabelPrefixCfg(hivetest.Logger(t), nil, nil, ""); err != nil {
		t.Fatal(err)
	}
	db := statedb.New()
	tbl, err := tables.NewEndpointsTable(db)
	if err != nil {
		t.Fatal(err)
	}
	w := tables.NewEndpointWriter(db, tbl)
	l := newLocalEndpoints(nil, w)
	get := func(ip string) *tables.Endpoint {
		e, _, _ := tbl.Get(db.ReadTxn(), tables.EndpointByIP(netip.MustParseAddr(ip)))
		return e
	}
	backend := []string{"k8s:app=backend", "k8s:io.kubernetes.pod.namespace=my-ns"}

	// Created by the CNI ADD: no labels yet, so no row, and the job polls.
	pending := newTestEndpoint(t, 1, "10.244.1.10", "my-ns", "backend-1", nil, "")
	l.EndpointCreated(pending)
	// Not pods: the health endpoint, an IPv6-only pod. Never a row, never
	// polled for.
	l.EndpointCreated(newTestEndpoint(t, 2, "10.244.1.2", "", "", []string{"reserved:health"}, ""))
	l.EndpointCreated(newTestEndpoint(t, 3, "", "my-ns", "v6-only", backend, ""))
	if !l.sync(time.Now(), true) {
		t.Fatal("want the job to poll for the pending endpoint's labels")
	}
	if n := tbl.NumObjects(db.ReadTxn()); n != 0 {
		t.Fatalf("%d rows before any labels are known", n)
	}
	if len(l.tracked) != 1 {
		t.Fatalf("tracking %d endpoints, want only the pending pod", len(l.tracked))
	}

	// Restored (or labelled) endpoint: a row at once, preferred over its
	// CiliumEndpoint.
	w.Update(func(t *tables.EndpointTxn) {
		t.Set(tables.CiliumEndpointSource("my-ns", "backend-2"), &tables.Endpoint{
			Endpoint: egresspolicy.Endpoint{IP: netip.MustParseAddr("10.244.1.11"), Namespace: "my-ns", Node: "192.168.0.11",
				Labels: map[string]string{"app": "backend", "io.kubernetes.pod.namespace": "my-ns"}},
			Name: "backend-2", Origin: tables.OriginCiliumEndpoint,
		})
	})
	ready := newTestEndpoint(t, 4, "10.244.1.11", "my-ns", "backend-2", backend, "")
	l.EndpointRestored(ready)
	l.sync(time.Now(), false)
	e := get("10.244.1.11")
	if e == nil || e.Origin != tables.OriginLocal || e.Labels["app"] != "backend" || e.Name != "backend-2" {
		t.Fatalf("row %+v, want the local endpoint", e)
	}

	// Deleted: the CiliumEndpoint, still there, takes the IP back.
	l.EndpointDeleted(ready, endpoint.DeleteConfig{})
	l.sync(time.Now(), false)
	if e := get("10.244.1.11"); e == nil || e.Origin != tables.OriginCiliumEndpoint {
		t.Fatalf("row %+v, want the CiliumEndpoint back", e)
	}

	// An endpoint seen while it is being deleted is dropped.
	gone := newTestEndpoint(t, 5, "10.244.1.12", "my-ns", "backend-3", backend, string(models.EndpointStateWaitingDashForDashIdentity))
	if !gone.SetState(endpoint.StateDisconnecting, "test") {
		t.Fatal("cannot set the endpoint disconnecting")
	}
	l.EndpointCreated(gone)
	l.sync(time.Now(), true)
	if e := get("10.244.1.12"); e != nil {
		t.Fatalf("row %+v for an endpoint being deleted", e)
	}
	if _, ok := l.tracked[gone]; ok {
		t.Fatal("an endpoint being deleted is still tracked")
	}

	// The pending endpoint stops being polled fast after the window.
	if l.sync(time.Now().Add(localFastPollWindow), false) {
		t.Fatal("still polling fast after the window")
	}
}
