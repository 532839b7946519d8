package tables

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
)

func TestNewEgressGateway(t *testing.T) {
	vip := &v1alpha1.EgressGateway{
		ObjectMeta: metav1.ObjectMeta{Name: "egw-vip"},
		Spec: v1alpha1.EgressGatewaySpec{
			NodeSelector: map[string]string{"zone": "a", "egress": ""},
			SourceIP: v1alpha1.SourceIP{Mode: v1alpha1.SourceIPModeVirtualIP,
				VirtualIPAddress: &v1alpha1.VirtualIPAddress{IP: "198.51.100.10", Interfaces: []v1alpha1.InterfaceName{"eth1", "eth2"}}},
		},
		Status: v1alpha1.EgressGatewayStatus{ActiveNodeName: "node2", EgressIP: "198.51.100.10"},
	}
	r := NewEgressGateway(vip)
	if r.Object != vip || r.InterfaceName != "" || r.VirtualIP.String() != "198.51.100.10" || r.EgressIP.String() != "198.51.100.10" {
		t.Fatalf("row %+v", r)
	}
	want := []string{"egw-vip", "VirtualIP", "egress=,zone=a", "eth1,eth2", "198.51.100.10", "node2", "198.51.100.10"}
	if got := r.TableRow(); !reflect.DeepEqual(got, want) {
		t.Fatalf("TableRow = %q, want %q", got, want)
	}
	if len(r.TableHeader()) != len(want) {
		t.Fatal("header and row differ in length")
	}

	basic := &v1alpha1.EgressGateway{
		ObjectMeta: metav1.ObjectMeta{Name: "egw"},
		Spec: v1alpha1.EgressGatewaySpec{
			NodeSelector: map[string]string{"egress": "true"},
			SourceIP: v1alpha1.SourceIP{Mode: v1alpha1.SourceIPModePrimaryIP,
				PrimaryIPFromEgressGatewayNodeInterface: &v1alpha1.PrimaryIPFromEgressGatewayNodeInterface{InterfaceName: "eth1"}},
		},
		Status: v1alpha1.EgressGatewayStatus{EgressIP: "not-an-ip"},
	}
	r = NewEgressGateway(basic)
	want = []string{"egw", "PrimaryIP", "egress=true", "eth1", "<none>", "<none>", "<none>"}
	if got := r.TableRow(); !reflect.DeepEqual(got, want) {
		t.Fatalf("TableRow = %q, want %q", got, want)
	}
	if objs := Objects([]*EgressGateway{r}); len(objs) != 1 || objs[0] != basic {
		t.Fatal("Objects does not return the API objects")
	}
}
