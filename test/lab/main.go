// Command egressha-lab runs the lab: a real Cilium cluster (our custom
// cilium-agent and cilium-operator, a real kube-apiserver and etcd) in
// network namespaces on this machine. Run it as root.
//
//	egressha-lab up [--mode egressha|stock]   bring the lab up (idempotent)
//	egressha-lab down                         remove everything the lab made
//	egressha-lab status                       state of the lab; prints "echo-url: URL"
//	egressha-lab pod add NODE NS NAME [k=v,...]  create a pod on NODE (real cilium-cni ADD)
//	egressha-lab pod del NS NAME              delete it (CNI DEL)
//	egressha-lab curl NS/NAME URL             HTTP GET from inside the pod; prints the body
//	egressha-lab kubectl ARGS...              kubectl with the lab's kubeconfig
//	egressha-lab cilium-dbg NODE ARGS...      cilium-dbg against NODE's agent
//	egressha-lab crash NODE                   SIGKILL NODE's agent and cut its links
//	egressha-lab recover NODE                 reconnect NODE and start its agent
//	egressha-lab restart-agent NODE           SIGTERM NODE's agent and start it again
//	egressha-lab api block|unblock all|operators|NODE   cut (restore) the API server for everyone, the operators or one node
//	egressha-lab demo                         the spec's YAML, a crash and a recovery, basic then VIP mode
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/egressha/egressha/test/lab/cluster"
	"github.com/egressha/egressha/test/lab/demo"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "egressha-lab:", err)
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		os.Exit(1)
	}
}

func usage() error {
	return errors.New("usage: egressha-lab up [--mode egressha|stock] | down | status | pod add NODE NS NAME [k=v,...] | " +
		"pod del NS NAME | curl NS/NAME URL | kubectl ARGS... | cilium-dbg NODE ARGS... | crash NODE | recover NODE | restart-agent NODE | demo | " +
		"api block|unblock all|operators|NODE")
}

func run(args []string) error {
	if len(args) == 0 {
		return usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := cluster.DefaultConfig()
	cmd, args := args[0], args[1:]
	switch cmd {
	case "up":
		fs := flag.NewFlagSet("up", flag.ContinueOnError)
		mode := fs.String("mode", string(cluster.ModeEgressHA), "egressha (our cells, Cilium's egress gateway off) or stock (Cilium's own egress gateway)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		cfg.Mode = cluster.Mode(*mode)
		if cfg.Mode != cluster.ModeEgressHA && cfg.Mode != cluster.ModeStock {
			return fmt.Errorf("unknown mode %q", *mode)
		}
		start := time.Now()
		if err := cluster.Up(ctx, cfg, os.Stdout); err != nil {
			return err
		}
		fmt.Printf("bring-up took %.1fs\n", time.Since(start).Seconds())
		return nil
	case "down":
		return cluster.Down(cfg, os.Stdout)
	case "status":
		return cluster.Status(ctx, cfg, os.Stdout)
	case "daemon":
		fs := flag.NewFlagSet("daemon", flag.ContinueOnError)
		dir := fs.String("dir", cfg.Dir, "lab directory")
		if err := fs.Parse(args); err != nil {
			return err
		}
		cfg.Dir = *dir
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
		return cluster.RunDaemon(ctx, cfg, log)
	case "demo":
		if len(args) != 0 {
			return usage()
		}
		_, err := demo.Run(ctx, cfg, os.Stdout)
		return err
	case "pod":
		return podCmd(ctx, cfg, args)
	case "curl":
		if len(args) != 2 {
			return usage()
		}
		ns, name, ok := strings.Cut(args[0], "/")
		if !ok {
			return fmt.Errorf("pod must be NS/NAME, got %q", args[0])
		}
		body, err := cluster.Curl(ctx, cfg, ns, name, args[1], 5*time.Second)
		if err != nil {
			return err
		}
		fmt.Println(body)
		return nil
	case "kubectl":
		return passthrough(cfg.KubectlCommand(args...))
	case "cilium-dbg":
		if len(args) < 1 {
			return usage()
		}
		return passthrough(cfg.OnNodeCommand(args[0], append([]string{cfg.BinDir + "/cilium-dbg"}, args[1:]...)...))
	case "crash", "recover", "restart-agent":
		if len(args) != 1 {
			return usage()
		}
		n, err := cfg.Node(args[0])
		if err != nil {
			return err
		}
		switch cmd {
		case "crash":
			return cluster.Crash(cfg, n)
		case "recover":
			return cluster.Recover(cfg, n)
		default:
			return cluster.RestartAgent(cfg, n)
		}
	case "api":
		if len(args) != 2 || (args[0] != "block" && args[0] != "unblock") {
			return usage()
		}
		block := args[0] == "block"
		switch args[1] {
		case "all":
			return cluster.BlockAPIAll(block)
		case "operators":
			return cluster.BlockAPIOperators(cfg, block)
		}
		n, err := cfg.Node(args[1])
		if err != nil {
			return err
		}
		return cluster.BlockAPI(n, block)
	}
	return usage()
}

func podCmd(ctx context.Context, cfg cluster.Config, args []string) error {
	if len(args) == 0 {
		return usage()
	}
	switch args[0] {
	case "add":
		if len(args) < 4 || len(args) > 5 {
			return usage()
		}
		labels := map[string]string{}
		if len(args) == 5 && args[4] != "" {
			for _, kv := range strings.Split(args[4], ",") {
				k, v, _ := strings.Cut(kv, "=")
				labels[k] = v
			}
		}
		p, err := cluster.AddPod(ctx, cfg, args[1], args[2], args[3], labels)
		if err != nil {
			return err
		}
		fmt.Printf("pod %s/%s on %s: ip %s, netns %s\n", p.Namespace, p.Name, p.Node, p.IP, p.Netns)
		return nil
	case "del":
		if len(args) != 3 {
			return usage()
		}
		return cluster.DeletePod(ctx, cfg, args[1], args[2])
	}
	return usage()
}

func passthrough(cmd *exec.Cmd) error {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Run()
}
