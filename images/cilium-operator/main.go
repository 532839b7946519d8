//go:build ipam_provider_operator

// Command cilium-operator is Cilium v1.18's cilium-operator-generic with
// egressha's operator cells. Build it with -tags ipam_provider_operator, as
// upstream builds cilium-operator-generic, or no IPAM allocator is linked.
package main

import (
	"os"

	"github.com/cilium/hive/cell"

	"github.com/cilium/cilium/operator/cmd"
	"github.com/cilium/cilium/pkg/hive"

	"github.com/egressha/egressha/cells"
	"github.com/egressha/egressha/internal/version"
)

func main() {
	operatorHive := hive.New(
		// Our cells hang off the leader lifecycle: they start only once this
		// replica wins Cilium's leader election and stop when it loses it.
		// They come before cmd.Operator, whose leader-election hook must be
		// the last start hook of the outer lifecycle.
		cell.Decorate(
			func(lc *cmd.LeaderLifecycle) cell.Lifecycle { return lc },
			cells.Operator,
		),
		// Liveness probing runs on every replica, on the outer lifecycle.
		cells.OperatorProber,
		cmd.Operator,
	)
	operatorCmd := cmd.NewOperatorCmd(operatorHive)
	version.HandleVersionFlag(operatorCmd, os.Args[1:])
	cmd.Execute(operatorCmd)
}
