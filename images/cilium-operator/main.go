//go:build ipam_provider_operator

// Command cilium-operator is Cilium v1.18's cilium-operator-generic with
// egressha's operator cells. Build it with -tags ipam_provider_operator, as
// upstream builds cilium-operator-generic, or no IPAM allocator is linked.
package main

import (
	"os"

	"github.com/cilium/cilium/operator/cmd"
	"github.com/cilium/cilium/pkg/hive"

	"github.com/egressha/egressha/cells"
	"github.com/egressha/egressha/internal/version"
)

func main() {
	operatorHive := hive.New(
		// Our cells run on every replica, on the outer lifecycle, with
		// their own leader election (egressgw/leader): Cilium's operator
		// leader lease (15 s) would hold a takeover for 15-25 s. Only
		// the registration of our CRDs runs on Cilium's leader, through
		// its register-crd-funcs group. They come before cmd.Operator,
		// whose leader-election hook must be the last start hook of the
		// outer lifecycle.
		cells.Operator,
		cells.OperatorProber,
		cmd.Operator,
	)
	operatorCmd := cmd.NewOperatorCmd(operatorHive)
	version.HandleVersionFlag(operatorCmd, os.Args[1:])
	cmd.Execute(operatorCmd)
}
