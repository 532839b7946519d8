// Command cilium-agent is Cilium v1.18's agent with egressha's agent cells.
package main

import (
	"os"

	"github.com/cilium/cilium/daemon/cmd"
	"github.com/cilium/cilium/pkg/hive"

	"github.com/egressha/egressha/cells"
	"github.com/egressha/egressha/internal/version"
)

func main() {
	agentCmd := cmd.NewAgentCmd(func() *hive.Hive {
		return hive.New(cmd.Agent, cells.Agent)
	})
	version.HandleVersionFlag(agentCmd, os.Args[1:])
	cmd.Execute(agentCmd)
}
