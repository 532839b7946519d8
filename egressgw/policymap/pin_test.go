package policymap

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"
)

func TestDecidePin(t *testing.T) {
	incompatible := errors.New("MaxEntries: 32 changed to 16")
	for _, tc := range []struct {
		name         string
		held         ebpf.MapID
		exists       bool
		pinned       ebpf.MapID
		incompatible error
		want         PinAction
	}{
		{"pin is the map held", 7, true, 7, nil, PinKept},
		{"pin replaced by a compatible map", 7, true, 9, nil, PinReopened},
		{"pin replaced by an incompatible map", 7, true, 9, incompatible, PinIncompatible},
		{"pin removed", 7, false, 0, nil, PinRestored},
		// An error comparing the same map cannot happen; the ID decides.
		{"same map, spec error ignored", 7, true, 7, incompatible, PinKept},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decidePin(tc.held, tc.exists, tc.pinned, tc.incompatible); got != tc.want {
				t.Fatalf("decidePin = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestPinActionString(t *testing.T) {
	// The strings are the values of the cause label of
	// egressha_policy_map_replaced_total.
	for a, want := range map[PinAction]string{
		PinKept: "kept", PinReopened: "replaced", PinRestored: "removed", PinIncompatible: "incompatible",
	} {
		if got := a.String(); got != want {
			t.Errorf("%d: %q, want %q", int(a), got, want)
		}
	}
}
